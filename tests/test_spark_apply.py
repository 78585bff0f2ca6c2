"""Applying on Spark against the DuckDB engine: real runs, their lock, kills at every point, a server killed
mid-run, reverts and refreshes, and runs and explain on a Delta store; after each, the store the DuckDB engine
leaves (SPEC section 10, docs/spark.md "A real run: all or nothing").

Split from test_spark_engine.py (the dry runs), so that the two modules run on the two workers side by side.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REQUESTS, ROOT, SAMPLE_SNAPSHOT, exported
from pipeline.errors import StoreBusy, StoreError
from pipeline.faults import ENV_HOLD_AT, ENV_HOLD_UNTIL, ENV_KILL_AT, SPARK_POINTS
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.job import job_layout, load_job
from pipeline.lineage.revert import revert_run
from pipeline.refresh import refresh_store
from pipeline.run import RunOptions, run_batch
from pipeline.spark.delta import DeltaStore
from pipeline.spark.publish import acquire, change_whole, open_store, release, scratch_folder
from pipeline.spark.run import run_on_spark
from pipeline.spark.upkeep import compact_store
from test_engine_properties import BASE_CONFIG, request_rows, stores
from test_spark_engine import ORG, REPORTS, _cell, _cli, _delta_export, _snapshot, _toml, both_engines, comparable


def test_real_runs_on_spark_leave_the_store_the_duckdb_engine_leaves(spark, tmp_path):
    """Each sample request file as a run of its own, then the wide job: after each, the same reports, the same store
    (export), the same ledger; a file applied twice is refused alike."""
    duck, delta = both_engines(spark, tmp_path, ROOT / "sample_data" / "next_night", ORG)
    wide = load_job(ROOT / "jobs" / "wide_customers.toml")
    steps = [([f], RunOptions()) for f in REQUESTS] + [
        (list(wide.inputs), RunOptions(layout=job_layout(wide, str(ORG)), job=wide.name))
    ]
    for i, (files, options) in enumerate(steps):
        on_duck = run_batch(duck, ORG, files, tmp_path / f"duck-{i}", options)
        # buckets of about 4 rows: each bucket applies its part and sends its changes back
        on_spark = run_on_spark(spark, delta, ORG, files, tmp_path / f"spark-{i}", options, rows_per_bucket=4)
        assert (on_spark.exit_code, on_spark.store_after) == (on_duck.exit_code, on_duck.store_after), i
        names = (str(duck.resolve()), on_spark.store)
        for report in REPORTS:
            assert comparable(tmp_path / f"spark-{i}", report, names) == comparable(
                tmp_path / f"duck-{i}", report, names
            ), f"step {i}: {report}"
        assert _delta_export(spark, delta, tmp_path / f"spark-export-{i}") == exported(
            duck, tmp_path / f"duck-export-{i}"
        )
    store = DeltaStore(spark, delta)
    ledger = store.arrow("runs").to_pylist()
    assert sorted(r["ordinal"] for r in ledger) == list(range(1, len(steps) + 1))
    assert not any(r["dry_run"] for r in ledger)
    assert store.arrow("provenance").num_rows > 0 and store.arrow("undo_identifiers").num_rows > 0
    for table in ("provenance", "undo_identifiers", "undo_cards", "undo_customers"):  # each bucket's record rows
        with duckdb.connect(str(duck), read_only=True) as con:
            duck_rows = con.sql(f"SELECT * EXCLUDE (run_id) FROM {table}").fetchall()
        delta_rows = store.read(table).drop("run_id").collect()
        assert sorted(repr(row) for row in duck_rows) == sorted(repr(tuple(row)) for row in delta_rows), table
    staged = Path(delta) / "_staged"
    assert store.arrow("lock").num_rows == 0, "the lock is released"
    assert not staged.exists() or not any(staged.iterdir()), "every staged run was rolled forward and removed"
    assert {r["state"] for r in store.arrow("commits").to_pylist()} == {"applied"}
    compacted = compact_store(store, "COMPACT-1", retain_hours=0)  # Sail has no OPTIMIZE: delta-rs does it
    assert compacted.by == "delta-rs"
    data_files = {t.table: (t.files_before or 0, t.files_after or 0) for t in compacted.tables}
    assert data_files["identifiers"][0] > 1 and data_files["identifiers"][1] == 1
    assert sum(after for _, after in data_files.values()) < sum(before for before, _ in data_files.values())
    assert _delta_export(spark, delta, tmp_path / "spark-compacted") == exported(duck, tmp_path / "duck-compacted")
    with pytest.raises(StoreError, match="already applied"):  # the ledger reads as before
        run_on_spark(spark, delta, ORG, [REQUESTS[0]], tmp_path / "again", RunOptions())
    again = RunOptions(allow_reapply=True)  # and a run writes on the compacted tables
    run_batch(duck, ORG, [REQUESTS[0]], tmp_path / "duck-after", again)
    run_on_spark(spark, delta, ORG, [REQUESTS[0]], tmp_path / "spark-after", again)
    assert _delta_export(spark, delta, tmp_path / "spark-after-e") == exported(duck, tmp_path / "duck-after-e")


def test_a_run_is_refused_while_another_holds_the_store(spark, tmp_path):
    _, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    store = DeltaStore(spark, delta)
    acquire(store, "R-elsewhere")
    other = store.read("lock").collect()[0]
    assert other["run_id"] == "R-elsewhere"
    # a lock of a live process (this one) is honoured; one of another machine would be too
    with pytest.raises(StoreBusy, match="in use by run R-elsewhere"):
        run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "reports", RunOptions())
    with pytest.raises(StoreBusy, match="in use by run R-elsewhere"):
        compact_store(store, "COMPACT-1")
    release(store, "R-elsewhere")
    assert run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "reports", RunOptions()).exit_code == 1


KILLS = [
    ("after-decide", False),  # the buckets decided and applied on the executors, nothing staged yet
    ("in-transaction", False),
    *((point, point != SPARK_POINTS[0]) for point in SPARK_POINTS),
]
"""Where a real run on Spark is killed, and whether the run is real at that point (its commit row written)."""
assert [point for point, _ in KILLS[2:]] == list(SPARK_POINTS), "every point of the Spark run's hook is killed at"


def test_scratch_left_by_a_dead_process_is_removed_and_a_live_one_kept(spark, tmp_path):
    """A run killed while its buckets were decided leaves its rows in STORE/_scratch/: the next command removes
    them once the process is gone from this machine, and never a live process's."""
    _, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = Path(delta) / "_scratch" / f"RUN-DEAD@{socket.gethostname()}:{gone.stdout.strip()}" / "rows"
    live = Path(delta) / scratch_folder("RUN-LIVE") / "rows"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"")
    open_store(DeltaStore(spark, delta))
    assert not dead.parent.exists() and live.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("point", "committed"), KILLS)
