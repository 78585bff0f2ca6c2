"""The temp tables of one run, each named once: the stage that makes it, the stages that read it, when it goes.

A stage works on the run's DuckDB connection through a Workspace and returns a small typed handle
(resolve.Resolved, decide.Decided, replay.Replayed, apply.Applied) that the next stage takes; a handle
vouches for the tables its stage left behind, and asking for one after it was dropped is an
InternalError instead of a query failing on a missing table. Every drop happens here: when a stage
finishes, the tables whose last reader it was go, and closing the workspace at the end of the run
drops the rest, so nothing outlives a run (temp tables live in DuckDB's memory until the connection
closes). tests/test_workspace.py checks both directions: the SQL of each stage module names exactly
the tables TEMP_TABLES says it makes or reads, and no temp table is left after a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal

import duckdb

from pipeline.errors import InternalError

Stage = Literal["resolve", "plan", "decide", "replay", "apply", "undo", "provenance", "run"]
"""Who makes or reads a table: the engine's stages, the call plan's groups (plan.py, called by resolve),
the undo log and provenance (written in the apply transaction), and `run` for the end of the run."""


@dataclass(frozen=True)
class TempTable:
    made_by: Stage
    read_by: frozenset[Stage]
    dropped_after: Stage
    what: str
    view: bool = False
    scratch: bool = False
    """Dropped by Workspace.scratch as soon as the step that made it is done, within its stage."""


def _t(
    made_by: Stage, read_by: set[Stage], dropped_after: Stage, what: str, view: bool = False, scratch: bool = False
) -> TempTable:
    return TempTable(made_by, frozenset(read_by), dropped_after, what, view, scratch)


TEMP_TABLES: dict[str, TempTable] = {
    # resolve: the batch as loaded, its targets and keys, and the part of the store it reaches
    "cfg_labels": _t("resolve", {"decide"}, "replay", "card labels with their status, active and closed flags"),
    "cfg_series": _t("resolve", {"decide"}, "replay", "card series with their max active cards per customer"),
    "cfg_present": _t("resolve", {"decide"}, "replay", "the catalog's 'already present' warning of each id type"),
    "req": _t("resolve", {"decide", "replay"}, "replay", "the checked rows"),
    "req_values": _t("resolve", set(), "resolve", "distinct (type, value) the rows name, cards aside, hashed"),
    "value_holders": _t("resolve", set(), "resolve", "customers holding a value of the same hash"),
    "req_cards": _t("resolve", set(), "resolve", "distinct card numbers the rows name"),
    "val_idents": _t("resolve", {"decide", "replay"}, "replay", "every store holding of those values"),
    "card_state": _t("resolve", {"decide", "replay"}, "replay", "the store's rows of those cards"),
    "known_refs": _t("resolve", set(), "resolve", "the requested customer_ids as stored"),
    "merged_customers": _t("resolve", set(), "resolve", "every MERGED customer (chains are followed on it)"),
    "chain": _t("resolve", set(), "resolve", "requested MERGED customer -> end of its chain"),
    "merge_chain_ends": _t("resolve", set(), "resolve", "pointer jumping's table (store.merge_chain_ends)"),
    "res": _t("resolve", {"decide", "replay"}, "replay", "each row's initial target"),
    "row_keys": _t("resolve", {"plan"}, "resolve", "each row's keys (hashes of customers, values, cards)"),
    "interacting": _t("resolve", {"decide", "replay"}, "replay", "seqs of the rows the replay decides"),
    "rel_customers": _t("resolve", set(), "resolve", "every customer a row can reach"),
    "rel_info": _t("resolve", {"decide", "replay", "apply"}, "run", "those customers, with rowid"),
    "rel_idents": _t("resolve", {"decide", "replay", "apply"}, "run", "their identifiers, with rowid"),
    "rel_cards": _t(
        "resolve",
        {"decide", "replay", "apply", "undo", "provenance"},
        "run",
        "their cards and the rows' cards, with rowid",
    ),
    # decide: the set-based decisions and the changes of every row (replay appends its own)
    "ind": _t("decide", set(), "decide", "the rows the set-based route decides", view=True),
    "ind_ident": _t("decide", set(), "decide", "set-based identifier decisions"),
    "ind_card": _t("decide", set(), "decide", "set-based card decisions"),
    "chg_delete": _t("decide", {"replay", "apply", "undo", "provenance"}, "run", "identifiers to delete"),
    "chg_merge": _t("decide", {"apply", "undo", "provenance"}, "run", "set-based merges (victim, survivor)"),
    "chg_insert": _t("decide", {"replay", "apply", "undo", "provenance"}, "run", "identifiers to insert"),
    "chg_cards": _t("decide", {"replay", "apply", "undo", "provenance"}, "run", "cards' new holder and label"),
    "chg_merge_status": _t("decide", {"replay", "apply"}, "run", "replayed merges: customer rows only"),
    "chg_events": _t("decide", {"replay", "provenance"}, "run", "the replayed rows' provenance events"),
    # replay: the working set is pulled into frames, then these go
    "ws_rows": _t("replay", set(), "replay", "the rows the replay decides, with their targets", scratch=True),
    "ws_customers": _t("replay", set(), "replay", "the customers those rows reach", scratch=True),
    # apply: the store rows the changes touch, found by rowid
    "chg_delete_rows": _t("apply", set(), "apply", "rowids of identifiers deleted or moved"),
    "chg_moves": _t("apply", {"undo", "provenance"}, "run", "identifiers a set-based merge moves"),
    "chg_customers": _t("apply", {"undo"}, "run", "customers merged, with their old state"),
    "chg_card_rows": _t("apply", set(), "apply", "rowids of cards changed or moved, with their new state"),
}


class Workspace:
    """The run's connection and the bookkeeping of its temp tables (TEMP_TABLES); a context manager.

    `finish(stage)` drops the tables that stage was the last to read and checks that the connection
    holds exactly the temp tables TEMP_TABLES says are alive; `close()` drops whatever is left.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.finished: list[Stage] = []
        self.closed = False

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is None:
            self.close()
        else:  # the failure is what the caller must see, not a drop on a connection in a failed transaction
            with contextlib.suppress(duckdb.Error):
                self.close(verify=False)

    def live(self) -> set[str]:
        """The tables that exist between stages: made by a finished stage and not yet dropped."""
        if self.closed:
            return set()
        done = set(self.finished)
        return {
            name
            for name, t in TEMP_TABLES.items()
            if t.made_by in done and t.dropped_after not in done and not t.scratch
        }

    def reading(self, maker: Stage, reader: Stage) -> duckdb.DuckDBPyConnection:
        """The connection for `reader`, once every table of `maker` that it reads is alive."""
        wanted = {name for name, t in TEMP_TABLES.items() if t.made_by == maker and reader in t.read_by}
        gone = sorted(wanted - self.live())
        if gone:
            raise InternalError(f"the {reader} stage reads {', '.join(gone)} of {maker}, which are not there")
        return self.con

    @contextlib.contextmanager
    def scratch(self, *names: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for a step whose scratch tables (TEMP_TABLES' `scratch`) go when it is done."""
        if not all(TEMP_TABLES[name].scratch for name in names):
            raise InternalError(f"not all of {', '.join(names)} are scratch tables")
        try:
            yield self.con
        finally:
            self._drop(names)

    def finish(self, stage: Stage) -> None:
        """Mark a stage finished: drop the tables it was the last to read, then check what is left."""
        self._drop(name for name, t in TEMP_TABLES.items() if t.dropped_after == stage)
        self.finished.append(stage)
        self.verify()

    def close(self, verify: bool = True) -> None:
        """Drop every table of the run that is still there (the end of the run, or a failure)."""
        if not self.closed:
            self._drop(TEMP_TABLES)
            self.closed = True
        if verify:
            self.verify()

    def verify(self) -> None:
        """The connection's temp tables are exactly the live ones: no stage made or kept one unnamed."""
        present, expected = temp_tables(self.con), self.live()
        # a dry run's ROLLBACK takes apply's tables with it: after apply only a table too many is wrong
        extra, lost = present - expected, set() if "apply" in self.finished else expected - present
        if extra or lost:
            after = self.finished[-1] if self.finished else "the start"
            raise InternalError(
                f"temp tables out of step with the run's workspace after {after}: unnamed or kept"
                f" {sorted(extra)}, missing {sorted(lost)}"
            )

    def _drop(self, names: Iterable[str]) -> None:
        for table in list(names):
            kind = "VIEW" if TEMP_TABLES[table].view else "TABLE"
            self.con.execute(f"DROP {kind} IF EXISTS {table}")


@dataclass(frozen=True)
class Handle:
    """What a stage hands the next: the workspace, and through it the tables of the stages in `vouches`."""

    ws: Workspace
    vouches: ClassVar[tuple[Stage, ...]]

    def connection(self, reader: Stage) -> duckdb.DuckDBPyConnection:
        """The connection for a stage that reads this handle's tables (InternalError once one is gone)."""
        for maker in self.vouches:
            self.ws.reading(maker, reader)
        return self.ws.con


_TEMP_TABLES_PRESENT = """
SELECT table_name FROM duckdb_tables() WHERE temporary
UNION ALL SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal
"""


def temp_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the connection's temp tables and views (registered frames count as views)."""
    return {name for (name,) in con.execute(_TEMP_TABLES_PRESENT).fetchall()}
