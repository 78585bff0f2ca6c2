"""The difference between the store and a new snapshot of the platform, key by key, and writing it.

The snapshot's tables are staged as `store init` stages them (trimmed, normalised, typed Parquet, snapshot.py)
and read as views (snap_customers, snap_identifiers, snap_cards). One keyed full outer join per table finds
every key whose row differs (rf_customers, rf_identifiers, rf_cards: the store row's rowid and its before and
after columns), so everything else of the 25M rows is never written. Applying deletes the store rows of
changed keys by rowid and inserts the snapshot's rows for them: afterwards the store holds exactly the snapshot.
The undo log keeps both row images, and provenance one row per change, as "changed on the platform".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.store.duck import query_frame, run_script
from pipeline.store.schema import COLUMNS, TABLES, stored_columns

SNAP_VIEWS = {table: f"snap_{table}" for table in TABLES}
"""The views a refresh reads the staged snapshot through."""

DIFF_SQL = """
CREATE OR REPLACE TEMP TABLE rf_customers AS
SELECT coalesce(o.customer_id, n.customer_id) AS customer_id, o.rowid AS rid,
    o.status AS old_status, n.status AS new_status, o.merged_into AS old_merged_into, n.merged_into AS new_merged_into,
    o.customer_type AS old_customer_type, n.customer_type AS new_customer_type
FROM customers o FULL OUTER JOIN snap_customers n ON o.customer_id = n.customer_id
WHERE o.customer_id IS NULL OR n.customer_id IS NULL OR o.status <> n.status
   OR o.merged_into IS DISTINCT FROM n.merged_into OR o.customer_type <> n.customer_type;
CREATE OR REPLACE TEMP TABLE rf_identifiers AS
SELECT o.rowid AS rid, coalesce(o.source, n.source) AS source, coalesce(o.account_id, n.account_id) AS account_id,
    coalesce(o.id_type, n.id_type) AS id_type, coalesce(o.id_value, n.id_value) AS id_value,
    o.customer_id AS old_holder, n.customer_id AS new_holder
FROM identifiers o FULL OUTER JOIN snap_identifiers n
    ON o.id_value = n.id_value AND o.id_type = n.id_type AND o.source = n.source AND o.account_id = n.account_id
WHERE o.customer_id IS DISTINCT FROM n.customer_id;
CREATE OR REPLACE TEMP TABLE rf_cards AS
SELECT coalesce(o.card_number, n.card_number) AS card_number, o.rowid AS rid,
    o.customer_id AS old_holder, n.customer_id AS new_holder, o.series_id AS old_series_id,
    n.series_id AS new_series_id, o.status_label AS old_status_label, n.status_label AS new_status_label
FROM cards o FULL OUTER JOIN snap_cards n ON o.card_number = n.card_number
WHERE o.card_number IS NULL OR n.card_number IS NULL OR o.series_id <> n.series_id
   OR o.customer_id IS DISTINCT FROM n.customer_id OR o.status_label <> n.status_label
"""
"""Every key whose row differs between the store (o) and the snapshot (n); a missing side is all NULL."""

CUSTOMER_CHANGE = """CASE WHEN old_status IS NULL THEN 'new' WHEN new_status IS NULL THEN 'removed'
    WHEN old_status = 'ACTIVE' AND new_status = 'MERGED' THEN 'merged'
    WHEN old_status = 'MERGED' AND new_status = 'ACTIVE' THEN 'unmerged' ELSE 'changed' END"""
IDENTIFIER_CHANGE = """CASE WHEN old_holder IS NULL THEN 'added' WHEN new_holder IS NULL THEN 'removed'
    ELSE 'moved' END"""
CARD_CHANGE = """CASE WHEN old_series_id IS NULL THEN 'new' WHEN new_series_id IS NULL THEN 'removed'
    WHEN old_holder IS NULL AND new_holder IS NOT NULL THEN 'linked'
    WHEN old_holder IS NOT NULL AND new_holder IS NULL THEN 'delinked'
    WHEN old_holder <> new_holder THEN 'relinked'
    WHEN old_status_label <> new_status_label THEN 'relabelled' ELSE 'changed' END"""
"""A key is one change: a holder's change wins over the other columns' (which stand on the same line), a merge
over a customer's other changes."""

