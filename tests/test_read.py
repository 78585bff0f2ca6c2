"""The read stage: request files into one raw-text frame, or a file-level refusal with (code, line)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputFileError, RequestFilesRefused
from pipeline.input.columns import FRAME_COLUMNS
from pipeline.input.read import InputFile, InputLayout, RequestBatch, read_requests, rows_fingerprint

CASES = Path(__file__).parent / "cases" / "files"
HEADER = "row_id,customer_id,source,action,id_type,id_value\n"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refusal(path: Path, columns: dict[str, str] | None = None) -> tuple[int, int | None]:
    """Read one file that must be refused; the refusal's (code, line), after checking it names the file."""
    with pytest.raises(InputFileError) as caught:
        read_requests([path], InputLayout(columns=columns or {}))
    assert caught.value.path == str(path)
    assert path.name in str(caught.value)
    return caught.value.code, caught.value.line


def column(batch: RequestBatch, name: str) -> list[Any]:
    return batch.frame[name].to_list()


def test_csv_keeps_raw_text_and_frame_shape(tmp_path):
    path = write(
        tmp_path / "requests.csv", HEADER + 'r1,0001,INSTORE,add,mobile, 0065 9123 \nr2,,INSTORE,Remove,email,""\n'
    )
    batch = read_requests([path])
    assert batch.frame.columns == list(FRAME_COLUMNS)
    assert batch.frame.schema == pl.Schema(
        {"seq": pl.Int64, "file": pl.String, "row_number": pl.Int64, **dict.fromkeys(FRAME_COLUMNS[3:], pl.String)}
    )
    assert column(batch, "customer_id")[0] == "0001"
    assert column(batch, "id_value")[0] == " 0065 9123 "
    assert column(batch, "action") == ["add", "Remove"]
    assert column(batch, "customer_id")[1] in ("", None)
    assert column(batch, "id_value")[1] in ("", None)
    assert column(batch, "lookup_type") == [None, None]
    assert column(batch, "file") == [str(path), str(path)]
    assert batch.files == (
        InputFile(
            path=str(path),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            rows=2,
            columns=("row_id", "customer_id", "source", "action", "id_type", "id_value"),
            format="csv",
            fingerprint=rows_fingerprint(batch.frame),
        ),
    )


def test_bom_crlf_blank_lines_and_quoted_newline_from_case_file():
    path = CASES / "good_bom_crlf.csv"
    batch = read_requests([path])
    assert batch.frame.select("row_number", "row_id", "customer_id", "id_value").rows() == [
        (1, "r1", "0001", " +65 9123 4567 "),
        (2, "r2", "42", "multi\r\nline"),
        (3, "r3", "", ""),
    ]
    assert batch.files[0].columns[0] == "row_id"


def test_blank_and_white_space_lines_are_skipped_and_not_counted(tmp_path):
    path = write(tmp_path / "blank.csv", "\n  \n" + HEADER + "\nr1,1,S,add,email,a\n \t \n\nr2,2,S,add,email,b\n\n")
    batch = read_requests([path])
    assert batch.frame.select("row_number", "row_id").rows() == [(1, "r1"), (2, "r2")]


def test_an_all_empty_row_is_a_row_not_a_blank_line(tmp_path):
    path = write(tmp_path / "empty_row.csv", HEADER + ",,,,,\nr2,2,S,add,email,b")
    batch = read_requests([path])
    assert column(batch, "row_number") == [1, 2]
    assert column(batch, "row_id")[0] in ("", None)


def test_trailing_newline_adds_no_row_and_missing_one_loses_none(tmp_path):
    with_newline = write(tmp_path / "a.csv", HEADER + "r1,1,S,add,email,a\n")
    without_newline = write(tmp_path / "b.csv", HEADER + "r1,1,S,add,email,a")
    assert read_requests([with_newline]).frame.height == 1
    assert read_requests([without_newline]).frame.height == 1


