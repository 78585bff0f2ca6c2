"""The emulated platform's state: a whole store in memory, changed one call at a time by the engine's rules.

No third copy of SPEC section 3: a call's items are checked by the check stage (engine/check.py) and applied by
the sequential replay (engine/replay.py) over a WorkingSet that holds every customer, identifier and card of
the store and indexes every value (`track_all`). The answers take the platform's response shape
(reference/platform-api.md). The whole store is held as Python objects, so this is for rehearsal-sized
stores (up to a few million identifiers), not the 10M-customer benchmark store.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.catalog import CATALOG
from pipeline.config import CARD, OrgConfig
from pipeline.delivery.platform import (
    FOLLOWED_CODE,
    INVALID_REQUEST_CODE,
    MERGED_CODE,
    MULTIPLE_CARDS_CODE,
    NOT_FOUND_CODE,
    VICTIM_CODE,
    code_entry,
)
from pipeline.engine.check import CheckResult, build_rules, check_requests
from pipeline.engine.replay import Replayer, ReplayRow, WorkingSet
from pipeline.errors import NotACallBody
from pipeline.input.calls import call_rows
from pipeline.input.columns import FRAME_COLUMNS, REPLACES_COLUMN
from pipeline.store.connect import open_store
from pipeline.store.duck import query_frame, transaction
from pipeline.store.schema import COLUMNS, TABLES, stored_columns


@dataclass(frozen=True)
class Answer:
    """One answer of the emulated platform: HTTP status, JSON body, and whether the call changed the state."""

    status: int
    body: dict[str, Any]
    changed: bool = False


def answer_code(code: int, message: str | None = None) -> dict[str, Any]:
    """A code of an answer: its message, else the catalog's meaning; a code the catalog lacks gets "" either way."""
    return code_entry(code, (message or CATALOG[code].meaning) if code in CATALOG else "")


class BatchChecker:
    """The check stage for calls arriving one by one: the calls waiting at once are checked in one batch.

    A check of one row costs about as much as a check of a hundred (Pandera's fixed cost per
    validation), so concurrent calls share one `check_requests`; each caller gets its own rows back.
    """

    def __init__(self, config: OrgConfig):
        self.config = config
        self.rules = build_rules(config)
        self.waiting: queue.Queue[tuple[list[dict[str, str | None]], Future[CheckResult]]] = queue.Queue()
        threading.Thread(target=self._work, name="checker", daemon=True).start()

    def check(self, rows: list[dict[str, str | None]]) -> CheckResult:
        done: Future[CheckResult] = Future()
        self.waiting.put((rows, done))
        return done.result()

    def _work(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while True:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self._check_batch(batch)
            except Exception as error:  # every waiting caller hears of it; the checker goes on
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)

    def _check_batch(self, batch: list[tuple[list[dict[str, str | None]], Future[CheckResult]]]) -> None:
        rows = [row for call_rows_, _ in batch for row in call_rows_]
        result = check_requests(_raw_frame(rows), self.config, direct=True, rules=self.rules)
        start = 0
        for call_rows_, done in batch:
            seqs = pl.int_range(start, start + len(call_rows_), eager=True).implode()
            mine = pl.col("seq").is_in(seqs)
            done.set_result(
                CheckResult(
                    checked=result.checked.filter(mine).sort("seq"), errors=result.errors.filter(mine).sort("seq")
                )
            )
            start += len(call_rows_)


