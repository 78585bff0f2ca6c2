"""Decide every resolved row (SPEC section 3 step 3) and write the changes in one transaction.

Independent rows are decided by one set-based query each for identifiers and cards; interacting
rows are replayed in order (replay.py). Both produce the same outcome columns and the same four
kinds of change, which are then applied together: deletes, merges (moves), inserts, card updates.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import duckdb
import polars as pl

from pipeline.components import OUTCOME_SCHEMA, ReplayPool, replay_components
from pipeline.config import OrgConfig
from pipeline.duck import query_frame, run_script
from pipeline.errors import InternalError

_INDEPENDENT = """
CREATE OR REPLACE TEMP VIEW ind AS
SELECT r.*, s.target, s.followed FROM req r JOIN res s USING (seq) ANTI JOIN interacting USING (seq);
"""

_IDENT_DECISIONS = """
CREATE OR REPLACE TEMP TABLE ind_ident AS
WITH base AS (
    SELECT * FROM ind WHERE id_type <> 'cardnumber' AND target IS NOT NULL
), tgt AS (
    SELECT b.seq,
        coalesce(bool_or(i.source = b.source AND i.account_id = b.account_id AND i.id_type = b.id_type
                         AND i.id_value = b.id_value), false) AS has_exact,
        coalesce(bool_or(i.source = b.source AND i.account_id = b.account_id AND i.id_type = b.id_type
                         AND i.id_value <> b.id_value), false) AS slot_taken,
        count(i.customer_id) AS n_idents
    FROM base b LEFT JOIN rel_idents i ON i.customer_id = b.target GROUP BY b.seq
), hold AS (
    SELECT b.seq,
        count(DISTINCT v.customer_id) FILTER (WHERE ci.customer_type = 'LOYALTY'
            AND v.source = b.source AND v.account_id = b.account_id) AS loyal_in_scope,
        min(v.customer_id) FILTER (WHERE ci.customer_type = 'LOYALTY'
            AND v.source = b.source AND v.account_id = b.account_id) AS loyal_in_scope_id,
        count(DISTINCT v.customer_id) FILTER (WHERE ci.customer_type = 'CAMPAIGN') AS campaign,
        min(v.customer_id) FILTER (WHERE ci.customer_type = 'CAMPAIGN') AS campaign_id,
        count(DISTINCT v.customer_id) FILTER (WHERE ci.customer_type = 'LOYALTY') AS loyal,
        min(v.customer_id) FILTER (WHERE ci.customer_type = 'LOYALTY') AS loyal_id
    FROM base b
    JOIN val_idents v ON v.id_type = b.id_type AND v.id_value = b.id_value AND v.customer_id <> b.target
    JOIN rel_info ci ON ci.customer_id = v.customer_id
    WHERE b.action = 'add'
    GROUP BY b.seq
), merge_candidate AS (
    SELECT h.seq, b.target, h.loyal_id AS survivor, b.source, b.account_id
    FROM hold h JOIN base b USING (seq) WHERE h.loyal_in_scope = 0 AND h.loyal = 1
), victim_scopes AS (
    SELECT m.seq, i.source, i.account_id FROM merge_candidate m JOIN rel_idents i ON i.customer_id = m.target
    UNION SELECT seq, source, account_id FROM merge_candidate
), survivor_scopes AS (
    SELECT DISTINCT m.seq, i.source, i.account_id
    FROM merge_candidate m JOIN rel_idents i ON i.customer_id = m.survivor
), clash AS (
    SELECT DISTINCT seq FROM victim_scopes JOIN survivor_scopes USING (seq, source, account_id)
), decided AS (
    SELECT b.seq, b.action, b.target, b.followed, b.source, b.account_id, b.id_type, b.id_value,
        t.has_exact, coalesce(h.campaign, 0) AS campaign, coalesce(h.loyal, 0) AS loyal, h.loyal_id,
        CASE WHEN b.action = 'add' THEN CASE
                WHEN t.has_exact THEN NULL
                WHEN t.slot_taken THEN 7006
                WHEN coalesce(h.loyal_in_scope, 0) > 0 THEN 8008
                WHEN coalesce(h.campaign, 0) > 0 AND NOT $reuse THEN 8068
                WHEN coalesce(h.loyal, 0) >= 2 THEN 8074
                WHEN h.loyal = 1 AND NOT $merge_enabled THEN 7007
                WHEN h.loyal = 1 AND cl.seq IS NOT NULL THEN 8066
                WHEN h.loyal = 1 AND $max_merges <= 0 THEN 7008
             END
             ELSE CASE WHEN NOT t.has_exact THEN 7009 WHEN t.n_idents = 1 THEN 7010 END
        END AS error_code,
        CASE WHEN coalesce(h.loyal_in_scope, 0) > 0 THEN h.loyal_in_scope_id
             WHEN coalesce(h.campaign, 0) > 0 AND NOT $reuse THEN h.campaign_id
             ELSE h.loyal_id END AS holder_id
    FROM base b JOIN tgt t USING (seq) LEFT JOIN hold h USING (seq) LEFT JOIN clash cl USING (seq)
)
SELECT *,
    CASE WHEN error_code IS NOT NULL THEN NULL
         WHEN action = 'remove' THEN 'applied'
         WHEN has_exact THEN 'unchanged'
         WHEN loyal = 1 THEN 'merged'
         ELSE 'applied' END AS outcome
