"""Crash safety (SPEC section 5): a real `loyalty-bulk run` killed with SIGKILL at any moment leaves the
store exactly as it was before the run or as it is after it, never between; the store still passes
`store audit`; and running again reaches the same final store as an uninterrupted run.

One generated store (big enough for a run of a few seconds) is built per test module; each kill
point runs on its own copy. Every point of the run's fault hook (pipeline/faults.py: after the check,
after deciding, inside the open transaction, during the COMMIT, after it, while closing checkpoints the
WAL) kills the run deterministically, and the test asserts the hook was reached and the store is the
one that point must leave. Kills spread by time over the whole measured run come on top.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from pipeline.errors import StoreError
from pipeline.faults import ENV_KILL_AT, RUN_POINTS
from pipeline.run import run_batch
from pipeline.store.audit import audit_store
from pipeline.store.duck import scalar
from pipeline.store.snapshot import export_store, init_store
from pipeline.tools.sample import generate_sample

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "loyalty-bulk"
CUSTOMERS = ROWS = 20_000
SEED = 20261126
TIME_FRACTIONS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85)
"""Kill times as fractions of a run's wall time (process start to exit). Machines are noisy: when a run
finishes before its kill time, the point is tried again, earlier, scaled to that run's own time."""
ATTEMPTS = 3


@dataclass(frozen=True)
class CrashEnv:
    """What every kill point compares against: the store before the run, and after an uninterrupted one."""

    folder: Path
    base_store: Path
    config: Path
    requests: Path
    before: dict[str, bytes]
    after: dict[str, bytes]
    run_seconds: float
    store_bytes: int


