"""A run on a Delta store: a dry run decided on Spark's executors, a real run on the driver over its neighbourhood.

Every row of a batch reads and writes only the customers, values and cards its keys name (its customer, the
holders of its value and lookup value in any scope, its card and the card's holder, each customer's merge
chain), with all their identifiers and cards: that is the working set engine/resolve.py proves closed. So
deciding the batch against that part of the store gives exactly what deciding it against the whole store
gives, and so does deciding each connected component of rows against its own part.

- A **dry run** (`_dry_run`) is decided on the executors, bucket by bucket of whole components
  (spark/decide.py); the run's DuckDB file on the driver holds only the store's ledger and meta, `run_batch`
  writes the reports from the buckets' answers, and the ledger entry is appended to the Delta ledger.
- A **real run** brings the batch's neighbourhood to the driver (`neighbourhood`: Spark joins the batch's keys
  against the Delta tables, then follows every merge chain, one join per step), and `run_batch` decides and
  applies the batch on a DuckDB file of it; its net changes are staged, committed at one Delta commit and
  rolled forward (spark/publish.py).

Either way the reports are the DuckDB engine's, byte for byte: the same code writes them from the same
decisions, with the whole store's counts (counted on Spark) and the Delta store named as the run's store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl
import pyarrow as pa

from pipeline.config import CARD, OrgConfig, load_config
from pipeline.engine.batch import Decision
from pipeline.engine.check import prepare_fields
from pipeline.engine.workspace import Workspace
from pipeline.errors import ConfigError, StoreError
from pipeline.input.read import read_requests
from pipeline.results import RunResult, StageClock
from pipeline.run import RunOptions, new_run_id, run_batch
from pipeline.settings import ENV_BUCKET_ROWS, pick
from pipeline.spark.decide import ROWS_PER_BUCKET, Shared, decide_on_spark
from pipeline.spark.delta import DeltaStore, append_rows, local_store, store_label
from pipeline.spark.publish import acquire, commit, net_changes, open_store, release, roll_forward, stage
from pipeline.store.schema import COLUMNS, TABLES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MAX_COMPONENT_ROWS = 1_000_000
"""The largest connected component of interacting rows a run on Spark takes (`--max-component`): its rows are
replayed in order by one worker, so its working set must fit one machine's memory (about 1 KiB a row here)."""
MAX_CHAIN_STEPS = 10_000
"""A merge chain longer than this is a broken store (the invariants forbid cycles): refused, nothing decided."""


@dataclasses.dataclass(frozen=True)
class Neighbourhood:
    """The part of the store a batch reaches: rows of customers, identifiers and cards (Arrow, snapshot columns)."""

    tables: dict[str, pa.Table]
    chain_steps: int
    seconds: float


def batch_keys(frame: pl.DataFrame, config: OrgConfig) -> dict[str, pl.DataFrame]:
    """The keys a batch's rows name, normalised as the check stage normalises them (with the org's `[mobile]`
    countries): customer ids, (id_type, id_value) values (id values and lookup values that are not cards) and
    card numbers (either)."""
    fields = prepare_fields(frame, config)
    ids = fields.select(pl.col("customer_id").cast(pl.Int64, strict=False).alias("customer_id")).drop_nulls().unique()
    values = pl.concat(
        [
            fields.select("id_type", "id_value"),
            fields.select(pl.col("lookup_type").alias("id_type"), pl.col("lookup_value").alias("id_value")),
        ]
    ).filter((pl.col("id_type") != "") & (pl.col("id_value") != ""))
    cards = values.filter(pl.col("id_type") == CARD).select(pl.col("id_value").alias("card_number")).unique()
    return {"ids": ids, "values": values.filter(pl.col("id_type") != CARD).unique(), "cards": cards}