FROM decided;
"""

_IDENT_OUTCOMES = """
SELECT seq, outcome, error_code::INTEGER AS error_code,
    CASE WHEN error_code IS NOT NULL THEN 'id_value' END AS error_field,
    target AS resolved_customer_id,
    CASE WHEN outcome = 'merged' THEN loyal_id END AS survivor_id,
    CASE WHEN outcome = 'merged' THEN target END AS victim_id,
    list_sort(list_filter([
        CASE WHEN followed THEN 91009 END,
        CASE WHEN outcome = 'unchanged' THEN
            CASE id_type WHEN 'mobile' THEN 8071 WHEN 'email' THEN 8072 WHEN 'externalId' THEN 8073 ELSE 8070 END END,
        CASE WHEN outcome IN ('applied', 'merged') AND action = 'add' AND campaign > 0 THEN 8068 END,
        CASE WHEN outcome = 'merged' THEN 8051 END], lambda x: x IS NOT NULL))::INTEGER[] AS warnings,
    CASE WHEN error_code IS NOT NULL THEN holder_id END AS holder_id,
    CASE WHEN error_code = 7008 THEN $max_merges END::BIGINT AS "limit",
    NULL::BIGINT AS card_series, NULL::VARCHAR AS card_status
FROM ind_ident
"""

_CARD_DECISIONS = """
CREATE OR REPLACE TEMP TABLE ind_card AS
WITH base AS (
    SELECT * FROM ind WHERE id_type = 'cardnumber' AND target IS NOT NULL
), counts AS (
    SELECT b.seq, count(*) FILTER (WHERE c.series_id = b.series_id) AS in_series, count(*) AS total
    FROM base b JOIN rel_cards c ON c.customer_id = b.target JOIN cfg_labels l ON l.label = c.status_label
    WHERE b.action = 'add' AND l.status IN ('ISSUED', 'ACTIVE', 'SUSPENDED')
    GROUP BY b.seq
), decided AS (
    SELECT b.seq, b.action, b.target, b.followed, b.id_value, b.series_id, b.status_label,
        cs.card_number IS NOT NULL AS found, cs.series_id AS card_series, cs.customer_id AS holder,
        cs.status_label AS card_label, l.status AS card_status, s.max_active,
        CASE
            WHEN cs.card_number IS NULL THEN 3010
            WHEN b.action = 'add' AND cs.series_id <> b.series_id THEN 3000
            WHEN l.status IN ('EXPIRED', 'DELETED') THEN 8087
            WHEN b.action = 'remove' THEN CASE WHEN cs.customer_id IS DISTINCT FROM b.target THEN 3031 END
            WHEN cs.customer_id = b.target THEN NULL
            WHEN cs.customer_id IS NOT NULL THEN 3027
            WHEN coalesce(n.in_series, 0) >= s.max_active THEN 3036
            WHEN coalesce(n.total, 0) >= $org_max THEN 3039
        END AS error_code
    FROM base b
    LEFT JOIN card_state cs ON cs.card_number = b.id_value
    LEFT JOIN cfg_labels l ON l.label = cs.status_label
    LEFT JOIN cfg_series s ON s.series_id = b.series_id
    LEFT JOIN counts n USING (seq)
)
SELECT *,
    CASE WHEN error_code IS NOT NULL THEN NULL
         WHEN action = 'add' AND holder = target AND card_label = status_label THEN 'unchanged'
         ELSE 'applied' END AS outcome
