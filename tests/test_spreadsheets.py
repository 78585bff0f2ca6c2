"""Spreadsheets as request files: Excel workbooks read as text, the long numbers a spreadsheet changes, and a
run's errors.csv given back as a request file.

The workbooks are written here with xlsxwriter, each cell typed as a spreadsheet would hold it: a number cell for
a plain number, a text cell for anything else.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import xlsxwriter
from click.testing import CliRunner

from conftest import ORG, REQUESTS
from pipeline.cli import main
from pipeline.engine.check import check_requests
from pipeline.errors import InputFileError
from pipeline.input.read import InputLayout, read_requests
from pipeline.job import load_job, run_job
from pipeline.run import run_batch
from pipeline.validate import validate_files
from pipeline.values.spreadsheet import number_cell_text
from test_check import CONFIG

HEADER = ("row_id", "customer_id", "source", "action", "id_type", "id_value")
Cell = str | int | float | bool | dt.date | None


def workbook(path: Path, rows: Sequence[Sequence[Cell]], sheet: str = "Requests", first: tuple[int, int] = (0, 0)):
    """A one-sheet workbook (more sheets with `sheets`); str cells are text, numbers are number cells."""
    return workbook_sheets(path, {sheet: rows}, first)


def workbook_sheets(path: Path, sheets: dict[str, Sequence[Sequence[Cell]]], first: tuple[int, int] = (0, 0)) -> Path:
    book = xlsxwriter.Workbook(str(path))
    dates = book.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows, first[0]):
            for c, cell in enumerate(row, first[1]):
                if cell is None:
                    continue
                if isinstance(cell, bool):
                    sheet.write_boolean(r, c, cell)
                elif isinstance(cell, int | float):
                    sheet.write_number(r, c, cell)
                elif isinstance(cell, dt.date):
                    sheet.write_datetime(r, c, dt.datetime.combine(cell, dt.time()), dates)
                else:
                    sheet.write_string(r, c, cell)
    book.close()
    return path


def workbook_twin(source: Path, target: Path) -> Path:
    """The workbook a spreadsheet user would make of a CSV request file: each plain number (digits, no leading
    zero, up to 15 of them) a number cell, every other field a text cell, an empty field no cell."""
    with open(source, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))

    def cell(field: str) -> Cell:
        if field.isascii() and field.isdigit() and not field.startswith("0") and len(field) <= 15:
            return int(field)
        return field or None

    return workbook(target, [[cell(field) for field in row] for row in rows])


def rows_of(path: Path, layout: InputLayout | None = None) -> list[dict[str, Any]]:
    return read_requests([path], layout).frame.drop("seq", "file").to_dicts()


def errors_of(path: Path, layout: InputLayout | None = None) -> list[tuple[int, int, str, str]]:
    """(row_number, code, field, message) of each failing row, as the check stage decides them."""
    batch = read_requests([path], layout)
    errors = check_requests(batch.frame, CONFIG).errors.join(batch.frame.select("seq", "row_number"), on="seq")
    return [
        (n, c, f, m) for n, c, f, m in errors.select("row_number", "error_code", "error_field", "error_message").rows()
    ]


def report_bytes(folder: Path, renames: dict[str, str]) -> dict[str, bytes]:
    """A run's row reports, with each input path written as another (the twin's file names aside)."""
    found = {}
    for name in ("success.csv", "errors.csv", "merges.csv", "calls.ndjson"):
        text = (folder / name).read_text(encoding="utf-8")
        for old, new in renames.items():
            text = text.replace(old, new)
        found[name] = text.encode()
    return found


# --- workbooks


def test_a_workbook_twin_of_the_sample_requests_gives_byte_identical_reports(store, tmp_path):
    copy = tmp_path / "twin.duckdb"
    copy.write_bytes(Path(store).read_bytes())
    twins = [workbook_twin(path, tmp_path / f"{path.stem}.xlsx") for path in REQUESTS]
    from_csv = run_batch(store, ORG, REQUESTS, tmp_path / "csv", run_id="20260101T000000Z-000001")
    from_xlsx = run_batch(copy, ORG, twins, tmp_path / "xlsx", run_id="20260101T000000Z-000001")
    assert [f["fingerprint"] for f in from_xlsx.files] == [f["fingerprint"] for f in from_csv.files]
    renames = {str(twin): str(path) for twin, path in zip(twins, REQUESTS, strict=True)}
    assert report_bytes(tmp_path / "xlsx", renames) == report_bytes(tmp_path / "csv", {})
    assert from_csv.exit_code == from_xlsx.exit_code == 1


def test_a_workbook_reads_the_first_sheet_or_the_named_one(tmp_path):
    path = workbook_sheets(
        tmp_path / "book.xlsx",
        {
            "First": [HEADER, ["f1", 1001, "INSTORE", "add", "email", "first@example.com"]],
            "Second": [HEADER, ["s1", 1002, "INSTORE", "add", "email", "second@example.com"]],
        },
    )
    assert [r["row_id"] for r in rows_of(path)] == ["f1"]
    assert [r["row_id"] for r in rows_of(path, InputLayout(sheet="Second"))] == ["s1"]
    with pytest.raises(InputFileError) as caught:
        read_requests([path], InputLayout(sheet="Third"))
    assert caught.value.code == 7102 and "no sheet 'Third' (its sheets: First, Second)" in caught.value.reason


def test_a_workbook_sheet_is_read_as_text_from_its_first_row_with_a_value(tmp_path):
    rows: list[list[Cell]] = [
        [*HEADER, "series_id", "status_label"],
        [" r1 ", 1001, "INSTORE", "add", "mobile", 919972752991, None, None],
        [None, None, None, "  ", None, None],  # blank: skipped and not counted
        ["r2", "0001", "INSTORE", "add", "cardnumber", "GLD0000000042", 101, "Active"],
        [dt.date(2026, 1, 31), 1003, "INSTORE", True, "email", 12.5, None, None],
    ]
    path = workbook(tmp_path / "book.xlsx", rows, first=(2, 1))
    read = rows_of(path)
    assert [r["row_number"] for r in read] == [1, 2, 3]
    assert [r["row_id"] for r in read] == [" r1 ", "r2", "2026-01-31"]
    assert [r["customer_id"] for r in read] == ["1001", "0001", "1003"]
    assert [r["id_value"] for r in read] == ["919972752991", "GLD0000000042", "12.5"]
    assert [r["series_id"] for r in read] == ["", "101", ""]
    assert read[2]["action"] == "TRUE"
    assert read[0]["lookup_type"] is None  # a column the sheet lacks, as for CSV


def test_a_workbook_header_problem_names_the_sheet_row(tmp_path):
    unknown = workbook(tmp_path / "unknown.xlsx", [[*HEADER, "note"], ["r1", 1001]], first=(3, 0))
    with pytest.raises(InputFileError) as caught:
        read_requests([unknown])
    assert (caught.value.code, caught.value.line) == (7104, 4)
    unnamed = workbook(
        tmp_path / "unnamed.xlsx", [[*HEADER, None], ["r1", 1001], [None], ["r2", 1, "", "", "", "", "x"]]
    )
    with pytest.raises(InputFileError) as caught:
        read_requests([unnamed])
    assert (caught.value.code, caught.value.line) == (7102, 4)
    assert "column G, whose header cell is empty" in caught.value.reason
    empty = workbook(tmp_path / "empty.xlsx", [])
    with pytest.raises(InputFileError) as caught:
        read_requests([empty])
    assert caught.value.code == 7105


def test_a_header_cell_without_values_below_is_ignored(tmp_path):
    path = workbook(tmp_path / "book.xlsx", [[*HEADER, None, None], ["r1", 1001, "INSTORE", "add", "email", "a@b.co"]])
    assert rows_of(path)[0]["id_value"] == "a@b.co"


@pytest.mark.parametrize(
    ("magic", "shows"),
    [(b"PK\x03\x04not a workbook", "not a readable Excel workbook"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".xls")],
)
def test_what_is_not_a_readable_workbook_is_refused(tmp_path, magic, shows):
    path = tmp_path / "book.xlsx"
    path.write_bytes(magic + bytes(64))
    with pytest.raises(InputFileError) as caught:
        read_requests([path])
    assert caught.value.code == 7102 and shows in caught.value.reason


# --- spreadsheet damage


@pytest.mark.parametrize(
    ("value", "text", "reason"),
    [
        (919972752991.0, "919972752991", None),
        (999999999999999.0, "999999999999999", None),
        (-5.0, "-5", None),
        (1e15, "1000000000000000", "a number cell of more than 15 digits"),
        (9199727529912344.0, "9199727529912344", "a number cell of more than 15 digits"),
        (919972752991.5, "919972752991.5", "a number cell with a fraction"),
        (1e-06, "0.000001", "a number cell with a fraction"),
    ],
)
def test_a_number_cell_reads_as_its_digits_or_with_the_reason_it_may_have_changed(value, text, reason):
    assert number_cell_text(value) == (text, reason)


def csv_file(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    path.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_scientific_notation_in_a_csv_is_spreadsheet_damage(tmp_path):
    path = csv_file(
        tmp_path / "saved.csv",
        [
            ["r1", "9.19972E+11", "INSTORE", "add", "email", "a@example.com"],
            ["r2", "1001", "INSTORE", "add", "mobile", "9.19972E+11"],
            ["r3", "1001", "INSTORE", "remove", "mobile", "9.19972e11"],
            ["r4", "1001", "INSTORE", "remove", "cardnumber", '"9,19972E+15"'],
            ["r5", "1001", "INSTORE", "add", "email", "9.1E+11@example.com"],
            ["r6", "1001", "WECHAT", "add", "wechat", "9.19972E+11"],
        ],
        header=[*HEADER[:2], "source", "action", "id_type", "id_value"],
    )
    spread = "looks like a number a spreadsheet changed (scientific notation); write the value as text"
    assert errors_of(path) == [
        (1, 7001, "customer_id", f"customer_id: 9.19972E+11 {spread}"),
        (2, 8056, "id_value", f"'9.19972E+11' is not a valid mobile (it {spread})"),
        (3, 7001, "id_value", f"id_value: 9.19972e11 {spread}"),
        (4, 7001, "id_value", f"id_value: 9,19972E+15 {spread}"),
        (6, 8045, "account_id", "source 'WECHAT' has several accounts; account_id is required"),
    ]


def test_a_lookup_by_a_damaged_mobile_or_card_number_fails_7001(tmp_path):
    header = ["row_id", "lookup_type", "lookup_value", "source", "action", "id_type", "id_value"]
    path = csv_file(
        tmp_path / "lookups.csv",
        [
            ["r1", "mobile", "9.19972E+11", "INSTORE", "add", "email", "a@example.com"],
            ["r2", "cardnumber", "1.23E+15", "INSTORE", "add", "email", "a@example.com"],
            ["r3", "email", "9.19972E+11", "INSTORE", "add", "email", "a@example.com"],
        ],
        header=header,
    )
    assert [(n, c, f) for n, c, f, _ in errors_of(path)] == [(1, 7001, "lookup_value"), (2, 7001, "lookup_value")]


def test_the_same_damage_in_a_workbook_fails_the_same_way(tmp_path):
    rows: list[Sequence[Cell]] = [
        HEADER,
        ["sci-text", "9.19972E+11", "INSTORE", "add", "email", "a@example.com"],
        ["sixteen-digits", 1001, "INSTORE", "remove", "cardnumber", 9199727529912345],
        ["fraction-mobile", 1001, "INSTORE", "add", "mobile", 919972752991.5],
        ["fraction-customer", 1001.5, "INSTORE", "add", "email", "a@example.com"],
        ["fifteen-digits", 1001, "INSTORE", "add", "mobile", 919972752991],
        ["text-card", 1001, "INSTORE", "remove", "cardnumber", "9199727529912345"],
        ["fraction-email", 1001, "INSTORE", "add", "externalId", 12.5],
    ]
    path = workbook(tmp_path / "damaged.xlsx", rows)
    assert errors_of(path) == [
        (
            1,
            7001,
            "customer_id",
            "customer_id: 9.19972E+11 looks like a number a spreadsheet changed (scientific notation); "
            "write the value as text",
        ),
        (
            2,
            7001,
            "id_value",
            "id_value: 9199727529912344 looks like a number a spreadsheet changed "
            "(a number cell of more than 15 digits); write the value as text",
        ),
        (
            3,
            8056,
            "id_value",
            "'919972752991.5' is not a valid mobile (it looks like a number a spreadsheet changed "
            "(a number cell with a fraction); write the value as text)",
        ),
        (
            4,
            7001,
            "customer_id",
            "customer_id: 1001.5 looks like a number a spreadsheet changed (a number cell with a fraction); "
            "write the value as text",
        ),
    ]
    read = rows_of(path)
    assert [r["id_value"] for r in read[4:]] == ["919972752991", "9199727529912345", "12.5"]


def test_a_fixed_id_type_decides_which_number_cells_are_identifiers(tmp_path):
    path = workbook(
        tmp_path / "mobiles.xlsx",
        [["row_id", "customer_id", "source", "action", "id_value"], ["r1", 1001, "INSTORE", "add", 919972752991.5]],
    )
    assert [c for _, c, _, _ in errors_of(path, InputLayout(fixed={"id_type": "mobile"}))] == [8056]
    assert errors_of(path, InputLayout(fixed={"id_type": "externalId"})) == []


def test_validate_reports_spreadsheet_damage(tmp_path):
    path = workbook(tmp_path / "damaged.xlsx", [HEADER, ["r1", 1001, "INSTORE", "add", "mobile", 9.2e15]])
    result = validate_files(ORG, [path], tmp_path / "reports")
    errors = pl.read_csv(result.errors_csv, infer_schema=False)
    assert errors.select("row_number", "id_value", "error_code").rows() == [
        ("1", "9200000000000000 (a number cell of more than 15 digits)", "8056")
    ]


# --- the errors file as input


def test_an_errors_file_runs_again_with_one_value_fixed(store, tmp_path):
    bad_rows = REQUESTS[2]
    first = run_batch(store, ORG, [bad_rows], tmp_path / "first")
    assert first.exit_code == 1
    errors = pl.read_csv(tmp_path / "first" / "errors.csv", infer_schema=False)
    neutralised = errors.filter(pl.col("id_value").str.starts_with("'"))
    assert neutralised.height >= 2, "the sample's bad rows hold formula-like values"
    fixed_row = errors.filter(pl.col("error_code") == "8055").row(0, named=True)
    text = (tmp_path / "first" / "errors.csv").read_text(encoding="utf-8")
    resubmitted = tmp_path / "errors.csv"
    resubmitted.write_text(text.replace(fixed_row["id_value"] + ",", fixed_row["id_value"] + ".com,", 1))

    second = run_batch(store, ORG, [resubmitted], tmp_path / "second")
    assert second.exit_code == 1 and second.files[0]["rows"] == errors.height
    success = pl.read_csv(tmp_path / "second" / "success.csv", infer_schema=False)
    again = pl.read_csv(tmp_path / "second" / "errors.csv", infer_schema=False)
    assert success.select("row_id", "id_value", "outcome").rows() == [
        (fixed_row["row_id"], fixed_row["id_value"] + ".com", "applied")
    ]
    assert set(success["file"]) | set(again["file"]) == {str(resubmitted)}
    assert success["row_number"].to_list() == [fixed_row["row_number"]]  # the errors file's own row
    others = errors.filter(pl.col("row_id") != fixed_row["row_id"])
    same = ["row_id", *[c for c in errors.columns if c not in ("file", "row_number", "row_id")]]
    assert again.select(same).equals(others.select(same)), "the other rows fail again, as they were"
    assert again["row_number"].to_list() == [
        str(n) for n in range(1, errors.height + 1) if n != int(fixed_row["row_number"])
    ]


def test_neutralised_cells_read_back_as_they_were(tmp_path):
    header = ["file", "row_number", *HEADER, "error_code", "error_name", "error_field", "error_message", "stage"]
    path = csv_file(
        tmp_path / "errors.csv",
        [
            [
                "in.csv",
                "7",
                "'=r1",
                "1001",
                "INSTORE",
                "add",
                "mobile",
                "'+86 139 0000 1001",
                "8056",
                "X",
                "id",
                "m",
                "check",
            ]
        ],
        header=header,
    )
    row = rows_of(path)[0]
    assert (row["row_number"], row["row_id"], row["id_value"]) == (1, "=r1", "+86 139 0000 1001")


def test_an_errors_file_saved_as_a_workbook_reads_the_same(tmp_path):
    header = ["file", "row_number", *HEADER, "error_code", "error_name", "error_field", "error_message", "stage"]
    rows = [["in.csv", "3", "r1", "1001", "INSTORE", "add", "mobile", "'-1001", "8056", "X", "id_value", "m", "check"]]
    as_csv = csv_file(tmp_path / "errors.csv", rows, header=header)
    as_xlsx = workbook(tmp_path / "errors.xlsx", [header, [int(v) if v.isdigit() else v for v in rows[0]]])
    assert rows_of(as_xlsx) == rows_of(as_csv)
    assert rows_of(as_xlsx)[0]["id_value"] == "-1001"


def test_an_errors_file_ignores_the_jobs_renames_and_fixed_values(tmp_path):
    header = ["file", "row_number", *HEADER, "series_id", "error_code", "error_name", "error_field", "error_message"]
    layout = InputLayout(columns={"Ref": "row_id"}, fixed={"source": "INSTORE"}, series_codes={"GOLD": 101})

    def errors_file(series_id: str) -> Path:
        row = [
            "in.csv",
            "1",
            "r1",
            "1001",
            "INSTORE",
            "add",
            "cardnumber",
            "GLD1",
            series_id,
            "7001",
            "X",
            "f",
            "m",
            "check",
        ]
        return csv_file(tmp_path / f"errors-{series_id}.csv", [row], header=[*header, "stage"])

    read = rows_of(errors_file("101"), layout)[0]
    assert (read["row_id"], read["source"], read["series_id"]) == ("r1", "INSTORE", "101")  # the id the run wrote
    assert rows_of(errors_file("GOLD"), layout)[0]["series_id"] == "101"  # a code written in by hand
    assert rows_of(errors_file("77"), layout)[0]["series_id"] == "77"  # left for the check stage's 3004


@pytest.mark.parametrize("missing", ["file", "stage"])
def test_a_request_file_with_some_report_columns_is_not_an_errors_file(tmp_path, missing):
    header = ["file", "row_number", *HEADER, "error_code", "error_name", "error_field", "error_message", "stage"]
    header.remove(missing)
    path = csv_file(tmp_path / "requests.csv", [["x"] * len(header)], header=header)
    with pytest.raises(InputFileError) as caught:
        read_requests([path])
    assert caught.value.code == 7104
    stray = csv_file(
        tmp_path / "stray.csv", [["in.csv", "r1", "1001", "INSTORE", "add", "email", "a@b.co"]], ["file", *HEADER]
    )
    with pytest.raises(InputFileError) as caught:
        read_requests([stray])
    assert caught.value.code == 7104 and "'file' (column 1)" in caught.value.reason


# --- job keys and the command line


def test_a_job_names_the_sheet_delimiter_and_encoding(store, tmp_path):
    workbook_sheets(
        tmp_path / "book.xlsx",
        {"Notes": [["x"]], "Requests": [HEADER, ["r1", 1024, "INSTORE", "add", "externalId", "EXT-JOB-1024"]]},
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nstore = "{store}"\nconfig = "{ORG}"\ninputs = ["book.xlsx"]\nreports = "{tmp_path}/r"\n'
        'sheet = "Requests"\ndelimiter = "\\t"\nencoding = "cp1252"\n',
        encoding="utf-8",
    )
    loaded = load_job(job)
    assert (loaded.sheet, loaded.delimiter, loaded.encoding) == ("Requests", "\t", "cp1252")
    result = run_job(loaded)
    assert result.exit_code == 0 and result.outcomes["applied"] == 1


@pytest.mark.parametrize(
    ("line", "key"),
    [('sheet = ""', "job.sheet"), ('delimiter = "ab"', "job.delimiter"), ('encoding = "nope"', "job.encoding")],
)
def test_a_job_refuses_a_bad_sheet_delimiter_or_encoding(tmp_path, line, key):
    (tmp_path / "in.csv").write_text("x\n", encoding="utf-8")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nstore = "s.duckdb"\nconfig = "org.toml"\ninputs = ["in.csv"]\n{line}\n', encoding="utf-8")
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_job(job)
    assert caught.value.key == key


def test_validate_and_run_read_a_semicolon_cp1252_csv(store, tmp_path):
    text = "row_id;customer_id;source;action;id_type;id_value\r\nr1;1024;INSTORE;add;externalId;CAFÉ-1024\r\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(text.encode("cp1252"))
    ascii_only = tmp_path / "ascii.csv"
    ascii_only.write_text(text.replace("É", "E"), encoding="ascii")

    def validate(*args: str):
        return CliRunner().invoke(main, ["validate", "--config", str(ORG), "--reports", str(tmp_path / "v"), *args])

    assert "--encoding" in validate(str(path)).output
    refused = validate(str(ascii_only))
    assert refused.exit_code == 3 and "holding semicolons" in refused.output and "--delimiter ';'" in refused.output
    options = ["--delimiter", ";", "--encoding", "cp1252"]
    assert validate(*options, str(path)).exit_code == 0
    reports = tmp_path / "r"
    ran = CliRunner().invoke(
        main, ["run", "--store", str(store), "--config", str(ORG), "--reports", str(reports), *options, str(path), "-q"]
    )
    assert ran.exit_code == 0, ran.output
    assert pl.read_csv(reports / "success.csv", infer_schema=False)["id_value"].to_list() == ["CAFÉ-1024"]


@pytest.mark.parametrize(("option", "value"), [("--delimiter", "ab"), ("--delimiter", '"'), ("--encoding", "base64")])
def test_a_bad_delimiter_or_encoding_is_a_usage_error(tmp_path, option, value):
    result = CliRunner().invoke(main, ["validate", "--config", str(ORG), option, value, str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and option in result.output
