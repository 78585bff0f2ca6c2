"""`explain`: why a customer, a value or a card is as it is, from the store's provenance and ledger.

Read-only: the store is opened read_only, so explain works whenever no run holds the store and says
so clearly when one does. One typed result per question renders the console timeline, the JSON and
(explain_html.py) the HTML page.

Where things came from (README "Explain"):
- a change with a provenance row came from that run's file and row, or from a revert;
- an identifier, card state or merge without one came from the snapshot `store init` loaded
  (store_meta `snapshot`, `created_at`);
- the origin of an identifier held now ignores reverted runs and the reverts themselves (they cancel
  out): it is the last run that put it on its customer, and for a move by a merge, where it was on
  the victim before; the full history, reverts included, is in the value's and the card's timeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl

from pipeline.errors import StoreBusy, StoreError
from pipeline.lineage.provenance import ACTION_ORDER
from pipeline.reports.pii import mask_value
from pipeline.store.connect import open_store
from pipeline.values.normalize import normalized_value

CARD = "cardnumber"
MAX_CHAIN_STEPS = 1_000

PUT_IN = frozenset({"add", "move", "platform_move", "revert_restore"})
"""Identifier actions that give the value to to_customer_id."""
TAKE_OUT = frozenset({"remove", "replace", "drop", "move", "platform_move", "revert_remove"})
"""Identifier actions that take the value from from_customer_id (a replace: the value it took away)."""
CARD_ACTIONS = frozenset({"card_link", "card_label", "card_delink", "card_move", "card_relink", "revert_card"})

_EVENTS = """
SELECT r.ordinal, r.started_at, r.job, r.reverted_by, r.reverts, r.kind,
    CASE WHEN r.kind = 'refresh' THEN json_extract_string(r.summary, '$.snapshot') END AS snapshot, f.path, f.sha256,
    p.run_id, p.file_position, p.row_number, p.row_id, p.action, p.from_customer_id, p.to_customer_id,
    p.source, p.account_id, p.id_type, p.id_value, p.old_label, p.new_label
