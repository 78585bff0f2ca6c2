"""The interacting rows' replay, split by connected component and run on several cores.

Rows that share a key form the components of plan.plan_groups (the call plan's groups, one source):
nothing a row of one component reads or writes is reached by a row of another (plan.py), so each
component replays on its own working set and the union of their outcomes, net changes and events is
exactly what one sequential pass over all interacting rows gives. Components are packed into as many
shards as there are workers; one shard replays in this process, each other one in a worker process
(Python's GIL lets only one thread run Python at a time). A component cannot be split: a batch that is
one giant component replays on one core, as before.

Worker processes are fresh interpreters, never forks (DuckDB's threads may hold locks a forked child
would inherit), started when the run starts, so their start-up overlaps the check and resolve stages. They get the
shards' pulled frames (polars pickles a frame as Arrow IPC) and send back frames, never Python objects
of the working set.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import CARD, OrgConfig
from pipeline.engine.replay import replay_working_set
from pipeline.errors import InternalError

MIN_ROWS_FOR_WORKERS = 50_000
"""Interacting rows outside the largest component that it takes to start worker processes: fewer replay in
this process whatever --workers says, since their replay takes less than a worker's start-up (an
interpreter importing polars, ≈0.4 s of a core), and a component cannot be split."""

REMOTE_HANDICAP = 0.2
"""A worker process's shard is lighter than this process's by this share of an equal shard: it pays for
the frames' transfer both ways and builds its working set on a fresh heap (the 300k-row sample: equal
shards ended 0.4 s apart, of 2.4 s)."""

Pulled = dict[str, pl.DataFrame]
Replayed = tuple[pl.DataFrame, dict[str, pl.DataFrame]]


def core_count() -> int:
    """The cores this process may run on (the default of --workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ReplayPool:
    """Worker processes waiting for shards to replay, one socket each; `close` ends them."""

    def __init__(self, processes: int):
        self._workers: list[tuple[subprocess.Popen, Connection]] = []
        try:
            for _ in range(processes):
                ours, theirs = socket.socketpair()
                with theirs:
                    process = subprocess.Popen(
                        [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno())],
                        pass_fds=[theirs.fileno()],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,  # stdout is the run's (--json)
                    )
                # the worker holds the only other end now: it sees EOF if this process dies
                self._workers.append((process, Connection(ours.detach())))
        except BaseException:
            self.close()
            raise

    @property
    def processes(self) -> int:
        return len(self._workers)

    def replay(self, worker: int, shards: list[Pulled], config: OrgConfig, events: bool) -> list[Replayed]:
        """Replay `shards` one after the other in worker process `worker`; their results in order."""
        process, conn = self._workers[worker]
        try:
            conn.send((shards, config, events))
            status, result = conn.recv()
        except (EOFError, OSError) as exc:
            raise InternalError(f"replay worker {process.pid} ended unexpectedly; nothing was applied") from exc
        if status != "ok":
            raise InternalError(f"replay worker failed; nothing was applied:\n{result}")
        return result

    def close(self) -> None:
        for _, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for process, _ in self._workers:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._workers = []


_WORKER_MAIN = "import sys; from pipeline.engine.components import serve; serve(int(sys.argv[1]))"
"""A fresh interpreter, not multiprocessing's spawn: spawn re-imports the parent's __main__ (any script
that runs a run), and a fork would inherit DuckDB's threads' locks."""


def largest_component(groups: pl.DataFrame) -> int:
    """Rows of the largest of resolve's components (plan_groups: seq, plan_group), 0 when there is none."""
    if groups.height == 0:
        return 0
    return int(groups.group_by("plan_group").len()["len"].max())  # type: ignore[arg-type]


@contextmanager
def replay_pool(workers: int, rows: int, largest: int = 0) -> Iterator[ReplayPool | None]:
    """Worker processes for `rows` interacting rows, `largest` of them in one component, replayed on `workers`
    cores (this process is one), or None when one core is asked for or too few rows can go to another core
    (MIN_ROWS_FOR_WORKERS)."""
    if workers <= 1 or rows - largest < MIN_ROWS_FOR_WORKERS:
        yield None
        return
    pool = ReplayPool(workers - 1)
    try:
        yield pool
    finally:
        pool.close()


