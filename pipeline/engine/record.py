"""The run's own records, written inside its apply transaction after apply_changes: the undo log and provenance.

Both are set-based, from the staged changes (the chg_* tables of workspace.py), the identifier moves and
merged customers apply located (chg_moves, chg_customers), and the before-state resolve pulled (rel_*), so
neither costs a scan of the store.

The undo log holds the net rows a run deletes and inserts in identifiers, and the before/after state of
every card and customer it changes; lineage/revert.py plays it backwards.

Provenance holds every change with the request row that made it, so that `explain` answers "why is this
customer like this?" for every run ever applied, without the run's reports. One row is one change: an
identifier added, removed, replaced (the value a replace took away, with the value that took its place),
dropped from a campaign holder or moved by a merge, a customer merged, a card linked, relabelled, delinked or
moved by a merge (lineage/provenance.py names the actions and writes a revert's rows). Identifiers, cards and
merges present since `store init` have no row: "no row" means "from the snapshot", whose folder and time are in
store_meta, so the snapshot's identifiers are never copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import duckdb
import polars as pl

from pipeline.engine.apply import Applied
from pipeline.input.read import InputFile
from pipeline.store.duck import run_script

ENV_SKIP = "LOYALTY_BULK_BENCH_SKIP_PROVENANCE"
"""Measurement switch for bench/run.py only: a run records no provenance rows (one `unrecorded` row
says so) so that the bench can time (a) with and without them in one session. Never for a real store:
`explain` would attribute that run's changes to earlier causes."""


_RECORD_PROVENANCE = """
INSERT INTO provenance
SELECT $run_id, r.file_position, r.row_number, r.row_id, e.action, e.from_customer_id, e.to_customer_id,
    CASE WHEN e.action IN ('card_link', 'card_label', 'card_delink') THEN r.source ELSE e.source END,
    CASE WHEN e.action IN ('card_link', 'card_label', 'card_delink') THEN r.account_id ELSE e.account_id END,
    e.id_type, e.id_value, e.old_label, e.new_label
FROM (
    SELECT seq, action, customer_id AS from_customer_id, NULL::BIGINT AS to_customer_id, source, account_id,
        id_type, id_value, NULL::VARCHAR AS old_label, NULL::VARCHAR AS new_label
    FROM chg_delete WHERE seq IS NOT NULL AND action <> 'replace'
    UNION ALL
    SELECT d.seq, 'replace', d.customer_id, i.customer_id, d.source, d.account_id, d.id_type, d.id_value, NULL,
        i.id_value
    FROM chg_delete d JOIN chg_insert i USING (seq) WHERE d.action = 'replace'
    UNION ALL
    SELECT seq, 'add', NULL, customer_id, source, account_id, id_type, id_value, NULL, NULL
    FROM chg_insert WHERE seq IS NOT NULL
    UNION ALL
    SELECT m.seq, 'merge', m.victim_id, m.survivor_id, i.source, i.account_id, i.id_type, i.id_value, NULL, NULL
    FROM chg_merge m JOIN chg_insert i USING (seq)
    UNION ALL
    SELECT seq, 'move', victim_id, survivor_id, source, account_id, id_type, id_value, NULL, NULL FROM chg_moves
    UNION ALL
    SELECT m.seq, 'card_move', m.victim_id, m.survivor_id, NULL, NULL, 'cardnumber', c.card_number,
        c.status_label, c.status_label
    FROM chg_merge m JOIN rel_cards c ON c.customer_id = m.victim_id
    UNION ALL
    SELECT u.seq,
        CASE WHEN u.customer_id IS NULL THEN 'card_delink' WHEN c.customer_id IS NULL THEN 'card_link'
             ELSE 'card_label' END,
        c.customer_id, u.customer_id, NULL, NULL, 'cardnumber', u.card_number, c.status_label, u.status_label
    FROM chg_cards u JOIN rel_cards c USING (card_number) WHERE u.seq IS NOT NULL
    UNION ALL
    SELECT * FROM chg_events
) e JOIN prov_rows r USING (seq)
"""
"""The set-based rows' changes are read from chg_* with their seq; chg_moves and rel_cards (apply located
them) give what their merges moved. A replace's row names the value W it took away (id_value), the customer that
gained V (to_customer_id: the target, or the survivor of its merge) and V itself in new_label, which is a card's
new label on card rows; the replay's events say the same. The replayed rows' changes come as events (chg_events),
since the replay stages only net changes; its merges are not in chg_merge, so nothing is counted twice."""


