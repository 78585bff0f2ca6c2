"""--mask-pii: no full identifier value in any report."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner

from conftest import ORG, REQUESTS, ROOT
from pipeline.cli import main
from pipeline.store.snapshot import init_store


def all_report_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8") for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".json", ".html")
    )


def test_mask_pii_hides_every_identifier_value(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    args = ["run", "--store", str(store), "--config", str(ORG), "--dry-run"]
    plain = CliRunner().invoke(main, [*args, "--reports", str(tmp_path / "plain"), *map(str, REQUESTS)])
    masked = CliRunner().invoke(main, [*args, "--mask-pii", "--reports", str(tmp_path / "masked"), *map(str, REQUESTS)])
    assert plain.exit_code == masked.exit_code == 1
    values = set()
    for name in ("success.csv", "errors.csv", "merges.csv"):
        frame = pl.read_csv(tmp_path / "plain" / name, infer_schema=False)
        for column in ("id_value", "lookup_value"):
            if column in frame.columns:
                values |= {v.strip() for v in frame[column].drop_nulls() if len(v.strip()) >= 5}
    assert len(values) > 20
    text = all_report_text(tmp_path / "masked")
    leaked = sorted(v for v in values if v in text)
    assert leaked == []
    success = pl.read_csv(tmp_path / "masked" / "success.csv", infer_schema=False)
    emails = success.filter(pl.col("id_type") == "email")["id_value"].to_list()
    assert emails and all(e.startswith(("'***@", "***@")) for e in emails)
    mobiles = success.filter(pl.col("id_type") == "mobile")["id_value"].to_list()
    assert mobiles and all(m.strip("*").isdigit() and len(m.strip("*")) == 3 for m in mobiles)
    # the masked run decides exactly like the plain one
    for name in ("success.csv", "errors.csv"):
        a = pl.read_csv(tmp_path / "plain" / name, infer_schema=False).drop("id_value", "error_message", strict=False)
        b = pl.read_csv(tmp_path / "masked" / name, infer_schema=False).drop("id_value", "error_message", strict=False)
        assert a.drop("lookup_value", strict=False).equals(b.drop("lookup_value", strict=False))


def test_console_output_never_prints_identifier_values(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--verbose",
            "--reports",
            str(tmp_path / "r"),
            *map(str, REQUESTS),
        ],
    )
    assert result.exit_code == 1
    values = set()
    for name in ("success.csv", "errors.csv"):
        frame = pl.read_csv(tmp_path / "r" / name, infer_schema=False)
        values |= {v.strip().lstrip("'") for v in frame["id_value"].drop_nulls() if len(v.strip()) >= 5}
    assert len(values) > 20
    assert sorted(v for v in values if v in result.output) == []