FROM decided;
"""

_CARD_OUTCOMES = """
SELECT seq, outcome, error_code::INTEGER AS error_code,
    CASE WHEN error_code IS NOT NULL THEN 'id_value' END AS error_field,
    target AS resolved_customer_id, NULL::BIGINT AS survivor_id, NULL::BIGINT AS victim_id,
    list_sort(list_filter([CASE WHEN followed THEN 91009 END, CASE WHEN outcome = 'unchanged' THEN 3012 END],
                          lambda x: x IS NOT NULL))::INTEGER[] AS warnings,
    CASE WHEN error_code = 3027 THEN holder END AS holder_id,
    CASE WHEN error_code = 3036 THEN max_active WHEN error_code = 3039 THEN $org_max END::BIGINT AS "limit",
    CASE WHEN error_code = 3000 THEN card_series WHEN error_code = 3036 THEN series_id END::BIGINT AS card_series,
    CASE WHEN error_code = 8087 THEN card_status END AS card_status
FROM ind_card
"""

_NOT_FOUND = """
SELECT seq, NULL::VARCHAR AS outcome, 8015 AS error_code,
    CASE WHEN customer_id IS NOT NULL THEN 'customer_id' ELSE 'lookup_value' END AS error_field,
    NULL::BIGINT AS resolved_customer_id, NULL::BIGINT AS survivor_id, NULL::BIGINT AS victim_id,
    []::INTEGER[] AS warnings, NULL::BIGINT AS holder_id, NULL::BIGINT AS "limit",
    NULL::BIGINT AS card_series, NULL::VARCHAR AS card_status
FROM ind WHERE target IS NULL
"""

_IND_CHANGES = """
CREATE OR REPLACE TEMP TABLE chg_delete AS
    SELECT target AS customer_id, source, account_id, id_type, id_value, seq, 'remove' AS action FROM ind_ident
        WHERE outcome = 'applied' AND action = 'remove'
    UNION ALL
    SELECT v.customer_id, v.source, v.account_id, v.id_type, v.id_value, d.seq, 'drop'
    FROM ind_ident d JOIN val_idents v ON v.id_type = d.id_type AND v.id_value = d.id_value
    JOIN rel_info ci ON ci.customer_id = v.customer_id
    WHERE d.outcome IN ('applied', 'merged') AND d.action = 'add' AND d.campaign > 0
        AND ci.customer_type = 'CAMPAIGN' AND v.customer_id <> d.target;
CREATE OR REPLACE TEMP TABLE chg_merge AS
    SELECT target AS victim_id, loyal_id AS survivor_id, seq FROM ind_ident WHERE outcome = 'merged';
CREATE OR REPLACE TEMP TABLE chg_insert AS
    SELECT CASE WHEN outcome = 'merged' THEN loyal_id ELSE target END AS customer_id,
        source, account_id, id_type, id_value, seq
    FROM ind_ident WHERE action = 'add' AND outcome IN ('applied', 'merged');
