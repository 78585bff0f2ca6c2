"""A run on a Delta store: Spark finds the batch's neighbourhood in the store, the engine decides it.

Every row of a batch reads and writes only the customers, values and cards its keys name (its customer, the
holders of its value and lookup value in any scope, its card and the card's holder, each customer's merge
chain), with all their identifiers and cards: that is the working set engine/resolve.py proves closed. So
deciding the batch against that part of the store gives exactly what deciding it against the whole store
gives. On Spark:

1. the request files are read and their values normalised on the driver (input/, engine/check.py's
   prepare_fields: the same reading as the DuckDB engine's);
2. Spark joins the batch's keys against the Delta tables: the customers the rows name, the holders of their
   values, their cards' holders, then the merge chains of all of them (one join per step, until every chain
   has reached its end), and reads those customers' rows, identifiers and cards (`neighbourhood`);
3. the neighbourhood becomes a DuckDB store on the driver and `run_batch` runs on it, with the whole store's
   counts (counted on Spark) in the summary and the Delta store named as the run's store. The reports are the
   DuckDB engine's, byte for byte: the same code writes them from the same decisions.

A dry run's ledger entry is appended to the Delta ledger, as the DuckDB store records one. A real run is staged,
committed at one Delta commit and rolled forward (spark/publish.py).
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
from pipeline.engine.check import prepare_fields
from pipeline.errors import StoreError
from pipeline.input.read import read_requests
from pipeline.results import RunResult
from pipeline.run import RunOptions, new_run_id, run_batch
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
) -> RunResult:
    """Run the files against the Delta store; the reports are the DuckDB engine's.

    A dry run writes its ledger entry only. A real run holds the store's lock, and its changes, undo log,
    provenance and ledger entry become real together at one Delta commit (spark/publish.py). A batch whose largest
    connected component of interacting rows has more than `max_component` rows (default MAX_COMPONENT_ROWS) is
    refused before anything is decided (errors.ComponentTooLarge)."""
    delta = open_store(DeltaStore(spark, store))
    config = load_config(config_path)  # a bad config stops here, before Spark reads anything
    run_id = options.run_id or new_run_id()
    if not options.dry_run:
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
                max_component=max_component or options.max_component or MAX_COMPONENT_ROWS,
            )
            result = run_batch(local, config_path, files, reports_dir, part)
            if options.dry_run:
                with duckdb.connect(str(local), read_only=True) as con:
                    for table in ("run_files", "runs"):  # runs last: a ledger entry is visible with its files
                        query = f"SELECT * FROM {table} WHERE run_id = $1"
                        append_rows(delta, table, con.sql(query, params=[run_id]).to_arrow_table())
            else:
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
        if not options.dry_run:
            with contextlib.suppress(Exception):  # a server gone: the lock is taken over once this process has ended
                release(delta, run_id)
    return result