def test_quoted_newline_keeps_row_numbers_while_lines_stay_physical(tmp_path):
    path = write(
        tmp_path / "multiline.csv",
        HEADER + 'r1,1,S,add,email,"line one\nline two\n"\nr2,2,S,add,email,b\nr3,3,S,add,email\n',
    )
    assert refusal(path) == (7102, 6)
    good = write(tmp_path / "multiline_ok.csv", HEADER + 'r1,1,S,add,email,"x\ny"\nr2,2,S,add,email,"a ""q"" b"\n')
    batch = read_requests([good])
    assert batch.frame.select("row_number", "id_value").rows() == [(1, "x\ny"), (2, 'a "q" b')]


def test_header_only_file_has_no_rows(tmp_path):
    batch = read_requests([write(tmp_path / "header_only.csv", HEADER)])
    assert batch.frame.height == 0
    assert batch.frame.columns == list(FRAME_COLUMNS)
    assert batch.files[0].rows == 0


def test_no_files_give_an_empty_frame():
    batch = read_requests([])
    assert batch.frame.height == 0 and batch.frame.columns == list(FRAME_COLUMNS) and batch.files == ()


def test_gzip_is_detected_by_magic_bytes_and_hashed_as_stored(tmp_path):
    plain = (HEADER + "r1,007,S,add,email,a\n").encode()
    disguised = write(tmp_path / "requests.csv", gzip.compress(plain))
    suffixed = write(tmp_path / "requests.csv.gz", gzip.compress(plain))
    batch = read_requests([disguised, suffixed])
    assert column(batch, "customer_id") == ["007", "007"]
    assert batch.files[0].sha256 == hashlib.sha256(disguised.read_bytes()).hexdigest()
    assert batch.files[0].sha256 != hashlib.sha256(plain).hexdigest()
    assert batch.files[1].format == "csv"


def test_parquet_columns_are_cast_to_text(tmp_path):
    path = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 9_223_372_036_854_775_807], pa.int64()),
                "source": ["INSTORE", "INSTORE"],
                "action": pa.array(["add", "remove"]).dictionary_encode(),
                "id_type": ["cardnumber", "mobile"],
                "id_value": ["00012", None],
                "series_id": pa.array([101, None], pa.int32()),
            }
        ),
        path,
    )
    batch = read_requests([path])
    assert batch.files[0].format == "parquet"
    assert batch.frame.select("row_number", "customer_id", "action", "id_value", "series_id").rows() == [
        (1, "1", "add", "00012", "101"),
        (2, "9223372036854775807", "remove", None, None),
    ]
    assert batch.frame.schema["series_id"] == pl.String


def test_several_files_keep_order_seq_and_per_file_row_numbers(tmp_path):
    first = write(tmp_path / "first.csv", HEADER + "a1,1,S,add,email,x\na2,2,S,add,email,y\n")
    second = tmp_path / "second.parquet"
    pq.write_table(
        pa.table({"customer_id": [3], "source": ["S"], "action": ["add"], "id_type": ["email"], "id_value": ["z"]}),
        second,
    )
    third = write(tmp_path / "third.csv", HEADER + "c1,4,S,add,email,w\n")
    batch = read_requests([third, first, str(second)])
    assert batch.frame.select("seq", "file", "row_number", "customer_id").rows() == [
        (0, str(third), 1, "4"),
        (1, str(first), 1, "1"),
        (2, str(first), 2, "2"),
        (3, str(second), 1, "3"),
    ]
    assert [f.rows for f in batch.files] == [1, 2, 1]


def test_layout_columns_rename_before_the_checks(tmp_path):
    path = write(tmp_path / "mapped.csv", "ref,member,src,op,type,value\nr1,12,S,add,email,a@b.co\n")
    mapping = {
        "ref": "row_id",
        "member": "customer_id",
        "src": "source",
        "op": "action",
        "type": "id_type",
        "value": "id_value",
    }
    batch = read_requests([path], InputLayout(columns=mapping))
    assert batch.frame.select("row_id", "customer_id", "source", "id_value").rows() == [("r1", "12", "S", "a@b.co")]
    assert batch.files[0].columns == ("row_id", "customer_id", "source", "action", "id_type", "id_value")


