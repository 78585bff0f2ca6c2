"""Write the generated part of the hostile request corpus: files too big, too binary or too fiddly to commit.

`build(folder)` writes every generated file named in expected.csv (generated = yes) and returns their
paths; `python tests/cases/hostile/make_corpus.py DIR` does the same from a shell. The committed
files of this folder are the small, readable ones.
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HEADER = "row_id,customer_id,source,action,id_type,id_value"
BIG_FIELD_BYTES = 10 * 1024 * 1024
WIDE_COLUMNS = 300


def _csv(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _utf16(with_bom: bool) -> bytes:
    text = _csv(HEADER, "u1,1025,INSTORE,add,email,utf16@example.com").decode("utf-8")
    return text.encode("utf-16") if with_bom else text.encode("utf-16-le")


def utf16_bom() -> bytes:
    return _utf16(with_bom=True)


def utf16_no_bom() -> bytes:
    return _utf16(with_bom=False)


def nul_early() -> bytes:
    return _csv(HEADER, "n1,1025,INSTORE,add,email,nul\x00byte@example.com")


def nul_late() -> bytes:
    """A NUL byte past the first 8 KiB, where a sniff of the file's start does not see it."""
    padding = [f"pad{i:04d},1011,INSTORE,remove,externalId,EXT-NOT-HELD-{i:04d}" for i in range(200)]
    return _csv(
        HEADER,
        *padding,
        "late-nul,1025,INSTORE,add,email,late\x00nul@example.com",
        "after-nul,1025,MOBILE_APP,add,externalId,APP-AFTER-NUL",
    )


def big_field() -> bytes:
    """One 10 MB id_value (no quotes, no delimiter inside) between two ordinary rows."""
    return _csv(
        HEADER,
        "before,1025,MOBILE_APP,add,externalId,APP-BEFORE-BIG",
        "big,1011,INSTORE,add,externalId," + "X" * BIG_FIELD_BYTES,
        "after,1011,MOBILE_APP,add,cuid,cuid-after-big",
    )


def wide_columns() -> bytes:
    header = HEADER.split(",") + [f"extra_{i:03d}" for i in range(WIDE_COLUMNS - 6)]
    row = ["w1", "1025", "INSTORE", "add", "email", "wide@example.com"] + [""] * (WIDE_COLUMNS - 6)
    return _csv(",".join(header), ",".join(row))


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def parquet_timestamp_column() -> bytes:
    """customer_id stored as a timestamp: a type a request column can never have."""
    return _parquet(
        pa.table(
            {
                "customer_id": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
                "source": ["INSTORE"],
                "action": ["add"],
                "id_type": ["email"],
                "id_value": ["ts@example.com"],
            }
        )
    )


def parquet_nested_column() -> bytes:
    return _parquet(
        pa.table(
            {
                "customer_id": pa.array([1025], pa.int64()),
                "source": ["INSTORE"],
                "action": ["add"],
                "id_type": ["email"],
                "id_value": pa.array([["a@example.com", "b@example.com"]]),
            }
        )
    )


def parquet_numbers() -> bytes:
    """Integer and float columns are read as text: 1025 is a customer id, 1.5 is no mobile, 1e+20 no cuid."""
    return _parquet(
        pa.table(
            {
                "row_id": pa.array([1, 2, 3], pa.int32()),
                "customer_id": pa.array([1025, 1011, 1021], pa.int64()),
                "source": ["MOBILE_APP", "INSTORE", "MOBILE_APP"],
                "action": ["add", "add", "add"],
                "id_type": ["externalId", "mobile", "cuid"],
                "id_value": pa.array([1234567.0, 1.5, 1e20], pa.float64()),
                "series_id": pa.array([None, None, None], pa.null()),
                "status_label": pa.array([True, False, None], pa.bool_()),
            }
        )
    )


def parquet_nul_in_value() -> bytes:
    """Parquet strings may hold NUL bytes, which no CSV check sees; one sits inside an email."""
    return _parquet(
        pa.table(
            {
                "row_id": ["nul-email", "nul-wechat", "clean"],
                "customer_id": ["1025", "1021", "1011"],
                "source": ["INSTORE", "WECHAT", "INSTORE"],
                "account_id": ["", "WX-MAIN", ""],
                "action": ["add", "add", "add"],
                "id_type": ["email", "wechat", "externalId"],
                "id_value": ["nul\x00byte@example.com", "wx\x00nul", "EXT-CLEAN-1011"],
            }
        )
    )


def parquet_truncated() -> bytes:
    whole = _parquet(
        pa.table(
            {
                "customer_id": ["1025"],
                "source": ["INSTORE"],
                "action": ["add"],
                "id_type": ["email"],
                "id_value": ["cut@example.com"],
            }
        )
    )
    return whole[: len(whole) // 2]


def gzip_truncated() -> bytes:
    whole = gzip.compress(_csv(HEADER, *(f"g{i},1025,INSTORE,add,email,gz{i}@example.com" for i in range(50))))
    return whole[: len(whole) - 20]


def excel_workbook() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return sink.getvalue()


GENERATED: dict[str, Callable[[], bytes]] = {
    "utf16_bom.csv": utf16_bom,
    "utf16_no_bom.csv": utf16_no_bom,
    "nul_early.csv": nul_early,
    "nul_late.csv": nul_late,
    "big_field.csv": big_field,
    "columns_300.csv": wide_columns,
    "timestamp_column.parquet": parquet_timestamp_column,
    "nested_column.parquet": parquet_nested_column,
    "numbers.parquet": parquet_numbers,
    "nul_in_value.parquet": parquet_nul_in_value,
    "truncated.parquet": parquet_truncated,
    "truncated.csv.gz": gzip_truncated,
    "workbook.xlsx": excel_workbook,
}


def build(folder: Path | str) -> list[Path]:
    """Write every generated corpus file into `folder` and return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in GENERATED.items():
        path = folder / name
        path.write_bytes(make())
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in build(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(written_path)
