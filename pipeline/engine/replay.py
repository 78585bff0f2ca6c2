"""Sequential replay of the rows that interact, over a small working set pulled from the store.

Rows that share a customer, a value or a card with another row of the batch cannot be decided
against the store as it was before the run: their order matters. They are replayed here one at a
time, exactly as SPEC section 3 reads, over the part of the store they can reach (see resolve.py for
why that part is closed). Everything else is decided set-based in DuckDB (decide.py).

The rows and the store they reach are pulled into frames first (`pull_working_set`), so that the
replay itself (`replay_working_set`) is pure Python and needs no connection: it runs in a worker
thread while DuckDB decides the other rows (batch.py). Its net changes are then appended to the
chg_* tables decide.py made (`stage_replayed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.catalog import already_present_code
from pipeline.config import ACTIVE_STATUSES, CARD, CLOSED_STATUSES, OrgConfig
from pipeline.engine.decide import OUTCOME_SCHEMA, Decided
from pipeline.engine.resolve import Resolved
from pipeline.engine.workspace import Handle, Stage
from pipeline.store.duck import query_frame, run_script

Scope = tuple[str, str]
Ident = tuple[str, str, str, str]  # source, account_id, id_type, id_value


EVENT_SCHEMA = pl.Schema(
    {
        "seq": pl.Int64(),
        "action": pl.String(),
        "from_customer_id": pl.Int64(),
        "to_customer_id": pl.Int64(),
        "source": pl.String(),
        "account_id": pl.String(),
        "id_type": pl.String(),
        "id_value": pl.String(),
        "old_label": pl.String(),
        "new_label": pl.String(),
    }
)
"""The replay's events as staged in chg_events (engine/decide.py makes the table; replay.Replayer emits the rows)."""