def serve(fd: int) -> None:
    """A worker process's loop on socket `fd`: replay each list of shards received until told to stop
    (None, or EOF when the parent is gone)."""
    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us by EOF
    gc.disable()  # see engine.batch._gc_paused: the working set holds no cycles
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        shards, config, events = task
        try:
            reply: tuple[str, Any] = ("ok", [replay_working_set(shard, config, events) for shard in shards])
        except Exception:
            reply = ("error", traceback.format_exc())
        conn.send(reply)
        gc.collect()


def replay_components(
    pulled: Pulled,
    groups: pl.DataFrame,
    config: OrgConfig,
    events: bool,
    pool: ReplayPool | None = None,
    shards: int | None = None,
) -> Replayed:
    """Replay the pulled working set (engine.replay.pull_working_set) as `shards` independent parts.

    `groups` are plan_groups' components of the interacting rows. Shards default to one per core of
    the pool and this process; more shards than that replay in turn. Outcomes, net changes and events
    are those of one sequential pass (events in row order).
    """
    count = shards or (pool.processes + 1 if pool else 1)
    if pulled["rows"].height == 0:
        return replay_working_set(pulled, config, events)
    parts = split_working_set(pulled, groups, count) if count > 1 else []
    if len(parts) <= 1:
        # the rows tagged with their component: the replay visits them component by component (in_component_order)
        tagged = pulled | {"rows": _with_component(pulled["rows"], groups)}
        return merge_replayed([replay_working_set(tagged, config, events)])
    cores = pool.processes + 1 if pool else 1
    assigned = [parts[i::cores] for i in range(cores)]
    if pool is None:
        results = [replay_working_set(part, config, events) for part in parts]
    else:
        with ThreadPoolExecutor(max_workers=pool.processes, thread_name_prefix="replay-send") as senders:
            remote = [
                senders.submit(pool.replay, worker, assigned[worker + 1], config, events)
                for worker in range(pool.processes)
                if assigned[worker + 1]
            ]
            results = [replay_working_set(part, config, events) for part in assigned[0]]
            for future in remote:
                results += future.result()
    return merge_replayed(results)


