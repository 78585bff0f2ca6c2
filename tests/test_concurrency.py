"""Two real `loyalty-bulk run` processes on one store never apply at once.

Forced overlap: the first run is held by the fault hook (pipeline/faults.py) inside its open
transaction, so the second certainly finds the store in use: it is refused cleanly (exit 3, "in
use", no reports) every time, and the store ends as the first run alone left it. Free-running: two
runs started together either refuse one or apply one after the other, never interleaved: the final
store equals applying the runs that applied one after the other, in the order the ledger recorded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipeline.faults import ENV_HOLD_AT, ENV_HOLD_UNTIL
from pipeline.run import run_batch
from pipeline.store.audit import audit_store
from pipeline.store.snapshot import export_store, init_store

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"
EXE = Path(sys.executable).parent / "loyalty-bulk"
FILES = {
    "identifiers": ROOT / "sample_data" / "requests" / "01_identifiers.csv",
    "cards": ROOT / "sample_data" / "requests" / "02_cards.csv",
}
REPEATS = 2
EXIT_SOME_ROWS_FAILED = 1
"""Both sample request files hold failing rows on purpose."""


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


def run_command(store: Path, reports: Path, request: Path) -> list[str]:
    return [str(EXE), "run", "--store", str(store), "--config", str(ORG), "--reports", str(reports), str(request)]


def test_a_run_is_refused_while_another_holds_the_store(base_store, tmp_path):
    store = tmp_path / "store.duckdb"
    shutil.copy(base_store, store)
    release = tmp_path / "release"
    held_env = {**os.environ, ENV_HOLD_AT: "in-transaction", ENV_HOLD_UNTIL: str(release)}
    first = subprocess.Popen(
        run_command(store, tmp_path / "first", FILES["identifiers"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=held_env,
    )
    try:
        assert first.stderr is not None
        assert first.stderr.readline() == "fault hook: holding at in-transaction\n"
        second = subprocess.run(
            run_command(store, tmp_path / "second", FILES["cards"]), capture_output=True, text=True, timeout=120
        )
    finally:
        release.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == EXIT_SOME_ROWS_FAILED, f"{out}\n{err}"
    assert second.returncode == 3, f"{second.stdout}\n{second.stderr}"
    assert "in use" in second.stderr and "nothing was applied" in second.stderr, second.stderr
    assert not (tmp_path / "second").exists(), "a refused run writes no reports"
    assert applied_in_order(store) == [str(FILES["identifiers"])], "only the first run applied"

    reference = tmp_path / "reference.duckdb"
    shutil.copy(base_store, reference)
    run_batch(reference, ORG, [FILES["identifiers"]], tmp_path / "reference")
    assert exported(store, tmp_path / "final") == exported(reference, tmp_path / "expected")
    assert audit_store(store, ORG, report_path=tmp_path / "audit.csv").exit_code == 0


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_two_runs_started_together_never_interleave(base_store, tmp_path, attempt):
    store = tmp_path / "store.duckdb"
    shutil.copy(base_store, store)
    names = list(FILES) if attempt % 2 == 0 else list(reversed(FILES))
    procs = {
        name: subprocess.Popen(
            run_command(store, tmp_path / name, FILES[name]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    done = {name: (proc.wait(timeout=120), *proc.communicate()) for name, proc in procs.items()}

    for name, (code, out, err) in done.items():
        assert code in (EXIT_SOME_ROWS_FAILED, 3), f"{name}: exit {code}\n{out}\n{err}"
        if code == 3:
            assert "in use" in err and "nothing was applied" in err, err
            assert not (tmp_path / name).exists(), "a refused run writes no reports"
    applied = [name for name, (code, _, _) in done.items() if code == EXIT_SOME_ROWS_FAILED]
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