@dataclass
class WorkingSet:
    """The reachable part of the store, mutable during replay, with a journal of its net changes.

    `holders` indexes only the values the rows ask about (their id values and lookup values): no
    other value is ever looked up, and indexing every identifier of every customer would cost more
    than the replay itself.
    """

    customers: dict[int, list]  # customer_id -> [status, merged_into, customer_type]
    idents: dict[int, set[Ident]]
    cards: dict[str, list]  # card_number -> [series_id, customer_id or None, status_label]
    tracked_values: set[tuple[str, str]] = field(default_factory=set)
    holders: dict[tuple[str, str], set[tuple[int, str, str]]] = field(default_factory=dict)
    cards_of: dict[int, set[str]] = field(default_factory=dict)
    merges_into: dict[int, int] = field(default_factory=dict)
    inserted: set[tuple] = field(default_factory=set)
    deleted: set[tuple] = field(default_factory=set)
    cards_before: dict[str, tuple] = field(default_factory=dict)
    merged: dict[int, int] = field(default_factory=dict)
    shortcuts: dict[int, int] = field(default_factory=dict)
    """MERGED customer -> a customer further down its merged_into chain (path compression for `survivor`)."""

    tracked_holdings: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    """(id_type, id_value, customer_id, source, account_id) of every working-set holding of a tracked value."""
    track_all: bool = False
    """Index every value, including values added later (the emulator: any call may ask about any value)."""
    slots: dict[int, dict[tuple[str, str, str], int]] = field(default_factory=dict)
    """customer -> how many identifiers it holds per (source, account_id, id_type): built the first time
    a row asks (`slot_count`), then kept with every add and remove, so the 7006 check is one lookup, not a
    scan of the customer's identifiers (a dense batch's customers gather hundreds)."""

    def __post_init__(self) -> None:
        self.holders = {}  # a tracked value gets its entry when it first has a holder
        for customer_id in self.customers:
            self.idents.setdefault(customer_id, set())
            self.cards_of.setdefault(customer_id, set())
        holders = self.holders
        for id_type, value, customer_id, source, account in self.tracked_holdings:
            held = holders.get((id_type, value))
            if held is None:
                holders[(id_type, value)] = {(customer_id, source, account)}
            else:
                held.add((customer_id, source, account))
        for number, (_, holder, _) in self.cards.items():
            if holder is not None:
                self.cards_of.setdefault(holder, set()).add(number)

    def slot_count(self, customer_id: int, slot: tuple[str, str, str]) -> int:
        counts = self.slots.get(customer_id)
        if counts is None:
            counts = self.slots[customer_id] = {}
            for held in self.idents[customer_id]:
                counts[held[:3]] = counts.get(held[:3], 0) + 1
        return counts.get(slot, 0)

    def add_ident(self, customer_id: int, ident: Ident) -> None:
        mine = self.idents[customer_id]
        counts = self.slots.get(customer_id)
        if counts is not None and ident not in mine:
            counts[ident[:3]] = counts.get(ident[:3], 0) + 1
        mine.add(ident)
        value = (ident[2], ident[3])
        if self.track_all or value in self.tracked_values:
            self.holders.setdefault(value, set()).add((customer_id, ident[0], ident[1]))
        row = (customer_id, *ident)
        if row in self.deleted:
            self.deleted.discard(row)
        else:
            self.inserted.add(row)

    def remove_ident(self, customer_id: int, ident: Ident) -> None:
        mine = self.idents[customer_id]
        counts = self.slots.get(customer_id)
        if counts is not None and ident in mine:
            counts[ident[:3]] -= 1
        mine.discard(ident)
        held = self.holders.get((ident[2], ident[3]))
        if held is not None:
            held.discard((customer_id, ident[0], ident[1]))
        row = (customer_id, *ident)
        if row in self.inserted:
            self.inserted.discard(row)
        else:
            self.deleted.add(row)

    def link_card(self, number: str, customer_id: int | None, label: str) -> None:
        card = self.cards[number]
        self.cards_before.setdefault(number, tuple(card))
        if card[1] is not None:
            self.cards_of[card[1]].discard(number)
        card[1], card[2] = customer_id, label
        if customer_id is not None:
            self.cards_of[customer_id].add(number)

    def survivor(self, customer_id: int) -> int:
        """The ACTIVE end of a customer's merged_into chain, however long (merges are never undone in a run).

        Every customer passed on the way gets a shortcut to the end (path compression), so rows that
        keep naming the start of a long chain built in this run walk it once, not once each.
        """
        if self.customers[customer_id][0] != "MERGED":
            return customer_id  # most rows: no chain to walk
        passed = []
        target = customer_id
        while self.customers[target][0] == "MERGED":
            passed.append(target)
            target = self.shortcuts.get(target, self.customers[target][1])
        for customer in passed:
            self.shortcuts[customer] = target
        return target

    def mark_merged(self, victim: int, survivor: int) -> None:
        self.customers[victim][0], self.customers[victim][1] = "MERGED", survivor
        self.merged[victim] = survivor

    def changed_cards(self) -> list[tuple[str, int | None, str]]:
        return [
            (n, self.cards[n][1], self.cards[n][2])
            for n, before in self.cards_before.items()
            if tuple(self.cards[n]) != before
        ]


class ReplayRow(NamedTuple):
    """A checked row with its target as resolved against the store before the run."""

    seq: int
    customer_id: int | None
    initial_target: int | None
    lookup_type: str | None
    lookup_value: str | None
    source: str
    account_id: str
    action: str
    id_type: str
    id_value: str
    series_id: int | None
    status_label: str | None
    replaces: str | None = None
    """A replace read from a call line: the value W the line removes, which the target must hold."""
    lookup_source: str | None = None
    lookup_account_id: str | None = None
    """The scope a wide file's lookup finds the customer in, when it has its own; None: the row's scope."""


class Outcome(NamedTuple):
    """What one row did; exactly one of outcome and error_code is set."""

    seq: int
    outcome: str | None = None
    error_code: int | None = None
    error_field: str | None = None
    resolved_customer_id: int | None = None
    survivor_id: int | None = None
    victim_id: int | None = None
    warnings: tuple[int, ...] = ()
    holder_id: int | None = None
    limit: int | None = None
    card_series: int | None = None
    card_status: str | None = None
    replaced_value: str | None = None


