"""Scenario (d)'s request file: many rows over few customers, so that nearly every row interacts.

DuckDB picks `customers` ACTIVE LOYALTY customers (and as many unheld cards) from a sample snapshot;
a seeded Python generator then writes `rows` requests whose targets and values all fall on them:
fresh adds, removes, identifier moves (remove then add), about 1 % merges (a value of one picked
customer added to another in a different scope), re-adds, card links and delinks and about 5 %
malformed rows. Most rows share a customer, a value or a card with an earlier row, so the engine
has to replay them in order: the worst case for its set-based path.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.tools.sample import SLOTS

PICK_CUSTOMERS_SQL = """
SELECT customer_id FROM read_parquet($customers)
WHERE status = 'ACTIVE' AND customer_type = 'LOYALTY'
ORDER BY hash(customer_id, $seed) LIMIT $n
"""
THEIR_IDENTIFIERS_SQL = """
SELECT customer_id, source, account_id, id_type, id_value FROM read_parquet($identifiers)
WHERE customer_id IN (SELECT unnest($ids::BIGINT[]))
ORDER BY customer_id, source, account_id, id_type
"""
THEIR_CARDS_SQL = """
SELECT card_number, series_id, customer_id FROM read_parquet($cards)
WHERE customer_id IN (SELECT unnest($ids::BIGINT[])) AND status_label IN ('Active', 'Issued')
ORDER BY card_number
"""
POOL_CARDS_SQL = """
SELECT card_number, series_id FROM read_parquet($cards)
WHERE customer_id IS NULL AND status_label = 'Not Issued'
ORDER BY hash(card_number, $seed) LIMIT $n
"""

KIND_WEIGHTS = {
    "fresh_add": 32,
    "remove": 15,
    "move": 20,
    "merge": 1,
    "readd": 5,
    "card_link": 12,
    "card_delink": 10,
    "malformed": 5,
}
"""Shares in percent of the drawn operations (a move writes two rows)."""

FRESH_VALUE = {
    "mobile": "88{:011d}",
    "email": "dense.{}@bench.example",
    "externalId": "DENSE-{}",
    "wechat": "oD{:012d}",
    "unionId": "uD{:012d}",
    "cuid": "cu_d{}",
    "fbId": "2000{:010d}",
    "line": "UD{:012d}",
}
SHARED_TYPES = ("mobile", "email")
"""Identifier types whose value may live in several scopes: adding one held elsewhere merges."""


@dataclass(frozen=True)
class Identifier:
    customer_id: int
    source: str
    account_id: str
    id_type: str
    id_value: str


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> list[tuple]:
    return con.execute(sql, params).fetchall()


class DenseBatch:
    """Draws request rows over a fixed small set of customers, values and cards."""

    def __init__(
        self,
        customers: list[int],
        identifiers: list[Identifier],
        held_cards: list[tuple[str, int, int]],
        pool_cards: list[tuple[str, int]],
        seed: int,
    ) -> None:
        self.rng = random.Random(seed)
        self.customers = customers
        self.identifiers = identifiers
        self.by_customer: dict[int, list[Identifier]] = {c: [] for c in customers}
        for ident in identifiers:
            self.by_customer[ident.customer_id].append(ident)
        self.shared = [i for i in identifiers if i.id_type in SHARED_TYPES]
        self.held_cards = held_cards
        self.pool_cards = pool_cards
        self.fresh = 0
        self.kinds = list(KIND_WEIGHTS)
        self.weights = list(KIND_WEIGHTS.values())

    def rows(self, count: int) -> tuple[list[dict[str, str]], dict[str, int]]:
        """`count` request rows and how many operations of each kind they hold."""
        rows: list[dict[str, str]] = []
        kinds = dict.fromkeys(self.kinds, 0)
        while len(rows) < count:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            drawn = getattr(self, f"_{kind}")()
            rows.extend(drawn)
            kinds[kind] += 1
        return rows[:count], kinds

    def _customer(self) -> int:
        return self.rng.choice(self.customers)

    def _target(self, customer_id: int, source: str, account_id: str) -> dict[str, str]:
        """By customer_id, or (a third of the time) by an identifier the customer held in that scope."""
        in_scope = [i for i in self.by_customer[customer_id] if (i.source, i.account_id) == (source, account_id)]
        if in_scope and self.rng.random() < 0.33:
            ident = self.rng.choice(in_scope)
            return {"lookup_type": ident.id_type, "lookup_value": ident.id_value}
        return {"customer_id": str(customer_id)}

    def _identifier_row(
        self, action: str, customer_id: int, source: str, account_id: str, id_type: str, id_value: str
    ) -> dict[str, str]:
        return {
            **self._target(customer_id, source, account_id),
            "source": source,
            "account_id": account_id,
            "action": action,
            "id_type": id_type,
            "id_value": id_value,
        }

    def _fresh_add(self) -> list[dict[str, str]]:
        source, account_id, id_type, _ = self.rng.choice(SLOTS)
        self.fresh += 1
        return [
            self._identifier_row(
                "add", self._customer(), source, account_id, id_type, FRESH_VALUE[id_type].format(self.fresh)
            )
        ]

    def _remove(self) -> list[dict[str, str]]:
        ident = self.rng.choice(self.identifiers)
        return [
            self._identifier_row(
                "remove", ident.customer_id, ident.source, ident.account_id, ident.id_type, ident.id_value
            )
        ]

    def _move(self) -> list[dict[str, str]]:
        ident = self.rng.choice(self.identifiers)
        scope = (ident.source, ident.account_id, ident.id_type, ident.id_value)
        return [
            self._identifier_row("remove", ident.customer_id, *scope),
            self._identifier_row("add", self._customer(), *scope),
        ]

    def _scopes(self, customer_id: int) -> set[tuple[str, str]]:
        return {(i.source, i.account_id) for i in self.by_customer[customer_id]}

    def _merge(self) -> list[dict[str, str]]:
        """Add a value of a picked customer to another picked customer in a scope the holder lacks;
        a victim sharing no scope with the holder is preferred, so that most merges can succeed."""
        held = self.rng.choice(self.shared)
        survivor_scopes = self._scopes(held.customer_id)
        others = [s for s in SLOTS if s[2] == held.id_type and (s[0], s[1]) not in survivor_scopes]
        if not others:
            return self._fresh_add()
        source, account_id, id_type, _ = self.rng.choice(others)
        victim = self._customer()
        for _ in range(32):
            if victim != held.customer_id and not self._scopes(victim) & survivor_scopes:
                break
            victim = self._customer()
        return [self._identifier_row("add", victim, source, account_id, id_type, held.id_value)]

    def _readd(self) -> list[dict[str, str]]:
        ident = self.rng.choice(self.identifiers)
        return [
            self._identifier_row(
                "add", ident.customer_id, ident.source, ident.account_id, ident.id_type, ident.id_value
            )
        ]

    def _card_row(self, action: str, customer_id: int, number: str, series_id: int, label: str) -> dict[str, str]:
        held = self.by_customer[customer_id]
        source, account_id = (held[0].source, held[0].account_id) if held else ("INSTORE", "")
        return {
            **self._target(customer_id, source, account_id),
            "source": source,
            "account_id": account_id,
            "action": action,
            "id_type": "cardnumber",
            "id_value": number,
            "series_id": str(series_id),
            "status_label": label,
        }

    def _card_link(self) -> list[dict[str, str]]:
        number, series_id = self.rng.choice(self.pool_cards)
        return [self._card_row("add", self._customer(), number, series_id, self.rng.choice(("Active", "Issued")))]

    def _card_delink(self) -> list[dict[str, str]]:
        if self.held_cards and self.rng.random() < 0.6:
            number, series_id, holder = self.rng.choice(self.held_cards)
        else:
            (number, series_id), holder = self.rng.choice(self.pool_cards), self._customer()
        return [self._card_row("remove", holder, number, series_id, "")]

    def _malformed(self) -> list[dict[str, str]]:
        customer_id = self._customer()
        return [
            {
                "customer_id": str(customer_id),
                "source": "INSTORE",
                "action": "add",
                "id_type": "email",
                "id_value": f"broken{self.rng.randrange(10**6)}@nowhere",
            }
        ]


def write_dense_requests(
    snapshot_dir: Path, out_csv: Path, customers: int = 1000, rows: int = 100_000, seed: int = 1
) -> dict[str, int]:
    """Write scenario (d)'s request file and return the number of operations of each kind."""
    con = duckdb.connect(config={"threads": 2, "memory_limit": "1GB"})
    con.execute("SET enable_progress_bar = false")
    try:
        picked = [
            r[0]
            for r in _fetch(
                con,
                PICK_CUSTOMERS_SQL,
                {"customers": str(snapshot_dir / "customers.parquet"), "seed": seed, "n": customers},
            )
        ]
        ids = {"ids": picked}
        identifiers = [
            Identifier(*r)
            for r in _fetch(
                con, THEIR_IDENTIFIERS_SQL, {"identifiers": str(snapshot_dir / "identifiers.parquet"), **ids}
            )
        ]
        held = _fetch(con, THEIR_CARDS_SQL, {"cards": str(snapshot_dir / "cards.parquet"), **ids})
        pool = _fetch(con, POOL_CARDS_SQL, {"cards": str(snapshot_dir / "cards.parquet"), "seed": seed, "n": customers})
    finally:
        con.close()
    batch = DenseBatch(picked, identifiers, held, pool, seed)
    drawn, kinds = batch.rows(rows)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=REQUEST_COLUMNS, restval="")
        writer.writeheader()
        for number, row in enumerate(drawn, 1):
            writer.writerow({"row_id": f"DENSE-{number:07d}", **row})
    os.replace(tmp, out_csv)
    return kinds


def main() -> None:
    """`python bench/dense.py SNAPSHOT_DIR OUT.csv [--customers N] [--rows M] [--seed S]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot_dir", type=Path)
    parser.add_argument("out_csv", type=Path)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    kinds = write_dense_requests(args.snapshot_dir, args.out_csv, args.customers, args.rows, args.seed)
    print(", ".join(f"{k} {v}" for k, v in kinds.items()))


if __name__ == "__main__":
    main()
