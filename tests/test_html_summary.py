"""summary.html: the state of the store that leads it, what a push brought to the platform, its sections,
escaping of hostile values, the SVG charts, and a render in a real browser."""

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
from emulator_harness import CLI, running_emulator
from pipeline.delivery.push_report import PushResult, _add_html_section
from pipeline.reports.frames import MERGE_COLUMNS
from pipeline.reports.html import (
    CSS,
    MAX_MERGE_ROWS,
    PUSH_DETAILS_SLOT,
    PUSH_SLOT,
    STATES,
    TOP_CODES,
    render_summary_html,
    write_summary_html,
)
from pipeline.results import RunResult, RunState, StoreCounts
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


def push_result(**changes: Any) -> PushResult:
    """A hand-made push of 20 calls: every outcome occurred, 2 drifted, 2 failed."""
    fields: dict[str, Any] = {
        "reports_dir": "reports/x",
        "api": "http://127.0.0.1:9",
        "calls": 20,
        "outcomes": {"confirmed": 12, "already_applied": 3, "drift": 2, "blocked": 1, "failed": 2},
        "retries": {"throttled": 4, "timeout": 1},
        "configured_rate": 600.0,
        "achieved_rate": 550.0,
        "requests": 31,
        "elapsed_seconds": 3.4,
        "critical_path": 3,
        "stopped": None,
        "exit_code": 1,
        "drifted": [
            {"call_id": f"r:{i}", "customer_id": 1001 + i, "action": "add", "id_type": "email", "codes": "8008"}
            for i in range(2)
        ],
    }
    return PushResult(**(fields | changes))


PUSH_LINES = [
    ("confirmed", "12 changes reached the platform as expected"),
    ("already_applied", "3 were already in place (an earlier attempt had reached the platform)"),
    (
        "drift",
        "2 were answered otherwise: the platform no longer matched the store; refresh the store and run them again",
    ),
    ("blocked", "1 was not sent because a change it depends on did not go through"),
    (
        "failed",
        "2 could not be sent (retries ran out); <code>loyalty-bulk push --retry</code> sends them again once the "
        "platform answers",
    ),
]
"""push_result()'s lines in summary.html, in order: (outcome, words)."""

OK_REQUESTS = (
    "row_id,customer_id,lookup_type,lookup_value,source,account_id,action,id_type,id_value,series_id,status_label\n"
    "OK-1,1024,,,INSTORE,,add,externalId,EXT-9001,,\n"
    "OK-2,1003,,,INSTORE,,add,externalId,EXT-9003,,\n"
    "OK-3,1002,,,INSTORE,,add,externalId,EXT-9002,,\n"
)
"""A small request file on the sample store whose every row succeeds."""


def run_in_state(state: RunState, store: Path, tmp_path: Path) -> RunResult:
    """A real run on the sample store ending in `state`: the sample requests fail 45 of their 67 rows."""
    reports = tmp_path / "r"
    if state == "applied":
        small = tmp_path / "ok.csv"
        small.write_text(OK_REQUESTS, encoding="utf-8")
        return run_batch(store, ORG, [small], reports, job="small")
    if state == "applied with failures":
        return run_batch(store, ORG, REQUESTS, reports, job="nightly")
    if state == "dry run":
        return run_batch(store, ORG, REQUESTS, reports, dry_run=True)
    return run_batch(store, ORG, REQUESTS, reports, max_errors=3)


def body(page: str) -> str:
    """The page without its head (whose CSS names every state's class)."""
    return page.split("<body>", 1)[1]


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
    assert '<div class="state-name">applied with failures</div>' in page
    assert '<div class="n">10</div>' in page and '<div class="n">3</div>' in page
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
    assert f'<div class="state-name">aborted, nothing applied</div><div class="state-detail">{ESCAPED}</div>' in page


EXPECTED_STATES: dict[RunState, tuple[str, str, int, str]] = {
    "applied": ("state-applied", "all 3 rows succeeded", 0, "job small"),
    "applied with failures": ("state-failures", "45 of 67 rows failed (67.2 %)", 1, "job nightly"),
    "dry run": ("state-dry", "45 of 67 rows would fail (67.2 %)", 1, "no job"),
    "aborted": ("state-aborted", "45 failed rows exceed max_errors = 3", 3, "no job"),
}
"""Each state of a real run (run_in_state): its banner's colour class, its detail, exit code and title's job."""