CHANGES_SQL = f"""
SELECT 'customer' AS kind, {CUSTOMER_CHANGE} AS change, customer_id, NULL::VARCHAR AS source,
    NULL::VARCHAR AS account_id, NULL::VARCHAR AS id_type, NULL::VARCHAR AS id_value, NULL::VARCHAR AS card_number,
    NULL::BIGINT AS old_holder, NULL::BIGINT AS new_holder, old_status, new_status, old_merged_into,
    new_merged_into, old_customer_type, new_customer_type, NULL::INTEGER AS old_series_id,
    NULL::INTEGER AS new_series_id, NULL::VARCHAR AS old_status_label, NULL::VARCHAR AS new_status_label
FROM rf_customers
UNION ALL
SELECT 'identifier', {IDENTIFIER_CHANGE}, NULL, source, account_id, id_type, id_value, NULL, old_holder, new_holder,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM rf_identifiers
UNION ALL
SELECT 'card', {CARD_CHANGE}, NULL, NULL, NULL, NULL, NULL, card_number, old_holder, new_holder, NULL, NULL, NULL,
    NULL, NULL, NULL, old_series_id, new_series_id, old_status_label, new_status_label
FROM rf_cards
ORDER BY kind = 'card', kind = 'identifier', customer_id, source, account_id, id_type, id_value, card_number
"""
"""changes.csv: one line per changed key, customers first, then identifiers, then cards, each by its key."""

COUNTS_SQL = f"""
SELECT 'customer', {CUSTOMER_CHANGE}, count(*) FROM rf_customers GROUP BY ALL
UNION ALL SELECT 'identifier', {IDENTIFIER_CHANGE}, count(*) FROM rf_identifiers GROUP BY ALL
UNION ALL SELECT 'card', {CARD_CHANGE}, count(*) FROM rf_cards GROUP BY ALL
"""

KINDS = {
    "customer": ("new", "removed", "merged", "unmerged", "changed"),
    "identifier": ("added", "removed", "moved"),
    "card": ("new", "removed", "linked", "delinked", "relinked", "relabelled", "changed"),
}
"""The change classes of each kind of row, in the order the summaries list them."""

TABLE_OF_KIND = {"customer": "customers", "identifier": "identifiers", "card": "cards"}

SNAPSHOT_ROWS_SQL = """
SELECT (SELECT count(*) FROM snap_customers), (SELECT count(*) FROM snap_identifiers), (SELECT count(*) FROM snap_cards)
"""

APPLY_SQL = f"""
DELETE FROM customers USING rf_customers r WHERE customers.rowid = r.rid;
INSERT INTO customers SELECT customer_id, new_status, new_merged_into, new_customer_type
    FROM rf_customers WHERE new_status IS NOT NULL;
DELETE FROM identifiers USING rf_identifiers r WHERE identifiers.rowid = r.rid;
INSERT INTO identifiers SELECT {stored_columns("identifiers", customer_id="new_holder")}
    FROM rf_identifiers WHERE new_holder IS NOT NULL;
DELETE FROM cards USING rf_cards r WHERE cards.rowid = r.rid;
INSERT INTO cards SELECT card_number, new_series_id, new_holder, new_status_label
    FROM rf_cards WHERE new_series_id IS NOT NULL
"""
"""Changed keys only: the store rows go by the rowid the diff took, the snapshot's rows come in their place."""

UNDO_SQL = """
INSERT INTO undo_identifiers
    SELECT $run_id, 'deleted', old_holder, source, account_id, id_type, id_value FROM rf_identifiers
        WHERE old_holder IS NOT NULL
    UNION ALL SELECT $run_id, 'inserted', new_holder, source, account_id, id_type, id_value FROM rf_identifiers
        WHERE new_holder IS NOT NULL;
INSERT INTO undo_customer_rows
    SELECT $run_id, 'deleted', customer_id, old_status, old_merged_into, old_customer_type FROM rf_customers
        WHERE old_status IS NOT NULL
    UNION ALL SELECT $run_id, 'inserted', customer_id, new_status, new_merged_into, new_customer_type
        FROM rf_customers WHERE new_status IS NOT NULL;
INSERT INTO undo_card_rows
    SELECT $run_id, 'deleted', card_number, old_series_id, old_holder, old_status_label FROM rf_cards
        WHERE old_series_id IS NOT NULL
    UNION ALL SELECT $run_id, 'inserted', card_number, new_series_id, new_holder, new_status_label FROM rf_cards
        WHERE new_series_id IS NOT NULL
"""
"""Both row images of every changed key, so that revert (lineage/revert.py) puts the store back exactly."""