def test_header_names_are_trimmed_but_case_sensitive(tmp_path):
    trimmed = write(tmp_path / "spaces.csv", " row_id , customer_id,source,action,id_type,id_value \nr1,1,S,add,e,v\n")
    assert column(read_requests([trimmed]), "row_id") == ["r1"]
    upper = write(tmp_path / "upper.csv", HEADER.replace("source", "Source") + "r1,1,S,add,e,v\n")
    assert refusal(upper) == (7104, 1)


def test_lookup_pair_without_customer_id_is_enough(tmp_path):
    path = write(
        tmp_path / "lookup.csv", "lookup_type,lookup_value,source,action,id_type,id_value\nmobile,1,S,add,e,v\n"
    )
    batch = read_requests([path])
    assert column(batch, "customer_id") == [None]
    assert column(batch, "lookup_value") == ["1"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(HEADER.encode() + b"r1,1,S,add,email,a\nr2,1,S,add,email,caf\xe9\n", (7101, 3), id="latin-1 byte"),
        pytest.param(b"\xff\xfe" + HEADER.encode("utf-16-le"), (7101, 1), id="utf-16"),
        pytest.param(b"", (7105, None), id="empty file"),
        pytest.param(b"\xef\xbb\xbf", (7105, None), id="only a BOM"),
        pytest.param(b"  \n\t\r\n\n", (7105, None), id="only white space"),
        pytest.param(b"\n,,,\nr1,1,S,add,email,a\n", (7105, 2), id="header without names"),
        pytest.param(HEADER + "r1,1,S,add,email,a\nr2,1,S,add,email,a,extra\n", (7102, 3), id="more fields"),
        pytest.param(HEADER + "r1,1,S,add,email,a\n\nr2,1,S\n", (7102, 4), id="fewer fields"),
        pytest.param(
            HEADER + 'r1,1,S,add,email,a\nr2,1,S,add,email,"a\nr3,1,S,add,email,b\n', (7102, 3), id="unclosed quote"
        ),
        pytest.param(HEADER + 'r1,1,S,add,email,a"b\n', (7102, 2), id="stray quote"),
        pytest.param(HEADER + 'r1,1,S,add,email,"a"b\n', (7102, 2), id="text after closing quote"),
        pytest.param(b"PK\x03\x04" + bytes(range(256)), (7102, None), id="zip archive"),
        pytest.param(bytes(range(256)) * 4, (7102, None), id="binary junk"),
        pytest.param(b"PAR1" + b"\x00" * 40, (7102, None), id="truncated parquet"),
        pytest.param("row_id,customer_id,source,action,id_type\nr1,1,S,add,email\n", (7103, 1), id="no id_value"),
        pytest.param("\nrow_id,source,action,id_type,id_value\n", (7103, 2), id="no customer reference"),
        pytest.param("lookup_type,source,action,id_type,id_value\n", (7103, 1), id="half a lookup pair"),
        pytest.param(HEADER.strip() + ",comment\n", (7104, 1), id="unknown column"),
        pytest.param(HEADER.strip() + ",\n", (7104, 1), id="trailing comma in header"),
        pytest.param(HEADER.strip() + ",source\n", (7102, 1), id="duplicate column"),
    ],
)
def test_refusals_give_code_and_line(tmp_path, content, expected):
    assert refusal(write(tmp_path / "requests.csv", content)) == expected


def test_invalid_utf8_message_names_byte_line_and_column(tmp_path):
    path = write(tmp_path / "requests.csv", HEADER.encode() + b"r1,1,S,add,email,caf\xe9\n")
    with pytest.raises(InputFileError) as caught:
        read_requests([path])
    assert str(caught.value).startswith(f"{path}, line 2: invalid UTF-8 byte 0xe9 at column 21")