def neighbourhood(delta: DeltaStore, keys: dict[str, pl.DataFrame]) -> Neighbourhood:
    """The customers, identifiers and cards a batch with these keys can reach, read from the Delta store."""
    started = time.perf_counter()
    customers, identifiers, cards = (delta.read(name) for name in TABLES)
    values = delta.frame(keys["values"].to_arrow())
    numbers = delta.frame(keys["cards"].to_arrow())
    holders = identifiers.join(values, ["id_type", "id_value"], "left_semi").select("customer_id")
    card_rows = cards.join(numbers, ["card_number"], "left_semi")
    seeds = (
        delta.frame(keys["ids"].to_arrow())
        .unionByName(holders)
        .unionByName(card_rows.where("customer_id IS NOT NULL").select("customer_id"))
        .distinct()
    )
    wanted = seeds.toArrow().column("customer_id").to_pylist()
    seen: set[int] = set(wanted)
    rows: list[pa.Table] = []
    frontier, steps = sorted(seen), 0
    while frontier:
        steps += 1
        if steps > MAX_CHAIN_STEPS:
            raise StoreError(f"{delta.store}: a merge chain longer than {MAX_CHAIN_STEPS} steps; run store audit")
        found = customers.join(_ids(delta, frontier), ["customer_id"], "left_semi").toArrow()
        rows.append(found)
        following = {m for m in found.column("merged_into").to_pylist() if m is not None} - seen
        seen |= following
        frontier = sorted(following)
    customer_rows = pa.concat_tables(rows) if rows else customers.limit(0).toArrow()
    held = _ids(delta, sorted(seen))
    tables = {
        "customers": customer_rows.select(list(COLUMNS["customers"])),
        "identifiers": identifiers.join(held, ["customer_id"], "left_semi").select(*COLUMNS["identifiers"]).toArrow(),
        "cards": cards.join(held, ["customer_id"], "left_semi")
        .unionByName(card_rows)
        .distinct()
        .select(*COLUMNS["cards"])
        .toArrow(),
    }
    return Neighbourhood(tables, steps, time.perf_counter() - started)


def _ids(delta: DeltaStore, ids: Sequence[int]) -> DataFrame:
    return delta.frame(pa.table({"customer_id": pa.array(ids, type=pa.int64())}))


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
    refused before anything is decided (errors.ComponentTooLarge)."""
    delta = open_store(DeltaStore(spark, store))
    config = load_config(config_path)  # a bad config stops here, before Spark reads anything
    run_id = options.run_id or new_run_id()
    bound = max_component or options.max_component or MAX_COMPONENT_ROWS
    if options.dry_run:
        per_bucket = rows_per_bucket or pick(None, ENV_BUCKET_ROWS, None, ROWS_PER_BUCKET, _positive)
        return _dry_run(delta, config_path, files, reports_dir, options, run_id, bound, per_bucket)
    acquire(delta, run_id)
    try:
        batch = read_requests(files, layout=options.layout)
        found = neighbourhood(delta, batch_keys(batch.frame, config))
        whole = delta.counts()
        with local_store(delta, found.tables) as local:
            part = dataclasses.replace(
                options,
                run_id=run_id,
                store_label=store_label(store),
                counts_base=whole,
                max_component=bound,
            )
            result = run_batch(local, config_path, files, reports_dir, part)
            stage(delta, run_id, net_changes(local, found.tables, run_id))
            commit(delta, run_id)
            try:
                roll_forward(delta, run_id)
            except Exception as exc:
                print(
                    f"warning: run {run_id} is committed, but rolling it into the store's tables stopped ({exc}); "
                    "the next command on the store finishes it",
                    file=sys.stderr,
                )
    finally:
        with contextlib.suppress(Exception):  # a server gone: the lock is taken over once this process has ended
            release(delta, run_id)
    return result


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise ConfigError(ENV_BUCKET_ROWS, "(environment)", f"expected a whole number of rows above 0, not {text!r}")
    return value


def _dry_run(
    delta: DeltaStore,
    config_path: Path | str,
    files: Sequence[Path | str],
    reports_dir: Path | str,
    options: RunOptions,
    run_id: str,
    bound: int,
    rows_per_bucket: int,
) -> RunResult:
    """A dry run decided on the executors (spark/decide.py): the run's DuckDB file on the driver holds none of the
    store's rows, only its ledger, for the run's checks and its ledger entry, which goes to the Delta ledger."""
    shared = Shared(Path(config_path).read_bytes(), str(config_path), bound)

    def on_executors(ws: Workspace, frame: pl.DataFrame, config: OrgConfig, clock: StageClock) -> Decision:
        return decide_on_spark(delta, frame, config, shared, clock, run_id, rows_per_bucket)

    empty = {name: delta.read(name).limit(0).toArrow() for name in TABLES}
    with local_store(delta, empty) as local:
        part = dataclasses.replace(
            options,
            run_id=run_id,
            store_label=store_label(delta.store),
            counts_base=delta.counts(),
            max_component=bound,
            decide=on_executors,
        )
        result = run_batch(local, config_path, files, reports_dir, part)
        with duckdb.connect(str(local), read_only=True) as con:
            for table in ("run_files", "runs"):  # runs last: a ledger entry is visible with its files
                query = f"SELECT * FROM {table} WHERE run_id = $1"
                append_rows(delta, table, con.sql(query, params=[run_id]).to_arrow_table())
    return result
