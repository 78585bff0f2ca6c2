"""What `run` prints: the end-of-run summary, --json, --quiet, --verbose, and stage progress only on a terminal."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

from click.testing import CliRunner

from conftest import ORG, REQUESTS
from pipeline.cli import main
from pipeline.console import STAGES, StageLog, StageProgress, stage_progress
from pipeline.results import RunResult
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
    assert "67 rows, applied, exit code 1" in out
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
    assert "45 of 67 rows failed" in done.stderr and (tmp_path / "r" / "summary.html").exists()


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