Event = tuple[int, str, int | None, int | None, str | None, str | None, str, str, str | None, str | None]
"""A provenance event as staged in chg_events: seq, action, from, to, source, account, type, value, labels."""


class Replayer:
    """Applies rows one at a time to a WorkingSet under one org config.

    With `record_events`, each change is also noted as a provenance event of the row that made it
    (`events`, in the order made), as the set-based decision stages them for independent rows.
    """

    def __init__(self, ws: WorkingSet, config: OrgConfig, record_events: bool = False):
        self.ws, self.config = ws, config
        self.record_events = record_events
        self.events: list[Event] = []
        self._seq = -1

    def replay(self, rows: list[ReplayRow]) -> list[Outcome]:
        return [self.apply_row(row) for row in rows]

    def _ident_event(self, action: str, lost: int | None, gained: int | None, ident: Ident) -> None:
        if self.record_events:
            self.events.append((self._seq, action, lost, gained, *ident, None, None))

    def _card_event(self, action: str, number: str, gained: int | None, label: str) -> None:
        if self.record_events:
            _, holder, old_label = self.ws.cards[number]
            self.events.append((self._seq, action, holder, gained, None, None, CARD, number, old_label, label))

    def resolve(self, row: ReplayRow) -> tuple[int | None, bool]:
        """The ACTIVE target now, and whether a merged customer was followed to reach it."""
        ws = self.ws
        if row.customer_id is not None:
            if row.initial_target is None:
                return None, False
            target = ws.survivor(row.initial_target)
            return target, row.customer_id != target
        # the check stage passed the row, so without a customer_id the lookup pair is complete
        assert row.lookup_type is not None and row.lookup_value is not None
        if row.lookup_type == CARD:
            card = ws.cards.get(row.lookup_value)
            return (card[1] if card else None), False
        scope = (
            (row.source, row.account_id) if row.lookup_source is None else (row.lookup_source, row.lookup_account_id)
        )
        for holder, source, account in ws.holders.get((row.lookup_type, row.lookup_value), ()):
            if (source, account) == scope:
                return holder, False
        return None, False

    def apply_row(self, row: ReplayRow) -> Outcome:
        self._seq = row.seq
        target, followed = self.resolve(row)
        if target is None:
            field_name = "customer_id" if row.customer_id is not None else "lookup_value"
            return Outcome(row.seq, error_code=8015, error_field=field_name)
        if row.id_type == CARD:
            result = self._card_add(row, target) if row.action == "add" else self._card_remove(row, target)
        elif row.action == "add":
            result = self._add(row, target)
        elif row.action == "replace":
            result = self._replace(row, target)
        else:
            result = self._remove(row, target)
        if followed:
            result["warnings"] = tuple(sorted((*result.get("warnings", ()), 91009)))
        return Outcome(row.seq, resolved_customer_id=target, **result)

    def _add(self, row: ReplayRow, c: int) -> dict:
        ws, t = self.ws, row.id_type
        ident = (row.source, row.account_id, t, row.id_value)
        if ident in ws.idents[c]:
            return {"outcome": "unchanged", "warnings": (already_present_code(t),)}
        if ws.slot_count(c, ident[:3]):  # the exact identifier is not held, so this is another value
            return {"error_code": 7006, "error_field": "id_value"}
        return self._gain(row, c)

    def _replace(self, row: ReplayRow, c: int) -> dict:
        """Add's step 2 turned round: C's other value W of T in S goes, then V is checked as add steps 3 to 5
        check it on that state; when V fails, W is put back and nothing else was touched."""
        ws = self.ws
        ident = (row.source, row.account_id, row.id_type, row.id_value)
        if row.replaces is not None and (*ident[:3], row.replaces) not in ws.idents[c]:
            return {"error_code": 7009, "error_field": "id_value"}
        if ident in ws.idents[c]:
            return {"outcome": "unchanged", "warnings": (already_present_code(row.id_type),)}
        held = next((i for i in ws.idents[c] if i[:3] == ident[:3]), None) if ws.slot_count(c, ident[:3]) else None
        if held is not None:
            ws.remove_ident(c, held)
        result = self._gain(row, c)  # with no W this is exactly an add
        if held is None:
            return result
        if "error_code" in result:
            ws.add_ident(c, held)  # the journal nets the two out: the store keeps W
            return result
        gained = result.get("survivor_id") or c
        if self.record_events:
            self.events.append((self._seq, "replace", c, gained, *held, None, row.id_value))
        return result | {"replaced_value": held[3]}

    def _gain(self, row: ReplayRow, c: int) -> dict:
        """Add steps 3 to 5: C takes (S, T, V) from the holders, or merges into its one LOYALTY holder elsewhere."""
        ws, config = self.ws, self.config
        scope, t, v = (row.source, row.account_id), row.id_type, row.id_value
        ident = (row.source, row.account_id, t, v)
        value_holders = ws.holders.get((t, v))
        if not value_holders:  # no one holds the value: nothing below applies (most adds of a batch)
            ws.add_ident(c, ident)
            self._ident_event("add", None, c, ident)
            return {"outcome": "applied", "warnings": ()}
        holders = {(h, s, a) for h, s, a in value_holders if h != c}
        loyalty_in_scope = [h for h, s, a in holders if (s, a) == scope and ws.customers[h][2] == "LOYALTY"]
        if loyalty_in_scope:
            return {"error_code": 8008, "error_field": "id_value", "holder_id": min(loyalty_in_scope)}
        campaign = {h for h, _, _ in holders if ws.customers[h][2] == "CAMPAIGN"}
        if campaign and not config.campaign_identifier_reuse:
            return {"error_code": 8068, "error_field": "id_value", "holder_id": min(campaign)}
        loyalty_elsewhere = {h for h, s, a in holders if ws.customers[h][2] == "LOYALTY"}
        if len(loyalty_elsewhere) >= 2:
            return {"error_code": 8074, "error_field": "id_value"}
        survivor = next(iter(loyalty_elsewhere), None)
        if survivor is not None:
            refusal = self._merge_refusal(c, survivor, scope)
            if refusal:
                return refusal
        warnings: tuple[int, ...] = ()
        for holder in sorted(campaign):
            for held in [i for i in ws.idents[holder] if i[2:] == (t, v)]:
                ws.remove_ident(holder, held)
                self._ident_event("drop", holder, None, held)
            warnings = (8068,)
        if survivor is None:
            ws.add_ident(c, ident)
            self._ident_event("add", None, c, ident)
            return {"outcome": "applied", "warnings": warnings}
        if self.record_events:
            self.events.append((self._seq, "merge", c, survivor, *ident, None, None))
        self._merge(c, survivor)
        ws.add_ident(survivor, ident)
        self._ident_event("add", None, survivor, ident)
        return {"outcome": "merged", "survivor_id": survivor, "victim_id": c, "warnings": (8051, *warnings)}

    def _merge_refusal(self, victim: int, survivor: int, scope: Scope) -> dict | None:
        ws, config = self.ws, self.config
        if not config.merge_enabled:
            return {"error_code": 7007, "error_field": "id_value", "holder_id": survivor}
        victim_scopes = {i[:2] for i in ws.idents[victim]} | {scope}
        if victim_scopes & {i[:2] for i in ws.idents[survivor]}:
            return {"error_code": 8066, "error_field": "id_value", "holder_id": survivor}
        limit = config.max_merges_per_survivor_per_run
        if ws.merges_into.get(survivor, 0) >= limit:
            return {"error_code": 7008, "error_field": "id_value", "holder_id": survivor, "limit": limit}
        return None

    def _merge(self, victim: int, survivor: int) -> None:
        ws = self.ws
        for ident in list(ws.idents[victim]):
            ws.remove_ident(victim, ident)
            ws.add_ident(survivor, ident)
            self._ident_event("move", victim, survivor, ident)
        for number in list(ws.cards_of[victim]):
            self._card_event("card_move", number, survivor, ws.cards[number][2])
            ws.link_card(number, survivor, ws.cards[number][2])
        ws.mark_merged(victim, survivor)
        ws.merges_into[survivor] = ws.merges_into.get(survivor, 0) + 1

    def _remove(self, row: ReplayRow, c: int) -> dict:
        ws = self.ws
        ident = (row.source, row.account_id, row.id_type, row.id_value)
        if ident not in ws.idents[c]:
            return {"error_code": 7009, "error_field": "id_value"}
        if len(ws.idents[c]) == 1:
            return {"error_code": 7010, "error_field": "id_value"}
        ws.remove_ident(c, ident)
        self._ident_event("remove", c, None, ident)
        return {"outcome": "applied"}

    def _card_state(self, row: ReplayRow) -> tuple[list | None, dict | None]:
        card = self.ws.cards.get(row.id_value)
        if card is None:
            return None, {"error_code": 3010, "error_field": "id_value"}
        status = self.config.card_labels.get(card[2])
        if row.action == "add" and card[0] != row.series_id:
            return card, {"error_code": 3000, "error_field": "id_value", "card_series": card[0]}
        if status in CLOSED_STATUSES:
            return card, {"error_code": 8087, "error_field": "id_value", "card_status": status}
        return card, None

    def _card_add(self, row: ReplayRow, c: int) -> dict:
        ws, config = self.ws, self.config
        card, refusal = self._card_state(row)
        if refusal:
            return refusal
        # the check stage requires a known series and label on a card add
        assert card is not None and row.series_id is not None and row.status_label is not None
        if card[1] == c:
            if card[2] == row.status_label:
                return {"outcome": "unchanged", "warnings": (3012,)}
            self._card_event("card_label", row.id_value, c, row.status_label)
            ws.link_card(row.id_value, c, row.status_label)
            return {"outcome": "applied"}
        if card[1] is not None:
            return {"error_code": 3027, "error_field": "id_value", "holder_id": card[1]}
        active = [ws.cards[n] for n in ws.cards_of[c] if config.card_labels.get(ws.cards[n][2]) in ACTIVE_STATUSES]
        series_max = config.card_series[row.series_id].max_active_per_customer
        if sum(1 for s, _, _ in active if s == row.series_id) >= series_max:
            return {"error_code": 3036, "error_field": "id_value", "limit": series_max, "card_series": row.series_id}
        if len(active) >= config.max_active_cards_per_customer:
            return {"error_code": 3039, "error_field": "id_value", "limit": config.max_active_cards_per_customer}
        self._card_event("card_link", row.id_value, c, row.status_label)
        ws.link_card(row.id_value, c, row.status_label)
        return {"outcome": "applied"}

    def _card_remove(self, row: ReplayRow, c: int) -> dict:
        card, refusal = self._card_state(row)
        if refusal:
            return refusal
        assert card is not None
        if card[1] != c:
            return {"error_code": 3031, "error_field": "id_value"}
        label = row.status_label or self.config.delink_label
        self._card_event("card_delink", row.id_value, None, label)
        self.ws.link_card(row.id_value, None, label)
        return {"outcome": "applied"}


