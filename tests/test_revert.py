"""revert: export, run, revert, export again gives identical files; refused when a later run touched the same things."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import ORG, REQUESTS, exported
from pipeline.cli import main
from pipeline.run import run_batch
from pipeline.store.connect import open_store
from pipeline.store.invariants import find_invariant_violations
from pipeline.store.snapshot import init_store
from pipeline.tools.sample import generate_sample


def test_revert_restores_the_store_exactly(store, tmp_path):
    before = exported(store, tmp_path / "before")
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert result.merges == 1 and exported(store, tmp_path / "after") != before
    reverted = CliRunner().invoke(main, ["revert", "--store", str(store), result.run_id])
    assert reverted.exit_code == 0, reverted.output
    assert f"reverted run {result.run_id}" in reverted.output
    assert exported(store, tmp_path / "reverted") == before
    with open_store(store, read_only=True) as con:
        assert find_invariant_violations(con).height == 0
        assert con.execute("SELECT reverted_by IS NOT NULL FROM runs WHERE run_id = ?", [result.run_id]).fetchone() == (
            True,
        )
    again = CliRunner().invoke(main, ["revert", "--store", str(store), result.run_id])
    assert again.exit_code == 3 and "already reverted" in again.output
    # a reverted file is no longer 'already applied'
    assert run_batch(store, ORG, REQUESTS, tmp_path / "r2").exit_code == 1


def test_revert_on_a_generated_batch_with_merges_and_moves(tmp_path):
    generate_sample(tmp_path / "s", customers=2000, rows=4000, seed=5)
    store = tmp_path / "s.duckdb"
    init_store(store, tmp_path / "s" / "snapshot")
    before = exported(store, tmp_path / "before")
    result = run_batch(store, tmp_path / "s" / "org.toml", [tmp_path / "s" / "requests.csv"], tmp_path / "r")
    assert result.merges > 0
    assert CliRunner().invoke(main, ["revert", "--store", str(store), result.run_id]).exit_code == 0
    assert exported(store, tmp_path / "reverted") == before


def test_revert_refused_when_a_later_run_touched_the_same_customer(store, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text("customer_id,source,action,id_type,id_value\n1024,INSTORE,add,externalId,EXT-R1\n")
    second = tmp_path / "second.csv"
    second.write_text("customer_id,source,action,id_type,id_value\n1024,FACEBOOK,add,fbId,fb-r2\n")
    unrelated = tmp_path / "unrelated.csv"
    unrelated.write_text("customer_id,source,action,id_type,id_value\n1030,INSTORE,add,externalId,EXT-R3\n")
    one = run_batch(store, ORG, [first], tmp_path / "r1")
    run_batch(store, ORG, [unrelated], tmp_path / "r3")
    two = run_batch(store, ORG, [second], tmp_path / "r2")
    before = exported(store, tmp_path / "before")
    refused = CliRunner().invoke(main, ["revert", "--store", str(store), one.run_id])
    assert refused.exit_code == 3
    assert two.run_id in refused.output and "nothing was changed" in refused.output
    assert exported(store, tmp_path / "after") == before
    # reverting the later run first makes the earlier one revertible again
    assert CliRunner().invoke(main, ["revert", "--store", str(store), two.run_id]).exit_code == 0
    assert CliRunner().invoke(main, ["revert", "--store", str(store), one.run_id]).exit_code == 0


def test_dry_runs_and_unknown_runs_cannot_be_reverted(store, tmp_path):
    dry = run_batch(store, ORG, REQUESTS, tmp_path / "r", dry_run=True)
    result = CliRunner().invoke(main, ["revert", "--store", str(store), dry.run_id])
    assert result.exit_code == 3 and "nothing to revert" in result.output
    result = CliRunner().invoke(main, ["revert", "--store", str(store), "no-such-run"])
    assert result.exit_code == 3 and "no run no-such-run" in result.output