FROM provenance p JOIN runs r USING (run_id)
LEFT JOIN run_files f ON f.run_id = p.run_id AND f.position = p.file_position
"""
_BY_CUSTOMER = _EVENTS + "WHERE p.from_customer_id = $customer OR p.to_customer_id = $customer"
_BY_VALUE = _EVENTS + "WHERE p.id_type = $id_type AND p.id_value = $id_value"
_BY_VALUES = _EVENTS + "SEMI JOIN explain_values v ON p.id_type = v.id_type AND p.id_value = v.id_value"
_BY_CARDS = _EVENTS + "WHERE p.id_type = 'cardnumber' AND list_contains($numbers, p.id_value)"
_UNRECORDED = "SELECT run_id FROM provenance WHERE action = 'unrecorded' ORDER BY run_id"

Action = str
Kind = Literal["snapshot", "run", "revert", "refresh"]


@dataclass(frozen=True)
class Cause:
    """Where a change came from: the snapshot, a request row of a run, a revert, or a refresh (a change made on the
    platform, found in its next snapshot)."""

    kind: Kind
    at: str | None
    run_id: str | None = None
    job: str | None = None
    file: str | None = None
    sha256: str | None = None
    row_number: int | None = None
    row_id: str | None = None
    reverted_by: str | None = None
    reverts: str | None = None
    snapshot: str | None = None

    def render(self) -> str:
        """Short, for a timeline line: the run and the row; times and jobs are in the runs list."""
        if self.kind == "snapshot":
            return f"snapshot (store init {self.at})"
        if self.kind == "revert":
            return f"revert {self.run_id} of run {self.reverts}"
        if self.kind == "refresh":
            undone = f" [reverted by {self.reverted_by}]" if self.reverted_by else ""
            return f"changed on the platform (refresh {self.run_id}, snapshot {self.snapshot}){undone}"
        row = f" ({self.row_id})" if self.row_id else ""
        undone = f" [reverted by {self.reverted_by}]" if self.reverted_by else ""
        return f"run {self.run_id}, {self.file} row {self.row_number}{row}{undone}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Event:
    """One provenance row with its cause; from lost the identifier or card (or is the merge victim)."""

    order: tuple[int, int, int, int, str, str, str, str]
    cause: Cause
    action: Action
    from_customer_id: int | None
    to_customer_id: int | None
    source: str | None
    account_id: str | None
    id_type: str
    id_value: str
    old_label: str | None
    new_label: str | None

    @property
    def counts(self) -> bool:
        """Whether the event stands in the store's present (its run was not reverted, it is no revert)."""
        return self.cause.kind in ("run", "refresh") and self.cause.reverted_by is None

    def scope(self) -> str:
        return _scope(self.source or "", self.account_id or "")

    def render(self) -> str:
        a = self.action
        what = f"{self.scope()} {self.id_type}={self.id_value}" if a not in CARD_ACTIONS else f"card {self.id_value}"
        merged = f" (merged into {self.to_customer_id})" if self.to_customer_id != self.from_customer_id else ""
        text = {
            "add": f"added {what} to {self.to_customer_id}",
            "remove": f"removed {what} from {self.from_customer_id}",
            "replace": f"replaced {what} by {self.new_label} on {self.from_customer_id}{merged}",
            "drop": f"dropped {what} from campaign customer {self.from_customer_id}",
            "move": f"moved {what} from {self.from_customer_id} to {self.to_customer_id} (merge)",
            "platform_move": f"moved {what} from {self.from_customer_id} to {self.to_customer_id}",
            "unmerge": f"unmerged {self.from_customer_id} from {self.to_customer_id}",
            "card_relink": f"moved {what} from {self.from_customer_id} to {self.to_customer_id} as {self.new_label}",
            "merge": f"merged {self.from_customer_id} into {self.to_customer_id} on {what}",
            "card_link": f"linked {what} to {self.to_customer_id} as {self.new_label}",
            "card_label": f"relabelled {what} on {self.to_customer_id}: {self.old_label} -> {self.new_label}",
            "card_delink": f"delinked {what} from {self.from_customer_id}, now {self.new_label}",
            "card_move": f"moved {what} from {self.from_customer_id} to {self.to_customer_id} (merge)",
            "revert_remove": f"took {what} off {self.from_customer_id} (undo)",
            "revert_restore": f"put {what} back on {self.to_customer_id} (undo)",
            "revert_unmerge": f"unmerged {self.from_customer_id} from {self.to_customer_id} (undo)",
            "revert_card": f"put {what} back: holder {self.to_customer_id}, label {self.new_label} (undo)",
        }.get(a, a)
        return f"{text}; {self.cause.render()}"

    @property
    def replaced_by(self) -> str | None:
        """The value that took the place of id_value, on a replace's row (provenance keeps it in new_label)."""
        return self.new_label if self.action == "replace" else None

    def to_dict(self) -> dict[str, Any]:
        replaced_by = self.replaced_by
        d = {
            "action": self.action,
            "from_customer_id": self.from_customer_id,
            "to_customer_id": self.to_customer_id,
            "source": self.source,
            "account_id": self.account_id,
            "id_type": self.id_type or None,
            "id_value": self.id_value or None,
            "old_label": self.old_label,
            "new_label": None if replaced_by is not None else self.new_label,
            "cause": self.cause.to_dict(),
        }
        return d | {"replaced_by": replaced_by} if replaced_by is not None else d


@dataclass(frozen=True)
class OriginStep:
    """One step of where an identifier came from: on `customer_id` since `how` (snapshot, add, move)."""

    customer_id: int
    how: Literal["snapshot", "add", "move"]
    cause: Cause
    moved_from: int | None = None

    def render(self) -> str:
        if self.how == "snapshot":
            return f"on {self.customer_id} since the {self.cause.render()}"
        if self.how == "move":
            return f"moved from {self.moved_from} by a merge: {self.cause.render()}"
        return f"added to {self.customer_id}: {self.cause.render()}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"customer_id": self.customer_id, "how": self.how, "cause": self.cause.to_dict()}
        if self.moved_from is not None:
            d["moved_from"] = self.moved_from
        return d