PROVENANCE_SQL = """
INSERT INTO provenance
SELECT $run_id, NULL, NULL, NULL, action, from_customer_id, to_customer_id, source, account_id, id_type, id_value,
    old_label, new_label
FROM (
    SELECT CASE WHEN old_holder IS NULL THEN 'add' WHEN new_holder IS NULL THEN 'remove' ELSE 'platform_move' END
            AS action,
        old_holder AS from_customer_id, new_holder AS to_customer_id, source, account_id, id_type, id_value,
        NULL AS old_label, NULL AS new_label
    FROM rf_identifiers
    UNION ALL
    SELECT CASE WHEN new_status = 'MERGED' THEN 'merge' ELSE 'unmerge' END,
        customer_id, coalesce(new_merged_into, old_merged_into), NULL, NULL, '', '', NULL, NULL
    FROM rf_customers
    WHERE (old_status = 'ACTIVE' AND new_status = 'MERGED') OR (old_status = 'MERGED' AND new_status = 'ACTIVE')
    UNION ALL
    SELECT CASE WHEN old_holder IS NULL AND new_holder IS NOT NULL THEN 'card_link'
            WHEN new_holder IS NULL AND old_holder IS NOT NULL THEN 'card_delink'
            WHEN old_holder <> new_holder THEN 'card_relink' ELSE 'card_label' END,
        old_holder, new_holder, NULL, NULL, 'cardnumber', card_number, old_status_label, new_status_label
    FROM rf_cards
    WHERE old_holder IS DISTINCT FROM new_holder OR old_status_label IS DISTINCT FROM new_status_label
)
"""
"""What explain tells of a refresh: each identifier, merge and card change as "changed on the platform"
(the refresh's run id; its snapshot folder is in the ledger). A customer made or removed with no identifier
or card of its own changed is in changes.csv and the undo log only."""


@dataclass(frozen=True)
class SnapshotDiff:
    """The changed keys of a refresh, counted by kind and change, with the store's and the snapshot's rows."""

    counts: dict[str, dict[str, int]]
    store_rows: dict[str, int]
    snapshot_rows: dict[str, int]

    @property
    def changed(self) -> int:
        return sum(sum(by_change.values()) for by_change in self.counts.values())

    def removed(self, kind: str) -> int:
        """Keys of a kind the snapshot no longer has (a moved identifier is no removal)."""
        return self.counts[kind].get("removed", 0)


def diff_snapshot(con: duckdb.DuckDBPyConnection, staged: dict[str, Path]) -> SnapshotDiff:
    """Read the staged snapshot as views and find every changed key (rf_* temp tables; the caller drops them
    with `drop_diff`)."""
    for table, path in staged.items():
        con.read_parquet(str(path)).select(*COLUMNS[table]).to_view(SNAP_VIEWS[table])
    run_script(con, DIFF_SQL)
    counts: dict[str, dict[str, int]] = {kind: dict.fromkeys(changes, 0) for kind, changes in KINDS.items()}
    for kind, change, n in con.execute(COUNTS_SQL).fetchall():
        counts[kind][change] = int(n)
    snapshot_rows = dict(zip(TABLES, con.execute(SNAPSHOT_ROWS_SQL).fetchall()[0], strict=True))
    store_rows = {
        table: int(n)
        for table, n in zip(
            TABLES,
            con.execute(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM identifiers),"
                " (SELECT count(*) FROM cards)"
            ).fetchall()[0],
            strict=True,
        )
    }
    return SnapshotDiff(counts, store_rows, {t: int(n) for t, n in snapshot_rows.items()})


