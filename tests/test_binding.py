"""The org boundary: a store refuses runs under another org config until the change is recorded."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from conftest import ORG, ROOT
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.store.connect import open_store
from pipeline.store.duck import scalar
from pipeline.store.snapshot import init_store

REQUEST = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))[0]


def other_config(tmp_path: Path, comment_only: bool = False) -> Path:
    text = ORG.read_text()
    text = (
        ("# edited\n" + text)
        if comment_only
        else text.replace("max_merges_per_survivor_per_run = 10", "max_merges_per_survivor_per_run = 5")
    )
    path = tmp_path / ("org_comment.toml" if comment_only else "org_other.toml")
    path.write_text(text)
    return path


def run(store: Path, config: Path, reports: Path, *extra: str):
    return CliRunner().invoke(
        main,
        [
            "run",
            "--store",
            str(store),
            "--config",
            str(config),
            "--reports",
            str(reports),
            "--allow-reapply",
            *extra,
            str(REQUEST),
        ],
    )


def test_first_run_binds_and_another_config_is_refused(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    assert run(store, other_config(tmp_path), tmp_path / "dry", "--dry-run").exit_code == 1  # dry runs do not bind
    assert run(store, ORG, tmp_path / "r1").exit_code == 1
    refused = run(store, other_config(tmp_path), tmp_path / "r2")
    assert refused.exit_code == 3
    assert "belongs to org config" in refused.output and "store set-config" in refused.output
    assert "nothing was applied" in refused.output
    # a comment is not a change of config
    assert run(store, other_config(tmp_path, comment_only=True), tmp_path / "r3").exit_code == 1
    changed = CliRunner().invoke(main, ["store", "set-config", str(store), "--config", str(other_config(tmp_path))])
    assert changed.exit_code == 0, changed.output
    assert run(store, other_config(tmp_path), tmp_path / "r4").exit_code == 1
    assert run(store, ORG, tmp_path / "r5").exit_code == 3
    with open_store(store, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs WHERE job = 'set-config'") == 1


def test_store_init_with_config_binds_at_once(tmp_path):
    store = tmp_path / "s.duckdb"
    result = CliRunner().invoke(
        main, ["store", "init", str(store), "--snapshot", str(ROOT / "sample_data" / "snapshot"), "--config", str(ORG)]
    )
    assert result.exit_code == 0, result.output
    with open_store(store, read_only=True) as con:
        identity = scalar(con, "SELECT value FROM store_meta WHERE key = 'org_config_identity'")
    assert identity == load_config(ORG).identity
    assert run(store, other_config(tmp_path), tmp_path / "r", "--dry-run").exit_code == 3
