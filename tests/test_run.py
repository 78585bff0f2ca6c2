"""End-to-end runs through the library and the CLI: reports, dry run, ledger, refusals, store lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ORG, REQUESTS, exported
from pipeline import files as report
from pipeline.cli import main
from pipeline.errors import StageFailed
from pipeline.run import run_batch
from pipeline.store.connect import open_store
from pipeline.store.duck import scalar
from pipeline.store.invariants import find_invariant_violations


def read_report(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(folder / name, infer_schema=False)


def test_every_input_row_lands_in_exactly_one_report(store, tmp_path):
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    success, errors = read_report(tmp_path / "r", "success.csv"), read_report(tmp_path / "r", "errors.csv")
    keys = [(f, n) for f, n in success.select("file", "row_number").rows()] + [
        (f, n) for f, n in errors.select("file", "row_number").rows()
    ]
    assert len(keys) == len(set(keys)) == result.rows == sum(f["rows"] for f in result.files)
    assert result.exit_code == (1 if errors.height else 0)
    assert errors.height > 0 and success.height > 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["outcomes"]["failed"] == errors.height
    assert summary["store_before"] != summary["store_after"]
    with open_store(store, read_only=True) as con:
        assert find_invariant_violations(con).height == 0


def test_reports_have_the_spec_columns(store, tmp_path):
    run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert read_report(tmp_path / "r", "success.csv").columns == [
        "file",
        "row_number",
        "row_id",
        "action",
        "source",
        "account_id",
        "id_type",
        "id_value",
        "customer_id",
        "resolved_customer_id",
        "outcome",
        "survivor_id",
        "victim_id",
        "warning_codes",
        "source_column",
    ]
    assert read_report(tmp_path / "r", "merges.csv").columns == [
        "victim_id",
        "survivor_id",
        "file",
        "row_number",
        "id_type",
        "id_value",
    ]
    errors = read_report(tmp_path / "r", "errors.csv")
    assert errors.columns[-6:] == ["error_code", "error_name", "error_field", "error_message", "stage", "source_column"]
    assert set(errors["stage"]) <= {"check", "resolve", "apply"}


def test_dry_run_writes_the_same_reports_and_changes_nothing(store, tmp_path):
    before = exported(store, tmp_path / "before")
    dry = run_batch(store, ORG, REQUESTS, tmp_path / "dry", dry_run=True)
    assert exported(store, tmp_path / "after_dry") == before
    real = run_batch(store, ORG, REQUESTS, tmp_path / "real")
    assert exported(store, tmp_path / "after_real") != before
    for name in ("success.csv", "errors.csv", "merges.csv"):
        assert (tmp_path / "dry" / name).read_bytes() == (tmp_path / "real" / name).read_bytes(), name
    assert dry.store_after == real.store_after and dry.dry_run and not real.dry_run


def test_reapplying_a_file_is_refused_unless_asked(store, tmp_path):
    run_batch(store, ORG, REQUESTS[:1], tmp_path / "first")
    before = exported(store, tmp_path / "before")
    runner = CliRunner()
    args = ["run", "--store", str(store), "--config", str(ORG), "--reports", str(tmp_path / "again"), str(REQUESTS[0])]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 3
    assert "already applied" in refused.output and "--allow-reapply" in refused.output
    assert exported(store, tmp_path / "after") == before
    allowed = runner.invoke(main, [*args, "--allow-reapply"])
    assert allowed.exit_code == 1, allowed.output


def test_run_is_recorded_in_the_ledger(store, tmp_path):
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r", dry_run=True)
    with open_store(store, read_only=True) as con:
        runs = con.execute("SELECT run_id, dry_run, rows FROM runs").fetchall()
        files = con.execute(
            "SELECT path, sha256 FROM run_files WHERE run_id = ? ORDER BY position", [result.run_id]
        ).fetchall()
    assert runs == [(result.run_id, True, result.rows)]
    assert [sha for _, sha in files] == [f["sha256"] for f in result.files]


def test_file_level_error_refuses_the_whole_run(store, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("source,action,id_type,id_value,customer_id,colour\nINSTORE,add,email,a@b.co,1001,red\n")
    before = exported(store, tmp_path / "before")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--reports",
            str(tmp_path / "r"),
            str(REQUESTS[0]),
            str(bad),
        ],
    )
    assert result.exit_code == 3
    assert "bad.csv" in result.output and "colour" in result.output
    assert exported(store, tmp_path / "after") == before


def test_formula_cells_are_neutralised(store, tmp_path):
    requests = tmp_path / "formula.csv"
    requests.write_text(
        "row_id,customer_id,source,action,id_type,id_value\n=HYPERLINK(1),1001,INSTORE,add,email,@bad\n"
    )
    run_batch(store, ORG, [requests], tmp_path / "r")
    errors = read_report(tmp_path / "r", "errors.csv")
    assert errors["row_id"].to_list() == ["'=HYPERLINK(1)"]
    assert errors["id_value"].to_list() == ["'@bad"]


def test_missing_config_or_store_exit_codes(store, tmp_path):
    runner = CliRunner()
    no_config = runner.invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(tmp_path / "none.toml"),
            "--reports",
            str(tmp_path / "r"),
            str(REQUESTS[0]),
        ],
    )
    assert no_config.exit_code == 2
    no_store = runner.invoke(
        main,
        [
            "run",
            "--store",
            str(tmp_path / "none.duckdb"),
            "--config",
            str(ORG),
            "--reports",
            str(tmp_path / "r"),
            str(REQUESTS[0]),
        ],
    )
    assert no_store.exit_code == 3 and "no store" in no_store.output


def test_a_busy_store_is_refused(store, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(60)",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(
            main,
            ["run", "--store", str(store), "--config", str(ORG), "--reports", str(tmp_path / "r"), str(REQUESTS[0])],
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 3
    assert "in use" in result.output and "nothing was applied" in result.output


def test_installed_command_runs_end_to_end(store, tmp_path):
    exe = Path(sys.executable).parent / "loyalty-bulk"
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(exe),
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--reports",
            str(tmp_path / "r"),
            *map(str, REQUESTS),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr  # the sample requests include failing rows on purpose
    assert "reports:" in done.stdout and (tmp_path / "r" / "summary.json").exists()
    assert time.perf_counter() - started < 60


def test_parquet_copies_keep_raw_values(store, tmp_path):
    requests = tmp_path / "formula.csv"
    requests.write_text(
        "row_id,customer_id,source,action,id_type,id_value\n"
        "=HYPERLINK(1),1001,INSTORE,add,email,@bad\n"
        "ok-1,1024,INSTORE,add,externalId,EXT-NEW-1\n"
    )
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--parquet",
            "--reports",
            str(tmp_path / "r"),
            str(requests),
        ],
    )
    assert result.exit_code == 1, result.output
    errors = pl.read_parquet(tmp_path / "r" / "errors.parquet")
    assert errors["row_id"].to_list() == ["=HYPERLINK(1)"]
    success = pl.read_parquet(tmp_path / "r" / "success.parquet")
    assert success["id_value"].to_list() == ["EXT-NEW-1"]
    assert pl.read_parquet(tmp_path / "r" / "merges.parquet").height == 0


def test_error_threshold_aborts_and_applies_nothing(store, tmp_path):
    before = exported(store, tmp_path / "before")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--max-errors",
            "3",
            "--reports",
            str(tmp_path / "r"),
            *map(str, REQUESTS),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "ABORTED" in result.output and "max_errors = 3" in result.output
    assert exported(store, tmp_path / "after") == before
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["aborted"] is True and summary["exit_code"] == 3
    assert summary["store_after"] == summary["store_before"]
    assert (tmp_path / "r" / "errors.csv").exists() and (tmp_path / "r" / "success.csv").exists()
    # an aborted run did not apply its files, so running them again is not a reapply
    again = run_batch(store, ORG, REQUESTS, tmp_path / "again")
    assert again.exit_code == 1


def test_error_rate_threshold(store, tmp_path):
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r", max_error_rate=0.10)
    assert result.exit_code == 3
    assert result.aborted is not None and result.aborted.startswith("error rate")
    ok = run_batch(store, ORG, REQUESTS, tmp_path / "r2", max_error_rate=0.99, dry_run=True)
    assert ok.exit_code == 1 and ok.aborted is None


def test_memory_limit_and_threads_reach_duckdb(store, tmp_path, monkeypatch):
    import pipeline.run as run_module
    from pipeline.store.connect import open_store as real_open

    seen = {}

    def spying_open(path, **kwargs):
        con = real_open(path, **kwargs)
        seen["memory_limit"] = scalar(con, "SELECT current_setting('memory_limit')")
        seen["threads"] = scalar(con, "SELECT current_setting('threads')")
        return con

    monkeypatch.setattr(run_module, "open_store", spying_open)
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(ORG),
            "--dry-run",
            "--memory-limit",
            "1GB",
            "--threads",
            "1",
            "--reports",
            str(tmp_path / "r"),
            str(REQUESTS[0]),
        ],
    )
    assert result.exit_code == 1, result.output
    assert seen["threads"] == 1 and seen["memory_limit"].replace(" ", "").upper().startswith(("953", "1.0", "1G"))


def test_workers_reach_the_replay_from_flag_environment_or_core_count(store, tmp_path, monkeypatch):
    import pipeline.engine.batch as batch_module
    from pipeline.engine.components import core_count
    from pipeline.engine.components import replay_pool as real_pool

    seen = []

    def spying_pool(workers, *sizes):
        seen.append(workers)
        return real_pool(workers, *sizes)

    monkeypatch.setattr(batch_module, "replay_pool", spying_pool)
    monkeypatch.delenv("LOYALTY_BULK_WORKERS", raising=False)
    command = ["run", "--store", str(store), "--config", str(ORG), "--dry-run", "--reports", str(tmp_path / "r")]
    for extra, env in (([], None), ([], "3"), (["--workers", "2"], "3")):
        if env:
            monkeypatch.setenv("LOYALTY_BULK_WORKERS", env)
        result = CliRunner().invoke(main, [*command, *extra, str(REQUESTS[0])])
        assert result.exit_code == 1, result.output
    assert seen == [core_count(), 3, 2]


@pytest.mark.parametrize("failing", ["errors.csv", "calls.ndjson"])
def test_reports_that_cannot_be_written_leave_the_run_unapplied(store, tmp_path, monkeypatch, failing):
    """The large reports are staged inside the transaction: a report that fails to write stops the commit.

    calls.ndjson is staged first: when it fails nothing else is written; when errors.csv fails, calls.ndjson
    and success.csv, already staged, are removed."""
    before = exported(store, tmp_path / "before")
    written: list[Path] = []

    def failing_stage(real):
        def stage(frame, path):
            if Path(path).name == failing:
                raise OSError(28, "No space left on device")
            staged = real(frame, path)
            written.append(staged.temporary)
            return staged

        return stage

    monkeypatch.setattr("pipeline.reports.stager.stage_csv", failing_stage(report.stage_csv))
    monkeypatch.setattr("pipeline.reports.stager.stage_lines", failing_stage(report.stage_lines))
    with pytest.raises(StageFailed, match=r"the commit stage failed: OSError: .*No space left.*; nothing was applied"):
        run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert exported(store, tmp_path / "after") == before, "the store changed although its reports failed"
    with open_store(store, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs") == 0
    assert len(written) == (0 if failing == "calls.ndjson" else 2)
    assert not any(p.exists() for p in written), "staged reports were left behind"
    assert not (tmp_path / "r").exists(), "the reports folder the run made was left behind"

    monkeypatch.undo()
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        ["calls.ndjson", "success.csv", "errors.csv", "merges.csv", "summary.json", "summary.html"]
    ), "a published report folder holds the reports and nothing staged"
    assert result.rows == sum(f["rows"] for f in result.files)


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("target", "stage"),
    [("pipeline.run.build_reports", "report"), ("pipeline.run.commit_changes", "apply")],
)
def test_a_stage_failure_names_the_stage_and_changes_nothing(store, tmp_path, monkeypatch, target, stage):
    before = exported(store, tmp_path / "before")
    monkeypatch.setattr(target, _boom)
    with pytest.raises(StageFailed, match=rf"^the {stage} stage failed: RuntimeError: boom; nothing was applied$"):
        run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert exported(store, tmp_path / "after") == before
    with open_store(store, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs") == 0
    assert not (tmp_path / "r").exists(), "the reports folder the run made was left behind"


def test_a_failure_after_the_commit_says_the_run_was_applied(store, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.run.write_summary_html", _boom)
    with pytest.raises(StageFailed, match=r"^the report stage failed: .*; the run was applied; its reports in .*"):
        run_batch(store, ORG, REQUESTS, tmp_path / "r")
    with open_store(store, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs WHERE NOT dry_run") == 1
    assert (tmp_path / "r" / "success.csv").exists(), "the reports staged before the failure are published"
