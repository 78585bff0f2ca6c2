"""Write the staged changes to the store, inside the run's transaction: deletes, moves, merges, inserts, cards.

Both routes staged their changes in the same chg_* tables (decide.py, replay.py); here they are
located by the rowids resolve pulled and written with the fewest statements DuckDB checkpoints cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline.engine.replay import Replayed
from pipeline.engine.workspace import Handle, Stage
from pipeline.errors import InternalError
from pipeline.store.duck import run_script
from pipeline.store.schema import stored_columns

_ROWS_TO_WRITE = """
CREATE OR REPLACE TEMP TABLE chg_delete_rows AS
SELECT r.rid FROM chg_delete d JOIN rel_idents r USING (customer_id, source, account_id, id_type, id_value);
CREATE OR REPLACE TEMP TABLE chg_moves AS
SELECT i.rid, m.victim_id, m.survivor_id, i.source, i.account_id, i.id_type, i.id_value, m.seq
FROM rel_idents i JOIN chg_merge m ON i.customer_id = m.victim_id ANTI JOIN chg_delete_rows d USING (rid);
INSERT INTO chg_delete_rows SELECT rid FROM chg_moves;
CREATE OR REPLACE TEMP TABLE chg_customers AS
SELECT c.rid, c.customer_id, c.status AS old_status, c.merged_into AS old_merged_into, m.survivor_id, c.customer_type
FROM rel_info c JOIN (SELECT victim_id, survivor_id FROM chg_merge UNION ALL SELECT * FROM chg_merge_status) m
    ON c.customer_id = m.victim_id;
CREATE OR REPLACE TEMP TABLE chg_card_rows AS
SELECT c.rid, c.card_number, c.series_id,
    CASE WHEN u.card_number IS NOT NULL THEN u.customer_id ELSE m.survivor_id END AS customer_id,
    CASE WHEN u.card_number IS NOT NULL THEN u.status_label ELSE c.status_label END AS status_label
FROM rel_cards c LEFT JOIN chg_cards u USING (card_number) LEFT JOIN chg_merge m ON m.victim_id = c.customer_id
WHERE u.card_number IS NOT NULL OR m.victim_id IS NOT NULL
"""
"""Each card a set-based merge moves (its holder a victim) or a row changes (chg_cards, both routes), with the
state it ends the run in: chg_cards' holder and label where a row changed it, else the survivor."""


_APPLY = [
    "DELETE FROM identifiers USING chg_delete_rows d WHERE identifiers.rowid = d.rid",
    f"INSERT INTO identifiers SELECT {stored_columns('identifiers', customer_id='survivor_id')} FROM chg_moves",
    "DELETE FROM customers USING chg_customers c WHERE customers.rowid = c.rid",
    "INSERT INTO customers SELECT customer_id, 'MERGED', survivor_id, customer_type FROM chg_customers",
    f"INSERT INTO identifiers SELECT {stored_columns('identifiers')} FROM chg_insert",
    "DELETE FROM cards USING chg_card_rows c WHERE cards.rowid = c.rid",
    "INSERT INTO cards SELECT card_number, series_id, customer_id, status_label FROM chg_card_rows",
]
"""Identifier moves, merged customers and changed cards are written as delete + insert, never UPDATE:
DuckDB's checkpoint rewrites every row group an UPDATE touched (0.6 s for 10k scattered customers on 25M
identifiers; an UPDATE of 1,000 cards also makes the COMMIT checkpoint), while deletes and appends cost
it next to nothing."""


@dataclass(frozen=True)
class Applied(Handle):
    """The changes as written: the undo log and provenance read them (chg_*, chg_moves, chg_customers, rel_*)."""

    vouches: ClassVar[tuple[Stage, ...]] = ("resolve", "decide", "apply")
    identifiers_deleted: int
    customers_merged: int


def apply_changes(replayed: Replayed) -> Applied:
    """Apply the staged changes inside the caller's open transaction (engine/record.py logs them after).

    Deleted and moved identifiers and merged customers are found by their rowid, taken when resolve
    pulled them: every such row belongs to a customer resolve pulled (a target, a holder or a merge
    victim), and nothing writes to the store between resolve and here, so a string join over the
    whole table is not needed.
    """
    con = replayed.connection("apply")
    run_script(con, _ROWS_TO_WRITE)
    planned, found, merged, merged_found, cards, cards_found = con.execute(
        """SELECT (SELECT count(*) FROM chg_delete), (SELECT count(*) FROM chg_delete_rows)
                  - (SELECT count(*) FROM chg_moves),
                  (SELECT count(*) FROM chg_merge) + (SELECT count(*) FROM chg_merge_status),
                  (SELECT count(*) FROM chg_customers),
                  (SELECT count(DISTINCT card_number) FROM chg_cards),
                  (SELECT count(*) FROM chg_card_rows SEMI JOIN chg_cards USING (card_number))"""
    ).fetchall()[0]
    if planned != found or merged != merged_found or cards != cards_found:
        raise InternalError(
            f"{planned} identifier deletions, {merged} merges and {cards} card changes planned but {found},"
            f" {merged_found} and {cards_found} rows found; nothing was applied"
        )
    for statement in _APPLY:
        con.execute(statement)
    replayed.ws.finish("apply")
    return Applied(replayed.ws, identifiers_deleted=planned, customers_merged=merged)