CREATE OR REPLACE TEMP TABLE chg_cards AS
    SELECT id_value AS card_number,
        CASE WHEN action = 'add' THEN target END AS customer_id,
        CASE WHEN action = 'add' THEN status_label ELSE coalesce(status_label, $delink_label) END AS status_label,
        seq
    FROM ind_card WHERE outcome = 'applied';
CREATE OR REPLACE TEMP TABLE chg_merge_status (victim_id BIGINT, survivor_id BIGINT);
CREATE OR REPLACE TEMP TABLE chg_events (
    seq BIGINT, action VARCHAR, from_customer_id BIGINT, to_customer_id BIGINT, source VARCHAR, account_id VARCHAR,
    id_type VARCHAR, id_value VARCHAR, old_label VARCHAR, new_label VARCHAR);
"""
"""The set-based rows' changes carry the seq of the row that made them (provenance.py reads it, with
chg_delete's action: a remove or a campaign holder's drop); the replay's net changes have none, its
rows' provenance comes as events (chg_events)."""

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

_APPLY = [
    "DELETE FROM identifiers USING chg_delete_rows d WHERE identifiers.rowid = d.rid",
    "INSERT INTO identifiers SELECT survivor_id, source, account_id, id_type, id_value FROM chg_moves",
    "UPDATE cards SET customer_id = m.survivor_id FROM chg_merge m WHERE cards.customer_id = m.victim_id",
    "DELETE FROM customers USING chg_customers c WHERE customers.rowid = c.rid",
    "INSERT INTO customers SELECT customer_id, 'MERGED', survivor_id, customer_type FROM chg_customers",
    "INSERT INTO identifiers SELECT customer_id, source, account_id, id_type, id_value FROM chg_insert",
    """UPDATE cards SET customer_id = u.customer_id, status_label = u.status_label FROM chg_cards u
       WHERE cards.card_number = u.card_number""",
]
"""Identifier moves and merged customers are written as delete + insert, never UPDATE: DuckDB's
checkpoint rewrites every row group an UPDATE touched (0.6 s for 10k scattered customers on 25M
identifiers), while deletes and appends cost it next to nothing."""


def _params(config: OrgConfig) -> dict:
    return {
        "reuse": config.campaign_identifier_reuse,
        "merge_enabled": config.merge_enabled,
        "max_merges": config.max_merges_per_survivor_per_run,
    }


