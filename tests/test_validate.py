"""`validate`: errors.csv and summary.json from the case file, exit codes, the CLI, report helpers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ROOT
from pipeline.cli import main
from pipeline.files import neutralise_formulas, write_csv, write_json
from pipeline.reports.frames import ERROR_REPORT_COLUMNS, error_report
from pipeline.validate import validate_files

CASES = ROOT / "tests" / "cases"
CONFIG = ROOT / "tests" / "cases" / "org-plain.toml"
CASE_FILE = CASES / "check_codes.csv"
HEADER = (
    "row_id,customer_id,lookup_type,lookup_value,source,account_id,action,id_type,id_value,series_id,status_label\n"
)


def expected_failures() -> pl.DataFrame:
    return pl.read_csv(CASES / "check_codes_expected.csv", infer_schema=False)


def read_report(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def write_requests(path: Path, *rows: str) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_errors_csv_has_one_row_per_failed_row(tmp_path: Path):
    result = validate_files(CONFIG, [CASE_FILE], tmp_path)
    report = read_report(tmp_path / "errors.csv")
    expected = expected_failures()
    assert tuple(report.columns) == ERROR_REPORT_COLUMNS
    assert report.select("row_number", "row_id", "error_code", "error_field").rows() == expected.rows()
    assert set(report["stage"]) == {"check"}
    assert report.filter(pl.col("row_id") == "email-malformed")["error_name"].to_list() == ["INVALID_EMAIL"]
    assert result.rows_failed == expected.height and result.exit_code == 1


def test_errors_csv_echoes_raw_input(tmp_path: Path):
    validate_files(CONFIG, [CASE_FILE], tmp_path)
    report = read_report(tmp_path / "errors.csv").filter(
        pl.col("row_id").is_in(
            ["source-missing", "id-value-missing", "mobile-malformed", "prec-customer-id-over-id-value"]
        )
    )
    by_id = {row["row_id"]: row for row in report.iter_rows(named=True)}
    assert by_id["source-missing"]["source"] == " "
    assert by_id["id-value-missing"]["id_value"] == "  "
    assert by_id["mobile-malformed"]["id_value"] == "'+1 555"  # raw, with the formula guard of SPEC section 5
    assert "'1555'" in by_id["mobile-malformed"]["error_message"]  # the message shows the normalised value
    assert by_id["prec-customer-id-over-id-value"]["customer_id"] == "'-5"
    assert by_id["source-missing"]["file"] == str(CASE_FILE)


def test_summary_json_counts(tmp_path: Path):
    result = validate_files(CONFIG, [CASE_FILE], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    rows = len(CASE_FILE.read_text(encoding="utf-8").splitlines()) - 1
    expected = expected_failures()
    by_code = expected.group_by("error_code").len()
    assert summary["rows"] == summary["rows_checked"] == rows
    assert summary["rows_failed"] == expected.height
    assert summary["rows_passed"] == rows - expected.height
    assert {code: entry["count"] for code, entry in summary["errors_by_code"].items()} == dict(by_code.iter_rows())
    assert summary["errors_by_code"]["7005"]["name"] == "BLOCKED_VALUE"
    assert summary["files"] == [
        {
            "path": str(CASE_FILE),
            "sha256": hashlib.sha256(CASE_FILE.read_bytes()).hexdigest(),
            "rows": rows,
            "format": "csv",
        }
    ]
    assert summary["exit_code"] == 1 and summary["seconds"] >= 0
    assert summary == result.summary()


def test_clean_file_exits_zero(tmp_path: Path):
    requests = write_requests(
        tmp_path / "ok.csv",
        "a,1001,,,INSTORE,,add,mobile,13800138000,,",
        "b,,mobile,13800138000,WECHAT,WX-MAIN,add,wechat,wx_1,,",
    )
    result = validate_files(CONFIG, [requests], tmp_path / "reports")
    assert result.exit_code == 0 and result.rows == 2 and result.rows_failed == 0
    assert read_report(tmp_path / "reports" / "errors.csv").height == 0
    assert "2 passed, 0 failed" in result.render()


def test_several_files_keep_order(tmp_path: Path):
    first = write_requests(tmp_path / "1.csv", "a,1001,,,INSTORE,,zap,mobile,13800138000,,")
    second = write_requests(tmp_path / "2.csv", "b,1001,,,NOPE,,add,mobile,13800138000,,")
    validate_files(CONFIG, [second, first], tmp_path / "reports")
    report = read_report(tmp_path / "reports" / "errors.csv")
    assert report.select("file", "row_number", "error_code").rows() == [
        (str(second), "1", "8003"),
        (str(first), "1", "7002"),
    ]


def test_render_names_codes_and_reports(tmp_path: Path):
    result = validate_files(CONFIG, [CASE_FILE], tmp_path)
    text = result.render()
    assert f"{result.rows_failed} failed" in text
    assert "7001 INVALID_FIELD" in text
    assert str(tmp_path / "errors.csv") in text


def test_cli_validate_exit_codes(tmp_path: Path):
    runner = CliRunner()
    failed = runner.invoke(
        main, ["validate", "--config", str(CONFIG), "--reports", str(tmp_path / "a"), str(CASE_FILE)]
    )
    assert failed.exit_code == 1, failed.output
    assert f"{expected_failures().height} failed" in failed.output
    assert (tmp_path / "a" / "errors.csv").exists() and (tmp_path / "a" / "summary.json").exists()

    clean = write_requests(tmp_path / "ok.csv", "a,1001,,,INSTORE,,add,mobile,13800138000,,")
    passed = runner.invoke(main, ["validate", "--config", str(CONFIG), "--reports", str(tmp_path / "b"), str(clean)])
    assert passed.exit_code == 0, passed.output


def test_cli_file_and_config_errors(tmp_path: Path):
    runner = CliRunner()
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("source,action,id_type,id_value,customer_id,colour\n", encoding="utf-8")
    refused = runner.invoke(
        main, ["validate", "--config", str(CONFIG), "--reports", str(tmp_path / "r"), str(bad_file)]
    )
    assert refused.exit_code == 3 and "colour" in refused.output
    bad_config = tmp_path / "org.toml"
    bad_config.write_text("[org]\n", encoding="utf-8")
    usage = runner.invoke(
        main, ["validate", "--config", str(bad_config), "--reports", str(tmp_path / "r"), str(CASE_FILE)]
    )
    assert usage.exit_code == 2
    assert not (tmp_path / "r" / "errors.csv").exists()


def test_neutralise_formulas_only_touches_text_starting_a_formula():
    frame = pl.DataFrame(
        {"text": ["=SUM(A1)", "+86", "-5", "@x", "\tx", "\rx", "a=b", "", None], "number": [-1, 2, 3, 4, 5, 6, 7, 8, 9]}
    )
    safe = neutralise_formulas(frame)
    assert safe["text"].to_list() == ["'=SUM(A1)", "'+86", "'-5", "'@x", "'\tx", "'\rx", "a=b", "", None]
    assert safe["number"].to_list() == frame["number"].to_list()


def test_write_csv_and_json_are_atomic(tmp_path: Path):
    target = tmp_path / "deep" / "out.csv"
    write_csv(pl.DataFrame({"a": ["=1", "b"]}), target)
    write_csv(pl.DataFrame({"a": ["c"]}), target)
    assert target.read_text(encoding="utf-8") == "a\nc\n"
    write_json({"k": "é"}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"k": "é"}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "out.csv", "s.json"]


def test_error_report_fills_missing_columns_and_orders_by_seq():
    frame = pl.DataFrame(
        {"seq": [0, 1], "file": ["f", "f"], "row_number": [1, 2], "source": [" X", "Y"]},
        schema={"seq": pl.Int64, "file": pl.String, "row_number": pl.Int64, "source": pl.String},
    )
    errors = pl.DataFrame(
        {
            "seq": [1, 0],
            "error_code": [8015, 8003],
            "error_field": ["customer_id", "source"],
            "error_message": ["m1", "m0"],
        },
        schema_overrides={"error_code": pl.Int32},
    )
    report = error_report(frame, errors, {8015: "resolve"})
    assert tuple(report.columns) == ERROR_REPORT_COLUMNS
    assert report.select("row_number", "source", "error_name", "stage").rows() == [
        (1, " X", "INVALID_SOURCE", "check"),
        (2, "Y", "CUSTOMER_NOT_FOUND", "resolve"),
    ]
    assert report["id_value"].is_null().all()


@pytest.mark.parametrize("name", ["01_identifiers.csv", "02_cards.csv", "03_bad_rows.csv"])
def test_sample_requests_validate(tmp_path: Path, name: str):
    path = ROOT / "sample_data" / "requests" / name
    result = validate_files(CONFIG, [path], tmp_path)
    if name == "03_bad_rows.csv":
        from pipeline.catalog import error_codes

        assert {c.code for c in result.error_counts} == set(error_codes("check"))
        assert result.rows_failed == result.rows
    else:
        assert result.exit_code == 0, read_report(tmp_path / "errors.csv").rows()
