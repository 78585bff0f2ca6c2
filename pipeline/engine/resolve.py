"""Resolve every checked row against the store as it was before the run, and split the batch.

Each row gets its initial target (customer_id followed through merged_into, or the holder of the lookup
identifier or card, in the row's scope or the lookup's own) and a set of keys: its target, the holders of its
value in any scope, its value, its lookup value, its card and the card's holder. Whatever a row reads or
writes while it is applied lies within the customers, values and cards of its keys, or within what an earlier
row sharing one of those keys brought in (a lookup value's key is the same in every scope, so a lookup in a
scope of its own needs no other). So a row that shares no key with any other row gives the same result whether
it is applied first, last or alone: it is decided set-based against the store (`independent`). Rows that share
a key are replayed in order (replay.py) over the customers their keys name, with all their identifiers and
cards (`working set`). Keys are 64-bit hashes; a collision can only join rows that did not need joining, never
split rows that did. A replace needs no key of
its own: the value W it takes away is its target's, and any other row that reads or writes W names that
customer (as its target, or as a holder of W), so a replace that shares no key stays set-based.

A MERGED customer_id is followed through merged_into to its end however long the chain: a few
steps one at a time for the requested customers (store chains are mostly one or two steps long),
then, only if a chain is still open, pointer jumping over the merged customers (the mechanism
`store init` and `store audit` use, store.merge_chain_ends), in rounds logarithmic in the longest
chain. A chain that loops or ends at no ACTIVE customer breaks SPEC section 1's invariants: the run
is refused (StoreError, exit 3) naming the customers, before anything is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import duckdb
import polars as pl

from pipeline.config import OrgConfig
from pipeline.engine import rules
from pipeline.engine.groups import plan_groups
from pipeline.engine.workspace import Handle, Stage, Workspace
from pipeline.errors import StoreError
from pipeline.input.columns import LOOKUP_SCOPE_COLUMNS, REPLACES_COLUMN, REQUEST_FIELDS
from pipeline.store.duck import run_script, scalar
from pipeline.store.invariants import merge_chain_ends, merge_cycles
from pipeline.store.schema import VALUE_HASH_SQL

Route = Literal["auto", "replay"]
"""How rows are decided: `auto` sends the rows that share no key to the set-based route and the rest to
the replay; `replay` sends every row to the replay (for tests: the two must agree)."""

DIRECT_CHAIN_STEPS = 4
"""merged_into steps followed one at a time before pointer jumping takes over: each is a join of the
requested merged customers alone, while a pointer-jumping round joins all merged customers."""

_REQUEST_TABLES = f"""
CREATE OR REPLACE TEMP TABLE req_values AS
    SELECT id_type, id_value, {VALUE_HASH_SQL} AS value_hash FROM (
        SELECT id_type, id_value FROM req WHERE id_type <> 'cardnumber'
        UNION SELECT lookup_type, lookup_value FROM req WHERE lookup_type IS NOT NULL AND lookup_type <> 'cardnumber');
CREATE OR REPLACE TEMP TABLE value_holders AS
    SELECT DISTINCT i.customer_id FROM identifiers i SEMI JOIN req_values v USING (value_hash);
CREATE OR REPLACE TEMP TABLE req_cards AS
    SELECT DISTINCT id_value AS card_number FROM req WHERE id_type = 'cardnumber'
    UNION SELECT DISTINCT lookup_value FROM req WHERE lookup_type = 'cardnumber';
CREATE OR REPLACE TEMP TABLE card_state AS
    SELECT c.*, c.rowid AS rid FROM cards c JOIN req_cards USING (card_number);
CREATE OR REPLACE TEMP TABLE known_refs AS
    SELECT c.customer_id, c.status, c.merged_into
    FROM customers c JOIN (SELECT DISTINCT customer_id FROM req WHERE customer_id IS NOT NULL) r USING (customer_id);
CREATE OR REPLACE TEMP TABLE merged_customers AS
    SELECT customer_id, merged_into FROM customers WHERE status = 'MERGED';
CREATE OR REPLACE TEMP TABLE chain AS
    SELECT customer_id AS given, merged_into AS current FROM known_refs WHERE status = 'MERGED';
