"""The engine's entry: check, resolve, then decide every row, set-based or by replay, staged for apply.

`decide_batch` composes the stages in order (check.py, resolve.py, decide.py and replay.py, whose
changes apply.py writes); run.py wraps it in the run's transaction with the reports, and the tests
call it directly on a store of the model's. The route each row takes is resolve's split, or, with
`route="replay"` (or LOYALTY_BULK_TEST_ROUTE=replay, for tests only), the replay for every row.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import get_args

import polars as pl

from pipeline import faults
from pipeline.catalog import CATALOG
from pipeline.config import OrgConfig
from pipeline.engine.check import CheckResult, check_requests
from pipeline.engine.components import largest_component, replay_components, replay_pool
from pipeline.engine.decide import OUTCOME_SCHEMA, decide
from pipeline.engine.replay import Replayed, pull_working_set, stage_replayed
from pipeline.engine.resolve import Route, resolve_targets
from pipeline.engine.workspace import Workspace
from pipeline.errors import ComponentTooLarge, InternalError
from pipeline.input.columns import REPLACES_COLUMN
from pipeline.results import StageClock, StoreCounts
from pipeline.store.duck import evict_cached_blocks
from pipeline.store.schema import store_counts

ROUTE_ENV = "LOYALTY_BULK_TEST_ROUTE"
"""For tests only: `replay` sends every row of every run through the replay (README "Development")."""


@dataclass(frozen=True)
class Decision:
    """A decided batch: the check result, one outcome row per checked row, and the staged changes."""

    checked: CheckResult
    outcomes: pl.DataFrame
    """OUTCOME_SCHEMA + error_message, and the call plan's plan_group and plan_fresh (null for rows
    that share no key with another)."""
    replayed: Replayed | None
    """The handle apply_changes takes: chg_* hold both routes' changes (None: decided elsewhere, see `after`)."""
    store_before: StoreCounts
    """The store's counts before the run (nothing is written until apply)."""
    after: StoreCounts | None = None
    """A batch decided away from the run's store (the Spark engine's executors, spark/decide.py): the counts the
    changes would leave, which a dry run reports; such a decision has no changes to apply here."""

    @property
    def staged(self) -> Replayed:
        """The decided changes, staged for apply (of a decision made here)."""
        if self.replayed is None:
            raise InternalError("a batch decided elsewhere has no changes staged here")
        return self.replayed

    @property
    def routes(self) -> dict[str, int]:
        """Rows decided by each route: `set_based` and `replay` (of a decision made here)."""
        return {"set_based": self.staged.decided.rows, "replay": self.staged.rows}


def route_from_env() -> Route:
    route = os.environ.get(ROUTE_ENV, "") or "auto"
    if route not in get_args(Route):
        raise InternalError(f"{ROUTE_ENV}={route!r}: expected one of {', '.join(get_args(Route))}")
    return route  # type: ignore[return-value]


