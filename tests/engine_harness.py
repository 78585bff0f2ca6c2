"""Runs the real engine on a ModelStore and rows, in an in-memory DuckDB, for comparison with the model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import polars as pl

from model import FRAME_KEYS, ModelStore, RowResult, model_store_to_frames
from pipeline.config import OrgConfig
from pipeline.delivery.plan import call_lines, plan_changes
from pipeline.engine.apply import apply_changes
from pipeline.engine.batch import decide_batch
from pipeline.engine.resolve import Route
from pipeline.engine.workspace import Workspace, temp_tables
from pipeline.input.columns import FRAME_COLUMNS
from pipeline.store.duck import query_frame, transaction
from pipeline.store.schema import COLUMNS, SCHEMA_SQL, TABLES, VALUE_HASH_SQL, stored_columns


@dataclass(frozen=True)
class EngineRun:
    results: list[RowResult]
    frames: dict[str, pl.DataFrame]
    calls: list[dict] = field(default_factory=list)
    """The run's call plan, as calls.ndjson's lines parsed."""
    outcomes: pl.DataFrame = field(default_factory=pl.DataFrame)
    """decide_batch's outcome frame (codes, messages, holders, limits, plan groups), by seq."""
    routes: dict[str, int] = field(default_factory=dict)
    """Rows decided by each route (set_based, replay)."""


def raw_frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    """Request rows shaped like read_requests' frame: seq, file, row_number, then the raw columns (and the value a
    call line's replace removes, `replaces`, where a row gives one)."""
    return pl.DataFrame(
        {
            "seq": list(range(len(rows))),
            "file": ["batch.csv"] * len(rows),
            "row_number": list(range(1, len(rows) + 1)),
            **{c: [r.get(c) for r in rows] for c in FRAME_COLUMNS[3:]},
        },
        schema={
            "seq": pl.Int64,
            "file": pl.String,
            "row_number": pl.Int64,
            **dict.fromkeys(FRAME_COLUMNS[3:], pl.String),
        },
    )


def load_store(con: duckdb.DuckDBPyConnection, store: ModelStore) -> None:
    con.execute(SCHEMA_SQL)
    for name, frame in model_store_to_frames(store).items():
        con.register("frame", frame)
        con.execute(f"INSERT INTO {name} SELECT {stored_columns(name)} FROM frame")
        con.unregister("frame")


def store_frames(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """The store's tables in its snapshot columns, after checking that every value_hash is current."""
    [(stale,)] = con.execute(f"SELECT count(*) FROM identifiers WHERE value_hash <> {VALUE_HASH_SQL}").fetchall()
    assert stale == 0, f"{stale} identifiers carry a value_hash that is not their value's"
    frames = {}
    for name in TABLES:
        frame = query_frame(con, f"SELECT {', '.join(COLUMNS[name])} FROM {name}")
        frames[name] = frame.cast({"series_id": pl.Int32} if name == "cards" else {}).sort(FRAME_KEYS[name])
    return frames


def run_engine(
    store: ModelStore,
    rows: list[dict[str, str | None]],
    config: OrgConfig,
    dry_run: bool = False,
    route: Route | None = None,
    frame: pl.DataFrame | None = None,
) -> EngineRun:
    """The engine on `rows`, or on `frame` (read_requests' frame of a file, one row per entry of `rows`)."""
    con = duckdb.connect()
    load_store(con, store)
    with Workspace(con) as ws:
        decision = decide_batch(ws, raw_frame(rows) if frame is None else frame, config, route=route)
        checked, outcomes = decision.checked, decision.outcomes
        lines = call_lines(plan_changes(checked.checked, outcomes), "run", config)
        calls = [json.loads(line) for chunk in lines for line in chunk]
        with transaction(con, commit=not dry_run):
            apply_changes(decision.staged)
    assert temp_tables(con) == set(), "the run's workspace drops every temp table it made"
    by_seq: dict[int, RowResult] = {}
    values = dict(zip(checked.checked["seq"].to_list(), checked.checked["id_value"].to_list(), strict=True))
    for r in checked.errors.iter_rows(named=True):
        by_seq[r["seq"]] = RowResult(False, None, r["error_code"], r["error_field"], None, None, None, (), None)
    for r in outcomes.iter_rows(named=True):
        ok = r["outcome"] is not None
        by_seq[r["seq"]] = RowResult(
            ok,
            r["outcome"],
            r["error_code"],
            r["error_field"],
            r["resolved_customer_id"],
            r["survivor_id"],
            r["victim_id"],
            tuple(r["warnings"] or ()),
            values[r["seq"]],
            r["replaced_value"],
        )
    assert sorted(by_seq) == list(range(len(rows))), "every row must have exactly one result"
    frames = store_frames(con)
    con.close()
    return EngineRun([by_seq[i] for i in range(len(rows))], frames, calls, outcomes, decision.routes)
