"""summary.html: its sections, escaping of hostile values, the SVG charts, and a render in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import ORG, REQUESTS, ROOT
from pipeline.reports.frames import MERGE_COLUMNS
from pipeline.reports.html import MAX_MERGE_ROWS, TOP_CODES, render_summary_html, write_summary_html
from pipeline.results import RunResult, StoreCounts
from pipeline.run import run_batch
from pipeline.settings import env_flag
from pipeline.store.snapshot import init_store

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def make_result(**changes: Any) -> RunResult:
    """A hand-made run result: 10 rows, 3 failed with 2 codes, 1 merge."""
    fields: dict[str, Any] = {
        "run_id": "20260101T000000Z-abcdef",
        "job": "nightly",
        "dry_run": False,
        "aborted": None,
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T00:00:02+00:00",
        "stage_seconds": {"read": 0.1, "check": 0.2, "resolve": 0.3, "decide": 0.4, "apply": 0.5},
        "files": ({"path": "in/a.csv", "sha256": "ab" * 32, "rows": 10},),
        "rows": 10,
        "outcomes": {"applied": 5, "unchanged": 1, "merged": 1},
        "errors_by_code": {7001: 2, 8015: 1},
        "merges": 1,
        "store_before": StoreCounts(30, 26, 4, 45, 16, 9),
        "store_after": StoreCounts(30, 25, 5, 51, 16, 10),
        "exit_code": 1,
        "reports_dir": "reports/x",
    }
    return RunResult(**(fields | changes))


def merges_frame(*id_values: str) -> pl.DataFrame:
    return pl.DataFrame(
        [(10 + i, 20, "in/a.csv", i + 2, "email", v) for i, v in enumerate(id_values)],
        schema=dict.fromkeys(MERGE_COLUMNS, pl.String)
        | {"victim_id": pl.Int64, "survivor_id": pl.Int64, "row_number": pl.Int64},
        orient="row",
    )


def svg(page: str, chart_id: str) -> str:
    found = re.search(rf'<svg id="{chart_id}".*?</svg>', page, re.S)
    assert found, f"no chart {chart_id}"
    return found.group(0)


def table(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">.*?</table>', page, re.S)
    assert found, f"no table {table_id}"
    return found.group(0)


def test_page_has_every_section():
    page = render_summary_html(make_result(), merges_frame("a@example.com"))
    assert page.startswith("<!doctype html>")
    for heading in (
        "Totals",
        "Outcomes",
        "Errors by code",
        "Merges",
        "Input files",
        "Seconds per stage",
        "Store counts",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "20260101T000000Z-abcdef" in page.split("</title>")[0] and "job nightly" in page
    assert "APPLIED" in page and '<div class="n">10</div>' in page and '<div class="n">3</div>' in page
    assert "<td>INVALID_FIELD</td>" in page and "a required field is missing" in page
    assert "ab" * 32 in table(page, "files") and "<td>decide</td>" in table(page, "stages")
    assert '<td>merged</td><td class="num">4</td><td class="num">5</td><td class="num">+1</td>' in page


def test_page_is_self_contained():
    page = render_summary_html(make_result(), merges_frame("a@example.com"))
    assert (
        "<script" not in page
        and "<link" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        and "https://" not in page
    )


def test_hostile_values_are_escaped():
    result = make_result(
        job=HOSTILE, aborted=HOSTILE, exit_code=3, files=({"path": HOSTILE, "sha256": "00" * 32, "rows": 1},)
    )
    page = render_summary_html(result, merges_frame(HOSTILE))
    assert "<script" not in page
    assert ESCAPED in table(page, "merges") and ESCAPED in table(page, "files")
    assert f"job {ESCAPED}" in page.split("</title>")[0]
    assert f"ABORTED, nothing applied: {ESCAPED}" in page


def test_status_says_dry_run_and_aborted():
    assert "DRY RUN" in render_summary_html(make_result(dry_run=True), merges_frame())
    assert "ABORTED" in render_summary_html(make_result(aborted="too many errors", exit_code=3), merges_frame())


def test_charts_have_one_bar_per_outcome_and_per_top_code():
    page = render_summary_html(make_result(), merges_frame("a@example.com"))
    outcomes = svg(page, "outcomes-chart")
    assert outcomes.count('<rect class="bar"') == 4
    assert list(re.findall(r"<title>([^<]*)</title>", outcomes)) == [
        "applied: 5",
        "unchanged: 1",
        "merged: 1",
        "failed: 3",
    ]
    errors = svg(page, "errors-chart")
    assert re.findall(r"<title>([^<]*)</title>", errors) == ["7001 INVALID_FIELD: 2", "8015 CUSTOMER_NOT_FOUND: 1"]


def test_error_chart_keeps_the_top_codes_and_the_table_keeps_all():
    codes = {7001: 9, 7002: 8, 7003: 7, 7004: 6, 7005: 5, 8055: 4, 8056: 3, 8064: 2, 8086: 2, 3004: 1, 8015: 1, 8008: 1}
    page = render_summary_html(make_result(errors_by_code=codes), merges_frame())
    assert svg(page, "errors-chart").count('<rect class="bar"') == TOP_CODES
    assert table(page, "errors").count("<tr>") == len(codes) + 1


def test_no_errors_and_no_merges_say_so():
    page = render_summary_html(make_result(errors_by_code={}, exit_code=0, merges=0), merges_frame())
    assert 'id="no-errors"' in page and 'id="no-merges"' in page and "errors-chart" not in page


def test_merges_are_capped_with_a_note():
    merges = merges_frame(*(f"m{i}@example.com" for i in range(MAX_MERGE_ROWS + 5)))
    page = render_summary_html(make_result(merges=merges.height), merges)
    assert table(page, "merges").count("<tr>") == MAX_MERGE_ROWS + 1
    assert f"first {MAX_MERGE_ROWS} of {MAX_MERGE_ROWS + 5} merges" in page


def test_a_run_writes_summary_html(tmp_path: Path):
    store = tmp_path / "s.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r", dry_run=True)
    page = (tmp_path / "r" / "summary.html").read_text(encoding="utf-8")
    assert f'<div class="n">{result.rows}</div>' in page and "DRY RUN" in page
    assert svg(page, "outcomes-chart").count('<rect class="bar"') == 4


def find_browser() -> str | None:
    """Debian's chromium (or a Chromium on PATH); None when no browser is installed."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def test_renders_in_a_headless_browser(tmp_path: Path):
    browser = find_browser()
    if browser is None:
        missing = "no chromium installed (apt-get install chromium) to render summary.html"
        if env_flag(os.environ.get("CI", "")):
            pytest.fail(f"{missing}: .ci/run installs it, so CI must have one")
        pytest.skip(missing)
    page = write_summary_html(make_result(job=HOSTILE), merges_frame(HOSTILE), tmp_path / "summary.html")
    base = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert '<div class="n">10</div>' in dom and "INVALID_FIELD" in dom and "<svg" in dom
    assert ESCAPED in dom and "<script" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