"""

_CHAIN_STEP = """
UPDATE chain SET current = m.merged_into FROM merged_customers m WHERE m.customer_id = chain.current
"""

_CHAIN_OPEN = "SELECT count(*) FROM chain SEMI JOIN merged_customers m ON m.customer_id = chain.current"

_CHAIN_TO_END = "UPDATE chain SET current = e.at_id FROM merge_chain_ends e WHERE e.start_id = chain.current"

_CHAIN_LOOPS = """
SELECT given, current FROM chain SEMI JOIN merged_customers m ON m.customer_id = chain.current ORDER BY given
"""
"""Chains still open after pointer jumping: each is on a merged_into cycle or leads into one."""

_CHAIN_END_NOT_ACTIVE = """
SELECT ch.given, ch.current, r.status FROM chain ch LEFT JOIN rel_info r ON r.customer_id = ch.current
WHERE r.status IS DISTINCT FROM 'ACTIVE' ORDER BY ch.given LIMIT 1
"""
"""Chains that end at a missing or non-ACTIVE customer; every chain end is a target, so rel_info has it."""

_SHOWN = 10
"""Customers of a cycle named in the message (a cycle may be as long as the store's merged customers)."""

_TARGETS = """
CREATE OR REPLACE TEMP TABLE res AS
SELECT r.seq,
       CASE WHEN r.customer_id IS NOT NULL THEN coalesce(ch.current, kr.customer_id)
            WHEN r.lookup_type = 'cardnumber' THEN cs.customer_id
            ELSE vi.customer_id END AS target,
       ch.current IS NOT NULL AS followed
FROM req r
LEFT JOIN known_refs kr ON kr.customer_id = r.customer_id
LEFT JOIN chain ch ON ch.given = r.customer_id
LEFT JOIN card_state cs ON r.lookup_type = 'cardnumber' AND cs.card_number = r.lookup_value
LEFT JOIN val_idents vi ON r.lookup_type IS NOT NULL AND r.lookup_type <> 'cardnumber'
    AND vi.source = coalesce(r.lookup_source, r.source) AND vi.account_id = coalesce(r.lookup_account_id, r.account_id)
    AND vi.id_type = r.lookup_type AND vi.id_value = r.lookup_value;
"""
"""A lookup finds its customer in the row's scope, or in the lookup's own (a wide file's `lookup`: lookup_source and
lookup_account_id, null on every other row)."""

_KEYS = """
CREATE OR REPLACE TEMP TABLE row_keys AS
SELECT seq, hash('c', target) AS k FROM res WHERE target IS NOT NULL
UNION ALL SELECT seq, hash('v', id_type, id_value) FROM req WHERE id_type <> 'cardnumber'
UNION ALL SELECT seq, hash('v', lookup_type, lookup_value) FROM req
    WHERE lookup_type IS NOT NULL AND lookup_type <> 'cardnumber'
UNION ALL SELECT seq, hash('k', id_value) FROM req WHERE id_type = 'cardnumber'
UNION ALL SELECT seq, hash('k', lookup_value) FROM req WHERE lookup_type = 'cardnumber'
UNION ALL SELECT r.seq, hash('c', v.customer_id) FROM req r
    JOIN val_idents v ON r.id_type = v.id_type AND r.id_value = v.id_value
UNION ALL SELECT r.seq, hash('c', cs.customer_id) FROM req r
    JOIN card_state cs ON cs.card_number = r.id_value
    WHERE r.id_type = 'cardnumber' AND cs.customer_id IS NOT NULL;
CREATE OR REPLACE TEMP TABLE interacting AS
SELECT DISTINCT seq FROM row_keys SEMI JOIN (
    SELECT k FROM row_keys GROUP BY k HAVING min(seq) < max(seq)) shared USING (k);
"""

_RELEVANT = """
CREATE OR REPLACE TEMP TABLE rel_customers AS
    SELECT coalesce(ch.current, kr.customer_id) AS customer_id
        FROM known_refs kr LEFT JOIN chain ch ON ch.given = kr.customer_id
    UNION SELECT customer_id FROM value_holders
    UNION SELECT customer_id FROM card_state WHERE customer_id IS NOT NULL;
CREATE OR REPLACE TEMP TABLE rel_info AS
    SELECT c.*, c.rowid AS rid FROM customers c JOIN rel_customers USING (customer_id);
CREATE OR REPLACE TEMP TABLE rel_idents AS
    SELECT i.customer_id, i.source, i.account_id, i.id_type, i.id_value, i.rowid AS rid
    FROM identifiers i JOIN rel_customers USING (customer_id);
CREATE OR REPLACE TEMP TABLE val_idents AS
    SELECT i.customer_id, i.source, i.account_id, i.id_type, i.id_value
    FROM rel_idents i JOIN req_values v USING (id_type, id_value);
CREATE OR REPLACE TEMP TABLE rel_cards AS
    SELECT c.*, c.rowid AS rid FROM cards c JOIN rel_customers USING (customer_id)
    UNION SELECT * FROM card_state;
"""
"""Every customer a row can reach: the requested customers (at the end of their chains), the holders of
the rows' values and the holders of their cards; a row's target is one of them (_TARGETS). The holders
are found by value_hash (store.VALUE_HASH_SQL), a scan of integers; val_idents, the holdings of the rows'
values, then compares the values exactly among those customers' identifiers."""

_ALL_INTERACTING = "CREATE OR REPLACE TEMP TABLE interacting AS SELECT seq FROM req"

_COUNTS = "SELECT (SELECT count(*) FROM req), (SELECT count(*) FROM interacting)"


@dataclass(frozen=True)
class Resolved(Handle):
    """The resolved batch: req, res, interacting, val_idents, card_state, rel_* and cfg_* (workspace.py)."""

    vouches: ClassVar[tuple[Stage, ...]] = ("resolve",)
    groups: pl.DataFrame
    """The call plan's groups of the rows that share keys (plan.plan_groups: seq, plan_group, plan_fresh)."""
    rows: int
    interacting: int
    """Rows the replay decides (all of them on the `replay` route); the rest go set-based."""


def resolve_targets(ws: Workspace, checked: pl.DataFrame, config: OrgConfig, route: Route = "auto") -> Resolved:
    """Load the checked rows as `req`, resolve initial targets and split independent from interacting.

    The call plan's groups are computed here while the row keys exist; they do not depend on the route.
    """
    con = ws.con
    rules.register(con, config)
    frame = checked.select("seq", *REQUEST_FIELDS, REPLACES_COLUMN, *LOOKUP_SCOPE_COLUMNS)
    con.register("checked_frame", frame)
    con.execute("CREATE OR REPLACE TEMP TABLE req AS SELECT * FROM checked_frame")
    con.unregister("checked_frame")
    run_script(con, _REQUEST_TABLES)
    _follow_merges(con)
    run_script(con, _RELEVANT)
    _refuse_chain_ends_not_active(con)
    con.execute(_TARGETS)
    run_script(con, _KEYS)
    if route == "replay":
        con.execute(_ALL_INTERACTING)
    groups = plan_groups(con)
    rows, interacting = con.execute(_COUNTS).fetchall()[0]
    ws.finish("resolve")  # what decide does not read goes now: temp tables live in memory until the run ends
    return Resolved(ws, groups=groups, rows=rows, interacting=interacting)


def _follow_merges(con: duckdb.DuckDBPyConnection) -> None:
    """Move every row of `chain` (a requested MERGED customer) to the end of its merged_into chain."""
    for _ in range(DIRECT_CHAIN_STEPS):
        if not scalar(con, _CHAIN_OPEN):
            return
        con.execute(_CHAIN_STEP)
    if not scalar(con, _CHAIN_OPEN):
        return
    with merge_chain_ends(con):
        con.execute(_CHAIN_TO_END)
        looping = con.execute(_CHAIN_LOOPS).fetchall()
        if looping:
            raise StoreError(_loop_message(looping, merge_cycles(con)))


def _loop_message(looping: list[tuple[int, int]], cycles: list[list[int]]) -> str:
    """Name the first requested customer whose chain loops, and the customers of the cycle it reaches."""
    given, reached = looping[0]
    others = f" (and from {len(looping) - 1} other requested customer(s))" if len(looping) > 1 else ""
    cycle = next((c for c in cycles if reached in c), None)
    where = (
        f"merged_into loops through customers {_cycle_text(cycle)}"
        if cycle
        else f"it stops at customer {reached}, which is MERGED"
    )
    return (
        f"the store breaks SPEC section 1: following merged_into from customer {given}{others} never reaches"
        f" an ACTIVE customer: {where}; nothing was applied; run `loyalty-bulk store audit` on the store"
    )


def _cycle_text(cycle: list[int]) -> str:
    if len(cycle) <= _SHOWN:
        return " -> ".join(str(c) for c in [*cycle, cycle[0]])
    return " -> ".join(str(c) for c in cycle[:_SHOWN]) + f" -> ... ({len(cycle)} customers)"


def _refuse_chain_ends_not_active(con: duckdb.DuckDBPyConnection) -> None:
    ends = con.execute(_CHAIN_END_NOT_ACTIVE).fetchall()
    if ends:
        given, end, status = ends[0]
        what = "does not exist" if status is None else f"is {status}"
        raise StoreError(
            f"the store breaks SPEC section 1: following merged_into from customer {given} ends at customer {end},"
            f" which {what}; nothing was applied; run `loyalty-bulk store audit` on the store"
        )