def test_gzip_broken_or_truncated_is_7101(tmp_path):
    compressed = gzip.compress((HEADER + "r1,1,S,add,email,a\n" * 2000).encode())
    assert refusal(write(tmp_path / "cut.csv.gz", compressed[: len(compressed) // 2])) == (7101, None)
    corrupted = compressed[:-8] + b"\x00" * 8
    assert refusal(write(tmp_path / "crc.csv.gz", corrupted)) == (7101, None)


def test_line_counts_bom_blank_lines_and_crlf(tmp_path):
    path = write(
        tmp_path / "requests.csv",
        b"\xef\xbb\xbf\r\n" + HEADER.replace("\n", "\r\n").encode() + b"r1,1,S,add,e,v\r\n\r\nr2,1,S\r\n",
    )
    assert refusal(path) == (7102, 5)


def test_unknown_column_message_names_it(tmp_path):
    path = write(tmp_path / "requests.csv", HEADER.strip() + ",comment\n")
    with pytest.raises(InputFileError, match=r"unknown column 'comment' \(column 7\)"):
        read_requests([path])


def test_layout_columns_to_an_unknown_or_taken_name_are_refused(tmp_path):
    path = write(tmp_path / "requests.csv", HEADER.strip() + ",src\n")
    assert refusal(path, {"src": "origin"}) == (7104, 1)
    assert refusal(path, {"src": "source"}) == (7102, 1)
    with pytest.raises(InputFileError, match="'source' appears more than once"):
        read_requests([path], InputLayout(columns={"src": "source"}))


@pytest.mark.parametrize(
    ("arrow_type", "values"),
    [
        (pa.list_(pa.int64()), [[1]]),
        (pa.binary(), [b"1"]),
        (pa.struct([("a", pa.int64())]), [{"a": 1}]),
    ],
)
def test_parquet_nested_or_binary_column_is_refused_by_name(tmp_path, arrow_type, values):
    path = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array(values, arrow_type),
                "source": ["S"],
                "action": ["add"],
                "id_type": ["email"],
                "id_value": ["a"],
            }
        ),
        path,
    )
    assert refusal(path) == (7102, None)
    with pytest.raises(InputFileError, match="column 'customer_id' has Parquet type"):
        read_requests([path])


def test_parquet_missing_column_is_7103(tmp_path):
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"customer_id": [1], "source": ["S"], "action": ["add"], "id_type": ["email"]}), path)
    assert refusal(path) == (7103, None)


def test_truncated_parquet_file_is_7102(tmp_path):
    path = tmp_path / "requests.parquet"
    pq.write_table(
        pa.table({"customer_id": [1], "source": ["S"], "action": ["add"], "id_type": ["email"], "id_value": ["a"]}),
        path,
    )
    cut = write(tmp_path / "cut.parquet", path.read_bytes()[:60])
    assert refusal(cut) == (7102, None)


def test_missing_file_is_refused(tmp_path):
    assert refusal(tmp_path / "nowhere.csv") == (7102, None)


def test_one_bad_file_refuses_the_whole_batch(tmp_path):
    good = write(tmp_path / "good.csv", HEADER + "r1,1,S,add,email,a\n")
    bad = write(tmp_path / "bad.csv", HEADER.strip() + ",comment\n")
    with pytest.raises(InputFileError) as caught:
        read_requests([good, bad])
    assert (caught.value.path, caught.value.code) == (str(bad), 7104)


def test_every_bad_file_is_reported_at_once(tmp_path):
    first = write(tmp_path / "first.csv", HEADER.encode() + b"r1,1,S,add,email,caf\xe9\n")
    good = write(tmp_path / "good.csv", HEADER + "r1,1,S,add,email,a\n")
    second = write(tmp_path / "second.csv", "")
    with pytest.raises(RequestFilesRefused) as caught:
        read_requests([first, good, second])
    refused = caught.value
    assert (refused.code, refused.line, refused.path) == (7101, 2, str(first))
    assert [(e.path, e.code, e.line) for e in refused.errors] == [(str(first), 7101, 2), (str(second), 7105, None)]
    assert "first.csv, line 2" in str(refused) and "second.csv" in str(refused)
    assert isinstance(refused, InputFileError) and refused.exit_code == 3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("latin1.csv", (7101, 2)),
        ("unknown_column.csv", (7104, 1)),
        ("unclosed_quote.csv", (7102, 2)),
        ("missing_id_value.csv", (7103, 1)),
    ],
)
def test_case_files_are_refused(name, expected):
    assert refusal(CASES / name) == expected


