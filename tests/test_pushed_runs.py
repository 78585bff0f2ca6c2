"""What reached the platform, in the store: a push recorded beside its run, `runs` listing it, and `revert` of a
pushed run refused unless --local-only or --compensate, whose calls undo it on the (emulated) platform."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ORG, REQUESTS, exported
from emulator_harness import CLI, running_emulator
from pipeline.cli import main
from pipeline.delivery.compensate import revert_and_compensate
from pipeline.errors import StoreError
from pipeline.lineage.revert import revert_run
from pipeline.run import run_batch
from pipeline.store.history import list_runs
from pipeline.store.pushes import record_push

CREDENTIALS = {"LOYALTY_BULK_API_USER": "tester", "LOYALTY_BULK_API_PASSWORD": "not-a-secret"}


def fake_push(reports: Path, **outcomes: int) -> None:
    """A push-summary.json as a push leaves it (its outcome counts), for the store to pick up."""
    counts = {"confirmed": 0, "already_applied": 0, "drift": 0, "blocked": 0, "failed": 0} | outcomes
    (reports / "push-summary.json").write_text(json.dumps({"outcomes": counts, "api": "http://127.0.0.1:1"}))


def test_runs_lists_the_ledger_newest_first_with_pushes_and_reverts(store, tmp_path):
    first = run_batch(store, ORG, [REQUESTS[0]], tmp_path / "one")
    second = run_batch(store, ORG, [REQUESTS[1]], tmp_path / "two")
    fake_push(tmp_path / "one", confirmed=first.calls)
    listing = list_runs(store)
    assert [e.run_id for e in listing.entries] == [second.run_id, first.run_id]
    assert listing.entries[1].push is not None and listing.entries[1].push.reached == first.calls
    assert listing.entries[0].push is None and listing.entries[1].outcomes["applied"] == first.outcomes["applied"]
    revert_run(store, second.run_id, "U1")
    shown = CliRunner().invoke(main, ["runs", "--store", str(store), "--json"])
    assert shown.exit_code == 0, shown.output
    runs = json.loads(shown.output)["runs"]
    assert [(r["run_id"], r["kind"], r["reverted_by"]) for r in runs] == [
        ("U1", "revert", None),
        (second.run_id, "run", "U1"),
        (first.run_id, "run", None),
    ]
    assert runs[2]["pushed"]["reached"] == first.calls and runs[2]["files"] == [str(REQUESTS[0])]
    text = CliRunner().invoke(main, ["runs", "--store", str(store)]).output
    assert "pushed " in text and "reverted by U1" in text and "revert of " + second.run_id in text


def test_a_pushed_run_is_reverted_only_with_local_only_or_compensate(store, tmp_path):
    ran = run_batch(store, ORG, [REQUESTS[0]], tmp_path / "r")
    fake_push(tmp_path / "r", confirmed=ran.calls)
    before = exported(store, tmp_path / "before")
    with pytest.raises(StoreError, match=r"reached the platform .*--local-only.*--compensate"):
        revert_run(store, ran.run_id, "U1")
    assert exported(store, tmp_path / "after") == before
    result = revert_run(store, ran.run_id, "U1", local_only=True)
    assert "the store now differs from the platform" in result.render()
    listed = {e.run_id: e for e in list_runs(store).entries}
    assert listed["U1"].kind == "revert"


def test_a_pushed_merge_is_reverted_local_only_and_listed(store, tmp_path):
    ran = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert ran.merges > 0
    fake_push(tmp_path / "r", confirmed=ran.calls)
    with pytest.raises(StoreError, match=r"merged customers \(.* into .*\); a merge cannot be undone"):
        revert_and_compensate(store, ran.run_id, "U1", ORG, tmp_path / "u")
    assert not (tmp_path / "u" / "revert-calls.ndjson").exists()
    assert revert_run(store, ran.run_id, "U1", local_only=True).reverted_run_id == ran.run_id


def test_a_push_records_itself_in_the_run_s_store(store, tmp_path):
    ran = run_batch(store, ORG, [REQUESTS[0]], tmp_path / "r")
    fake_push(tmp_path / "r", confirmed=ran.calls)
    assert record_push(tmp_path / "r").startswith("push counts recorded in the store")
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "r", moved)  # the folder is gone: the ledger still knows the push
    assert list_runs(store).entries[0].push is not None


@pytest.mark.slow
def test_run_push_revert_compensate_push_leaves_the_platform_as_the_reverted_store(store, tmp_path):
    """The issue's end-to-end: a run without merges pushed to the emulator, reverted with --compensate, and its
    compensating calls pushed: the emulated platform equals the reverted store."""
    platform = tmp_path / "platform.duckdb"
    shutil.copy(store, platform)
    requests = tmp_path / "no-merge.csv"
    rows = pl.read_csv(REQUESTS[0], infer_schema=False)
    rows.filter(~pl.col("row_id").str.contains("merge")).write_csv(requests)
    ran = run_batch(store, ORG, [requests], tmp_path / "r")
    assert ran.merges == 0 and ran.calls > 0
    env = CREDENTIALS
    with running_emulator(platform, ORG, env=env) as url:
        push = [CLI, "push", "--config", str(ORG), "--api", url, "--rate", "60000"]
        first = subprocess.run([*push, str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        refused = CliRunner().invoke(main, ["revert", "--store", str(store), ran.run_id])
        assert refused.exit_code == 3 and "--compensate" in refused.output
        undo = CliRunner().invoke(
            main,
            ["revert", "--store", str(store), ran.run_id, "--compensate", "--config", str(ORG), "--reports",
             str(tmp_path / "u")],
        )  # fmt: skip
        assert undo.exit_code == 0, undo.output
        second = subprocess.run([*push, str(tmp_path / "u")], capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
    assert exported(platform, tmp_path / "platform") == exported(store, tmp_path / "store")
