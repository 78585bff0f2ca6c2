"""A run on a Delta store, decided on Spark's executors; a real run published at one commit point.

Every row of a batch reads and writes only the customers, values and cards its keys name (its customer, the
holders of its value and lookup value in any scope, its card and the card's holder, each customer's merge
chain), with all their identifiers and cards: that is the working set engine/resolve.py proves closed. So
deciding each connected component of rows against its own part of the store gives exactly what deciding the
batch against the whole store gives. The batch is decided bucket by bucket of whole components on the
executors (spark/decide.py); the run's DuckDB file on the driver holds none of the store's rows, only its meta
and ledger, and `run_batch` writes the reports from the buckets' answers: the DuckDB engine's reports, byte for
byte, with the whole store's counts (counted on Spark) and the Delta store named as the run's store.

A dry run's ledger entry is appended to the Delta ledger. A real run holds the store's lock; each bucket applies
its decision to its part and sends back its net changes, undo-log and provenance rows, which are staged with the
run's ledger entry, committed at one Delta commit and rolled forward (spark/publish.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from pipeline.config import OrgConfig, load_config
from pipeline.engine.batch import Decision
from pipeline.engine.workspace import Workspace
from pipeline.errors import ConfigError
from pipeline.input.read import RequestBatch
from pipeline.results import RunResult, StageClock
from pipeline.run import RunOptions, new_run_id, run_batch
from pipeline.settings import ENV_BUCKET_ROWS, pick
from pipeline.spark.decide import ROWS_PER_BUCKET, Shared, decide_on_spark
from pipeline.spark.delta import DeltaStore, append_rows, local_store, store_label
from pipeline.spark.publish import Changes, acquire, changes_in, commit, open_store, release, roll_forward, stage
from pipeline.store.schema import TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MAX_COMPONENT_ROWS = 1_000_000
"""The largest connected component of interacting rows a run on Spark takes (`--max-component`): its rows are
replayed in order by one executor, so its working set must fit one executor's memory (about 1 KiB a row here)."""


def run_on_spark(
    spark: SparkSession,
    store: str,
    config_path: Path | str,
    files: Sequence[Path | str],
    reports_dir: Path | str,
    options: RunOptions,
    max_component: int | None = None,
    rows_per_bucket: int | None = None,
) -> RunResult:
    """Run the files against the Delta store; the reports are the DuckDB engine's.

    A dry run writes its ledger entry only. A real run holds the store's lock, and its changes, undo log,
    provenance and ledger entry become real together at one Delta commit (spark/publish.py). A batch whose largest
    connected component of interacting rows has more than `max_component` rows (default MAX_COMPONENT_ROWS) is
    refused before anything is applied (errors.ComponentTooLarge). `rows_per_bucket`: the rows a bucket of the
    decision aims at (default: LOYALTY_BULK_SPARK_BUCKET_ROWS, else ROWS_PER_BUCKET)."""
    delta = open_store(DeltaStore(spark, store))
    load_config(config_path)  # a bad config stops here, before Spark reads anything
    run_id = options.run_id or new_run_id()
    bound = max_component or MAX_COMPONENT_ROWS
    per_bucket = rows_per_bucket or pick(None, ENV_BUCKET_ROWS, None, ROWS_PER_BUCKET, _positive)
    if not options.dry_run:
        acquire(delta, run_id)
    try:
        changes: dict[str, pa.Table] = {}

        def on_executors(
            ws: Workspace, batch: RequestBatch, config: OrgConfig, clock: StageClock, provenance: bool
        ) -> Decision:
            shared = Shared(
                Path(config_path).read_bytes(),
                str(config_path),
                bound,
                run_id=None if options.dry_run else run_id,
                file_rows=tuple(f.rows for f in batch.files),
                provenance=provenance,
            )
            decision, found = decide_on_spark(delta, batch.frame, config, shared, clock, run_id, per_bucket)
            changes.update(found)
            return decision

        empty = {name: delta.read(name).limit(0).toArrow() for name in TABLES}
        with local_store(delta, empty) as local:
            part = dataclasses.replace(
                options,
                run_id=run_id,
                store_label=store_label(delta.store),
                counts_base=delta.counts(),
                decide=on_executors,
            )
            result = run_batch(local, config_path, files, reports_dir, part)
            with duckdb.connect(str(local), read_only=True) as con:
                recorded = changes_in(con, empty, run_id)  # the ledger entry, and a first run's config binding
            if options.dry_run:
                for table in ("run_files", "runs"):  # runs last: a ledger entry is visible with its files
                    append_rows(delta, table, recorded[table])
                return result
            _publish(delta, run_id, recorded, {} if result.aborted else changes)
    finally:
        if not options.dry_run:
            with contextlib.suppress(Exception):  # a server gone: the lock is taken over once this process has ended
                release(delta, run_id)
    return result


def _publish(delta: DeltaStore, run_id: str, recorded: dict[str, pa.Table], changes: dict[str, pa.Table]) -> None:
    """Stage the run's ledger entry and the buckets' changes, commit, and roll forward (an aborted run: its ledger
    entry alone)."""
    tables = {
        name: pa.concat_tables([rows, *([changes[name].cast(rows.schema)] if name in changes else [])])
        for name, rows in recorded.items()
    }
    stage(delta, run_id, Changes(tables))
    commit(delta, run_id)
    try:
        roll_forward(delta, run_id)
    except Exception as exc:
        print(
            f"warning: run {run_id} is committed, but rolling it into the store's tables stopped ({exc}); "
            "the next command on the store finishes it",
            file=sys.stderr,
        )


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise ConfigError(ENV_BUCKET_ROWS, "(environment)", f"expected a whole number of rows above 0, not {text!r}")
    return value
