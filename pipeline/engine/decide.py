"""Decide the rows that share no key set-based (SPEC section 3 step 3), and stage every row's changes.

A row that shares no customer, value or card with another row of the batch (resolve.py) gives the
same result whatever the order, so it is decided against the store as it was before the run: one
query for identifiers, one for cards, one for the rows whose target was not found. Their changes
are staged in the chg_* tables (workspace.py), which the replay of the other rows appends to and
the apply stage writes. Each change carries the seq of the row that made it (provenance.py reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from pipeline.config import OrgConfig
from pipeline.engine.resolve import Resolved
from pipeline.engine.rules import WARNING_PARAMS
from pipeline.engine.workspace import Handle, Stage
from pipeline.store.duck import query_frame, run_script

OUTCOME_SCHEMA = pl.Schema(
    {
        "seq": pl.Int64(),
        "outcome": pl.String(),
        "error_code": pl.Int32(),
        "error_field": pl.String(),
        "resolved_customer_id": pl.Int64(),
        "survivor_id": pl.Int64(),
        "victim_id": pl.Int64(),
        "warnings": pl.List(pl.Int32),
        "holder_id": pl.Int64(),
        "limit": pl.Int64(),
        "card_series": pl.Int64(),
        "card_status": pl.String(),
        "replaced_value": pl.String(),
    }
)
"""`replaced_value` is the value W a succeeded replace took away (null on every other row): the call plan sends it."""

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
        max(i.id_value) FILTER (WHERE i.source = b.source AND i.account_id = b.account_id AND i.id_type = b.id_type
                                AND i.id_value <> b.id_value) AS slot_value,
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
    WHERE b.action IN ('add', 'replace')
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
        t.has_exact, t.slot_value, coalesce(h.campaign, 0) AS campaign, coalesce(h.loyal, 0) AS loyal, h.loyal_id,
        CASE WHEN b.action IN ('add', 'replace') THEN CASE
                WHEN b.action = 'replace' AND b.replaces IS NOT NULL
                    AND NOT coalesce(b.replaces = t.slot_value OR (b.replaces = b.id_value AND t.has_exact), false)
                    THEN 7009
                WHEN t.has_exact THEN NULL
                WHEN b.action = 'add' AND t.slot_value IS NOT NULL THEN 7006
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
         ELSE 'applied' END AS outcome,
    CASE WHEN action = 'replace' AND error_code IS NULL AND NOT has_exact THEN slot_value END AS replaced_value
FROM decided;
"""

_IDENT_OUTCOMES = """
SELECT seq, outcome, error_code::INTEGER AS error_code,
    CASE WHEN error_code IS NOT NULL THEN 'id_value' END AS error_field,
    target AS resolved_customer_id,
    CASE WHEN outcome = 'merged' THEN loyal_id END AS survivor_id,
    CASE WHEN outcome = 'merged' THEN target END AS victim_id,
    list_sort(list_filter([
        CASE WHEN followed THEN $w_followed_merge END,
        CASE WHEN outcome = 'unchanged' THEN p.code END,
        CASE WHEN outcome IN ('applied', 'merged') AND action <> 'remove' AND campaign > 0 THEN $w_campaign_dropped END,
        CASE WHEN outcome = 'merged' THEN $w_merged END], lambda x: x IS NOT NULL))::INTEGER[] AS warnings,
    CASE WHEN error_code IS NOT NULL THEN holder_id END AS holder_id,
    CASE WHEN error_code = 7008 THEN $max_merges END::BIGINT AS "limit",
    NULL::BIGINT AS card_series, NULL::VARCHAR AS card_status, replaced_value
FROM ind_ident LEFT JOIN cfg_present p USING (id_type)
"""

_CARD_DECISIONS = """
CREATE OR REPLACE TEMP TABLE ind_card AS
WITH base AS (
    SELECT * FROM ind WHERE id_type = 'cardnumber' AND target IS NOT NULL
), counts AS (
    SELECT b.seq, count(*) FILTER (WHERE c.series_id = b.series_id) AS in_series, count(*) AS total
    FROM base b JOIN rel_cards c ON c.customer_id = b.target JOIN cfg_labels l ON l.label = c.status_label
    WHERE b.action = 'add' AND l.active
    GROUP BY b.seq
), decided AS (
    SELECT b.seq, b.action, b.target, b.followed, b.id_value, b.series_id, b.status_label,
        cs.card_number IS NOT NULL AS found, cs.series_id AS card_series, cs.customer_id AS holder,
        cs.status_label AS card_label, l.status AS card_status, s.max_active,
        CASE
            WHEN cs.card_number IS NULL THEN 3010
            WHEN b.action = 'add' AND cs.series_id <> b.series_id THEN 3000
            WHEN l.closed THEN 8087
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
    list_sort(list_filter([CASE WHEN followed THEN $w_followed_merge END,
                           CASE WHEN outcome = 'unchanged' THEN $w_card_present END],
                          lambda x: x IS NOT NULL))::INTEGER[] AS warnings,
    CASE WHEN error_code = 3027 THEN holder END AS holder_id,
    CASE WHEN error_code = 3036 THEN max_active WHEN error_code = 3039 THEN $org_max END::BIGINT AS "limit",
    CASE WHEN error_code = 3000 THEN card_series WHEN error_code = 3036 THEN series_id END::BIGINT AS card_series,
    CASE WHEN error_code = 8087 THEN card_status END AS card_status, NULL::VARCHAR AS replaced_value
FROM ind_card
"""

