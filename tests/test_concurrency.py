"""Two real `loyalty-bulk run` processes started together on one store: one applies and the other is
refused cleanly (exit 3, "in use"), or, when one finished before the other opened the store, both apply
one after the other. Never both at once, never interleaved: the final store always equals applying the
runs that applied one after the other, in the order the ledger recorded them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline.audit import audit_store
from pipeline.run import run_batch
from pipeline.store import export_store, init_store

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "sample_data" / "org.toml"
EXE = Path(sys.executable).parent / "loyalty-bulk"
FILES = {
    "identifiers": ROOT / "sample_data" / "requests" / "01_identifiers.csv",
    "cards": ROOT / "sample_data" / "requests" / "02_cards.csv",
}
REPEATS = 4


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("concurrency") / "base.duckdb"
    init_store(path, ROOT / "sample_data" / "snapshot")
    return path


def exported(store: Path, out: Path) -> dict[str, bytes]:
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def applied_in_order(store: Path) -> list[str]:
    """The request files of the real runs that applied, in the order the ledger recorded them."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        rows = con.execute(
            """SELECT f.path FROM runs r JOIN run_files f USING (run_id)
               WHERE NOT r.dry_run AND r.exit_code IN (0, 1) ORDER BY r.rowid, f.position"""
        ).fetchall()
    finally:
        con.close()
    return [path for (path,) in rows]


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_two_runs_started_together_never_interleave(base_store, tmp_path, attempt):
    store = tmp_path / "store.duckdb"
    shutil.copy(base_store, store)
    names = list(FILES) if attempt % 2 == 0 else list(reversed(FILES))
    procs = {
        name: subprocess.Popen(
            [
                str(EXE),
                "run",
                "--store",
                str(store),
                "--config",
                str(ORG),
                "--reports",
                str(tmp_path / name),
                str(FILES[name]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    done = {name: (proc.wait(timeout=120), *proc.communicate()) for name, proc in procs.items()}

    for name, (code, out, err) in done.items():
        assert code in (0, 1, 3), f"{name}: exit {code}\n{out}\n{err}"
        if code == 3:
            assert "in use" in err and "nothing was applied" in err, err
            assert not (tmp_path / name).exists(), "a refused run writes no reports"
    applied = [name for name, (code, _, _) in done.items() if code in (0, 1)]
    assert applied, "at least one of the two runs applied"

    order = applied_in_order(store)
    assert sorted(order) == sorted(str(FILES[name]) for name in applied), "the ledger shows the runs that applied"
    reference = tmp_path / "reference.duckdb"
    shutil.copy(base_store, reference)
    for step, path in enumerate(order):
        run_batch(reference, ORG, [path], tmp_path / f"reference-{step}")
    assert exported(store, tmp_path / "final") == exported(reference, tmp_path / "expected"), (
        "the store equals applying the runs one after the other"
    )
    assert audit_store(store, ORG, report_path=tmp_path / "audit.csv").exit_code == 0