def _with_component(rows: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
    """The pulled rows with their component's plan_group; a row that shares no key (the replay route of the tests
    replays every row) is a component alone."""
    return rows.join(groups.select("seq", "plan_group"), on="seq", how="left", maintain_order="left").with_columns(
        pl.col("plan_group").fill_null(-1 - pl.col("seq"))
    )


def merge_replayed(results: list[Replayed]) -> Replayed:
    """One result from the shards': outcomes and every chg_* frame concatenated, outcomes and events in row order
    (a shard replays component by component: engine.replay.in_component_order)."""
    outcomes = pl.concat([r[0] for r in results]).sort("seq")
    tables = {name for _, changes in results for name in changes}
    changes = {name: pl.concat([c[name] for _, c in results if name in c]) for name in sorted(tables)}
    if "chg_events" in changes:
        # each row's events stay in the order it made them; a component's rows are replayed in seq order
        changes["chg_events"] = changes["chg_events"].sort("seq", maintain_order=True)
    return outcomes, changes


@dataclass(frozen=True)
class _Keyed:
    """Which component each customer and card of the working set belongs to."""

    customers: pl.DataFrame  # customer_id, plan_group
    cards: pl.DataFrame  # card_number, plan_group


def split_working_set(pulled: Pulled, groups: pl.DataFrame, shards: int) -> list[Pulled]:
    """The pulled frames cut into at most `shards` parts, each a union of whole components.

    A customer belongs to the component of the rows whose keys name it (its target, a holder of its
    value, its card's holder), a card to its holder's or else to the rows that name it; resolve.py's
    keys make that component unique, which is checked rather than assumed.
    """
    rows = _with_component(pulled["rows"], groups)
    keyed = _key_working_set(rows, pulled)
    shard_of = _pack(rows.group_by("plan_group").len(), shards)
    rows = rows.join(shard_of, on="plan_group", maintain_order="left")
    customers = keyed.customers.join(shard_of, on="plan_group").select("customer_id", "shard")
    cards = keyed.cards.join(shard_of, on="plan_group").select("card_number", "shard")
    tagged = {
        "rows": rows,  # plan_group stays: each shard replays component by component (in_component_order)
        "customers": pulled["customers"].join(customers, on="customer_id", how="left", maintain_order="left"),
        "idents": pulled["idents"].join(customers, on="customer_id", how="left", maintain_order="left"),
        "holdings": pulled["holdings"].join(customers, on="customer_id", how="left", maintain_order="left"),
        "cards": pulled["cards"].join(cards, on="card_number", how="left", maintain_order="left"),
    }
    for name, frame in tagged.items():
        if frame["shard"].null_count():
            raise InternalError(f"working-set {name} reached by no interacting row; nothing was applied")
    parts: list[Pulled] = [{} for _ in range(shards)]
    for name, frame in tagged.items():
        for (shard,), part in frame.partition_by("shard", as_dict=True, include_key=False).items():
            parts[shard][name] = part
    return [
        {name: part.get(name, pulled[name].clear()) for name in pulled}
        for part in parts
        if part.get("rows") is not None
    ]


def _key_working_set(rows: pl.DataFrame, pulled: Pulled) -> _Keyed:
    rows = rows.select("target", "lookup_type", "lookup_value", "id_type", "id_value", "plan_group")
    card_rows = rows.filter(pl.col("id_type") == CARD)
    reached = pl.concat(
        [
            rows.select(pl.col("target").alias("customer_id"), "plan_group").drop_nulls("customer_id"),
            rows.join(pulled["holdings"], on=["id_type", "id_value"]).select("customer_id", "plan_group"),
            card_rows.join(pulled["cards"], left_on="id_value", right_on="card_number")
            .select("customer_id", "plan_group")
            .drop_nulls("customer_id"),
        ]
    )
    customers = _one_component(reached, "customer_id")
    named = pl.concat(
        [
            card_rows.select(pl.col("id_value").alias("card_number"), "plan_group"),
            rows.filter(pl.col("lookup_type") == CARD).select(
                pl.col("lookup_value").alias("card_number"), "plan_group"
            ),
        ]
    )
    held = (
        pulled["cards"]
        .select("card_number", "customer_id")
        .join(customers, on="customer_id")
        .select("card_number", "plan_group")
    )
    return _Keyed(customers=customers, cards=_one_component(pl.concat([held, named]), "card_number"))


def _one_component(pairs: pl.DataFrame, key: str) -> pl.DataFrame:
    """`key`, plan_group with each key once; a key of two components means the keys were not closed."""
    spans = pairs.group_by(key).agg(pl.col("plan_group").min(), pl.col("plan_group").max().alias("last"))
    if (spans["plan_group"] != spans["last"]).any():
        raise InternalError(f"a working-set {key} is reached by two components; nothing was applied")
    return spans.drop("last")


def _pack(sizes: pl.DataFrame, shards: int) -> pl.DataFrame:
    """plan_group -> shard, balancing rows per shard (components of `sizes`: plan_group, len).

    The largest components are placed one at a time on the lightest shard (longest processing time
    first); the many small rest then fill the lighter shards up to one level, in one vectorised pass.
    """
    sizes = sizes.sort("len", "plan_group", descending=[True, False])
    share = float(sizes["len"].sum()) / shards
    big = sizes.filter(pl.col("len") >= share / 8).head(8 * shards)
    # shard 0 replays in this process; the others start with their transfer's handicap
    loads = [(0.0 if shard == 0 else REMOTE_HANDICAP * share, shard) for shard in range(shards)]
    placed = []
    for length in big["len"]:
        load, shard = heapq.heappop(loads)
        placed.append(shard)
        heapq.heappush(loads, (load + length, shard))
    # the rest in component order, not by size: each shard gets a like mix of small and larger ones
    rest = sizes.slice(big.height).sort("plan_group")
    load_of = np.zeros(shards)
    for load, shard in loads:
        load_of[shard] = load
    bounds = np.cumsum(_water_fill(load_of, float(rest["len"].sum())))
    # a component goes to the shard whose share its middle falls into (the last one takes any rounding)
    middle = np.cumsum(rest["len"].to_numpy()) - rest["len"].to_numpy() / 2
    rest_shards = np.minimum(np.searchsorted(bounds, middle, side="right"), shards - 1)
    return pl.DataFrame(
        {
            "plan_group": pl.concat([big["plan_group"], rest["plan_group"]]),
            "shard": np.concatenate([np.array(placed, dtype=np.int64), rest_shards.astype(np.int64)]),
        },
        schema={"plan_group": pl.Int64, "shard": pl.Int64},
    )


def _water_fill(loads: np.ndarray, amount: float) -> np.ndarray:
    """Room per shard that lifts the lightest shards to one level, `amount` in all."""
    ordered = np.sort(loads)
    for filled in range(1, len(ordered) + 1):
        level = (amount + ordered[:filled].sum()) / filled
        if filled == len(ordered) or level <= ordered[filled]:
            break
    return np.maximum(level - loads, 0.0)