_WORKING_SET = """
CREATE OR REPLACE TEMP TABLE ws_rows AS SELECT r.*, s.target, s.followed
    FROM req r JOIN res s USING (seq) SEMI JOIN interacting USING (seq);
CREATE OR REPLACE TEMP TABLE ws_customers AS
    SELECT target AS customer_id FROM ws_rows WHERE target IS NOT NULL
    UNION SELECT v.customer_id FROM ws_rows r
        JOIN val_idents v ON v.id_type = r.id_type AND v.id_value = r.id_value
    UNION SELECT c.customer_id FROM ws_rows r JOIN card_state c ON c.card_number = r.id_value
        WHERE r.id_type = 'cardnumber' AND c.customer_id IS NOT NULL;
"""

_PULLS = {
    "rows": """SELECT seq, customer_id, target, lookup_type, lookup_value, source, account_id, action,
                      id_type, id_value, series_id, status_label, replaces, lookup_source, lookup_account_id
               FROM ws_rows ORDER BY seq""",
    "customers": """SELECT customer_id, status, merged_into, customer_type FROM rel_info
                    SEMI JOIN ws_customers USING (customer_id)""",
    "idents": """SELECT customer_id, source, account_id, id_type, id_value FROM rel_idents
                 SEMI JOIN ws_customers USING (customer_id)""",
    "cards": """SELECT card_number, series_id, customer_id, status_label FROM rel_cards
                WHERE customer_id IN (SELECT customer_id FROM ws_customers)
                   OR card_number IN (SELECT id_value FROM ws_rows WHERE id_type = 'cardnumber')
                   OR card_number IN (SELECT lookup_value FROM ws_rows WHERE lookup_type = 'cardnumber')""",
    # (id_type, id_value, customer_id, source, account_id) of every working-set holding of a value the rows ask about
    "holdings": """SELECT i.id_type, i.id_value, i.customer_id, i.source, i.account_id FROM rel_idents i
                   SEMI JOIN ws_customers USING (customer_id)
                   SEMI JOIN (SELECT id_type, id_value FROM ws_rows
                              UNION SELECT lookup_type, lookup_value FROM ws_rows WHERE lookup_type IS NOT NULL) t
                       USING (id_type, id_value)""",
}