def provenance_enabled() -> bool:
    """Whether this run records provenance (always, unless the bench's measurement switch is set)."""
    return os.environ.get(ENV_SKIP, "") in ("", "0")


def row_positions(checked: pl.DataFrame, files: Sequence[InputFile]) -> pl.DataFrame:
    """seq -> file_position, row_number, row_id, source and account_id of the checked rows (seq ranges follow the
    files' order); a card change's provenance names the scope its row came through."""
    return positions_by_rows(checked, [f.rows for f in files])


def positions_by_rows(checked: pl.DataFrame, file_rows: Sequence[int]) -> pl.DataFrame:
    """row_positions from the files' row counts alone (a bucket of a run on Spark's executors knows no more)."""
    starts: list[int] = []
    offset = 0
    for rows in file_rows:
        starts.append(offset)
        offset += rows
    position = pl.lit(0, dtype=pl.Int32)
    for i, start in enumerate(starts[1:], start=1):
        position = pl.when(pl.col("seq") >= start).then(pl.lit(i, dtype=pl.Int32)).otherwise(position)
    return checked.select("seq", position.alias("file_position"), "row_number", "row_id", "source", "account_id")


def record_provenance(applied: Applied, run_id: str, rows: pl.DataFrame) -> None:
    """Record a run's changes inside its apply transaction, after apply_changes (which makes chg_moves)."""
    con = applied.connection("provenance")
    con.register("prov_rows", rows)
    try:
        con.execute(_RECORD_PROVENANCE, {"run_id": run_id})
    finally:
        con.unregister("prov_rows")


def record_unrecorded(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Mark a run made with the bench's switch: its changes have no provenance rows."""
    con.execute(
        "INSERT INTO provenance VALUES (?, NULL, NULL, NULL, 'unrecorded', NULL, NULL, NULL, NULL, '', '', NULL, NULL)",
        [run_id],
    )


_RECORD_UNDO = """
INSERT INTO undo_identifiers
    SELECT $run_id, 'deleted', customer_id, source, account_id, id_type, id_value FROM chg_delete
    UNION ALL SELECT $run_id, 'inserted', customer_id, source, account_id, id_type, id_value FROM chg_insert
    UNION ALL SELECT $run_id, 'deleted', victim_id, source, account_id, id_type, id_value FROM chg_moves
    UNION ALL SELECT $run_id, 'inserted', survivor_id, source, account_id, id_type, id_value FROM chg_moves;
INSERT INTO undo_cards
    SELECT $run_id, c.card_number, c.customer_id, c.status_label, u.customer_id, u.status_label
        FROM rel_cards c JOIN chg_cards u USING (card_number)
    UNION ALL SELECT $run_id, c.card_number, c.customer_id, c.status_label, m.survivor_id, c.status_label
        FROM rel_cards c JOIN chg_merge m ON c.customer_id = m.victim_id;
INSERT INTO undo_customers
    SELECT $run_id, customer_id, old_status, old_merged_into, 'MERGED', survivor_id FROM chg_customers
"""


def record_undo(applied: Applied, run_id: str) -> None:
    """Log the changes of a run for `revert`; call inside the apply transaction, after apply_changes.

    rel_* holds every customer, identifier and card a run can change, so the log costs no scan of the store.
    """
    run_script(applied.connection("undo"), _RECORD_UNDO, {"run_id": run_id})