@pytest.mark.parametrize("state", list(EXPECTED_STATES))
def test_the_page_leads_with_the_state_of_the_store(state: RunState, store: Path, tmp_path: Path):
    css, detail, exit_code, job = EXPECTED_STATES[state]
    result = run_in_state(state, store, tmp_path)
    assert result.state == state and result.exit_code == exit_code
    page = (tmp_path / "r" / "summary.html").read_text(encoding="utf-8")
    name = STATES[state][1]
    assert (
        f'<div class="state {css}" id="status" role="status"><div class="state-name">{name}</div>'
        f'<div class="state-detail">{detail}</div>'
    ) in page
    assert [c for c, _ in STATES.values() if c in body(page)] == [css], "one state, one colour"
    assert body(page).index('id="status"') < body(page).index("<section"), "the state comes before every section"
    date = result.started_at[:10]
    assert f"<title>{job} · {date} · {name} · loyalty-bulk run {result.run_id}</title>" in page


def test_failures_are_amber_and_their_share_is_on_the_failed_card(store: Path, tmp_path: Path):
    run_in_state("applied with failures", store, tmp_path)
    page = (tmp_path / "r" / "summary.html").read_text(encoding="utf-8")
    assert ".state-failures{background:#fffbeb;border-color:#d97706;" in CSS, "amber, not green"
    assert "state-applied" not in body(page)
    assert '<div class="card warn"><div class="n">45</div><div class="l">failed (67.2 %)</div></div>' in page
    assert "The 22 row(s) that succeeded changed the store; the 45 that failed did not." in page


@pytest.mark.parametrize(
    ("changes", "css", "name", "detail"),
    [
        ({"errors_by_code": {}, "exit_code": 0}, "state-applied", "applied", "all 10 rows succeeded"),
        ({}, "state-failures", "applied with failures", "3 of 10 rows failed (30.0 %)"),
        (
            {"outcomes": {"applied": 0, "unchanged": 0, "merged": 0}, "errors_by_code": {7001: 10}},
            "state-failures",
            "applied with failures",
            "10 of 10 rows failed (100.0 %); no row was applied",
        ),
        ({"dry_run": True}, "state-dry", "dry run, nothing applied", "3 of 10 rows would fail (30.0 %)"),
        (
            {"aborted": "too many errors", "exit_code": 3},
            "state-aborted",
            "aborted, nothing applied",
            "too many errors",
        ),
    ],
)
def test_the_banner_of_each_state(changes: dict[str, Any], css: str, name: str, detail: str):
    page = render_summary_html(make_result(**changes), merges_frame())
    assert f'<div class="state {css}" id="status" role="status"><div class="state-name">{name}</div>' in page
    assert f'<div class="state-detail">{detail}</div>' in page
    assert f"<title>job nightly · 2026-01-01 · {name} · loyalty-bulk run 20260101T000000Z-abcdef</title>" in page


def test_a_small_share_of_failures_is_not_rounded_away():
    result = make_result(
        rows=100_000, outcomes={"applied": 99_999, "unchanged": 0, "merged": 0}, errors_by_code={7001: 1}
    )
    page = render_summary_html(result, merges_frame())
    assert '<div class="state-detail">1 of 100000 rows failed (&lt; 0.1 %)</div>' in page


def test_a_page_without_a_job_says_no_job_in_its_title():
    page = render_summary_html(make_result(job=None, started_at="2026-03-04T23:59:00+00:00"), merges_frame())
    assert "<title>no job · 2026-03-04 · applied with failures · loyalty-bulk run" in page


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
    assert (
        f'<div class="n">{result.rows}</div>' in page
        and '<div class="state-name">dry run, nothing applied</div>' in page
    )
    assert svg(page, "outcomes-chart").count('<rect class="bar"') == 4


def push_lines(page: str) -> list[tuple[str, str]]:
    """The push section's lines, (outcome, words), in the page's order."""
    return re.findall(r'<li class="push-([a-z_]+)">(.*?)</li>', page)


def test_a_push_says_what_reached_the_platform_under_the_banner(store: Path, tmp_path: Path):
    run_in_state("applied with failures", store, tmp_path)
    path = tmp_path / "r" / "summary.html"
    _add_html_section(path, push_result())
    page = path.read_text(encoding="utf-8")
    assert push_lines(page) == PUSH_LINES
    order = [
        page.index(marker) for marker in ('id="status"', 'id="push"', 'id="totals"', 'id="store"', 'id="push-details"')
    ]
    assert order == sorted(order), "state, what reached the platform, the run's sections, the push's details"
    assert page.index('id="push-details"') > page.index("<h2>Store counts</h2>")
    assert "<h2>What reached the platform</h2>" in page and 'href="#push-details"' in page
    details = page[page.index('id="push-details"') :]
    assert '<td class="mono">r:0</td><td class="num">1001</td>' in details
    assert '<td>drift</td><td class="num">2</td><td class="num">10.0 %</td>' in details
    assert "<td>throttled</td>" in details and "550.0 requests/min achieved of 600 configured" in details