def pull_working_set(resolved: Resolved) -> dict[str, pl.DataFrame]:
    """The interacting rows and the part of the store they reach, as frames (no Python objects yet)."""
    resolved.connection("replay")
    with resolved.ws.scratch("ws_rows", "ws_customers") as con:
        run_script(con, _WORKING_SET)
        return {name: query_frame(con, query) for name, query in _PULLS.items()}


def in_component_order(pulled: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The pulled frames, their rows tagged with their component (plan_group), in the order that keeps the
    replay's memory accesses close together: the rows component by component (each component's rows in seq
    order; components are independent, so any order of them gives what one sequential pass gives), and the
    working set's customers, identifiers, holdings and cards in the order the rows first target their customer
    (the others after), so that the Python objects the replay builds from them lie in memory in about the
    order it visits them.

    On the 1M-row benchmark's 180k interacting rows the replay loop took 1.53 s in seq order, 1.32 s in
    component order and 1.02 s with the working set built in that order too: it is bound by memory latency,
    and rows in seq order jump between 148k customers.
    """
    rows = pulled["rows"].sort("plan_group", "seq").drop("plan_group")
    first = (
        rows.select(pl.col("target").alias("customer_id"), pl.int_range(pl.len()).alias("first_row"))
        .drop_nulls("customer_id")
        .group_by("customer_id")
        .agg(pl.col("first_row").min())
    )

    def ordered(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.join(first, on="customer_id", how="left", maintain_order="left")
            .sort("first_row", nulls_last=True, maintain_order=True)
            .drop("first_row")
        )

    return {"rows": rows} | {name: ordered(frame) for name, frame in pulled.items() if name != "rows"}


def replay_working_set(
    pulled: dict[str, pl.DataFrame], config: OrgConfig, events: bool
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Replay the interacting rows in order; their outcomes and their net changes (for chg_*).

    Rows tagged with their component (a plan_group column: components.py) are replayed component by component
    (in_component_order), and their outcomes and events come in that order; untagged rows in seq order.
    """
    if "plan_group" in pulled["rows"].columns:
        pulled = in_component_order(pulled)
    rows = list(map(ReplayRow._make, pulled["rows"].iter_rows()))
    if not rows:
        return pl.DataFrame(schema=OUTCOME_SCHEMA), {}
    customers = {
        cid: [status, merged_into, ctype] for cid, status, merged_into, ctype in pulled["customers"].iter_rows()
    }
    idents: dict[int, set] = {}
    for cid, source, account, id_type, value in pulled["idents"].iter_rows():
        idents.setdefault(cid, set()).add((source, account, id_type, value))
    cards = {number: [series, holder, label] for number, series, holder, label in pulled["cards"].iter_rows()}
    looked_up = pulled["rows"].drop_nulls(["lookup_type", "lookup_value"])
    tracked = set(zip(pulled["rows"]["id_type"].to_list(), pulled["rows"]["id_value"].to_list(), strict=True)) | set(
        zip(looked_up["lookup_type"].to_list(), looked_up["lookup_value"].to_list(), strict=True)
    )
    ws = WorkingSet(
        customers=customers,
        idents=idents,
        cards=cards,
        tracked_values=tracked,
        tracked_holdings=pulled["holdings"].rows(),
    )
    replayer = Replayer(ws, config, record_events=events)
    outcomes = replayer.replay(rows)
    changes = _net_changes(ws)
    if events:
        changes["chg_events"] = rows_frame(replayer.events, EVENT_SCHEMA)
    return rows_frame(outcomes, OUTCOME_SCHEMA), changes