def changes_frame(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """changes.csv's rows (CHANGES_SQL)."""
    return query_frame(con, CHANGES_SQL)


def apply_diff(con: duckdb.DuckDBPyConnection, run_id: str, provenance: bool = True) -> None:
    """Log the changed keys for undo and provenance and write them, inside the caller's transaction."""
    run_script(con, UNDO_SQL, {"run_id": run_id})
    if provenance:
        run_script(con, PROVENANCE_SQL, {"run_id": run_id})
    run_script(con, APPLY_SQL)


def drop_diff(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the diff's temp tables and the snapshot's views."""
    for table in ("rf_customers", "rf_identifiers", "rf_cards", "rf_kept"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    for view in SNAP_VIEWS.values():
        con.execute(f"DROP VIEW IF EXISTS {view}")


CHANGE_KEY = """CASE WHEN p.action = 'merge' THEN concat('c', p.from_customer_id)
    WHEN p.id_type = 'cardnumber' THEN concat('k', p.id_value)
    ELSE concat_ws(chr(31), 'v', p.source, p.account_id, p.id_type, p.id_value) END"""
"""What a change is a change of: a merged customer, a card, or a value in its scope."""

ROW_ORDER = """CASE action WHEN 'replace' THEN -1 WHEN 'merge' THEN 0 WHEN 'move' THEN 1 WHEN 'card_move' THEN 2
    WHEN 'drop' THEN 3 WHEN 'remove' THEN 4 WHEN 'add' THEN 5 WHEN 'card_link' THEN 6 WHEN 'card_label' THEN 7
    ELSE 8 END"""
"""The order of one row's changes among themselves (lineage/provenance.py's ACTION_ORDER)."""

KEPT_SQL = f"""
CREATE OR REPLACE TEMP TABLE rf_kept AS
WITH live AS (
    SELECT run_id, ordinal FROM runs
    WHERE kind = 'run' AND NOT dry_run AND exit_code IN (0, 1) AND reverted_by IS NULL
      AND ordinal > (SELECT coalesce(max(ordinal), 0) FROM runs WHERE kind = 'refresh' AND reverted_by IS NULL)
),
events AS (
    SELECT p.*, l.ordinal, {CHANGE_KEY} AS change_key
    FROM provenance p JOIN live l USING (run_id)
    WHERE p.action IN (
        'add', 'remove', 'replace', 'drop', 'move', 'merge', 'card_link', 'card_label', 'card_delink', 'card_move')
),
final AS (
    SELECT * FROM events
    QUALIFY row_number() OVER (
        PARTITION BY change_key ORDER BY ordinal DESC, file_position DESC, row_number DESC, {ROW_ORDER} DESC) = 1
),
judged AS (
    SELECT f.change_key,
        CASE
            WHEN f.action IN ('add', 'move') THEN si.customer_id IS NOT DISTINCT FROM f.to_customer_id
            WHEN f.action IN ('remove', 'replace', 'drop') THEN si.customer_id IS DISTINCT FROM f.from_customer_id
            WHEN f.action = 'merge' THEN sc.status = 'MERGED' AND sc.merged_into = f.to_customer_id
            WHEN f.action = 'card_delink' THEN sk.card_number IS NOT NULL AND sk.customer_id IS NULL
                AND sk.status_label = f.new_label
            ELSE sk.customer_id = f.to_customer_id AND sk.status_label = f.new_label
        END IS TRUE AS kept
    FROM final f
    LEFT JOIN snap_identifiers si ON f.id_type <> 'cardnumber' AND f.action <> 'merge' AND si.id_value = f.id_value
        AND si.id_type = f.id_type AND si.source = f.source AND si.account_id = f.account_id
    LEFT JOIN snap_customers sc ON f.action = 'merge' AND sc.customer_id = f.from_customer_id
    LEFT JOIN snap_cards sk ON f.id_type = 'cardnumber' AND sk.card_number = f.id_value
),
changes AS (
    SELECT * FROM events
    WHERE action IN ('add', 'remove', 'merge', 'card_link', 'card_label', 'card_delink')
    QUALIFY row_number() OVER (
        PARTITION BY run_id, file_position, row_number ORDER BY action = 'merge' DESC, action) = 1
),
replaces AS (
    SELECT DISTINCT run_id, file_position, row_number FROM events WHERE action = 'replace'
)
SELECT c.run_id, c.ordinal, c.file_position, c.row_number, c.action, c.from_customer_id, c.to_customer_id,
    c.source, c.account_id, c.id_type, c.id_value, c.old_label, c.new_label, j.kept,
    r.run_id IS NOT NULL AS replaced,
    row_number() OVER (
        PARTITION BY c.change_key ORDER BY c.ordinal DESC, c.file_position DESC, c.row_number DESC) = 1 AS is_last
FROM changes c JOIN judged j USING (change_key)
LEFT JOIN replaces r ON r.run_id = c.run_id AND r.file_position = c.file_position AND r.row_number = c.row_number
"""
"""Each changing request row of every run applied since the store's last init or refresh (and not reverted): its
change (a merge stands for its row; else the row's own add, remove or card change, from provenance) and whether
the platform kept it. What a change changed (a value in its scope, a card, a merged customer) is judged by the
state the runs left it in, its last event (a later row's merge may have moved the value, or removed it): the row
is kept when the snapshot shows that state. Only the last row to change a thing is written again. A replace's row
stands as its add (or merge) of the new value, and `replaced` marks it, so that it is written again as a replace
(the platform may still hold the value it took away)."""

LIVE_RUNS_SQL = """
SELECT count(*) FROM runs WHERE kind = 'run' AND NOT dry_run AND exit_code IN (0, 1) AND reverted_by IS NULL
  AND ordinal > (SELECT coalesce(max(ordinal), 0) FROM runs WHERE kind = 'refresh' AND reverted_by IS NULL)
"""

KEPT_BY_RUN_SQL = """
SELECT run_id, count(*) FILTER (WHERE kept), count(*) FILTER (WHERE NOT kept) FROM rf_kept GROUP BY run_id
ORDER BY min(ordinal)
"""

NOT_ON_PLATFORM_SQL = """
WITH holder_scope AS (
    SELECT customer_id, min((source, account_id)) AS scope FROM snap_identifiers
    WHERE customer_id IN (SELECT coalesce(to_customer_id, from_customer_id) FROM rf_kept WHERE source IS NULL)
    GROUP BY customer_id
),
lost AS (
    SELECT l.*, f.path, k.series_id AS snap_series, k.customer_id AS snap_holder,
        h.scope[1] AS holder_source, h.scope[2] AS holder_account
    FROM rf_kept l
    JOIN run_files f ON f.run_id = l.run_id AND f.position = l.file_position
    LEFT JOIN snap_cards k ON k.card_number = l.id_value AND l.id_type = 'cardnumber'
    LEFT JOIN holder_scope h ON l.source IS NULL AND h.customer_id = coalesce(l.to_customer_id, l.from_customer_id)
    WHERE NOT l.kept AND l.is_last
),
steps AS (
    -- a delink the platform lacks on a card it holds unlinked (the run linked it, then delinked it with another
    -- label): the platform's API delinks only a linked card, so the card is linked again first, with the label it
    -- had when the run delinked it, then delinked
    SELECT 0 AS step, *, 'add' AS request_action, old_label AS request_label, snap_series::VARCHAR AS request_series
    FROM lost WHERE action = 'card_delink' AND snap_holder IS NULL AND snap_series IS NOT NULL
    UNION ALL
    SELECT 1 AS step, *,
        CASE WHEN replaced THEN 'replace' WHEN action IN ('remove', 'card_delink') THEN 'remove' ELSE 'add' END,
        CASE WHEN id_type = 'cardnumber' THEN new_label END,
        CASE WHEN id_type = 'cardnumber' AND action <> 'card_delink' THEN snap_series::VARCHAR END
    FROM lost
)
SELECT concat(run_id, ':', path, ':', row_number) AS row_id,
    CASE WHEN action IN ('merge', 'remove', 'card_delink') THEN from_customer_id ELSE to_customer_id END::VARCHAR
        AS customer_id,
    NULL::VARCHAR AS lookup_type, NULL::VARCHAR AS lookup_value,
    coalesce(source, holder_source) AS source, coalesce(account_id, holder_account) AS account_id,
    request_action AS action, id_type, id_value, request_series AS series_id, request_label AS status_label
FROM steps
ORDER BY ordinal, file_position, row_number, step
"""
"""not_on_platform.csv: each lost change as a request row that recreates it, through the scope its row came
through: a merge as its row's add to the victim (which merges again), a card change with its series, a card's
delink on a card the platform holds unlinked as a link and a delink (two rows of the same row_id). A card
change recorded before provenance kept its row's scope goes through a scope its customer holds an identifier in
on the platform (cards belong to the whole organisation)."""


@dataclass(frozen=True)
class RunKept:
    """What the platform's snapshot shows of one run's changes."""

    run_id: str
    kept: int
    not_kept: int


def platform_kept(con: duckdb.DuckDBPyConnection) -> tuple[list[RunKept], pl.DataFrame]:
    """Per run applied since the last init or refresh, its changes the snapshot shows and does not; and the lost
    ones as request rows (not_on_platform.csv). Call after `diff_snapshot` (it reads the snapshot's views)."""
    if not con.execute(LIVE_RUNS_SQL).fetchall()[0][0]:  # fetched whole: a pending result blocks the connection
        return [], pl.DataFrame(schema=dict.fromkeys(REQUEST_COLUMNS, pl.String))
    run_script(con, KEPT_SQL)
    runs = [RunKept(r, int(k), int(n)) for r, k, n in con.execute(KEPT_BY_RUN_SQL).fetchall()]
    lost = query_frame(con, NOT_ON_PLATFORM_SQL)
    con.execute("DROP TABLE rf_kept")
    return runs, lost
