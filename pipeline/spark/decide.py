"""A batch decided on Spark's executors, one bucket of connected components at a time.

Rows that share a customer, a value or a card (directly, or through the store: a value's holders, a card's
holder, a merge chain) form a connected component, and a row reads and writes only what its component's keys
name (engine/resolve.py). So the batch splits into buckets of whole components, each decided on its own against
the part of the store its rows reach, with exactly the answers of deciding the batch against the whole store:

1. **Driver**: the rows' own keys (their customer ids, values and cards, normalised by the check stage's code).
2. **Spark** (executors): the holders of those values and cards, and the merge chains of every customer
   reached, one join per chain step; only integer pairs come back (`key_graph`).
3. **Driver**: the connected components of rows, keys and customers (engine/groups.py's component_roots, whole
   arrays) and a bucket for each, whole components dealt round-robin to buckets of about ROWS_PER_BUCKET rows.
4. **Spark** (executors): each bucket's rows and the customers, identifiers and cards they reach, grouped by
   bucket (`groupBy(bucket).applyInArrow`); the DuckDB engine decides each bucket on an in-memory store of its
   part, in the executor's Python: check (the same rules on every bucket's rows), resolve, the set-based
   decisions and the replay of each component, whole, in order (`decide_bucket`). A bucket returns its rows'
   outcomes and checked rows, and the counts of its part before and after, as Arrow IPC bytes; a real run's
   bucket also applies its decision to its part and returns what changed there, with its undo-log and
   provenance rows (spark/publish.py's changes_in), which the run publishes at its commit point.
5. **Driver**: the buckets' answers joined in row order, the call plan's components numbered across the batch
   (in the order of each one's first row, as resolve numbers them); the reports are written from them by the
   same code as the DuckDB engine's (pipeline/run.py).

The package must be importable where the executors run Python (the local Sail server runs it in its own
process; on Databricks, a cluster library).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import shutil
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import CARD, OrgConfig, parse_config
from pipeline.delivery.plan import plan_changes
from pipeline.engine.batch import Decision, decide_batch
from pipeline.engine.check import CheckResult, prepare_fields
from pipeline.engine.commit import commit_changes
from pipeline.engine.groups import component_roots
from pipeline.engine.record import positions_by_rows
from pipeline.engine.workspace import Workspace
from pipeline.errors import ComponentTooLarge, InternalError, LoyaltyBulkError, StoreError
from pipeline.results import StageClock, StoreCounts
from pipeline.spark.publish import changes_in, scratch_folder
from pipeline.store.schema import COLUMNS, SCHEMA_SQL, TABLES, ensure, stored_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from pipeline.spark.delta import DeltaStore

ROWS_PER_BUCKET = 100_000
"""Rows a bucket aims at (env LOYALTY_BULK_SPARK_BUCKET_ROWS): each bucket pays a fixed cost (an in-memory store,
the check's rule set; about 0.5 s here), and a cluster wants at least as many buckets as executor cores; at least
one per component, whatever its size (`--max-component` bounds that). The bench's 1M-row dry run took 47 s in
buckets of 100k rows and 59 s in buckets of 50k (one measurement each, local Sail, whose Python runs one bucket
at a time)."""
MAX_BUCKETS = 4096
MAX_CHAIN_STEPS = 10_000
"""A merge chain longer than this is a broken store (the invariants forbid cycles): refused, nothing decided."""
SHIP_BYTES = 32 * 2**20
"""The most the driver sends to Spark inside one plan or one message (`shipped`): Spark Connect refuses messages
over 128 MiB, and a 1M-row batch's rows are about 200 MiB."""
PARTS = ("rows", "customers", "identifiers", "cards")
PREFIX = {"rows": "r_", "customers": "c_", "identifiers": "i_", "cards": "k_"}
OUT_SCHEMA = "bucket BIGINT, part STRING, payload BINARY"


@dataclass(frozen=True)
class Buckets:
    """The bucket of every row (in the batch's order), of every customer reached and of every card named."""

    rows: np.ndarray
    customers: pa.Table
    """customer_id, bucket"""
    cards: pa.Table
    """card_number, bucket"""
    count: int
    chain_steps: int


@dataclass(frozen=True)
class Shared:
    """What every bucket is given: the org config (its file's bytes, so each executor reads it as the driver did)
    and the component bound."""

    config_bytes: bytes
    config_path: str
    max_component: int | None
    run_id: str | None = None
    """A real run's id: each bucket applies its decision to its part and sends back its net changes, undo-log and
    provenance rows (None: a dry run, which sends back outcomes and counts only)."""
    file_rows: tuple[int, ...] = ()
    """Rows of each input file, in order: a change's provenance names its file by position."""
    provenance: bool = True

    def config(self) -> OrgConfig:
        raw = tomllib.loads(self.config_bytes.decode("utf-8"))
        return parse_config(raw, path=self.config_path, sha256=hashlib.sha256(self.config_bytes).hexdigest())


def key_graph(
    delta: DeltaStore,
    frame: pl.DataFrame,
    config: OrgConfig,
    rows_per_bucket: int,
    scratch: str,
    clock: StageClock | None = None,
) -> Buckets:
    """Components of the batch's rows over their keys and the store's links between them, dealt to buckets. Large
    key lists go to the server through the run's `scratch` folder (`shipped`).

    On the clock: `check` the rows' values normalised on the driver, `resolve` the rest."""
    t = time.perf_counter()
    fields = prepare_fields(frame, config).with_row_index("row")
    if clock is not None:
        t = clock.lap("check", t)
    height = fields.height
    values = pl.concat(
        [
            fields.select("row", "id_type", "id_value"),
            fields.select("row", pl.col("lookup_type").alias("id_type"), pl.col("lookup_value").alias("id_value")),
        ]
    ).filter((pl.col("id_type") != "") & (pl.col("id_value") != ""))
    cards = values.filter(pl.col("id_type") == CARD).select("row", pl.col("id_value").alias("card_number"))
    values = values.filter(pl.col("id_type") != CARD)
    value_keys = values.select("id_type", "id_value").unique(maintain_order=True).with_row_index("key")
    card_keys = cards.select("card_number").unique(maintain_order=True).with_row_index("key")
    given = fields.select("row", pl.col("customer_id").cast(pl.Int64, strict=False)).drop_nulls()

    store = {name: delta.read(name) for name in TABLES}
    holders = (
        store["identifiers"]
        .join(shipped(delta, value_keys.to_arrow(), f"{scratch}/values"), ["id_type", "id_value"])
        .select("key", "customer_id")
        .distinct()
        .toArrow()
    )
    card_holders = (
        store["cards"]
        .join(shipped(delta, card_keys.to_arrow(), f"{scratch}/cards"), ["card_number"])
        .where("customer_id IS NOT NULL")
        .select("key", "customer_id")
        .toArrow()
    )
    links, steps = _chains(
        delta,
        scratch,
        store["customers"],
        set(given["customer_id"].to_list())
        | set(holders.column("customer_id").to_pylist())
        | set(card_holders.column("customer_id").to_pylist()),
    )

    customer_ids = np.unique(
        np.concatenate(
            [
                given["customer_id"].to_numpy(),
                _ints(holders, "customer_id"),
                _ints(card_holders, "customer_id"),
                links[0],
                links[1],
            ]
        )
    )
    value_base, card_base = height, height + value_keys.height
    customer_base = card_base + card_keys.height

    def customer_node(ids: np.ndarray) -> np.ndarray:
        return customer_base + np.searchsorted(customer_ids, ids)

    row_values = values.join(value_keys, on=["id_type", "id_value"])
    row_cards = cards.join(card_keys, on="card_number")
    a = np.concatenate(
        [
            row_values["row"].to_numpy().astype(np.int64),
            row_cards["row"].to_numpy().astype(np.int64),
            given["row"].to_numpy().astype(np.int64),
            value_base + _ints(holders, "key"),
            card_base + _ints(card_holders, "key"),
            customer_node(links[0]),
        ]
    )
    b = np.concatenate(
        [
            value_base + row_values["key"].to_numpy().astype(np.int64),
            card_base + row_cards["key"].to_numpy().astype(np.int64),
            customer_node(given["customer_id"].to_numpy()),
            customer_node(_ints(holders, "customer_id")),
            customer_node(_ints(card_holders, "customer_id")),
            customer_node(links[1]),
        ]
    )
    roots = component_roots(customer_base + customer_ids.size, a, b)
    # every component holds a row (each key and customer was reached from one), so its root is a row's node: the
    # components are dealt round-robin in the order of their first rows
    unique_roots = np.unique(roots[:height])
    count = max(1, min(MAX_BUCKETS, math.ceil(height / rows_per_bucket), unique_roots.size))
    bucket_of_root = np.zeros(customer_base + customer_ids.size, dtype=np.int64)
    bucket_of_root[unique_roots] = np.arange(unique_roots.size) % count
    buckets = bucket_of_root[roots]
    if clock is not None:
        clock.lap("resolve", t)
    return Buckets(
        rows=buckets[:height],
        customers=pa.table(
            {"customer_id": pa.array(customer_ids, pa.int64()), "bucket": pa.array(buckets[customer_base:], pa.int64())}
        ),
        cards=pa.table(
            {
                "card_number": card_keys["card_number"].to_arrow(),
                "bucket": pa.array(buckets[card_base:customer_base], pa.int64()),
            }
        ),
        count=count,
        chain_steps=steps,
    )


def _ints(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.int64)


def _chains(
    delta: DeltaStore, scratch: str, customers: DataFrame, seeds: set[int]
) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """Every merged_into link from the seeds to the ends of their chains: (customer_id, merged_into) arrays."""
    seen = set(seeds)
    frontier, steps = sorted(seen), 0
    froms: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    tos: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    while frontier:
        steps += 1
        if steps > MAX_CHAIN_STEPS:
            raise StoreError(f"{delta.store}: a merge chain longer than {MAX_CHAIN_STEPS} steps; run store audit")
        ids = shipped(delta, pa.table({"customer_id": pa.array(frontier, type=pa.int64())}), f"{scratch}/chain-{steps}")
        found = (
            customers.join(ids, ["customer_id"], "left_semi")
            .where("merged_into IS NOT NULL")
            .select("customer_id", "merged_into")
            .toArrow()
        )
        froms.append(_ints(found, "customer_id"))
        tos.append(_ints(found, "merged_into"))
        following = set(tos[-1].tolist()) - seen
        seen |= following
        frontier = sorted(following)
    return (np.concatenate(froms), np.concatenate(tos)), steps


def shipped(delta: DeltaStore, data: pa.Table, where: str) -> DataFrame:
    """An Arrow table of the driver as a Spark DataFrame: inside the plan when small, else written first as the Delta
    table `where` (in the run's scratch folder) in slices of SHIP_BYTES, since a plan or a message holding it whole
    would pass Spark Connect's message limit (128 MiB)."""
    if data.nbytes <= SHIP_BYTES:
        return delta.frame(data)
    delta.write(where, data, batch_rows=max(1, data.num_rows * SHIP_BYTES // data.nbytes))
    return delta.read(where)


def bucket_frames(delta: DeltaStore, frame: pl.DataFrame, buckets: Buckets, scratch: str) -> DataFrame:
    """One Spark DataFrame of every bucket's rows, customers, identifiers and cards, each part's columns prefixed
    (PREFIX) and tagged with its `part` and `bucket`; what the driver sends goes through `scratch` when large."""
    from pyspark.sql import functions as F

    rows = frame.with_columns(pl.Series("bucket", buckets.rows, dtype=pl.Int64)).to_arrow()
    by_customer = shipped(delta, buckets.customers, f"{scratch}/customers")
    store = {name: delta.read(name) for name in TABLES}
    cards = (
        store["cards"]
        .join(by_customer, "customer_id")
        .unionByName(store["cards"].join(shipped(delta, buckets.cards, f"{scratch}/named-cards"), "card_number"))
        .distinct()
    )
    parts = {
        "rows": shipped(delta, rows, f"{scratch}/rows"),
        "customers": store["customers"].join(by_customer, "customer_id"),
        "identifiers": store["identifiers"].join(by_customer, "customer_id"),
        "cards": cards,
    }
    # every part with every part's columns, typed (Sail types a column unionByName adds as NULL, which its UDFs refuse)
    columns = [
        (name, field.name, PREFIX[name] + field.name, field.dataType)
        for name, part in parts.items()
        for field in part.schema.fields
        if field.name != "bucket"
    ]
    tagged = [
        part.select(
            F.col("bucket"),
            F.lit(name).alias("part"),
            *(
                (F.col(column) if owner == name else F.lit(None).cast(kind)).alias(alias)
                for owner, column, alias, kind in columns
            ),
        )
        for name, part in parts.items()
    ]
    return functools.reduce(lambda x, y: x.union(y), tagged)


def decide_bucket(shared: Shared, data: pa.Table) -> pa.Table:
    """Decide one bucket on the executor: its rows against an in-memory DuckDB store of the part of the store they
    reach, by the DuckDB engine. Returns (bucket, part, payload) rows: outcomes, checked, errors (Arrow IPC) and
    counts (JSON), with a real run's `change:<table>` rows (Arrow IPC: its net changes and record rows, spark/
    publish.py's changes_in), or `refused` (JSON) when the engine refuses the batch (a component too large, a broken
    chain)."""
    bucket = int(data.column("bucket")[0].as_py())
    part = data.column("part")
    pieces = {name: _unprefixed(data.filter(pc.equal(part, name)), PREFIX[name]) for name in PARTS}
    run_id = shared.run_id  # None: a dry run
    config = shared.config()
    with duckdb.connect() as con:
        con.execute(SCHEMA_SQL)
        ensure(con)
        for table in TABLES:
            con.register("bucket_rows", pieces[table].select(list(COLUMNS[table])))
            con.execute(f"INSERT INTO {table} SELECT {stored_columns(table)} FROM bucket_rows")
            con.unregister("bucket_rows")
        rows = pl.from_arrow(pieces["rows"])
        assert isinstance(rows, pl.DataFrame)
        ws = Workspace(con)
        events = run_id is not None and shared.provenance
        try:
            decision = decide_batch(ws, rows, config, events=events, workers=1, max_component=shared.max_component)
        except LoyaltyBulkError as exc:
            refusal = {"kind": type(exc).__name__, "message": str(exc)}
            return _out(bucket, [("refused", json.dumps(refusal).encode())])
        changes: list[tuple[str, bytes]] = []
        if run_id is not None:
            plan = plan_changes(decision.checked.checked, decision.outcomes)
            positions = positions_by_rows(plan, shared.file_rows) if shared.provenance else None
            after = commit_changes(decision.staged, run_id, positions, config, keep=True)
            ws.close()
            found = changes_in(con, {name: pieces[name] for name in TABLES}, run_id, meta=False)
            changes = [(f"change:{name}", _arrow_ipc(table)) for name, table in found.items()]
        else:
            con.execute("BEGIN")
            after = commit_changes(decision.staged, "bucket", None, config, keep=False)
            con.execute("ROLLBACK")
    counts = {"before": decision.store_before.to_dict(), "after": after.to_dict()}
    return _out(
        bucket,
        [
            ("outcomes", _ipc(decision.outcomes)),
            ("checked", _ipc(decision.checked.checked)),
            ("errors", _ipc(decision.checked.errors)),
            ("counts", json.dumps(counts).encode()),
            *changes,
        ],
    )


def _unprefixed(table: pa.Table, prefix: str) -> pa.Table:
    names = [n for n in table.column_names if n.startswith(prefix)]
    return table.select(names).rename_columns([n[len(prefix) :] for n in names])


def _ipc(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.write_ipc(sink, compression="zstd")
    return sink.getvalue()


def _arrow_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _out(bucket: int, parts: Sequence[tuple[str, bytes]]) -> pa.Table:
    return pa.table(
        {
            "bucket": pa.array([bucket] * len(parts), pa.int64()),
            "part": pa.array([p for p, _ in parts], pa.string()),
            "payload": pa.array([b for _, b in parts], pa.binary()),
        }
    )


def decide_on_spark(
    delta: DeltaStore,
    frame: pl.DataFrame,
    config: OrgConfig,
    shared: Shared,
    clock: StageClock,
    run_id: str,
    rows_per_bucket: int = ROWS_PER_BUCKET,
) -> tuple[Decision, dict[str, pa.Table]]:
    """Decide the batch (read.py's frame) on Spark's executors: the Decision the DuckDB engine would make, with the
    counts of the store's part before and after it (see pipeline/run.py), and for a real run (`shared.run_id`) its
    net changes and record rows by staged table (spark/publish.py's changes_in), gathered from every bucket."""
    scratch = scratch_folder(run_id)

    def on_executor(table: pa.Table) -> pa.Table:  # a function, whose type hints Spark reads (not a partial)
        return decide_bucket(shared, table)

    # the answers stay on the server and come back a bucket at a time: one reply holding them all would pass Spark
    # Connect's message limit (128 MiB), where a bucket's (compressed) answers stay far below it
    answers = f"{scratch}/answers"
    try:
        buckets = key_graph(delta, frame, config, rows_per_bucket, scratch, clock)
        t = time.perf_counter()
        decided = bucket_frames(delta, frame, buckets, scratch).groupBy("bucket")
        decided.applyInArrow(on_executor, schema=OUT_SCHEMA).write.format("delta").save(delta.uri(answers))
        stored = delta.read(answers)
        parts = [row for bucket in range(buckets.count) for row in stored.where(stored.bucket == bucket).collect()]
    finally:
        remove_scratch(delta, scratch)
    decision, changes = _joined([row.asDict() for row in parts])
    clock.lap("decide", t)
    return decision, changes


def remove_scratch(delta: DeltaStore, scratch: str) -> None:
    """A run's scratch tables removed (a store on an object store keeps them: docs/spark.md)."""
    if "://" not in delta.store:
        shutil.rmtree(delta.uri(scratch), ignore_errors=True)


def _joined(answers: list[dict[str, Any]]) -> tuple[Decision, dict[str, pa.Table]]:
    """The buckets' answers as one Decision, rows in the batch's order and components numbered across the batch, and
    a real run's changes by table."""
    refused = [json.loads(a["payload"]) for a in answers if a["part"] == "refused"]
    if refused:
        first = refused[0]
        raise (ComponentTooLarge if first["kind"] == ComponentTooLarge.__name__ else StoreError)(first["message"])
    frames: dict[str, list[pl.DataFrame]] = {"outcomes": [], "checked": [], "errors": []}
    before: list[StoreCounts] = []
    after: list[StoreCounts] = []
    changes: dict[str, list[pa.Table]] = {}
    for answer in answers:
        payload = answer["payload"]
        if answer["part"].startswith("change:"):
            changes.setdefault(answer["part"].removeprefix("change:"), []).append(
                pa.ipc.open_stream(payload).read_all()
            )
        elif answer["part"] == "counts":
            counts = json.loads(payload)
            before.append(StoreCounts(**counts["before"]))
            after.append(StoreCounts(**counts["after"]))
        else:
            frame = pl.read_ipc(io.BytesIO(payload))
            if answer["part"] == "outcomes":
                frame = frame.with_columns(pl.lit(answer["bucket"], dtype=pl.Int64).alias("bucket"))
            frames[str(answer["part"])].append(frame)
    if not before:
        raise InternalError("no bucket answered: nothing was decided")
    outcomes = pl.concat(frames["outcomes"], how="vertical_relaxed").sort("seq")
    # a component's plan_group is its number in its bucket; across the batch, components are numbered in the
    # order of their first rows, as resolve numbers them (engine/groups.py)
    numbers = (
        outcomes.filter(pl.col("plan_group").is_not_null())
        .group_by("bucket", "plan_group")
        .agg(pl.col("seq").min().alias("first"))
        .with_columns((pl.col("first").rank("dense").cast(pl.Int64) - 1).alias("number"))
        .drop("first")
    )
    outcomes = (
        outcomes.join(numbers, on=["bucket", "plan_group"], how="left", maintain_order="left")
        .with_columns(pl.col("number").alias("plan_group"))
        .drop("number", "bucket")
    )
    checked = CheckResult(
        checked=pl.concat(frames["checked"], how="vertical_relaxed").sort("seq"),
        errors=pl.concat(frames["errors"], how="vertical_relaxed").sort("seq"),
    )
    decision = Decision(checked, outcomes, None, _sum(before), after=_sum(after))
    return decision, {name: pa.concat_tables(tables) for name, tables in changes.items()}


def _sum(counts: Iterator[StoreCounts] | list[StoreCounts]) -> StoreCounts:
    dicts = [c.to_dict() for c in counts]
    return StoreCounts(**{name: sum(d[name] for d in dicts) for name in dicts[0]})
