"""The store's invariants, checked set-based and read-only, so that `store init` checks a snapshot and `store
audit` a whole store with the same queries: required values, unique customers and cards, valid statuses, one
holder per value in a scope, one value per slot, holders and card holders active, merged_into chains that end at
an active customer (followed by pointer jumping, `merge_chain_ends`, which resolve also uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl

from pipeline.store.duck import run_script, scalar

FINDING_COLUMNS = ("invariant", "table", "row_key", "detail")


NOT_NULL_SQL = """
SELECT 'not_null', 'customers',
       concat('customer_id=', coalesce(customer_id::VARCHAR, 'NULL'), ' status=', coalesce(status, 'NULL'),
              ' merged_into=', coalesce(merged_into::VARCHAR, 'NULL'),
              ' customer_type=', coalesce(customer_type, 'NULL')),
       concat('missing: ', concat_ws(', ',
              CASE WHEN customer_id IS NULL THEN 'customer_id' END,
              CASE WHEN status IS NULL OR status = '' THEN 'status' END,
              CASE WHEN customer_type IS NULL OR customer_type = '' THEN 'customer_type' END))
FROM customers
WHERE customer_id IS NULL OR status IS NULL OR status = '' OR customer_type IS NULL OR customer_type = ''
UNION ALL
SELECT 'not_null', 'identifiers',
       concat('customer_id=', coalesce(customer_id::VARCHAR, 'NULL'), ' source=', coalesce(source, 'NULL'),
              ' account_id=', coalesce(account_id, 'NULL'), ' id_type=', coalesce(id_type, 'NULL'),
              ' id_value=', coalesce(id_value, 'NULL')),
       concat('missing: ', concat_ws(', ',
              CASE WHEN customer_id IS NULL THEN 'customer_id' END,
              CASE WHEN source IS NULL OR source = '' THEN 'source' END,
              CASE WHEN account_id IS NULL THEN 'account_id' END,
              CASE WHEN id_type IS NULL OR id_type = '' THEN 'id_type' END,
              CASE WHEN id_value IS NULL OR id_value = '' THEN 'id_value' END))
FROM identifiers
WHERE customer_id IS NULL OR source IS NULL OR source = '' OR account_id IS NULL
   OR id_type IS NULL OR id_type = '' OR id_value IS NULL OR id_value = ''
UNION ALL
SELECT 'not_null', 'cards',
       concat('card_number=', coalesce(card_number, 'NULL'), ' series_id=', coalesce(series_id::VARCHAR, 'NULL'),
              ' customer_id=', coalesce(customer_id::VARCHAR, 'NULL'),
              ' status_label=', coalesce(status_label, 'NULL')),
       concat('missing: ', concat_ws(', ',
              CASE WHEN card_number IS NULL OR card_number = '' THEN 'card_number' END,
              CASE WHEN series_id IS NULL THEN 'series_id' END,
              CASE WHEN status_label IS NULL OR status_label = '' THEN 'status_label' END))