@dataclass(frozen=True)
class Holding:
    """An identifier held now, with where it came from, newest step first."""

    source: str
    account_id: str
    id_type: str
    id_value: str
    origin: tuple[OriginStep, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "account_id": self.account_id,
            "id_type": self.id_type,
            "id_value": self.id_value,
            "origin": [s.to_dict() for s in self.origin],
        }


@dataclass(frozen=True)
class MergeStep:
    """victim merged into survivor: by a run's row, or before the snapshot (no provenance row)."""

    victim_id: int
    survivor_id: int
    cause: Cause
    event: Event | None

    def render(self) -> str:
        on = f" on {self.event.scope()} {self.event.id_type}={self.event.id_value}" if self.event else ""
        return f"{self.victim_id} -> {self.survivor_id}{on}: {self.cause.render()}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "victim_id": self.victim_id,
            "survivor_id": self.survivor_id,
            "cause": self.cause.to_dict(),
        }
        if self.event is not None:
            d.update(
                source=self.event.source,
                account_id=self.event.account_id,
                id_type=self.event.id_type,
                id_value=self.event.id_value,
            )
        return d


@dataclass(frozen=True)
class RunTouch:
    """A run (or revert) that changed the thing explained, with how many changes."""

    run_id: str
    kind: Kind
    at: str | None
    job: str | None
    changes: int
    reverted_by: str | None
    reverts: str | None

    def render(self) -> str:
        what = (
            f"revert of {self.reverts}"
            if self.kind == "revert"
            else "refresh (changed on the platform)"
            if self.kind == "refresh"
            else f"job {self.job}"
            if self.job
            else "run"
        )
        undone = f", reverted by {self.reverted_by}" if self.reverted_by else ""
        return f"{self.run_id}  {self.at}  {what}: {self.changes} change(s){undone}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class CardState:
    """A card's holder and label from `cause` on."""

    customer_id: int | None
    status_label: str
    cause: Cause
    event: Event | None

    def render(self) -> str:
        holder = f"held by {self.customer_id}" if self.customer_id is not None else "unheld"
        how = f" ({self.event.action})" if self.event else ""
        return f"{holder}, {self.status_label}{how}: {self.cause.render()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "status_label": self.status_label,
            "action": self.event.action if self.event else "snapshot",
            "cause": self.cause.to_dict(),
        }


@dataclass(frozen=True)
class CardHistory:
    """A card now and its holders and labels over time, oldest first."""

    card_number: str
    found: bool
    series_id: int | None
    customer_id: int | None
    status_label: str | None
    states: tuple[CardState, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "card_number": self.card_number,
            "found": self.found,
            "series_id": self.series_id,
            "customer_id": self.customer_id,
            "status_label": self.status_label,
            "history": [s.to_dict() for s in self.states],
        }

    def render_lines(self, indent: str) -> list[str]:
        if not self.found:
            return [f"{indent}card {self.card_number}: not in the store"]
        holder = f"held by {self.customer_id}" if self.customer_id is not None else "unheld"
        lines = [f"{indent}card {self.card_number} (series {self.series_id}): {holder}, {self.status_label}"]
        return lines + [f"{indent}  {s.render()}" for s in self.states]


@dataclass(frozen=True)
class Interval:
    """customer_id held the value in a scope from `since` until `until` (None: it still does)."""

    customer_id: int
    source: str
    account_id: str
    since: Event | None
    until: Event | None
    since_cause: Cause
    until_cause: Cause | None

    def render(self) -> str:
        start = f"{self.since.action}, {self.since_cause.render()}" if self.since else self.since_cause.render()
        end = "still holds it" if self.until is None else f"until {self.until.render()}"
        return f"{self.customer_id} in {_scope(self.source, self.account_id)}: from {start}; {end}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "source": self.source,
            "account_id": self.account_id,
            "since": {"action": self.since.action if self.since else "snapshot", "cause": self.since_cause.to_dict()},
            "until": None
            if self.until is None
            else {"action": self.until.action, "cause": self.until.cause.to_dict(), "event": self.until.to_dict()},
        }