class EmulatedPlatform:
    """A store's state in memory; `change_identifier` applies one call atomically under a lock."""

    def __init__(self, ws: WorkingSet, config: OrgConfig):
        self.ws, self.config = ws, config
        self.replayer = Replayer(ws, config)
        self.lock = threading.Lock()
        self._seq = 0
        self.checker = BatchChecker(config)
        # the first check builds the rules and Pandera's schema: pay that before the first call
        self.checker.check([{"customer_id": "1", "source": "", "action": "add", "id_type": "", "id_value": ""}])

    @classmethod
    def load(cls, store_path: Path | str, config: OrgConfig) -> EmulatedPlatform:
        """Read the whole store (customers, identifiers, cards) into a working set; the store is closed after."""
        with open_store(store_path, read_only=True) as con:
            customers = query_frame(con, "SELECT customer_id, status, merged_into, customer_type FROM customers")
            idents = query_frame(con, "SELECT customer_id, source, account_id, id_type, id_value FROM identifiers")
            cards = query_frame(con, "SELECT card_number, series_id, customer_id, status_label FROM cards")
        held: dict[int, set] = {}
        for cid, source, account, id_type, value in idents.iter_rows():
            held.setdefault(cid, set()).add((source, account, id_type, value))
        ws = WorkingSet(
            customers={cid: [status, into, ctype] for cid, status, into, ctype in customers.iter_rows()},
            idents=held,
            cards={number: [series, holder, label] for number, series, holder, label in cards.iter_rows()},
            tracked_holdings=idents.select("id_type", "id_value", "customer_id", "source", "account_id").rows(),
            track_all=True,
        )
        return cls(ws, config)

    def change_identifier(self, customer_id: int, source: str | None, account_id: str | None, body: Any) -> Answer:
        """POST /v2/customers/{id}/changeIdentifier: check and apply the call's items in order, as one call."""
        if not isinstance(body, dict):
            return Answer(400, {"errors": [answer_code(INVALID_REQUEST_CODE, "the body must be a JSON object")]})
        try:
            rows = call_rows({"customer_id": customer_id, "source": source, "account_id": account_id, **body})
        except (NotACallBody, TypeError) as error:
            return Answer(400, {"errors": [answer_code(INVALID_REQUEST_CODE, f"not a changeIdentifier body: {error}")]})
        if sum(1 for r in rows if r.get("id_type") == CARD) > 1:
            return Answer(
                400,
                {"errors": [answer_code(MULTIPLE_CARDS_CODE, "Multiple cards can not be linked or unlinked at once")]},
            )
        checked = self.checker.check(rows)
        if checked.errors.height:
            errors = [
                answer_code(code, message)
                for code, message in checked.errors.select("error_code", "error_message").rows()
            ]
            return Answer(400, {"errors": errors, "warnings": []})
        with self.lock:
            return self._apply(checked.checked)

    def _apply(self, checked: pl.DataFrame) -> Answer:
        ws = self.ws
        warnings: list[dict[str, Any]] = []
        created, changed = None, False
        for row in checked.iter_rows(named=True):
            self._seq += 1
            cid = row["customer_id"]
            replay_row = ReplayRow(
                self._seq, cid, cid if cid in ws.customers else None, None, None, row["source"],
                row["account_id"], row["action"], row["id_type"], row["id_value"], row["series_id"],
                row["status_label"], row[REPLACES_COLUMN],
            )  # fmt: skip
            outcome = self.replayer.apply_row(replay_row)
            if outcome.error_code is not None:
                # a failed item changes nothing; earlier items of a multi-item call stay applied, as on the platform
                return Answer(400, {"errors": [answer_code(outcome.error_code)], "warnings": warnings}, changed)
            for code in outcome.warnings:
                message = f"merged into customer {outcome.survivor_id}" if code == MERGED_CODE else None
                warnings.append(answer_code(code, message))
            changed = changed or outcome.outcome in ("applied", "merged")
            created = outcome.survivor_id if outcome.outcome == "merged" else outcome.resolved_customer_id
        return Answer(200, {"createdId": created, "warnings": warnings}, changed)

    def customer(self, customer_id: int) -> Answer:
        """GET /v2/customers/{id}?source=ALL: profiles by scope and cards; a merge victim answers 8069/91009."""
        with self.lock:
            state = self.ws.customers.get(customer_id)
            if state is None:
                return Answer(404, {"errors": [answer_code(NOT_FOUND_CODE)]})
            status, merged_into, customer_type = state
            if status == "MERGED":
                return Answer(
                    200,
                    {
                        "id": customer_id,
                        "status": status,
                        "mergedInto": merged_into,
                        "warnings": [
                            answer_code(VICTIM_CODE, f"merged into customer {merged_into}"),
                            answer_code(FOLLOWED_CODE),
                        ],
                        "profiles": [],
                        "cards": [],
                    },
                )
            profiles: dict[tuple[str, str], list[dict[str, str]]] = {}
            for source, account, id_type, value in sorted(self.ws.idents.get(customer_id, ())):
                profiles.setdefault((source, account), []).append({"type": id_type, "value": value})
            cards = [
                {"cardNumber": n, "seriesId": self.ws.cards[n][0], "statusLabel": self.ws.cards[n][2]}
                for n in sorted(self.ws.cards_of.get(customer_id, ()))
            ]
            return Answer(
                200,
                {
                    "id": customer_id,
                    "status": status,
                    "type": customer_type,
                    "profiles": [
                        {"source": s, "accountId": a or None, "identifiers": items}
                        for (s, a), items in profiles.items()
                    ],
                    "cards": cards,
                },
            )

    def card(self, number: str) -> dict[str, Any] | None:
        """A card's series, holder and label (for read-backs of delinked cards), or None."""
        with self.lock:
            card = self.ws.cards.get(number)
            return None if card is None else {"cardNumber": number, "seriesId": card[0], "customerId": card[1],
                                              "statusLabel": card[2]}  # fmt: skip

    def lookup(self, source: str, account_id: str, id_type: str, value: str) -> Answer:
        """GET /v2/customers/lookup: the ACTIVE customer holding the identifier in that scope (or the card's holder)."""
        with self.lock:
            if id_type == CARD:
                card = self.ws.cards.get(value)
                holder = card[1] if card else None
            else:
                holder = next(
                    (c for c, s, a in self.ws.holders.get((id_type, value), ()) if (s, a) == (source, account_id)),
                    None,
                )
        if holder is None:
            return Answer(404, {"errors": [answer_code(NOT_FOUND_CODE)]})
        return Answer(200, {"id": holder})

    def frames(self) -> dict[str, pl.DataFrame]:
        """The state as store tables."""
        with self.lock:
            ws = self.ws
            return {
                "customers": pl.DataFrame(
                    [(c, *v) for c, v in ws.customers.items()], schema=COLUMNS["customers"], orient="row"
                ),
                "identifiers": pl.DataFrame(
                    [(c, *i) for c, held in ws.idents.items() for i in held],
                    schema=COLUMNS["identifiers"],
                    orient="row",
                ),
                "cards": pl.DataFrame([(n, *v) for n, v in ws.cards.items()], schema=COLUMNS["cards"], orient="row"),
            }

    def write_to(self, store_path: Path | str) -> None:
        """Replace the store's customers, identifiers and cards with this state, in one transaction."""
        frames = self.frames()
        with open_store(store_path) as con, transaction(con):
            for table in TABLES:
                con.register("state_frame", frames[table])
                con.execute(f"DELETE FROM {table}")
                con.execute(f"INSERT INTO {table} SELECT {stored_columns(table)} FROM state_frame")
                con.unregister("state_frame")


def _raw_frame(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    """A call's rows in input/read.py's frame shape, for the check stage (a replace's removed value included)."""
    return pl.DataFrame(
        [(i, "call", i + 1, *(r.get(c) for c in FRAME_COLUMNS[3:])) for i, r in enumerate(rows)],
        schema={
            "seq": pl.Int64,
            "file": pl.String,
            "row_number": pl.Int64,
            **dict.fromkeys(FRAME_COLUMNS[3:], pl.String),
        },
        orient="row",
    )