def decide_batch(
    ws: Workspace,
    raw: pl.DataFrame,
    config: OrgConfig,
    clock: StageClock | None = None,
    events: bool = True,
    route: Route | None = None,
    workers: int = 1,
    memory_limit: str | None = None,
    max_component: int | None = None,
) -> Decision:
    """Check, resolve and decide a batch of raw request rows; the changes wait in chg_* for apply_changes
    (with `events`, also each replayed row's provenance events, chg_events).

    The replay of interacting rows is pure Python over a working set pulled beforehand, so it runs in a
    worker thread while DuckDB decides the independent rows (DuckDB releases the GIL as it works): on
    two cores the two overlap instead of adding up. Only this thread ever touches the connection.
    With `workers` > 1 that thread replays one shard of the rows' connected components (resolve's
    plan groups) and a worker process each other one (pipeline/components.py). The processes start once
    resolve has found the components, and only when there is enough to share (components.replay_pool): they
    import while the working set is pulled and split, and a batch that is one giant component (or has few
    interacting rows) never pays for their start-up.

    `max_component` (the Spark engine's bound) refuses a batch whose largest connected component has more rows
    (ComponentTooLarge), before anything is decided.

    With the connection's `memory_limit`, DuckDB's cached store blocks are evicted once resolve is done and
    again once the decision is staged (duck.evict_cached_blocks): nothing after resolve reads the store's tables
    but through the run's temp tables.
    """
    clock = clock or StageClock()
    t = time.perf_counter()
    checked = check_requests(raw, config)
    t = clock.lap("check", t)
    faults.kill_point("after-check")
    resolved = resolve_targets(ws, checked.checked, config, route or route_from_env())
    if memory_limit is not None:
        evict_cached_blocks(ws.con, memory_limit)  # from here on the run reads its own temp tables, not the store
    t = clock.lap("resolve", t)
    largest = largest_component(resolved.groups)
    if max_component is not None and largest > max_component:
        raise ComponentTooLarge(
            f"the batch's rows that interact form a connected component of {largest} rows (rows that share a "
            f"customer, value or card, directly or through others), more than the engine's bound of {max_component} "
            "rows that one worker replays in order; nothing was decided or applied. Split the batch (the rows that "
            "share keys run in one component) or raise the bound"
        )
    with replay_pool(workers, resolved.interacting, largest) as workers_pool:
        pulled = pull_working_set(resolved)
        with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay") as pool:
            replaying = pool.submit(replay_components, pulled, resolved.groups, config, events, workers_pool)
            decided = decide(resolved, config)
            before = store_counts(ws.con)  # while the replay runs, which often ends after the set-based rows
            outcomes, changes = replaying.result()
    replayed = stage_replayed(decided, outcomes, changes)
    if memory_limit is not None:
        # the counts' scans cached customers and cards again, and DuckDB gives back what the deciding tables held
        evict_cached_blocks(ws.con, memory_limit)
    together = (
        pl.concat([decided.outcomes, outcomes.cast(OUTCOME_SCHEMA)])
        .sort("seq")
        .with_columns(
            # a failed row changed nothing, so it reports no warning either (errors.csv has no warning column)
            pl.when(pl.col("outcome").is_null())
            .then(pl.lit([], dtype=pl.List(pl.Int32)))
            .otherwise(pl.col("warnings"))
            .alias("warnings")
        )
    )
    decided_rows = _with_messages(together, checked.checked).join(
        resolved.groups, on="seq", how="left", maintain_order="left"
    )
    clock.lap("decide", t)
    return Decision(checked, decided_rows, replayed, before)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while the working set is built and replayed.

    The replay allocates millions of small tuples and sets that stay alive; each automatic collection
    walks all of them again (≈1.3 s of the 1M-row benchmark's replay). They hold no reference cycles,
    so nothing is lost by collecting once, afterwards, as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _with_messages(outcomes: pl.DataFrame, checked: pl.DataFrame) -> pl.DataFrame:
    """Add error_message to resolve/apply errors from the catalog templates and the row's values."""
    failed = outcomes.filter(pl.col("error_code").is_not_null()).join(
        checked.select("seq", "customer_id", "lookup_value", "id_type", "id_value", REPLACES_COLUMN),
        on="seq",
        how="left",
    )
    values = {
        "field": pl.col("error_field"),
        # a call line's replace is refused (7009) over the value it removes, not the one it adds
        "value": pl.when((pl.col("error_code") == 7009) & pl.col(REPLACES_COLUMN).is_not_null())
        .then(pl.col(REPLACES_COLUMN))
        .when(pl.col("error_code") != 8015)
        .then(pl.col("id_value"))
        .when(pl.col("error_field") == "customer_id")
        .then(pl.col("customer_id").cast(pl.String))
        .otherwise(pl.col("lookup_value")),
        "id_type": pl.col("id_type"),
        "customer": pl.col("resolved_customer_id"),
        "holder": pl.col("holder_id"),
        "limit": pl.col("limit"),
        "series": pl.col("card_series"),
        "status": pl.col("card_status"),
    }
    # each code's template over its own rows only: a when/then chain would build every template for every row
    messages = [
        part.select("seq", CATALOG[code].message_expr(**values).alias("error_message"))
        for (code,), part in failed.partition_by("error_code", as_dict=True).items()
    ]
    if not messages:
        return outcomes.with_columns(pl.lit(None, dtype=pl.String).alias("error_message"))
    return outcomes.join(pl.concat(messages), on="seq", how="left", maintain_order="left")