def test_only_the_outcomes_that_occurred_have_a_line_and_one_call_is_singular(tmp_path: Path):
    path = write_summary_html(make_result(), merges_frame(), tmp_path / "summary.html")
    assert 'id="push' not in body(path.read_text(encoding="utf-8")), "a page no push reached has no push section"
    outcomes = {"confirmed": 1, "already_applied": 0, "drift": 1, "blocked": 0, "failed": 1}
    _add_html_section(path, push_result(calls=3, outcomes=outcomes, drifted=[]))
    assert [words for _, words in push_lines(path.read_text(encoding="utf-8"))] == [
        "1 change reached the platform as expected",
        "1 was answered otherwise: the platform no longer matched the store; refresh the store and run it again",
        "1 could not be sent (retries ran out); <code>loyalty-bulk push --retry</code> sends it again once the "
        "platform answers",
    ]


def test_a_resumed_push_replaces_its_section_and_the_page_stays_whole(tmp_path: Path):
    path = write_summary_html(make_result(), merges_frame(), tmp_path / "summary.html")
    stopped = {"confirmed": 5, "already_applied": 0, "drift": 3, "blocked": 0, "failed": 0, "planned": 12}
    _add_html_section(path, push_result(outcomes=stopped, stopped="3 drifted calls exceed max_drift = 2", exit_code=3))
    first = path.read_text(encoding="utf-8")
    assert push_lines(first)[-1] == (
        "planned",
        "12 were not sent yet: the push stopped before them; the same command resumes",
    )
    assert "The push stopped: 3 drifted calls exceed max_drift = 2." in first
    _add_html_section(path, push_result())
    _add_html_section(path, push_result())
    page = path.read_text(encoding="utf-8")
    assert push_lines(page) == PUSH_LINES and "push-stopped" not in page and "planned" not in page
    for marker in (*PUSH_SLOT, *PUSH_DETAILS_SLOT, 'id="push"', 'id="push-details"', "<html", "<main>", "</main>"):
        assert page.count(marker) == 1, marker
    assert page.endswith("</main></body></html>\n") and page.index('id="push"') < page.index('id="totals"')


def test_a_page_written_before_the_push_slots_gets_the_section_in_the_same_places(tmp_path: Path):
    old = render_summary_html(make_result(), merges_frame())
    for marker in (*PUSH_SLOT, *PUSH_DETAILS_SLOT):
        old = old.replace(marker, "")
    path = tmp_path / "summary.html"
    path.write_text(old, encoding="utf-8")
    _add_html_section(path, push_result())
    page = path.read_text(encoding="utf-8")
    assert push_lines(page) == PUSH_LINES
    assert page.index('id="status"') < page.index('id="push"') < page.index('id="totals"')
    assert page.index('id="push-details"') > page.index('id="store"') and page.count('id="push"') == 1


def test_push_values_in_the_page_are_escaped(tmp_path: Path):
    path = write_summary_html(make_result(), merges_frame(), tmp_path / "summary.html")
    drifted = [{"call_id": HOSTILE, "customer_id": 1, "action": HOSTILE, "id_type": HOSTILE, "codes": HOSTILE}]
    _add_html_section(path, push_result(api=HOSTILE, stopped=HOSTILE, drifted=drifted))
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and page.count(ESCAPED) >= 6


def test_a_push_to_the_emulator_writes_its_lines_into_the_runs_page(sample_snapshot_store: Path, tmp_path: Path):
    pre, ran = tmp_path / "pre.duckdb", tmp_path / "ran.duckdb"
    shutil.copyfile(sample_snapshot_store, pre)
    shutil.copyfile(sample_snapshot_store, ran)
    result = run_batch(ran, ORG, REQUESTS, tmp_path / "r")
    creds = {"PATH": "/usr/bin:/bin", "LOYALTY_BULK_API_USER": "till", "LOYALTY_BULK_API_PASSWORD": "pw-S3cret-42"}
    with running_emulator(pre, ORG) as url:
        done = subprocess.run(
            [CLI, "push", str(tmp_path / "r"), "--config", str(ORG), "--api", url, "--rate", "60000"],
            capture_output=True, text=True, timeout=180, env=creds,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[1] == f"  {result.calls} changes reached the platform as expected"
    page = (tmp_path / "r" / "summary.html").read_text(encoding="utf-8")
    assert push_lines(page) == [("confirmed", f"{result.calls} changes reached the platform as expected")]
    assert page.index('id="status"') < page.index('id="push"') < page.index('id="totals"')


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
    _add_html_section(page, push_result())
    base = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert '<div class="n">10</div>' in dom and "INVALID_FIELD" in dom and "<svg" in dom
    assert ESCAPED in dom and "<script" not in dom
    assert '<div class="state state-failures" id="status" role="status">' in dom
    assert '<div class="state-detail">3 of 10 rows failed (30.0 %)</div>' in dom
    assert push_lines(dom) == PUSH_LINES
    assert dom.index('id="status"') < dom.index('id="push"') < dom.index('id="totals"') < dom.index('id="push-details"')
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,2000", page.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
