"""What `run` prints: the end-of-run summary led by the state of the store, --json, --quiet, --verbose, stage
progress only on a terminal, and a push's summary led by what reached the platform."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from conftest import ORG, REQUESTS
from pipeline.cli import main
from pipeline.console import STAGES, StageLog, StageProgress, stage_progress
from pipeline.delivery.push_report import PushResult
from pipeline.results import RunResult, share
from pipeline.run import run_batch

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def run_cli(store: Path, reports: Path, *flags: str):
    args = [
        "run",
        "--store",
        str(store),
        "--config",
        str(ORG),
        "--reports",
        str(reports),
        *flags,
        *(str(f) for f in REQUESTS),
    ]
    return CliRunner().invoke(main, args)


def test_default_summary_names_outcomes_codes_merges_seconds_and_reports(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r")
    assert done.exit_code == 1, done.output
    out = done.stdout
    assert re.fullmatch(r"run \d{8}T\d{6}Z-[0-9a-f]{6}: 67 rows, exit code 1", out.splitlines()[1])
    assert "outcomes: applied 19, unchanged 2, merged 1, failed 45" in out
    codes = re.findall(r"^    (\d+) ([A-Z_]+): (\d+)$", out, re.M)
    assert codes[0] == ("7001", "INVALID_FIELD", "8") and ("8015", "CUSTOMER_NOT_FOUND", "2") in codes
    assert [int(n) for _, _, n in codes] == sorted((int(n) for _, _, n in codes), reverse=True)
    assert "merges: 1" in out
    assert re.search(r"seconds: read [\d.]+, check [\d.]+, resolve [\d.]+, decide [\d.]+, apply [\d.]+", out)
    for name in ("success.csv", "errors.csv", "merges.csv", "summary.json", "summary.html"):
        assert str(tmp_path / "r" / name) in out and (tmp_path / "r" / name).exists()


def test_json_prints_summary_json_and_nothing_else(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r", "--json")
    assert done.exit_code == 1, done.output
    printed = json.loads(done.stdout)
    written = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert printed.keys() == written.keys()
    assert printed == written
    assert printed["outcomes"] == {"applied": 19, "unchanged": 2, "merged": 1, "failed": 45}
    assert printed["errors_by_code"]["7001"] == {"name": "INVALID_FIELD", "count": 8}


def test_quiet_prints_nothing_on_stdout(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r", "--quiet")
    assert done.exit_code == 1 and done.stdout == ""
    assert "applied with failures: 45 of 67 rows failed (67.2 %); see" in done.stderr
    assert (tmp_path / "r" / "summary.html").exists()


OK_REQUESTS = (
    "row_id,customer_id,lookup_type,lookup_value,source,account_id,action,id_type,id_value,series_id,status_label\n"
    "OK-1,1024,,,INSTORE,,add,externalId,EXT-9001,,\n"
    "OK-2,1003,,,INSTORE,,add,externalId,EXT-9003,,\n"
)
"""A small request file on the sample store whose every row succeeds."""


def test_the_summary_leads_with_each_state_of_the_store(store: Path, sample_snapshot_store: Path, tmp_path: Path):
    """Applied, applied with failures (with the failed share), dry run, aborted: the first line, exit codes kept."""
    small, other = tmp_path / "ok.csv", tmp_path / "other.duckdb"
    small.write_text(OK_REQUESTS, encoding="utf-8")
    shutil.copyfile(sample_snapshot_store, other)
    applied = CliRunner().invoke(
        main, ["run", "--store", str(other), "--config", str(ORG), "--reports", str(tmp_path / "ok"), str(small)]
    )
    dry = run_cli(store, tmp_path / "dry", "--dry-run")
    aborted = run_cli(store, tmp_path / "aborted", "--max-errors", "3")
    failures = run_cli(store, tmp_path / "failures")
    seen = [(done.exit_code, done.stdout.splitlines()[0]) for done in (applied, failures, dry, aborted)]
    assert seen == [
        (0, "applied: all 2 rows succeeded"),
        (1, "applied with failures: 45 of 67 rows failed (67.2 %)"),
        (1, "dry run, nothing applied: 45 of 67 rows would fail (67.2 %)"),
        (3, "ABORTED, nothing applied: 45 failed rows exceed max_errors = 3"),
    ]


def test_the_first_line_is_coloured_by_state_on_a_terminal(store: Path, tmp_path: Path):
    args = ["run", "--store", str(store), "--config", str(ORG), "--reports", str(tmp_path / "r"), *map(str, REQUESTS)]
    done = CliRunner().invoke(main, args, color=True)
    first, second = done.stdout.splitlines()[:2]
    assert first.startswith("\x1b[33m") and "applied with failures: 45 of 67" in first, "yellow: a warning"
    assert "\x1b[" not in second
    assert "\x1b[" not in run_cli(store, tmp_path / "plain", "--dry-run").stdout, "no colour in a pipe"


def test_a_share_never_rounds_to_none_or_all():
    assert [share(1, 1_000_000), share(999_999, 1_000_000), share(45, 67), share(0, 5), share(5, 5), share(0, 0)] == [
        "< 0.1 %",
        "> 99.9 %",
        "67.2 %",
        "0.0 %",
        "100.0 %",
        "-",
    ]


def push_result(outcomes: dict[str, int], stopped: str | None = None) -> PushResult:
    return PushResult(
        reports_dir="reports/x",
        api="http://127.0.0.1:9",
        calls=sum(outcomes.values()),
        outcomes=outcomes,
        retries={},
        configured_rate=600.0,
        achieved_rate=550.0,
        requests=30,
        elapsed_seconds=3.0,
        critical_path=2,
        stopped=stopped,
        exit_code=3 if stopped else 1,
    )


def test_a_push_summary_leads_with_what_reached_the_platform():
    outcomes = {"confirmed": 12, "already_applied": 3, "drift": 2, "blocked": 1, "failed": 2}
    lines = push_result(outcomes).render().splitlines()
    assert lines[:7] == [
        "push of 20 call(s) to http://127.0.0.1:9: exit code 1",
        "  12 changes reached the platform as expected",
        "  3 were already in place (an earlier attempt had reached the platform)",
        "  2 were answered otherwise: the platform no longer matched the store; refresh the store and run them again",
        "  1 was not sent because a change it depends on did not go through",
        "  2 could not be sent (retries ran out); `loyalty-bulk push --retry` sends them again once the platform "
        "answers",
        "  outcomes: confirmed 12, already_applied 3, drift 2, blocked 1, failed 2",
    ]


def test_a_stopped_push_says_what_was_not_sent_and_omits_outcomes_that_did_not_occur():
    outcomes = {"confirmed": 1, "already_applied": 0, "drift": 3, "blocked": 0, "failed": 0, "planned": 6}
    lines = push_result(outcomes, stopped="3 drifted calls exceed max_drift = 2").render().splitlines()
    assert lines[1:4] == [
        "  1 change reached the platform as expected",
        "  3 were answered otherwise: the platform no longer matched the store; refresh the store and run them again",
        "  6 were not sent yet: the push stopped before them; the same command resumes",
    ]
    assert "STOPPED: 3 drifted calls exceed max_drift = 2" in lines[-2]
    assert push_result(dict.fromkeys(outcomes, 0)).render().splitlines()[1] == "  no call to send"


def test_quiet_json_prints_only_the_json(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r", "--quiet", "--json")
    assert json.loads(done.stdout)["rows"] == 67


def test_verbose_shows_files_with_sha256_store_counts_and_stage_lines(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r", "--verbose", "--dry-run")
    assert done.exit_code == 1, done.output
    for path in REQUESTS:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in done.stdout
    assert "store before: 30 customers (26 active, 4 merged)" in done.stdout
    assert "store after:  30 customers (25 active, 5 merged)" in done.stdout
    assert [line.split()[0] for line in done.stderr.splitlines()] == list(STAGES)


def test_quiet_and_verbose_together_are_a_usage_error(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r", "--quiet", "--verbose")
    assert done.exit_code == 2 and "cannot be used together" in done.stderr
    assert not (tmp_path / "r").exists()


def test_no_progress_when_stderr_is_not_a_terminal(store: Path, tmp_path: Path):
    done = run_cli(store, tmp_path / "r")
    assert done.stderr == ""


def test_stage_progress_picks_the_display_from_the_stream():
    with stage_progress(stream=io.StringIO()) as plain:
        assert plain is None
    with stage_progress(verbose=True, stream=io.StringIO()) as log:
        assert isinstance(log, StageLog)
    with stage_progress(quiet=True, stream=FakeTerminal()) as quiet:
        assert quiet is None
    with stage_progress(stream=FakeTerminal()) as bar:
        assert isinstance(bar, StageProgress)


def test_progress_bar_draws_each_stage_on_a_terminal():
    terminal = FakeTerminal()
    with stage_progress(verbose=True, stream=terminal) as progress:
        assert progress is not None, "a terminal gets a progress display"
        for stage in STAGES:
            progress.stage_done(stage, 0.25)
    drawn = ANSI.sub("", terminal.getvalue())
    assert "0/6 stages" in drawn and "6/6 stages" in drawn
    assert "resolve done in 0.25 s" in drawn
    assert re.search(r"decide\s+━", drawn), "the running stage is named beside the bar"


def test_run_tells_the_observer_every_stage(store: Path, tmp_path: Path):
    seen: list[str] = []

    class Recorder:
        def stage_done(self, stage: str, seconds: float) -> None:
            seen.append(stage)

    result = run_batch(store, ORG, REQUESTS, tmp_path / "r", dry_run=True, observer=Recorder())
    assert isinstance(result, RunResult) and seen == list(STAGES)