@dataclass(frozen=True)
class Explanation:
    """What all three answers share: the store, the snapshot, runs without provenance, masking."""

    store: str
    snapshot: Cause
    masked: bool
    unrecorded_runs: tuple[str, ...]

    exit_code: int = 0

    def _header(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "snapshot": self.snapshot.to_dict(),
            "masked": self.masked,
            "unrecorded_runs": list(self.unrecorded_runs),
        }

    def _notes(self) -> list[str]:
        if not self.unrecorded_runs:
            return []
        return [f"  note: run(s) {', '.join(self.unrecorded_runs)} recorded no provenance (bench switch)"]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def render(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class CustomerExplanation(Explanation):
    customer_id: int = 0
    found: bool = False
    status: str | None = None
    customer_type: str | None = None
    merged_into: MergeStep | None = None
    chain: tuple[MergeStep, ...] = ()
    merged_in: tuple[MergeStep, ...] = ()
    identifiers: tuple[Holding, ...] = ()
    cards: tuple[CardHistory, ...] = ()
    runs: tuple[RunTouch, ...] = ()
    timeline: tuple[Event, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {
            "kind": "customer",
            "customer_id": self.customer_id,
            "found": self.found,
            "status": self.status,
            "customer_type": self.customer_type,
            "merged_into": self.merged_into.to_dict() if self.merged_into else None,
            "chain": [s.to_dict() for s in self.chain],
            "active_end": self.chain[-1].survivor_id if self.chain else self.customer_id if self.found else None,
            "merged_in": [s.to_dict() for s in self.merged_in],
            "identifiers": [h.to_dict() for h in self.identifiers],
            "cards": [c.to_dict() for c in self.cards],
            "runs": [r.to_dict() for r in self.runs],
            "timeline": [e.to_dict() for e in self.timeline],
        }

    def render(self) -> str:
        if not self.found:
            return f"customer {self.customer_id}: not in the store {self.store}"
        lines = [f"customer {self.customer_id}: {self.status} ({self.customer_type})"]
        if self.merged_into:
            lines.append(f"  merged: {self.merged_into.render()}")
            ends = " -> ".join([str(self.customer_id), *(str(s.survivor_id) for s in self.chain)])
            lines.append(f"  chain to the active customer: {ends}")
            lines += [f"    {s.render()}" for s in self.chain[1:]]
        lines.append(f"  merged into it: {len(self.merged_in) or 'none'}")
        lines += [f"    {s.render()}" for s in self.merged_in]
        lines.append(f"  identifiers now: {len(self.identifiers) or 'none'}")
        for h in self.identifiers:
            lines.append(f"    {_scope(h.source, h.account_id)} {h.id_type}={h.id_value}")
            lines += [f"      {s.render()}" for s in h.origin]
        lines.append(f"  cards: {len(self.cards) or 'none'}")
        for card in self.cards:
            lines += card.render_lines("    ")
        lines.append(f"  runs that touched it, newest first: {len(self.runs) or 'none'}")
        lines += [f"    {r.render()}" for r in self.runs]
        lines += _timeline_lines(self.timeline)
        return "\n".join(lines + self._notes())


TIMELINE_LINES = 10
"""Changes the console shows, newest first; --json and --html have all of them."""


def _timeline_lines(timeline: tuple[Event, ...]) -> list[str]:
    if not timeline:
        return []
    newest = list(reversed(timeline))[:TIMELINE_LINES]
    more = len(timeline) - len(newest)
    lines = [
        f"  changes, newest first: {len(timeline)}" + (f" (the {len(newest)} newest; --json has all)" if more else "")
    ]
    return lines + [f"    {e.render()}" for e in newest]


@dataclass(frozen=True)
class ValueExplanation(Explanation):
    id_type: str = ""
    id_value: str = ""
    source: str | None = None
    account_id: str | None = None
    holdings: tuple[Interval, ...] = ()
    runs: tuple[RunTouch, ...] = ()
    timeline: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return self._header() | {
            "kind": "value",
            "id_type": self.id_type,
            "id_value": self.id_value,
            "source": self.source,
            "account_id": self.account_id,
            "holdings": [h.to_dict() for h in self.holdings],
            "runs": [r.to_dict() for r in self.runs],
            "timeline": [e.to_dict() for e in self.timeline],
        }

    def render(self) -> str:
        scope = f" in {_scope(self.source, self.account_id or '')}" if self.source else " in any scope"
        lines = [f"value {self.id_type}={self.id_value}{scope}: held {len(self.holdings)} time(s)"]
        lines += [f"  {h.render()}" for h in self.holdings]
        lines.append(f"  runs that touched it, newest first: {len(self.runs) or 'none'}")
        lines += [f"    {r.render()}" for r in self.runs]
        return "\n".join(lines + self._notes())


@dataclass(frozen=True)
class CardExplanation(Explanation):
    card: CardHistory | None = None
    runs: tuple[RunTouch, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        assert self.card is not None
        return self._header() | {
            "kind": "card",
            **self.card.to_dict(),
            "runs": [r.to_dict() for r in self.runs],
        }

    def render(self) -> str:
        assert self.card is not None
        lines = self.card.render_lines("")
        if self.card.found:
            lines.append(f"  runs that touched it, newest first: {len(self.runs) or 'none'}")
            lines += [f"    {r.render()}" for r in self.runs]
        return "\n".join(lines + self._notes())


def _first(result: duckdb.DuckDBPyConnection) -> Any:
    """The first row of a result, consumed whole (a pending result blocks the connection), or None."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _scope(source: str | None, account_id: str) -> str:
    return f"{source}/{account_id}" if account_id else str(source)


class _Reader:
    """The store opened read-only, with the snapshot cause and event queries."""

    def __init__(self, con: duckdb.DuckDBPyConnection, store: str):
        self.con, self.store = con, store
        meta = dict(con.execute("SELECT key, value FROM store_meta").fetchall())
        self.snapshot = Cause("snapshot", meta.get("created_at"), snapshot=meta.get("snapshot"))
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        self.has_provenance = {"provenance", "runs", "run_files"} <= tables
        # a store made before runs.kind, not opened for writing since, has no refresh: every run is a run
        self.has_kind = bool(
            con.execute(
                "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'runs' AND column_name = 'kind'"
            ).fetchall()[0][0]
        )

    def events(self, query: str, params: dict[str, Any] | None = None) -> list[Event]:
        if not self.has_provenance:
            return []
        if not self.has_kind:
            query = query.replace("r.kind", "NULL::VARCHAR")
        result = self.con.execute(query, params or None)
        names = [d[0] for d in result.description or ()]
        events = [self._event(dict(zip(names, r, strict=True))) for r in result.fetchall()]
        return sorted(events, key=lambda e: e.order)

    def _event(self, r: dict[str, Any]) -> Event:
        reverts = r["reverts"]
        kind: Kind = "revert" if reverts else "refresh" if r["kind"] == "refresh" else "run"
        cause = Cause(
            kind,
            r["started_at"],
            run_id=r["run_id"],
            job=None if reverts or kind == "refresh" else r["job"],
            snapshot=r["snapshot"],
            file=r["path"],
            sha256=r["sha256"],
            row_number=r["row_number"],
            row_id=r["row_id"],
            reverted_by=r["reverted_by"],
            reverts=reverts,
        )
        order = (
            r["ordinal"],
            -1 if r["file_position"] is None else r["file_position"],
            r["row_number"] or 0,
            ACTION_ORDER.get(r["action"], 99),
            # a row's moves have the same place: the value decides, so every answer is reproducible
            r["source"] or "",
            r["account_id"] or "",
            r["id_type"],
            r["id_value"],
        )
        return Event(
            order,
            cause,
            r["action"],
            r["from_customer_id"],
            r["to_customer_id"],
            r["source"],
            r["account_id"],
            r["id_type"],
            r["id_value"],
            r["old_label"],
            r["new_label"],
        )

    def unrecorded(self) -> tuple[str, ...]:
        if not self.has_provenance:
            return ()
        return tuple(r[0] for r in self.con.execute(_UNRECORDED).fetchall())

    def base(self) -> dict[str, Any]:
        return {"store": self.store, "snapshot": self.snapshot, "masked": False, "unrecorded_runs": self.unrecorded()}

    def events_of_values(self, values: list[tuple[str, str]]) -> list[Event]:
        """Every event on any of these (id_type, raw id_value) pairs."""
        if not values or not self.has_provenance:
            return []
        frame = pl.DataFrame(values, schema={"id_type": pl.String, "id_value": pl.String}, orient="row")
        self.con.register("explain_values", frame)
        try:
            return self.events(_BY_VALUES)
        finally:
            self.con.unregister("explain_values")


def _runs_of(events: list[Event]) -> tuple[RunTouch, ...]:
    """The runs among the events, newest first, each with its number of changes."""
    by_run: dict[str, tuple[int, Cause, int]] = {}
    for e in events:
        ordinal, cause, n = by_run.get(e.cause.run_id or "", (e.order[0], e.cause, 0))
        by_run[e.cause.run_id or ""] = (ordinal, cause, n + 1)
    ranked = sorted(by_run.values(), key=lambda t: -t[0])
    return tuple(RunTouch(c.run_id or "", c.kind, c.at, c.job, n, c.reverted_by, c.reverts) for _, c, n in ranked)


def _origin(
    events: list[Event],
    customer_id: int,
    key: tuple[str, str, str, str],
    before: tuple[Any, ...] | None,
    snapshot: Cause,
) -> tuple[OriginStep, ...]:
    """Where the holding (customer_id, key) came from, looking only at changes that stand (not reverted)."""
    steps: list[OriginStep] = []
    customer: int = customer_id
    limit = before
    for _ in range(MAX_CHAIN_STEPS):
        put = [
            e
            for e in events
            if e.counts
            and e.action in ("add", "move")
            and e.to_customer_id == customer
            and (e.source, e.account_id, e.id_type, e.id_value) == key
            and (limit is None or e.order < limit)
        ]
        if not put:
            steps.append(OriginStep(customer, "snapshot", snapshot))
            break
        last = put[-1]
        if last.action == "add":
            steps.append(OriginStep(customer, "add", last.cause))
            break
        assert last.from_customer_id is not None  # a move always names its victim
        steps.append(OriginStep(customer, "move", last.cause, moved_from=last.from_customer_id))
        customer, limit = last.from_customer_id, last.order
    return tuple(steps)


def _intervals(events: list[Event], held_now: set[tuple[int, str, str]], snapshot: Cause) -> tuple[Interval, ...]:
    """Every (customer, scope) holding of one value over time, from the value's events in order."""
    open_: dict[tuple[int, str, str], tuple[Event | None, Cause]] = {}
    done: list[Interval] = []
    for e in events:
        if e.action in TAKE_OUT and e.from_customer_id is not None:
            key = (e.from_customer_id, e.source or "", e.account_id or "")
            since, cause = open_.pop(key, (None, snapshot))
            done.append(Interval(*key, since, e, cause, e.cause))
        if e.action in PUT_IN and e.to_customer_id is not None:
            key = (e.to_customer_id, e.source or "", e.account_id or "")
            open_[key] = (e, e.cause)
    for key in held_now - set(open_):
        open_[key] = (None, snapshot)
    done += [Interval(*key, since, None, cause, None) for key, (since, cause) in open_.items()]
    return tuple(
        sorted(done, key=lambda i: (i.since.order if i.since else (-1,), i.customer_id, i.source, i.account_id))
    )


def _card_history(reader: _Reader, number: str, events: list[Event]) -> CardHistory:
    row = _first(
        reader.con.execute("SELECT series_id, customer_id, status_label FROM cards WHERE card_number = ?", [number])
    )
    if row is None:
        return CardHistory(number, False, None, None, None, ())
    series, holder, label = row
    card_events = [e for e in events if e.action in CARD_ACTIONS]
    first_holder, first_label = (
        (card_events[0].from_customer_id, card_events[0].old_label or label) if card_events else (holder, label)
    )
    states = [CardState(first_holder, first_label, reader.snapshot, None)]
    states += [CardState(e.to_customer_id, e.new_label or "", e.cause, e) for e in card_events]
    return CardHistory(number, True, series, holder, label, tuple(states))


def _merge_step(reader: _Reader, victim: int, survivor: int) -> MergeStep:
    """The standing merge of victim into survivor, or the snapshot when no run made it."""
    merges = [
        e
        for e in reader.events(_BY_CUSTOMER, {"customer": victim})
        if e.action == "merge" and e.counts and e.from_customer_id == victim and e.to_customer_id == survivor
    ]
    if merges:
        return MergeStep(victim, survivor, merges[-1].cause, merges[-1])
    return MergeStep(victim, survivor, reader.snapshot, None)


def explain_customer(reader: _Reader, customer_id: int) -> CustomerExplanation:
    con = reader.con
    row = _first(
        con.execute("SELECT status, merged_into, customer_type FROM customers WHERE customer_id = ?", [customer_id])
    )
    if row is None:
        return CustomerExplanation(**reader.base(), customer_id=customer_id, exit_code=1)
    status, merged_into, ctype = row
    mine = reader.events(_BY_CUSTOMER, {"customer": customer_id})
    chain: list[MergeStep] = []
    current, into = customer_id, merged_into
    for _ in range(MAX_CHAIN_STEPS):
        if into is None:
            break
        chain.append(_merge_step(reader, current, into))
        following = _first(con.execute("SELECT merged_into FROM customers WHERE customer_id = ?", [into]))
        current, into = into, following[0] if following else None
    victims = [
        r[0]
        for r in con.execute(
            "SELECT customer_id FROM customers WHERE merged_into = ? ORDER BY customer_id", [customer_id]
        ).fetchall()
    ]
    merged_in = []
    for victim in victims:
        made = [e for e in mine if e.action == "merge" and e.counts and e.from_customer_id == victim]
        merged_in.append(
            MergeStep(victim, customer_id, made[-1].cause, made[-1])
            if made
            else MergeStep(victim, customer_id, reader.snapshot, None)
        )
    held = con.execute(
        """SELECT source, account_id, id_type, id_value FROM identifiers WHERE customer_id = ?
           ORDER BY source, account_id, id_type, id_value""",
        [customer_id],
    ).fetchall()
    value_events = reader.events_of_values(sorted({(t, v) for _, _, t, v in held}))
    identifiers = []
    for source, account, id_type, value in held:
        key = (source, account, id_type, value)
        origin = _origin(value_events, customer_id, key, None, reader.snapshot)
        identifiers.append(Holding(*key, origin))
    held_cards = con.execute("SELECT card_number FROM cards WHERE customer_id = ?", [customer_id]).fetchall()
    numbers = sorted({r[0] for r in held_cards} | {e.id_value for e in mine if e.action in CARD_ACTIONS})
    card_events = reader.events(_BY_CARDS, {"numbers": numbers}) if numbers else []
    cards = [_card_history(reader, n, [e for e in card_events if e.id_value == n]) for n in numbers]
    return CustomerExplanation(
        **reader.base(),
        customer_id=customer_id,
        found=True,
        status=status,
        customer_type=ctype,
        merged_into=chain[0] if chain else None,
        chain=tuple(chain),
        merged_in=tuple(merged_in),
        identifiers=tuple(identifiers),
        cards=tuple(cards),
        runs=_runs_of(mine),
        timeline=tuple(mine),
    )


def explain_value(
    reader: _Reader, id_type: str, value: str, source: str | None, account_id: str | None
) -> ValueExplanation:
    events = [
        e
        for e in reader.events(_BY_VALUE, {"id_type": id_type, "id_value": value})
        if e.action in PUT_IN | TAKE_OUT | {"merge"}
    ]
    held = {
        (c, s, a)
        for c, s, a in reader.con.execute(
            "SELECT customer_id, source, account_id FROM identifiers WHERE id_type = ? AND id_value = ?",
            [id_type, value],
        ).fetchall()
    }
    intervals = _intervals([e for e in events if e.action != "merge"], held, reader.snapshot)
    if source is not None:
        intervals = tuple(
            i for i in intervals if i.source == source and (account_id is None or i.account_id == account_id)
        )
        events = [e for e in events if e.source == source and (account_id is None or e.account_id == account_id)]
    return ValueExplanation(
        **reader.base(),
        id_type=id_type,
        id_value=value,
        source=source,
        account_id=account_id,
        holdings=intervals,
        runs=_runs_of(events),
        timeline=tuple(events),
        exit_code=0 if intervals else 1,
    )


def explain_card(reader: _Reader, number: str) -> CardExplanation:
    events = reader.events(_BY_VALUE, {"id_type": CARD, "id_value": number})
    card = _card_history(reader, number, events)
    return CardExplanation(**reader.base(), card=card, runs=_runs_of(events), exit_code=0 if card.found else 1)


Target = (
    tuple[Literal["customer"], int]
    | tuple[Literal["value"], str, str, str | None, str | None]
    | tuple[Literal["card"], str]
)


def parse_target(
    customer_id: int | None, value: str | None, source: str | None, account_id: str | None, card: str | None
) -> Target:
    """The question the command line asks; ValueError names the misuse. Values are normalised (SPEC section 2)."""
    given = [x for x in (customer_id, value, card) if x is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of CUSTOMER_ID, --value TYPE=VALUE or --card NUMBER")
    if (source is not None or account_id is not None) and value is None:
        raise ValueError("--source and --account go with --value")
    if account_id is not None and source is None:
        raise ValueError("--account needs --source")
    if customer_id is not None:
        return ("customer", customer_id)
    if card is not None:
        return ("card", card.strip())
    assert value is not None
    id_type, sep, raw = value.partition("=")
    if not sep or not id_type.strip() or not raw.strip():
        raise ValueError(f"--value must be TYPE=VALUE, e.g. email=ann@example.com (got {value!r})")
    id_type = id_type.strip()
    if id_type == CARD:
        return ("card", raw.strip())
    return ("value", id_type, normalized_value(id_type, raw.strip()), source, account_id)


def _masked(obj: Any) -> Any:
    """The same result with every identifier value and card number masked (reports/pii.py's rules).

    Masking comes last: masked values can coincide (two emails of one domain), so nothing is matched on them.
    """
    if isinstance(obj, tuple):
        return tuple(_masked(item) for item in obj)
    if not is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {f.name: _masked(getattr(obj, f.name)) for f in fields(obj)}
    if changes.get("id_value") and "id_type" in changes:
        changes["id_value"] = mask_value(changes["id_type"], changes["id_value"])
    if changes.get("action") == "replace" and changes.get("new_label"):  # a replace's new_label is a value
        changes["new_label"] = mask_value(changes["id_type"], changes["new_label"])
    if "card_number" in changes:
        changes["card_number"] = mask_value(CARD, changes["card_number"])
    if "masked" in changes:
        changes["masked"] = True
    return replace(obj, **changes)


class Explainer:
    """Answers explain's questions from one store opened read-only; use as a context manager."""

    def __init__(self, store_path: Path | str, mask_pii: bool = False):
        self.store_path, self.mask_pii = store_path, mask_pii
        try:
            self.con = open_store(store_path, read_only=True)
        except StoreBusy as exc:
            raise StoreBusy(
                f"store {store_path} is held by a run or another command{exc.holder}; explain reads a store only "
                "while no run holds it; nothing was read; try again when that run has finished"
            ) from exc
        self.reader = _Reader(self.con, str(store_path))

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def explain(self, target: Target) -> Explanation:
        """Explain a customer, a value (already normalised) or a card."""
        result: Explanation
        try:
            if target[0] == "customer":
                result = explain_customer(self.reader, target[1])
            elif target[0] == "value":
                _, id_type, value, source, account = target
                result = explain_value(self.reader, id_type, value, source, account)
            else:
                result = explain_card(self.reader, target[1])
        except duckdb.Error as exc:
            raise StoreError(f"cannot explain from store {self.store_path}: {exc}; nothing was changed") from exc
        return _masked(result) if self.mask_pii else result


def explain(store_path: Path | str, target: Target, mask_pii: bool = False) -> Explanation:
    """Explain one customer, value or card from a store opened read-only for this question."""
    with Explainer(store_path, mask_pii) as explainer:
        return explainer.explain(target)