_NOT_FOUND = """
SELECT seq, NULL::VARCHAR AS outcome, 8015 AS error_code,
    CASE WHEN customer_id IS NOT NULL THEN 'customer_id' ELSE 'lookup_value' END AS error_field,
    NULL::BIGINT AS resolved_customer_id, NULL::BIGINT AS survivor_id, NULL::BIGINT AS victim_id,
    []::INTEGER[] AS warnings, NULL::BIGINT AS holder_id, NULL::BIGINT AS "limit",
    NULL::BIGINT AS card_series, NULL::VARCHAR AS card_status, NULL::VARCHAR AS replaced_value
FROM ind WHERE target IS NULL
"""

_IND_CHANGES = """
CREATE OR REPLACE TEMP TABLE chg_delete AS
    SELECT target AS customer_id, source, account_id, id_type, id_value, seq, 'remove' AS action FROM ind_ident
        WHERE outcome = 'applied' AND action = 'remove'
    UNION ALL
    SELECT target, source, account_id, id_type, replaced_value, seq, 'replace' FROM ind_ident
        WHERE replaced_value IS NOT NULL
    UNION ALL
    SELECT v.customer_id, v.source, v.account_id, v.id_type, v.id_value, d.seq, 'drop'
    FROM ind_ident d JOIN val_idents v ON v.id_type = d.id_type AND v.id_value = d.id_value
    JOIN rel_info ci ON ci.customer_id = v.customer_id
    WHERE d.outcome IN ('applied', 'merged') AND d.action <> 'remove' AND d.campaign > 0
        AND ci.customer_type = 'CAMPAIGN' AND v.customer_id <> d.target;
CREATE OR REPLACE TEMP TABLE chg_merge AS
    SELECT target AS victim_id, loyal_id AS survivor_id, seq FROM ind_ident WHERE outcome = 'merged';
CREATE OR REPLACE TEMP TABLE chg_insert AS
    SELECT CASE WHEN outcome = 'merged' THEN loyal_id ELSE target END AS customer_id,
        source, account_id, id_type, id_value, seq
    FROM ind_ident WHERE action <> 'remove' AND outcome IN ('applied', 'merged');
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
chg_delete's action: a remove, the value a replace took away, or a campaign holder's drop); the replay's net
changes have none, its rows' provenance comes as events (chg_events). A replace that merges deletes its W from
the victim here, so apply does not move it to the survivor (chg_moves leaves out what chg_delete deletes)."""


def _params(config: OrgConfig) -> dict:
    return {
        "reuse": config.campaign_identifier_reuse,
        "merge_enabled": config.merge_enabled,
        "max_merges": config.max_merges_per_survivor_per_run,
    }


def _named(statement: str, **params: object) -> dict:
    """The warning codes (rules.WARNING_PARAMS) and `params` that a statement names; DuckDB refuses others."""
    return {k: v for k, v in (WARNING_PARAMS | params).items() if f"${k}" in statement}


@dataclass(frozen=True)
class Decided(Handle):
    """The set-based route's outcomes; its changes wait in chg_*, which the replay appends to."""

    vouches: ClassVar[tuple[Stage, ...]] = ("decide",)
    outcomes: pl.DataFrame
    """One OUTCOME_SCHEMA row per row decided set-based (warnings as computed, failed rows included)."""

    @property
    def rows(self) -> int:
        return self.outcomes.height


def decide(resolved: Resolved, config: OrgConfig) -> Decided:
    """Decide the rows of `req` that are not `interacting`; stage their changes in chg_* (made here)."""
    con = resolved.connection("decide")
    con.execute(_INDEPENDENT)
    con.execute(_IDENT_DECISIONS, _params(config))
    con.execute(_CARD_DECISIONS, {"org_max": config.max_active_cards_per_customer})
    frames = [
        query_frame(con, _IDENT_OUTCOMES, _named(_IDENT_OUTCOMES, max_merges=config.max_merges_per_survivor_per_run)),
        query_frame(con, _CARD_OUTCOMES, _named(_CARD_OUTCOMES, org_max=config.max_active_cards_per_customer)),
        query_frame(con, _NOT_FOUND),
    ]
    run_script(con, _IND_CHANGES, {"delink_label": config.delink_label})
    resolved.ws.finish("decide")
    return Decided(resolved.ws, outcomes=pl.concat([f.cast(OUTCOME_SCHEMA) for f in frames]))
