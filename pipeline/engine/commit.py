"""A run's commit: its changes written, logged for undo and provenance, and the store bound to the org config,
all inside the caller's transaction, which also takes the run's ledger entry (store/ledger.py).

The run's orchestrator (pipeline/run.py) opens that transaction, calls `commit_changes`, then records the
ledger entry, whose summary holds the counts this returns.
"""

from __future__ import annotations

import polars as pl

from pipeline.config import OrgConfig
from pipeline.engine.apply import apply_changes
from pipeline.engine.record import record_provenance, record_undo, record_unrecorded
from pipeline.engine.replay import Replayed
from pipeline.results import StoreCounts
from pipeline.store.binding import bind, bound_config
from pipeline.store.schema import store_counts


def commit_changes(
    replayed: Replayed, run_id: str, positions: pl.DataFrame | None, config: OrgConfig, keep: bool
) -> StoreCounts:
    """Write the decided changes (apply_changes) and return the store's counts after them.

    With `keep` (a run that is not dry) also log them for undo, record their provenance (each change's row
    from `positions`; None when the bench's switch turned provenance off: one `unrecorded` row says so) and
    bind the store to the config if no config holds it yet.
    """
    applied = apply_changes(replayed)
    # counted before the logs are written: they change no count, and the counts' scans then find the store's
    # blocks still in DuckDB's buffer pool
    after = store_counts(replayed.ws.con)
    if keep:
        record_undo(applied, run_id)
        if positions is not None:
            record_provenance(applied, run_id, positions)
        else:
            record_unrecorded(replayed.ws.con, run_id)
        if not bound_config(replayed.ws.con):
            bind(replayed.ws.con, config)
    return after