def exported(store: Path, out: Path) -> dict[str, bytes]:
    """The store's content as CSV bytes per table (export sorts by key, so equal content is equal bytes)."""
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def start_run(store: Path, env: CrashEnv, reports: Path, kill_at: str | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != ENV_KILL_AT}
    if kill_at is not None:
        environment[ENV_KILL_AT] = kill_at
    return subprocess.Popen(
        [
            str(EXE),
            "run",
            "--verbose",
            "--store",
            str(store),
            "--config",
            str(env.config),
            "--reports",
            str(reports),
            str(env.requests),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


class StageWatcher:
    """Reads a run's stderr in a thread and remembers which stages said "<stage> done"."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.stages: set[str] = set()
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None  # started with stderr=PIPE
        for line in proc.stderr:
            self.lines.append(line)
            if line.endswith(" s\n") and " done in " in line:
                self.stages.add(line.split(" done in ", 1)[0])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> CrashEnv:
    folder = tmp_path_factory.mktemp("crash")
    info = generate_sample(folder / "sample", customers=CUSTOMERS, rows=ROWS, seed=SEED)
    base = folder / "base.duckdb"
    init_store(base, info.snapshot_dir)
    before = exported(base, folder / "before")
    reference = folder / "reference.duckdb"
    shutil.copy(base, reference)
    partial = CrashEnv(folder, base, info.config_path, info.requests_path, before, {}, 0.0, base.stat().st_size)
    started = time.perf_counter()
    proc = start_run(reference, partial, folder / "reference-reports")
    watcher = StageWatcher(proc)
    proc.wait(timeout=120)
    seconds = time.perf_counter() - started
    watcher.thread.join(timeout=10)
    assert proc.returncode == 1, "".join(watcher.lines)  # the sample's batch has failing rows by design
    assert {"check", "decide", "apply"} <= watcher.stages, "run --verbose names its stages as they end"
    after = exported(reference, folder / "after")
    assert after != before, "the reference run must change the store, or a kill could not be told apart"
    return CrashEnv(folder, base, info.config_path, info.requests_path, before, after, seconds, base.stat().st_size)


HOOK_POINTS = {
    "after-check": "before",
    "after-decide": "before",
    "in-transaction": "before",
    "during-commit": "either",
    "after-commit": "after",
    "during-checkpoint": "after",
}
"""Each point of the run's fault hook (pipeline/faults.py) and the store a kill there must leave."""
assert tuple(HOOK_POINTS) == RUN_POINTS, "every hook point of the run is tested, in the run's order"

KILL_POINTS = [f"at {f:.0%} of the run" for f in TIME_FRACTIONS] + list(HOOK_POINTS)


def kill_at(store: Path, env: CrashEnv, reports: Path, point: str, run_seconds: float) -> tuple[bool, float]:
    """Start a run and have it SIGKILLed at the kill point; (killed, seconds).

    A hook point makes the run kill itself there, and must be reached. A time point is a SIGKILL
    from here after a fraction of the run's time; killed is False if the run had finished first.
    """
    hooked = point in HOOK_POINTS
    deadline = run_seconds * TIME_FRACTIONS[KILL_POINTS.index(point)] if not hooked else None
    started = time.perf_counter()
    proc = start_run(store, env, reports, kill_at=point if hooked else None)
    watcher = StageWatcher(proc)
    try:
        while proc.poll() is None:
            if deadline is not None and time.perf_counter() - started >= deadline:
                os.kill(proc.pid, signal.SIGKILL)
                break
            if time.perf_counter() - started > 4 * env.run_seconds + 30:
                pytest.fail(f"the run neither finished nor reached the kill point '{point}'")
            time.sleep(0.0005)
        proc.wait(timeout=60)
        watcher.thread.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    if hooked:
        assert killed, f"the run was not killed at {point}: exit {proc.returncode}\n{''.join(watcher.lines)}"
        assert f"fault hook: SIGKILL at {point}\n" in watcher.lines, "the hook, not something else, killed it"
    else:
        assert killed or proc.returncode == 1, "".join(watcher.lines)
    return killed, time.perf_counter() - started


def committed_runs(store: Path) -> int:
    """Real runs the store's ledger says committed (none when the ledger was never created)."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "runs" not in tables:
            return 0
        return scalar(con, "SELECT count(*) FROM runs WHERE NOT dry_run AND exit_code IN (0, 1)")
    finally:
        con.close()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_leaves_the_store_before_or_after_the_run(env, tmp_path, point):
    store = tmp_path / "store.duckdb"
    shutil.copy(env.base_store, store)
    reports = tmp_path / "killed-reports"
    killed, seconds = kill_at(store, env, reports, point, env.run_seconds)
    for _ in range(ATTEMPTS - 1):
        if killed:
            break
        shutil.copy(env.base_store, store)
        shutil.rmtree(reports, ignore_errors=True)
        killed, seconds = kill_at(store, env, reports, point, 0.85 * seconds)
    assert killed, f"the run finished before {point} {ATTEMPTS} times (last {seconds:.2f} s)"

    state = exported(store, tmp_path / "killed")
    assert state in (env.before, env.after), f"killed {point}: the store is neither its pre-run nor post-run content"
    expected = HOOK_POINTS.get(point, "either")
    if expected != "either":
        assert state == (env.before if expected == "before" else env.after), f"killed {point}: store not {expected}"
    print(
        f"{point}: {'killed' if killed else 'finished'} after {seconds:.2f} s of {env.run_seconds:.2f} s, "
        f"store {'post-run' if state == env.after else 'pre-run'}"
    )
    audit = audit_store(store, env.config, report_path=tmp_path / "audit.csv")
    assert audit.exit_code == 0, audit.render()

    if state == env.after:
        assert committed_runs(store) == 1, "a store with the run's changes must show the run in its ledger"
        with pytest.raises(StoreError, match="already applied"):
            run_batch(store, env.config, [env.requests], tmp_path / "again")
    else:
        assert committed_runs(store) == 0, "a store without the run's changes must not show it as applied"
        result = run_batch(store, env.config, [env.requests], tmp_path / "rerun")
        assert result.exit_code == 1, "the sample's batch has failing rows by design"
        assert exported(store, tmp_path / "final") == env.after