def test_a_run_killed_at_any_point_leaves_the_store_before_or_after_it(spark, spark_remote, tmp_path, point, committed):
    """SIGKILL of the client at a named point: the next command (an export) sees the store as it was before the run
    or, once the commit row is written, as the run leaves it (it finishes the run first); the rerun then reaches the
    uninterrupted result: it applies the run, or is refused as already applied."""
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    before = exported(duck, tmp_path / "before")
    run_batch(duck, ORG, REQUESTS, tmp_path / "duck-run")
    after = exported(duck, tmp_path / "after")
    args = ["run", "--engine", "spark", "--store", delta, "--config", str(ORG), "--reports"]
    remote = {"SPARK_REMOTE": spark_remote}
    killed = _cli(*args, str(tmp_path / "killed"), *map(str, REQUESTS), env=remote | {ENV_KILL_AT: point})
    assert killed.returncode == -9 and f"fault hook: SIGKILL at {point}" in killed.stderr, killed.stderr
    # the next command, `store export`, finishes a committed run before it reads
    seen = _cli("store", "export", delta, str(tmp_path / "seen"), "--format", "csv", "--engine", "spark", env=remote)
    assert seen.returncode == 0, seen.stderr
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "seen").iterdir())} == (after if committed else before)
    again = _cli(*args, str(tmp_path / "again"), *map(str, REQUESTS), env=remote)
    assert again.returncode == (3 if committed else 1), again.stdout + again.stderr
    assert _delta_export(spark, delta, tmp_path / "final") == after
    store = DeltaStore(spark, delta)
    assert store.arrow("lock").num_rows == 0
    assert sorted(r["ordinal"] for r in store.arrow("runs").to_pylist()) == [1]