def rows_frame(rows: Sequence[Sequence[Any]], schema: pl.Schema) -> pl.DataFrame:
    """A frame of Python row tuples, built column by column: the same frame as
    `pl.DataFrame(rows, schema=schema, orient="row")`, several times faster on the replay's outcomes.

    polars converts a column of Python scalars quickly but a column of Python lists (the warnings) one
    list at a time; a list column is therefore built from its flattened values and their offsets.
    """
    if not rows:
        return pl.DataFrame(schema=schema)
    columns = []
    for index, (name, dtype) in enumerate(schema.items()):
        values = list(map(itemgetter(index), rows))
        if isinstance(dtype, pl.List):
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            flat = pl.Series(name, [x for v in values for x in v], dtype=dtype.inner)
            lists = pa.LargeListArray.from_arrays(pa.array(offsets), flat.to_arrow())
            # through a table: polars' Series-from-Arrow path imports pyarrow.compute (0.05 s, in the replay)
            table = pl.from_arrow(pa.table({name: lists}))
            assert isinstance(table, pl.DataFrame)  # a table always becomes a frame
            columns.append(table.to_series().cast(dtype))
        else:
            columns.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(columns)


def _net_changes(ws: WorkingSet) -> dict[str, pl.DataFrame]:
    """The replay's net effect as rows for the chg_* tables: deletes, inserts, card and customer updates."""
    ident_schema = {
        "customer_id": pl.Int64,
        "source": pl.String,
        "account_id": pl.String,
        "id_type": pl.String,
        "id_value": pl.String,
    }
    return {
        "chg_delete": pl.DataFrame(list(ws.deleted), schema=ident_schema, orient="row"),
        "chg_insert": pl.DataFrame(list(ws.inserted), schema=ident_schema, orient="row"),
        "chg_cards": pl.DataFrame(
            ws.changed_cards(),
            orient="row",
            schema={"card_number": pl.String, "customer_id": pl.Int64, "status_label": pl.String},
        ),
        # Replayed merges already moved identifiers and cards in the rows above, so only the customer
        # rows change; a table of their own keeps the set-based moves of chg_merge away from them.
        "chg_merge_status": pl.DataFrame(
            list(ws.merged.items()), orient="row", schema={"victim_id": pl.Int64, "survivor_id": pl.Int64}
        ),
    }


@dataclass(frozen=True)
class Replayed(Handle):
    """Every row decided: the replay's outcomes, and chg_* complete with both routes' changes."""

    vouches: ClassVar[tuple[Stage, ...]] = ("resolve", "decide")
    decided: Decided
    outcomes: pl.DataFrame
    """One OUTCOME_SCHEMA row per replayed row."""

    @property
    def rows(self) -> int:
        return self.outcomes.height


def stage_replayed(decided: Decided, outcomes: pl.DataFrame, changes: dict[str, pl.DataFrame]) -> Replayed:
    """Append the replay's net changes to the chg_* tables; req, res and the other deciding tables go."""
    con = decided.connection("replay")
    for table, frame in changes.items():
        con.register("ws_frame", frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM ws_frame")  # seq stays NULL: not a set-based row
        con.unregister("ws_frame")
    decided.ws.finish("replay")  # frees DuckDB memory before the reports are built
    return Replayed(decided.ws, decided=decided, outcomes=outcomes)
