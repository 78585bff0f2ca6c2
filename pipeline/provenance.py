"""Provenance: every change an applied run made, with the request row that caused it, kept in the store.

`explain` answers "why is this customer like this?" from it, for every run ever applied, without the
run's reports. One row of `provenance` is one change: an identifier added, removed, dropped from a
campaign holder or moved by a merge, a customer merged, a card linked, relabelled, delinked or moved
by a merge, or what a revert undid. It is written set-based, inside the run's own transaction, from
the decided changes (the chg_* tables of engine/workspace.py, which carry the seq of the row that made each
change, and the replay's chg_events) joined with the rows' file position, row_number and row_id.

Identifiers, cards and merges present since `store init` have no provenance row: "no row" means
"from the snapshot", whose folder and time are in store_meta (`snapshot`, `created_at`), so the
snapshot's 25M identifiers are never copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import duckdb
import polars as pl

from pipeline.duck import run_script

if TYPE_CHECKING:
    from pipeline.engine.apply import Applied
    from pipeline.read import InputFile

PROVENANCE_SQL = """
CREATE TABLE IF NOT EXISTS provenance (
    run_id VARCHAR NOT NULL, file_position INTEGER, row_number BIGINT,
    row_id VARCHAR USING COMPRESSION uncompressed, action VARCHAR NOT NULL,
    from_customer_id BIGINT, to_customer_id BIGINT, source VARCHAR, account_id VARCHAR,
    id_type VARCHAR NOT NULL, id_value VARCHAR NOT NULL USING COMPRESSION uncompressed,
    old_label VARCHAR, new_label VARCHAR)
"""
"""One change per row: from_customer_id lost the identifier or card (or is the merge victim),
to_customer_id gained it (or is the survivor); file_position is the file's position in run_files;
file, row and row_id are empty for a revert's rows. row_id and id_value are nearly unique per row:
compressing them made writing 1M rows 3-5x slower for half the bytes, so they are stored
uncompressed (bench/RESULTS.md, scenario p, quotes the store growth)."""

Action = Literal[
    "add",
    "remove",
    "drop",
    "move",
    "merge",
    "card_link",
    "card_label",
    "card_delink",
    "card_move",
    "revert_remove",
    "revert_restore",
    "revert_unmerge",
    "revert_card",
    "unrecorded",
]
"""What a provenance row says happened (README "Explain"): `drop` is a CAMPAIGN holder losing a value
another customer took (reuse on); `move` an identifier going from a merge victim to its survivor;
`unrecorded` marks a run made with the bench's switch off, whose changes have no rows."""

_ROW_ORDER = ("merge", "move", "card_move", "drop", "remove", "add", "card_link", "card_label", "card_delink")
ACTION_ORDER: dict[str, int] = {
    action: i for i, action in enumerate([*_ROW_ORDER, *(a for a in get_args(Action) if a not in _ROW_ORDER)])
}
"""The order of a row's changes among themselves: a merge before the moves it makes, then the add."""

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

ENV_SKIP = "LOYALTY_BULK_BENCH_SKIP_PROVENANCE"
"""Measurement switch for bench/run.py only: a run records no provenance rows (one `unrecorded` row
says so) so that the bench can time (a) with and without them in one session. Never for a real store:
`explain` would attribute that run's changes to earlier causes."""

_RECORD = """
INSERT INTO provenance
SELECT $run_id, r.file_position, r.row_number, r.row_id, e.action, e.from_customer_id, e.to_customer_id,
    e.source, e.account_id, e.id_type, e.id_value, e.old_label, e.new_label
FROM (
    SELECT seq, action, customer_id AS from_customer_id, NULL::BIGINT AS to_customer_id, source, account_id,
        id_type, id_value, NULL::VARCHAR AS old_label, NULL::VARCHAR AS new_label
    FROM chg_delete WHERE seq IS NOT NULL
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
them) give what their merges moved. The replayed rows' changes come as events (chg_events), since the
replay stages only net changes; its merges are not in chg_merge, so nothing is counted twice."""

_RECORD_REVERT = """
INSERT INTO provenance
SELECT $revert_id, NULL, NULL, NULL,
    CASE op WHEN 'inserted' THEN 'revert_remove' ELSE 'revert_restore' END,
    CASE op WHEN 'inserted' THEN customer_id END, CASE op WHEN 'deleted' THEN customer_id END,
    source, account_id, id_type, id_value, NULL, NULL
FROM undo_identifiers WHERE run_id = $run_id
UNION ALL
SELECT $revert_id, NULL, NULL, NULL, 'revert_card', new_customer_id, old_customer_id, NULL, NULL,
    'cardnumber', card_number, new_label, old_label
FROM undo_cards WHERE run_id = $run_id
UNION ALL
SELECT $revert_id, NULL, NULL, NULL, 'revert_unmerge', customer_id, new_merged_into, NULL, NULL, '', '', NULL, NULL
FROM undo_customers WHERE run_id = $run_id
"""


def enabled() -> bool:
    """Whether this run records provenance (always, unless the bench's measurement switch is set)."""
    return os.environ.get(ENV_SKIP, "") in ("", "0")


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create the provenance table where missing (ledger.ensure calls this)."""
    con.execute(PROVENANCE_SQL)


def row_positions(checked: pl.DataFrame, files: Sequence[InputFile]) -> pl.DataFrame:
    """seq -> file_position, row_number, row_id of the checked rows (seq ranges follow the files' order)."""
    starts: list[int] = []
    offset = 0
    for f in files:
        starts.append(offset)
        offset += f.rows
    position = pl.lit(0, dtype=pl.Int32)
    for i, start in enumerate(starts[1:], start=1):
        position = pl.when(pl.col("seq") >= start).then(pl.lit(i, dtype=pl.Int32)).otherwise(position)
    return checked.select("seq", position.alias("file_position"), "row_number", "row_id")


def record(applied: Applied, run_id: str, rows: pl.DataFrame) -> None:
    """Record a run's changes inside its apply transaction, after apply_changes (which makes chg_moves)."""
    con = applied.connection("provenance")
    con.register("prov_rows", rows)
    try:
        con.execute(_RECORD, {"run_id": run_id})
    finally:
        con.unregister("prov_rows")


def record_unrecorded(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Mark a run made with the bench's switch: its changes have no provenance rows."""
    con.execute(
        "INSERT INTO provenance VALUES (?, NULL, NULL, NULL, 'unrecorded', NULL, NULL, NULL, NULL, '', '', NULL, NULL)",
        [run_id],
    )


def record_revert(con: duckdb.DuckDBPyConnection, revert_id: str, run_id: str) -> None:
    """Record what a revert undoes, from the reverted run's undo log, inside the revert's transaction."""
    run_script(con, _RECORD_REVERT, {"revert_id": revert_id, "run_id": run_id})