def test_a_semicolon_cp1252_csv_reads_as_its_comma_utf8_twin(tmp_path):
    rows = ['r1,1001,INSTORE,add,email,"café;1@example.com"', 'r2,1002,INSTORE,add,email,"a ""b"""']
    utf8 = write(tmp_path / "utf8.csv", HEADER + "\n".join(rows) + "\n")
    excel = HEADER.replace(",", ";") + "\r\n".join(r.replace(",", ";", 5) for r in rows) + "\r\n"
    saved = write(tmp_path / "excel.csv", excel.encode("cp1252"))
    layout = InputLayout(delimiter=";", encoding="cp1252")
    assert read_requests([saved], layout).frame.drop("file").equals(read_requests([utf8]).frame.drop("file"))
    assert read_requests([saved], layout).files[0].fingerprint == read_requests([utf8]).files[0].fingerprint
    assert column(read_requests([saved], layout), "id_value") == ["café;1@example.com", 'a "b"']


def test_a_tab_separated_file_reads_with_the_tab_delimiter(tmp_path):
    path = write(tmp_path / "tabs.tsv", HEADER.replace(",", "\t") + "r1\t1001\tINSTORE\tadd\temail\ta,b@example.com\n")
    assert column(read_requests([path], InputLayout(delimiter="\t")), "id_value") == ["a,b@example.com"]


def test_quotes_and_widths_are_checked_against_the_given_delimiter(tmp_path):
    layout = InputLayout(delimiter=";")
    stray = write(tmp_path / "stray.csv", HEADER.replace(",", ";") + 'r1;1;S;add;email;a"b\n')
    with pytest.raises(InputFileError) as caught:
        read_requests([stray], layout)
    assert (caught.value.code, caught.value.line) == (7102, 2)
    wide = write(tmp_path / "wide.csv", HEADER.replace(",", ";") + "r1;1;S;add;email;a;b\n")
    with pytest.raises(InputFileError) as caught:
        read_requests([wide], layout)
    assert (caught.value.code, caught.value.line) == (7102, 2) and "unquoted semicolon" in caught.value.reason


def test_an_encoding_error_names_the_line_and_the_encoding(tmp_path):
    path = write(tmp_path / "bad.csv", HEADER.encode() + b"r1,1,S,add,email,ok\nr2,1,S,add,email,\x81\n")
    with pytest.raises(InputFileError) as caught:
        read_requests([path], InputLayout(encoding="cp1252"))
    assert (caught.value.code, caught.value.line) == (7101, 3) and "cp1252" in caught.value.reason
    bom = write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + HEADER.encode())
    with pytest.raises(InputFileError) as caught:
        read_requests([bom], InputLayout(encoding="cp1252"))
    assert caught.value.code == 7101 and "UTF-8 byte order mark" in caught.value.reason
    utf16 = write(tmp_path / "utf16.csv", (HEADER + "r1,1,S,add,email,a\n").encode("utf-16"))
    assert column(read_requests([utf16], InputLayout(encoding="utf-16")), "row_id") == ["r1"]


@pytest.mark.parametrize(
    ("header", "delimiter", "hint"),
    [
        (HEADER.replace(",", ";"), ",", "--delimiter ';'"),
        (HEADER.replace(",", "\t"), ",", "--delimiter tab"),
        (HEADER, ";", "--delimiter ','"),
    ],
)
def test_a_header_read_as_one_column_names_the_delimiter_option(tmp_path, header, delimiter, hint):
    path = write(tmp_path / "one.csv", header + "x\n")
    with pytest.raises(InputFileError) as caught:
        read_requests([path], InputLayout(delimiter=delimiter))
    assert (caught.value.code, caught.value.line) == (7104, 1)
    assert "the header row is one column" in caught.value.reason and hint in caught.value.reason


@pytest.mark.parametrize("delimiter", ["", ";;", "a", "1", '"', "\n", " ", "é"])
def test_a_layout_refuses_a_delimiter_that_cannot_separate_fields(delimiter):
    with pytest.raises(ValueError, match="cannot separate CSV fields"):
        InputLayout(delimiter=delimiter)


def test_a_layout_refuses_an_unknown_or_binary_encoding():
    for encoding in ("klingon", "base64", "zlib"):
        with pytest.raises(ValueError, match="encoding"):
            InputLayout(encoding=encoding)