FROM cards
WHERE card_number IS NULL OR card_number = '' OR series_id IS NULL OR status_label IS NULL OR status_label = ''
"""


CUSTOMER_FINDINGS_SQL = """
SELECT 'customer_id_unique', 'customers', concat('customer_id=', customer_id), concat(count(*), ' rows')
FROM customers WHERE customer_id IS NOT NULL
GROUP BY customer_id HAVING count(*) > 1
UNION ALL
SELECT 'status_valid', 'customers', concat('customer_id=', customer_id),
       concat('status ''', status, ''' is not ACTIVE or MERGED')
FROM customers WHERE customer_id IS NOT NULL AND status NOT IN ('ACTIVE', 'MERGED') AND status <> ''
UNION ALL
SELECT 'customer_type_valid', 'customers', concat('customer_id=', customer_id),
       concat('customer_type ''', customer_type, ''' is not LOYALTY or CAMPAIGN')
FROM customers
WHERE customer_id IS NOT NULL AND customer_type NOT IN ('LOYALTY', 'CAMPAIGN') AND customer_type <> ''
UNION ALL
SELECT 'merged_iff_merged_into', 'customers', concat('customer_id=', customer_id),
       CASE WHEN status = 'MERGED' THEN 'MERGED without merged_into'
            ELSE concat(status, ' with merged_into=', merged_into) END
FROM customers
WHERE customer_id IS NOT NULL
  AND ((status = 'MERGED' AND merged_into IS NULL) OR (status = 'ACTIVE' AND merged_into IS NOT NULL))
UNION ALL
SELECT 'merged_into_other_customer', 'customers', concat('customer_id=', c.customer_id),
       CASE WHEN c.merged_into = c.customer_id THEN concat('merged_into=', c.merged_into, ' is the customer itself')
            ELSE concat('merged_into=', c.merged_into, ' is not a customer') END
FROM customers c
WHERE c.customer_id IS NOT NULL AND c.merged_into IS NOT NULL
  AND (c.merged_into = c.customer_id
       OR NOT EXISTS (SELECT 1 FROM customers t WHERE t.customer_id = c.merged_into))
"""


SCOPE_FINDINGS_SQL = """
WITH keyed AS (
    SELECT * FROM identifiers
    WHERE customer_id IS NOT NULL AND source IS NOT NULL AND account_id IS NOT NULL
      AND id_type IS NOT NULL AND id_value IS NOT NULL
),
hashed AS (SELECT hash({key}) AS h FROM keyed),
repeated AS (
    SELECT DISTINCT h FROM (SELECT h, lag(h) OVER (ORDER BY h) AS previous FROM hashed) WHERE h = previous
),
candidates AS (SELECT * FROM keyed WHERE hash({key}) IN (SELECT h FROM repeated))
{findings}
"""
"""Duplicate keys among identifiers: sorting 64-bit hashes finds the few candidate keys far faster
than grouping 25M string keys; the exact check then runs on the candidates only."""


SCOPE_UNIQUE_FINDINGS = """
SELECT 'identifier_unique_in_scope', 'identifiers',
       concat('source=', source, ' account_id=', account_id, ' id_type=', id_type, ' id_value=', id_value),
       concat(count(*), ' rows, held by customer_id ', string_agg(customer_id::VARCHAR, ', ' ORDER BY customer_id))
FROM candidates
GROUP BY source, account_id, id_type, id_value HAVING count(*) > 1
"""


ONE_VALUE_PER_SLOT_FINDINGS = """
SELECT 'one_value_per_slot', 'identifiers',
       concat('customer_id=', customer_id, ' source=', source, ' account_id=', account_id, ' id_type=', id_type),
       concat(count(DISTINCT id_value), ' values: ', string_agg(DISTINCT id_value, ', ' ORDER BY id_value))
FROM candidates
GROUP BY customer_id, source, account_id, id_type HAVING min(id_value) <> max(id_value)
"""


HOLDER_FINDINGS_SQL = """
WITH offending AS (
    SELECT * FROM identifiers k
    WHERE customer_id IS NOT NULL AND source IS NOT NULL AND account_id IS NOT NULL
      AND id_type IS NOT NULL AND id_value IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = k.customer_id AND c.status = 'ACTIVE')
),
holders AS (
    SELECT customer_id, min(status) AS status FROM customers
    WHERE customer_id IN (SELECT customer_id FROM offending) GROUP BY customer_id
)
SELECT 'identifier_holder_active', 'identifiers',
       concat('customer_id=', o.customer_id, ' source=', o.source, ' account_id=', o.account_id,
              ' id_type=', o.id_type, ' id_value=', o.id_value),
       CASE WHEN h.customer_id IS NULL THEN concat('customer ', o.customer_id, ' does not exist')
            ELSE concat('customer ', o.customer_id, ' is ', coalesce(h.status, 'without status')) END
FROM offending o LEFT JOIN holders h ON h.customer_id = o.customer_id
"""


CARD_FINDINGS_SQL = """
WITH offending AS (
    SELECT * FROM cards d
    WHERE d.customer_id IS NOT NULL AND d.card_number IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = d.customer_id AND c.status = 'ACTIVE')
),
holders AS (
    SELECT customer_id, min(status) AS status FROM customers
    WHERE customer_id IN (SELECT customer_id FROM offending) GROUP BY customer_id
)
SELECT 'card_number_unique', 'cards', concat('card_number=', card_number), concat(count(*), ' rows')
FROM cards WHERE card_number IS NOT NULL
GROUP BY card_number HAVING count(*) > 1
UNION ALL
SELECT 'card_holder_active', 'cards', concat('card_number=', o.card_number),
       CASE WHEN h.customer_id IS NULL THEN concat('customer ', o.customer_id, ' does not exist')
            ELSE concat('customer ', o.customer_id, ' is ', coalesce(h.status, 'without status')) END
FROM offending o LEFT JOIN holders h ON h.customer_id = o.customer_id
"""


CHAIN_START_SQL = """
CREATE OR REPLACE TEMP TABLE merge_chain_ends AS
SELECT customer_id AS start_id, any_value(merged_into) AS at_id
FROM customers
WHERE status = 'MERGED' AND merged_into IS NOT NULL AND customer_id IS NOT NULL
GROUP BY customer_id HAVING count(*) = 1
"""
"""Pointer per MERGED customer (unique ids only: duplicates are reported on their own)."""


CHAIN_PENDING_SQL = """
SELECT count(*) FROM merge_chain_ends s WHERE s.at_id IN (SELECT start_id FROM merge_chain_ends)
"""


CHAIN_JUMP_SQL = """
CREATE OR REPLACE TEMP TABLE merge_chain_next AS
SELECT s.start_id, coalesce(n.at_id, s.at_id) AS at_id
FROM merge_chain_ends s LEFT JOIN merge_chain_ends n ON n.start_id = s.at_id;
DROP TABLE merge_chain_ends;
ALTER TABLE merge_chain_next RENAME TO merge_chain_ends;
"""
"""One pointer-jumping round: every pointer skips to its target's pointer, halving each chain."""


CHAIN_CYCLE_SQL = """
SELECT m.customer_id, m.merged_into FROM customers m
WHERE m.status = 'MERGED' AND m.customer_id IN (
    SELECT at_id FROM merge_chain_ends WHERE at_id IN (SELECT start_id FROM merge_chain_ends))
"""
"""The merged_into of every customer on a cycle (once the chains are followed, see merge_chain_ends)."""


CHAIN_FINDINGS_SQL = """
WITH ends AS (
    SELECT customer_id, min(status) AS status, count(*) AS n FROM customers
    WHERE customer_id IN (SELECT at_id FROM merge_chain_ends) GROUP BY customer_id
)
SELECT 'merge_chain_ends_active', 'customers', concat('customer_id=', s.start_id),
       CASE WHEN s.at_id IN (SELECT start_id FROM merge_chain_ends) THEN 'following merged_into loops'
            WHEN e.customer_id IS NULL THEN concat('following merged_into ends at missing customer ', s.at_id)
            WHEN e.n > 1 THEN concat('following merged_into ends at duplicated customer ', s.at_id)
            ELSE concat('following merged_into ends at customer ', s.at_id, ' which is ', e.status) END
FROM merge_chain_ends s LEFT JOIN ends e ON e.customer_id = s.at_id
WHERE s.at_id IN (SELECT start_id FROM merge_chain_ends) OR e.customer_id IS NULL OR e.n > 1 OR e.status <> 'ACTIVE'
"""


@contextmanager
def merge_chain_ends(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """The temp table merge_chain_ends (start_id, at_id) for the block: each MERGED customer and its chain's end.

    Pointer jumping: each round every pointer skips to its target's pointer, so a chain of n steps is
    followed in ceil(log2 n) rounds, each a join over the merged customers only. After
    ceil(log2(merged + 1)) + 1 rounds every chain that ends has ended; a pointer that still points at
    a customer with a pointer is on a merged_into cycle or leads into one (its at_id is then on the
    cycle). `store init`, `store audit` and the run's resolve stage all follow chains with this.
    """
    con.execute(CHAIN_START_SQL)
    try:
        merged = scalar(con, "SELECT count(*) FROM merge_chain_ends")
        for _ in range(math.ceil(math.log2(merged + 1)) + 1):
            if scalar(con, CHAIN_PENDING_SQL) == 0:
                break
            run_script(con, CHAIN_JUMP_SQL)
        yield
    finally:
        con.execute("DROP TABLE IF EXISTS merge_chain_ends")


def merge_cycles(con: duckdb.DuckDBPyConnection) -> list[list[int]]:
    """The merged_into cycles, each as its customers in merged_into order from its smallest id.

    Call inside `merge_chain_ends`. The invariants forbid cycles: this names them for error messages.
    """
    into = dict(con.execute(CHAIN_CYCLE_SQL).fetchall())
    cycles: list[list[int]] = []
    seen: set[int] = set()
    for start in sorted(into):
        cycle = []
        customer: int | None = start
        while customer is not None and customer not in seen:
            cycle.append(customer)
            seen.add(customer)
            customer = into.get(customer)
        if cycle and customer == start:
            cycles.append(cycle)
    return cycles


def _chain_findings(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every merged_into chain that does not end at an ACTIVE customer (log2 of the longest chain rounds)."""
    with merge_chain_ends(con):
        return _fetch(con, CHAIN_FINDINGS_SQL)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    rows = con.execute(sql).fetchall()
    return pl.DataFrame(rows, schema=list(FINDING_COLUMNS), orient="row")


def find_invariant_violations(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every breach of SPEC section 1's invariants in the store behind `con`, one row per finding.

    Columns: invariant (stable snake_case name), table, row_key, detail. Read-only (temporary
    tables only), so it can audit a store opened read-only.
    """
    scope_key = "source, account_id, id_type, id_value"
    slot_key = "customer_id, source, account_id, id_type"
    queries = (
        NOT_NULL_SQL,
        CUSTOMER_FINDINGS_SQL,
        SCOPE_FINDINGS_SQL.format(key=scope_key, findings=SCOPE_UNIQUE_FINDINGS),
        SCOPE_FINDINGS_SQL.format(key=slot_key, findings=ONE_VALUE_PER_SLOT_FINDINGS),
        HOLDER_FINDINGS_SQL,
        CARD_FINDINGS_SQL,
    )
    parts = [_fetch(con, sql) for sql in queries]
    parts.append(_chain_findings(con))
    findings = pl.concat([p.cast(dict.fromkeys(FINDING_COLUMNS, pl.String)) for p in parts])
    return findings.sort(FINDING_COLUMNS)


def scope_collisions(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Identifiers of one scope that hold the same value (the uniqueness invariant), as findings."""
    return _fetch(
        con, SCOPE_FINDINGS_SQL.format(key="source, account_id, id_type, id_value", findings=SCOPE_UNIQUE_FINDINGS)
    )