def decide(
    con: duckdb.DuckDBPyConnection,
    config: OrgConfig,
    groups: pl.DataFrame,
    events: bool = True,
    pool: ReplayPool | None = None,
) -> pl.DataFrame:
    """Decide all rows of `req` (after resolve_targets), one OUTCOME_SCHEMA row each; stage changes in chg_*.

    With `events`, the replayed rows' provenance events are staged too (chg_events, with each row's seq);
    the set-based rows' changes carry their seq in chg_* anyway.

    The replay of interacting rows is pure Python over a working set pulled beforehand, so it runs in a
    worker thread while DuckDB decides the independent rows (DuckDB releases the GIL as it works): on
    two cores the two overlap instead of adding up. Only this thread ever touches the connection.
    With a `pool` (components.replay_pool), that thread replays one shard of the rows' components
    (`groups`, resolve_targets' plan groups) and each worker process another.
    """
    pulled = _pull_working_set(con)
    with _gc_paused(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay") as thread:
        replayed = thread.submit(replay_components, pulled, groups, config, events, pool)
        frames = _decide_independent(con, config)
        outcomes, changes = replayed.result()
    _stage_working_set_changes(con, changes)
    run_script(con, _DROP_DECIDED)  # frees DuckDB memory before the reports are built
    return (
        pl.concat([f.cast(OUTCOME_SCHEMA) for f in (*frames, outcomes)])
        .sort("seq")
        .with_columns(
            # a failed row changed nothing, so it reports no warning either (errors.csv has no warning column)
            pl.when(pl.col("outcome").is_null())
            .then(pl.lit([], dtype=pl.List(pl.Int32)))
            .otherwise(pl.col("warnings"))
            .alias("warnings")
        )
    )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while the working set is built and replayed.

    The replay allocates millions of small tuples and sets that stay alive; each automatic collection
    walks all of them again (≈1.3 s of the 1M-row benchmark's replay). They hold no reference cycles,
    so nothing is lost by collecting once, afterwards, as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decide_independent(con: duckdb.DuckDBPyConnection, config: OrgConfig) -> list[pl.DataFrame]:
    """Decide the rows that share no key set-based against the store; stage their changes in chg_*."""
    con.execute(_INDEPENDENT)
    con.execute(_IDENT_DECISIONS, _params(config))
    con.execute(_CARD_DECISIONS, {"org_max": config.max_active_cards_per_customer})
    frames = [
        query_frame(con, _IDENT_OUTCOMES, {"max_merges": config.max_merges_per_survivor_per_run}),
        query_frame(con, _CARD_OUTCOMES, {"org_max": config.max_active_cards_per_customer}),
        query_frame(con, _NOT_FOUND),
    ]
    run_script(con, _IND_CHANGES, {"delink_label": config.delink_label})
    con.execute("DROP VIEW ind")
    return frames


_DROP_DECIDED = """
DROP TABLE req; DROP TABLE res; DROP TABLE interacting; DROP TABLE val_idents; DROP TABLE card_state;
DROP TABLE ind_ident; DROP TABLE ind_card
"""
"""What only deciding reads; the undo log and the apply read rel_* and chg_*."""

_PULLS = {
    "rows": """SELECT seq, customer_id, target, lookup_type, lookup_value, source, account_id, action,
                      id_type, id_value, series_id, status_label FROM ws_rows ORDER BY seq""",
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


def _pull_working_set(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """The interacting rows and the part of the store they reach, as frames (no Python objects yet)."""
    run_script(con, _WORKING_SET)
    pulled = {name: query_frame(con, query) for name, query in _PULLS.items()}
    run_script(con, "DROP TABLE ws_rows; DROP TABLE ws_customers")
    return pulled


def _stage_working_set_changes(con: duckdb.DuckDBPyConnection, changes: dict[str, pl.DataFrame]) -> None:
    """Append the replay's net changes to the chg_* tables."""
    for table, frame in changes.items():
        con.register("ws_frame", frame)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM ws_frame")  # seq stays NULL: not a set-based row
        con.unregister("ws_frame")


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
    ON c.customer_id = m.victim_id
"""


def apply_changes(con: duckdb.DuckDBPyConnection) -> None:
    """Apply the staged changes inside the caller's open transaction (undo.record_changes logs them after).

    Deleted and moved identifiers and merged customers are found by their rowid, taken when resolve
    pulled them: every such row belongs to a customer resolve pulled (a target, a holder or a merge
    victim), and nothing writes to the store between resolve and here, so a string join over the
    whole table is not needed.
    """
    run_script(con, _ROWS_TO_WRITE)
    planned, found, merged, merged_found = con.execute(
        """SELECT (SELECT count(*) FROM chg_delete), (SELECT count(*) FROM chg_delete_rows)
                  - (SELECT count(*) FROM chg_moves),
                  (SELECT count(*) FROM chg_merge) + (SELECT count(*) FROM chg_merge_status),
                  (SELECT count(*) FROM chg_customers)"""
    ).fetchall()[0]
    if planned != found or merged != merged_found:
        raise InternalError(
            f"{planned} identifier deletions and {merged} merges planned but {found} and "
            f"{merged_found} rows found; nothing was applied"
        )
    for statement in _APPLY:
        con.execute(statement)