@pytest.mark.slow
def test_revert_and_refresh_on_spark_equal_the_duckdb_engines(spark, spark_remote, tmp_path):
    """A run, its revert, the run again (its files as a new run), then a refresh to the next night's snapshot: after
    each, the Delta store exports what the DuckDB store exports; the refresh's changes.csv and not_on_platform.csv are
    the same bytes."""
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    first_duck = run_batch(duck, ORG, REQUESTS, tmp_path / "d1")
    first_spark = run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "s1", RunOptions(), rows_per_bucket=3)
    revert_run(duck, first_duck.run_id, "REVERT-D")
    change_whole(DeltaStore(spark, delta), "REVERT-S", lambda local: revert_run(local, first_spark.run_id, "REVERT-S"))
    assert _delta_export(spark, delta, tmp_path / "e1") == exported(duck, tmp_path / "f1")
    assert {r["run_id"]: r["reverted_by"] for r in DeltaStore(spark, delta).arrow("runs").to_pylist()} == {
        first_spark.run_id: "REVERT-S",
        "REVERT-S": None,
    }
    run_batch(duck, ORG, REQUESTS, tmp_path / "d2", allow_reapply=True)
    run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "s2", RunOptions(allow_reapply=True))
    assert _delta_export(spark, delta, tmp_path / "e2") == exported(duck, tmp_path / "f2")
    next_night = ROOT / "sample_data" / "next_night"
    log = Path(delta) / "identifiers" / "_delta_log"
    versions = sorted(log.iterdir())
    dry = change_whole(
        DeltaStore(spark, delta),
        "REFRESH-DRY",
        lambda local: refresh_store(
            local, next_night, "REFRESH-DRY", reports_dir=tmp_path / "dry", config_path=ORG, dry_run=True
        ),
    )
    assert dry.dry_run and dry.changed > 0  # it found changes, and wrote none
    assert sorted(log.iterdir()) == versions, "a dry refresh writes no version of the Delta store"
    assert "REFRESH-DRY" not in {r["run_id"] for r in DeltaStore(spark, delta).arrow("commits").to_pylist()}
    args = ["--snapshot", str(next_night), "--config", str(ORG), "--allow-removals", "--reports"]
    on_duck = _cli("store", "refresh", str(duck), *args, str(tmp_path / "rd"))
    on_spark = _cli(
        "store", "refresh", delta, *args, str(tmp_path / "rs"), "--engine", "spark", env={"SPARK_REMOTE": spark_remote}
    )
    assert on_spark.returncode == on_duck.returncode, on_spark.stderr
    for report in ("changes.csv", "not_on_platform.csv"):  # row_ids name each engine's own run ids
        assert comparable(tmp_path / "rs", report, ()) == comparable(tmp_path / "rd", report, ()), report
    assert (tmp_path / "rs" / "changes.csv").read_bytes() == (tmp_path / "rd" / "changes.csv").read_bytes()
    assert _delta_export(spark, delta, tmp_path / "e3") == exported(duck, tmp_path / "f3")
    store = DeltaStore(spark, delta)
    assert store.arrow("lock").num_rows == 0
    assert {r["state"] for r in store.arrow("commits").to_pylist()} == {"applied"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server(port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "loyalty-bulk"), "spark-server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().startswith("listening on sc://")
    return server


@pytest.mark.slow
@pytest.mark.parametrize("point", ["spark-after-stage", "spark-during-roll-forward"])
def test_a_run_outlives_its_server_killed_and_restarted(spark, spark_remote, tmp_path, point):
    """The run's Spark Connect server is killed (SIGKILL) while the run holds at a point (just before its commit row,
    or between two MERGEs of its roll-forward, after it) and started again on the same port: the Spark Connect
    client retries (for up to 10 minutes by default), the run goes on and ends as an uninterrupted run would, and
    a rerun of its files is refused as already applied."""
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    run_batch(duck, ORG, REQUESTS, tmp_path / "duck-run")
    after = exported(duck, tmp_path / "after")
    port = _free_port()
    server = _server(port)
    release_file = tmp_path / "release"
    args = ["run", "--engine", "spark", "--store", delta, "--config", str(ORG), "--reports"]
    environment = {**os.environ, "SPARK_REMOTE": f"sc://127.0.0.1:{port}"}
    client = subprocess.Popen(
        [str(Path(sys.executable).parent / "loyalty-bulk"), *args, str(tmp_path / "held"), *map(str, REQUESTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment | {ENV_HOLD_AT: point, ENV_HOLD_UNTIL: str(release_file)},
    )
    try:
        assert client.stderr is not None
        assert client.stderr.readline() == f"fault hook: holding at {point}\n"
        server.kill()
        server.wait()
        server = _server(port)
        release_file.touch()
        out, err = client.communicate(timeout=240)
    finally:
        server.kill()
        client.kill()
    assert client.returncode == 1 and out.startswith("applied with failures"), out + err
    assert _delta_export(spark, delta, tmp_path / "seen") == after
    again = _cli(*args, str(tmp_path / "again"), *map(str, REQUESTS), env={"SPARK_REMOTE": spark_remote})
    assert again.returncode == 3 and "already applied" in again.stderr, again.stdout + again.stderr
    assert DeltaStore(spark, delta).arrow("lock").num_rows == 0


@pytest.mark.slow
def test_runs_and_explain_read_a_delta_store_as_a_duckdb_one(spark, spark_remote, tmp_path):
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    run_batch(duck, ORG, REQUESTS, tmp_path / "d", run_id="RUN-1")
    run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "s", RunOptions(run_id="RUN-1"), rows_per_bucket=3)
    remote = {"SPARK_REMOTE": spark_remote}
    for command in (
        ["runs", "--json"],
        ["explain", "1009", "--json"],
        ["explain", "--card", "GLD0000000001", "--json"],
    ):
        on_duck = _cli(command[0], "--store", str(duck), *command[1:])
        on_spark = _cli(command[0], "--store", delta, *command[1:], "--engine", "spark", env=remote)
        assert on_spark.returncode == on_duck.returncode == 0, on_spark.stderr
        names = (str(duck.resolve()), str(Path(delta).resolve()), str(tmp_path / "d"), str(tmp_path / "s"))
        texts = []
        for out in (on_duck.stdout, on_spark.stdout):
            for name in names:
                out = out.replace(name, "<path>")
            texts.append(re.sub(r"\d{4}-\d{2}-\d{2}T[0-9:.+]+", "<time>", out))
        assert texts[0] == texts[1], command


@pytest.mark.slow
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_sequence_of_runs_reverts_and_refreshes_leaves_equal_stores(spark, tmp_path_factory, data):
    """Random stores and random sequences of runs (random batches), reverts of the last live run (refused alike
    when a later run touched it) and refreshes back to the first snapshot: after every step both engines' stores
    export the same bytes."""
    tmp = tmp_path_factory.mktemp("spark-sequence")
    store = data.draw(stores())
    config = tmp / "org.toml"
    config.write_text(_toml(BASE_CONFIG))
    snapshot = _snapshot(store, tmp / "s0")
    duck, delta = both_engines(spark, tmp, snapshot, config)
    live: list[str] = []
    steps = data.draw(st.lists(st.sampled_from(["run", "run", "revert", "refresh"]), min_size=2, max_size=5))
    for i, step in enumerate(steps):
        step_id = f"STEP-{i}"
        if step == "run":
            rows = data.draw(st.lists(request_rows(n_customers=len(store.customers)), min_size=1, max_size=10))
            requests = tmp / f"requests-{i}.csv"
            columns = [c for c in REQUEST_COLUMNS if any(c in row for row in rows)]
            requests.write_text(
                ",".join(columns) + "\n" + "".join(",".join(_cell(r.get(c)) for c in columns) + "\n" for r in rows)
            )
            options = RunOptions(run_id=step_id, allow_reapply=True)
            on_duck = run_batch(duck, config, [requests], tmp / f"d-{i}", options)
            per_bucket = data.draw(st.integers(1, 4), label="rows per bucket")
            on_spark = run_on_spark(
                spark, delta, config, [requests], tmp / f"s-{i}", options, rows_per_bucket=per_bucket
            )
            assert on_spark.exit_code == on_duck.exit_code
            live.append(step_id)
        elif step == "revert" and live:
            target = live.pop()
            outcomes = [
                _outcome(revert_run, duck, target, step_id),
                _outcome(_revert_delta, spark, delta, target, step_id),
            ]
            assert outcomes[0] == outcomes[1], outcomes
        elif step == "refresh":
            refresh_store(duck, snapshot, step_id, reports_dir=tmp / f"rd-{i}", config_path=config, allow_removals=True)
            _refresh_delta(spark, delta, snapshot, step_id, tmp / f"rs-{i}", config)
            assert (tmp / f"rs-{i}" / "changes.csv").read_bytes() == (tmp / f"rd-{i}" / "changes.csv").read_bytes()
            live.clear()
        assert _delta_export(spark, delta, tmp / f"e-{i}") == exported(duck, tmp / f"f-{i}"), (i, step)


def _outcome(undo, *args) -> str:
    try:
        undo(*args)
    except StoreError as exc:
        return type(exc).__name__
    return "reverted"


def _revert_delta(spark, delta: str, target: str, revert_id: str) -> None:
    change_whole(DeltaStore(spark, delta), revert_id, lambda local: revert_run(local, target, revert_id))


def _refresh_delta(spark, delta: str, snapshot: Path, refresh_id: str, reports: Path, config: Path) -> None:
    change_whole(
        DeltaStore(spark, delta),
        refresh_id,
        lambda local: refresh_store(
            local, snapshot, refresh_id, reports_dir=reports, config_path=config, allow_removals=True
        ),
    )
