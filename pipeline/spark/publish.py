"""A real run on a Delta store: its changes staged, made real by one Delta commit, then rolled into the tables.

OSS Delta commits one table at a time and Sail has no transactions, so a run cannot change customers,
identifiers, cards, the undo log, provenance and the ledger in one commit. Instead (docs/spark.md):

1. **Lock.** One row in the store's `lock` table, put there by a MERGE that inserts only when no row is there:
   of two runs starting together, on any machines, Delta lets one MERGE commit; the other finds the row
   another run's and is refused (exit 3, StoreBusy), as on DuckDB. A lock left by a process that died on this
   machine is taken over; one from another machine is named in the refusal.
2. **Stage.** The run decides on the driver (spark/run.py) and its net changes (identifiers deleted and
   inserted, customer and card rows as they end, and the run's undo-log, provenance and ledger rows) are
   written under `STORE/_staged/<run id>/`. Nothing reads them yet.
3. **Commit point.** One row appended to the `commits` table: from that Delta commit on, the run is real.
   Killed before it, the run never happened (its staged files are removed by the next command); killed
   after it, the next command finishes it.
4. **Roll forward.** Each staged table is merged into its store table, every statement idempotent (deletes
   and inserts by whole row, upserts by key, ledger rows appended only when the table has none of the run),
   then the commit row is marked applied and the staged folder removed.

Every command on a Delta store first finishes any committed run not yet rolled forward (`recover`), taking
the lock to do it, so readers see only whole runs.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb
import pyarrow as pa

from pipeline import faults
from pipeline.errors import StoreBusy, StoreError
from pipeline.spark.delta import DELTA_TABLES, ENGINE_KEY, RECORD_TABLES, DeltaStore, local_store, write_tables
from pipeline.store.schema import COLUMNS, VALUE_HASH_PROBE_KEY

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LOCK, COMMITS, STAGED = "lock", "commits", "_staged"
T = TypeVar("T")
LOCK_SCHEMA = pa.schema(
    [("name", pa.string()), ("run_id", pa.string()), ("holder", pa.string()), ("since", pa.string())]
)
COMMITS_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("state", pa.string()), ("committed_at", pa.string()), ("kind", pa.string())]
)
"""A commit row: the run, `committed` then `applied`, when, and what was staged: `changes` (a run's net changes)
or `whole` (every table as a whole-store command left it: revert, refresh)."""


IDENTIFIER_MATCH = (
    "t.customer_id = s.customer_id AND t.source = s.source AND t.account_id = s.account_id "
    "AND t.id_type = s.id_type AND t.id_value = s.id_value"
)
UPSERTS = {
    "customers": "t.customer_id = s.customer_id",
    "cards": "t.card_number = s.card_number",
    "store_meta": "t.key = s.key",
}
"""The tables a run's rows are upserted into, by key: a customer or card row as the run ended it, store_meta's keys."""


def quoted(delta: DeltaStore, table: str) -> str:
    """A Delta table of the store as a SQL identifier, delta.`path`; a store path holding a backtick is refused, so
    the path can never leave the quotes."""
    uri = delta.uri(table)
    if "`" in uri:
        raise StoreError(f"a store path may not hold a backtick (`): {delta.store}")
    return f"delta.`{uri}`"


@dataclass(frozen=True)
class Changes:
    """A run's net changes to the store and its record rows, as Arrow tables by staged name."""

    tables: dict[str, pa.Table]


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_tables(delta: DeltaStore) -> None:
    """The lock and commits tables, made empty where missing (a store made by `store init`)."""
    for name, schema in ((LOCK, LOCK_SCHEMA), (COMMITS, COMMITS_SCHEMA)):
        if not delta.has(name):
            delta.write(name, schema.empty_table())


def acquire(delta: DeltaStore, run_id: str) -> None:
    """Take the store's lock for `run_id`, or StoreBusy naming the run that holds it."""
    ensure_tables(delta)
    for _ in range(2):
        want = {"name": ["store"], "run_id": [run_id], "holder": [holder()], "since": [_now()]}
        delta.view("lb_lock_want", pa.table(want, LOCK_SCHEMA))
        try:
            delta_table = quoted(delta, LOCK)
            delta.spark.sql(
                f"MERGE INTO {delta_table} t USING lb_lock_want s ON t.name = s.name WHEN NOT MATCHED THEN INSERT *"
            ).collect()
        except Exception as exc:
            raise StoreBusy(
                f"store {delta.store} is being locked by another run ({exc}); nothing was applied", ""
            ) from exc
        rows = delta.read(LOCK).collect()
        if rows and rows[0]["run_id"] == run_id:
            return
        held = rows[0] if rows else None
        if held is not None and _dead_here(held["holder"]):
            release(delta, held["run_id"])  # the process that took it died on this machine: take it over
            continue
        who = f"run {held['run_id']} ({held['holder']}, since {held['since']})" if held else "another run"
        raise StoreBusy(
            f"store {delta.store} is in use by {who}; nothing was applied; run again once it has finished "
            f"(a lock left by a machine that died is the row of {delta.uri(LOCK)}: delete it to free the store)",
            "",
        )
    raise StoreBusy(f"store {delta.store}: its lock could not be taken; nothing was applied", "")


def release(delta: DeltaStore, run_id: str) -> None:
    delta.view("lb_lock_mine", pa.table({"run_id": [run_id]}))
    delta_table = quoted(delta, LOCK)
    delta.spark.sql(
        f"MERGE INTO {delta_table} t USING lb_lock_mine s ON t.run_id = s.run_id WHEN MATCHED THEN DELETE"
    ).collect()


def _dead_here(who: str) -> bool:
    host, _, pid = who.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def changes_in(
    con: duckdb.DuckDBPyConnection, before: dict[str, pa.Table], run_id: str, meta: bool = True
) -> dict[str, pa.Table]:
    """What run `run_id` changed in a DuckDB store made from the rows `before` (a part of the Delta store): the
    customer and card rows as it left them, the identifiers it deleted and inserted, its ledger, undo-log and
    provenance rows, and (with `meta`) what it wrote in store_meta."""
    tables: dict[str, pa.Table] = {}
    for table in ("customers", "identifiers", "cards"):
        con.register("lb_before", before[table])
        before_sql = f"SELECT {', '.join(COLUMNS[table])} FROM lb_before"
        after_sql = f"SELECT {', '.join(COLUMNS[table])} FROM {table}"
        ended = con.sql(after_sql).except_(con.sql(before_sql)).to_arrow_table()
        if table == "identifiers":
            tables["identifiers_deleted"] = con.sql(before_sql).except_(con.sql(after_sql)).to_arrow_table()
            tables["identifiers_inserted"] = ended
        else:
            tables[table] = ended
        con.unregister("lb_before")
    for table in RECORD_TABLES:
        tables[table] = con.sql(f"SELECT * FROM {table} WHERE run_id = $1", params=[run_id]).to_arrow_table()
    # what the run wrote of itself in store_meta (a first run binds the store to its org config)
    if meta:
        tables["store_meta"] = con.sql(
            "SELECT key, value FROM store_meta WHERE key NOT IN ($1, $2)",
            params=[VALUE_HASH_PROBE_KEY, ENGINE_KEY],
        ).to_arrow_table()
    return tables


def stage(delta: DeltaStore, run_id: str, changes: Changes) -> None:
    for name, table in changes.tables.items():
        delta.write(f"{STAGED}/{run_id}/{name}", table)
    faults.kill_point("spark-after-stage")


def commit(delta: DeltaStore, run_id: str, kind: str = "changes") -> None:
    """The run's commit point: one appended row of `commits`."""
    row = {"run_id": [run_id], "state": ["committed"], "committed_at": [_now()], "kind": [kind]}
    delta.write(COMMITS, pa.table(row, COMMITS_SCHEMA), mode="append")
    faults.kill_point("spark-after-commit")


def roll_forward(delta: DeltaStore, run_id: str) -> None:
    """Merge a committed run's staged changes into the store's tables, each statement idempotent; a whole-store
    command's staged tables replace the store's."""
    spark = delta.spark
    if _kind(delta, run_id) == "whole":
        for table in DELTA_TABLES:
            staged_table = delta.read(f"{STAGED}/{run_id}/{table}")
            staged_table.write.format("delta").mode("overwrite").save(delta.uri(table))
            faults.kill_point("spark-during-roll-forward")
        _mark_applied(delta, run_id)
        return

    def staged(name: str) -> DataFrame:
        return delta.read(f"{STAGED}/{run_id}/{name}")

    staged("identifiers_deleted").createOrReplaceTempView("lb_deleted")
    delta_table = quoted(delta, "identifiers")
    spark.sql(f"MERGE INTO {delta_table} t USING lb_deleted s ON {IDENTIFIER_MATCH} WHEN MATCHED THEN DELETE").collect()
    faults.kill_point("spark-during-roll-forward")
    staged("identifiers_inserted").createOrReplaceTempView("lb_inserted")
    spark.sql(
        f"MERGE INTO {delta_table} t USING lb_inserted s ON {IDENTIFIER_MATCH} WHEN NOT MATCHED THEN INSERT *"
    ).collect()
    for table, match in UPSERTS.items():
        staged(table).createOrReplaceTempView("lb_rows")
        delta_table = quoted(delta, table)
        spark.sql(
            f"MERGE INTO {delta_table} t USING lb_rows s ON {match} WHEN MATCHED THEN UPDATE SET * "
            "WHEN NOT MATCHED THEN INSERT *"
        ).collect()
    for name in RECORD_TABLES:
        rows = staged(name)
        if rows.limit(1).count() == 0:
            continue
        delta.view("lb_run", pa.table({"run_id": [run_id]}))
        present = delta.read(name).join(spark.table("lb_run"), ["run_id"], "left_semi").limit(1).count()
        if not present:  # an append is one Delta commit: all of the run's rows of this table, or none
            rows.write.format("delta").mode("append").save(delta.uri(name))
    _mark_applied(delta, run_id)


def _kind(delta: DeltaStore, run_id: str) -> str:
    from pyspark.sql.functions import col

    rows = delta.read(COMMITS).where(col("run_id") == run_id).collect()
    return str(rows[0]["kind"]) if rows else "changes"


def _mark_applied(delta: DeltaStore, run_id: str) -> None:
    spark = delta.spark
    delta.view("lb_done", pa.table({"run_id": [run_id], "state": ["applied"]}))
    delta_table = quoted(delta, COMMITS)
    spark.sql(
        f"MERGE INTO {delta_table} t USING lb_done s ON t.run_id = s.run_id "
        "WHEN MATCHED THEN UPDATE SET state = s.state"
    ).collect()
    _remove_staged(delta, run_id)


def change_whole(delta: DeltaStore, command_id: str, change: Callable[[Path], T]) -> T:
    """Run a whole-store command (revert, refresh) on a DuckDB copy of the whole Delta store on the driver, then
    stage every table as it left them, commit, and replace the store's tables: all or nothing, as a run.

    A command that recorded no ledger entry under `command_id` (a dry refresh, one its guard refused) changed
    nothing: the Delta store is left as it was, not a version of it written."""
    open_store(delta)
    acquire(delta, command_id)
    try:
        with local_store(delta, record_tables=RECORD_TABLES) as local:
            result = change(local)
            with duckdb.connect(str(local), read_only=True) as con:
                recorded = con.sql("SELECT count(*) FROM runs WHERE run_id = $1", params=[command_id]).fetchall()
            if not recorded[0][0]:
                return result
            write_tables(delta, local, under=f"{STAGED}/{command_id}/")
            faults.kill_point("spark-after-stage")
            commit(delta, command_id, kind="whole")
            roll_forward(delta, command_id)
    finally:
        release(delta, command_id)
    return result


def recover(delta: DeltaStore) -> list[str]:
    """Finish every committed run not yet rolled forward, and drop what uncommitted runs staged (when no live run
    holds the store) and the scratch tables of runs whose process died on this machine. Returns the runs
    finished."""
    ensure_tables(delta)
    _remove_dead_scratch(delta)
    pending = [r["run_id"] for r in delta.read(COMMITS).where("state = 'committed'").collect()]
    orphans = _staged_runs(delta) - {r["run_id"] for r in delta.read(COMMITS).collect()}
    if not pending and not orphans:
        return []
    held = delta.read(LOCK).collect()
    if held and not _dead_here(held[0]["holder"]):
        if pending:
            raise StoreBusy(
                f"store {delta.store} is being written by run {held[0]['run_id']} ({held[0]['holder']}); run again "
                "once it has finished",
                "",
            )
        return []  # a live run's own staging
    owner = f"recover-{os.getpid()}"
    acquire(delta, owner)
    try:
        for run_id in pending:
            roll_forward(delta, run_id)
        for run_id in orphans:
            _remove_staged(delta, run_id)
    finally:
        release(delta, owner)
    return pending


def open_store(delta: DeltaStore) -> DeltaStore:
    """A Delta store checked and with every committed run finished: what each command reads."""
    delta.require()
    recover(delta)
    return delta


SCRATCH = "_scratch"
"""Where a run's rows wait on the server while the executors decide them, and the buckets' answers until the
driver reads them (spark/decide.py): `STORE/_scratch/<run id>@<host>:<pid>/`, removed when the decision ends,
or by the next command once that process has died on this machine."""


def scratch_folder(run_id: str) -> str:
    return f"{SCRATCH}/{run_id}@{holder()}"


def _remove_dead_scratch(delta: DeltaStore) -> None:
    if "://" in delta.store:
        return  # object stores: not listed (documented)
    folder = Path(delta.uri(SCRATCH))
    for entry in folder.iterdir() if folder.is_dir() else ():
        if _dead_here(entry.name.rpartition("@")[2]):
            shutil.rmtree(entry, ignore_errors=True)


def _staged_runs(delta: DeltaStore) -> set[str]:
    if "://" in delta.store:
        return set()  # object stores: left for the next local listing (documented)
    folder = Path(delta.uri(STAGED))
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _remove_staged(delta: DeltaStore, run_id: str) -> None:
    if "://" not in delta.store:
        shutil.rmtree(Path(delta.uri(STAGED)) / run_id, ignore_errors=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
