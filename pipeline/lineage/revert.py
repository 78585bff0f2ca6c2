"""`revert`: an applied run's undo log played backwards.

A run's undo log (written in its transaction by engine/record.py) holds the net rows it deleted and inserted in
identifiers, and the before/after state of every card and customer it changed. Reverting deletes what the run
inserted, puts back what it deleted and restores cards and customers, in one transaction, after checking that
no later run touched any customer, identifier or card of that run and that the store still shows the run's
after-state for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import StoreError
from pipeline.lineage import provenance
from pipeline.results import StoreCounts
from pipeline.store import ledger
from pipeline.store.connect import open_store
from pipeline.store.duck import run_script, scalar, transaction
from pipeline.store.pushes import PushRecord, pushes_of
from pipeline.store.schema import store_counts, stored_columns

if TYPE_CHECKING:
    pass


_TOUCHED = """
CREATE OR REPLACE TEMP TABLE touched AS
WITH undo_identifiers AS (SELECT * FROM undo_identifiers WHERE run_id IN (SELECT run_id FROM later_runs)),
     undo_cards AS (SELECT * FROM undo_cards WHERE run_id IN (SELECT run_id FROM later_runs)),
     undo_customers AS (SELECT * FROM undo_customers WHERE run_id IN (SELECT run_id FROM later_runs)),
     undo_customer_rows AS (SELECT * FROM undo_customer_rows WHERE run_id IN (SELECT run_id FROM later_runs)),
     undo_card_rows AS (SELECT * FROM undo_card_rows WHERE run_id IN (SELECT run_id FROM later_runs))
    SELECT run_id, 'c' AS kind, customer_id::VARCHAR AS k FROM undo_identifiers
    UNION SELECT run_id, 'v', concat_ws(chr(31), id_type, id_value) FROM undo_identifiers
    UNION SELECT run_id, 'k', card_number FROM undo_cards
    UNION SELECT run_id, 'c', old_customer_id::VARCHAR FROM undo_cards WHERE old_customer_id IS NOT NULL
    UNION SELECT run_id, 'c', new_customer_id::VARCHAR FROM undo_cards WHERE new_customer_id IS NOT NULL
    UNION SELECT run_id, 'c', customer_id::VARCHAR FROM undo_customers
    UNION SELECT run_id, 'c', new_merged_into::VARCHAR FROM undo_customers
    UNION SELECT run_id, 'c', customer_id::VARCHAR FROM undo_customer_rows
    UNION SELECT run_id, 'c', merged_into::VARCHAR FROM undo_customer_rows WHERE merged_into IS NOT NULL
    UNION SELECT run_id, 'k', card_number FROM undo_card_rows
    UNION SELECT run_id, 'c', customer_id::VARCHAR FROM undo_card_rows WHERE customer_id IS NOT NULL
"""
"""What each later run touched: customers (c), values (v) and cards (k); a refresh's whole-row images count
like a batch run's before and after."""


_LATER_RUNS = """
CREATE OR REPLACE TEMP TABLE later_runs AS
SELECT run_id FROM runs WHERE ordinal >= $ordinal AND NOT dry_run AND exit_code IN (0, 1) AND reverted_by IS NULL
"""


_LATER_CONFLICTS = """
SELECT DISTINCT t.run_id FROM touched t
JOIN (SELECT kind, k FROM touched WHERE run_id = $run_id) mine USING (kind, k)
WHERE t.run_id <> $run_id
ORDER BY 1
"""


_DRIFT = """
SELECT 'identifier' AS what, count(*) AS n FROM undo_identifiers u
    LEFT JOIN identifiers i USING (customer_id, source, account_id, id_type, id_value)
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND i.customer_id IS NULL
UNION ALL SELECT 'card', count(*) FROM undo_cards u JOIN cards c USING (card_number)
    WHERE u.run_id = $run_id
      AND (c.customer_id IS DISTINCT FROM u.new_customer_id OR c.status_label <> u.new_label)
UNION ALL SELECT 'customer', count(*) FROM undo_customers u JOIN customers c USING (customer_id)
    WHERE u.run_id = $run_id AND (c.status <> u.new_status OR c.merged_into IS DISTINCT FROM u.new_merged_into)
UNION ALL SELECT 'customer row', count(*) FROM undo_customer_rows u LEFT JOIN customers c
    ON c.customer_id = u.customer_id AND c.status = u.status AND c.merged_into IS NOT DISTINCT FROM u.merged_into
   AND c.customer_type = u.customer_type
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND c.customer_id IS NULL
UNION ALL SELECT 'card row', count(*) FROM undo_card_rows u LEFT JOIN cards c
    ON c.card_number = u.card_number AND c.series_id = u.series_id AND c.customer_id IS NOT DISTINCT FROM u.customer_id
   AND c.status_label = u.status_label
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND c.card_number IS NULL
"""


_REVERT = f"""
DELETE FROM identifiers USING undo_identifiers u
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND identifiers.customer_id = u.customer_id
      AND identifiers.source = u.source AND identifiers.account_id = u.account_id
      AND identifiers.id_type = u.id_type AND identifiers.id_value = u.id_value;
INSERT INTO identifiers SELECT {stored_columns("identifiers")} FROM undo_identifiers
    WHERE run_id = $run_id AND op = 'deleted';
UPDATE cards SET customer_id = u.old_customer_id, status_label = u.old_label FROM undo_cards u
    WHERE u.run_id = $run_id AND cards.card_number = u.card_number;
UPDATE customers SET status = u.old_status, merged_into = u.old_merged_into FROM undo_customers u
    WHERE u.run_id = $run_id AND customers.customer_id = u.customer_id
;
DELETE FROM customers USING undo_customer_rows u
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND customers.customer_id = u.customer_id;
INSERT INTO customers SELECT customer_id, status, merged_into, customer_type FROM undo_customer_rows
    WHERE run_id = $run_id AND op = 'deleted';
DELETE FROM cards USING undo_card_rows u
    WHERE u.run_id = $run_id AND u.op = 'inserted' AND cards.card_number = u.card_number;
INSERT INTO cards SELECT card_number, series_id, customer_id, status_label FROM undo_card_rows
    WHERE run_id = $run_id AND op = 'deleted'
"""


@dataclass(frozen=True)
class RevertResult:
    run_id: str
    reverted_run_id: str
    identifiers_restored: int
    identifiers_removed: int
    cards_restored: int
    customers_restored: int
    store_after: StoreCounts
    pushed: PushRecord | None = None
    """The reverted run's last push, when its calls reached the platform."""
    compensating_calls: Path | None = None
    """revert-calls.ndjson, the calls that undo the run on the platform (`revert --compensate`)."""

    def render(self) -> str:
        lines = [
            f"reverted run {self.reverted_run_id} (as run {self.run_id}): {self.identifiers_removed} "
            f"identifiers removed, {self.identifiers_restored} put back, {self.cards_restored} cards and "
            f"{self.customers_restored} customers restored; store now {self.store_after.render()}"
        ]
        if self.pushed is not None and self.compensating_calls is None:
            lines.append(
                f"  the store now differs from the platform: {self.pushed.reached} change(s) of run "
                f"{self.reverted_run_id} reached it and stay there"
            )
        if self.compensating_calls is not None:
            lines.append(
                f"  the calls that undo it on the platform: {self.compensating_calls}; send them with "
                f"'loyalty-bulk push {self.compensating_calls.parent} --config ORG'"
            )
        return "\n".join(lines)


def pushed_run_refusal(run_id: str, pushed: PushRecord) -> str:
    """Why a run whose calls reached the platform is not reverted without --local-only or --compensate."""
    return (
        f"run {run_id} reached the platform ({pushed.reached} call(s) confirmed or already applied, last push "
        f"{pushed.recorded_at}); revert changes the store only, so the store would differ from the platform. "
        "Use --local-only to revert the store alone (the platform keeps the changes), or --compensate --config ORG "
        "to also write the calls that undo it on the platform (revert-calls.ndjson, sent with 'loyalty-bulk push');"
        " nothing was changed"
    )


def revert_run(
    store_path: Path | str, run_id: str, revert_run_id: str, local_only: bool = False, pushed_ok: bool = False
) -> RevertResult:
    """Undo an applied run exactly, refusing when a later run touched what it touched, and, for a run whose calls
    reached the platform, unless `local_only` (or `pushed_ok`: the caller writes the compensating calls)."""
    con = open_store(store_path)
    try:
        pushed = pushes_of(con, writable=True).get(run_id)
        if pushed is not None and not pushed.reached:
            pushed = None
        if pushed is not None and not (local_only or pushed_ok):
            raise StoreError(pushed_run_refusal(run_id, pushed))
        row = con.execute(
            "SELECT ordinal, dry_run, exit_code, reverted_by FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in the ledger of {store_path}; nothing was changed")
        ordinal, dry_run, exit_code, reverted_by = row
        if dry_run or exit_code not in (0, 1):
            raise StoreError(f"run {run_id} applied nothing (dry run or aborted); nothing to revert")
        if reverted_by:
            raise StoreError(f"run {run_id} was already reverted by run {reverted_by}; nothing was changed")
        con.execute(_LATER_RUNS, {"ordinal": ordinal})
        con.execute(_TOUCHED)
        later = [r[0] for r in con.execute(_LATER_CONFLICTS, {"run_id": run_id}).fetchall()]
        if later:
            raise StoreError(
                f"cannot revert run {run_id}: later run(s) {', '.join(later)} changed customers, "
                "identifiers or cards it touched; nothing was changed"
            )
        drift = {what: n for what, n in con.execute(_DRIFT, {"run_id": run_id}).fetchall() if n}
        if drift:
            raise StoreError(
                f"cannot revert run {run_id}: the store no longer shows its result "
                f"({', '.join(f'{n} {w}(s)' for w, n in drift.items())} changed since); nothing was changed"
            )
        counts = dict(
            con.execute(
                """SELECT op, count(*) FROM undo_identifiers WHERE run_id = ? GROUP BY op""", [run_id]
            ).fetchall()
        )
        cards = scalar(
            con,
            "SELECT (SELECT count(*) FROM undo_cards WHERE run_id = $1)"
            " + (SELECT count(DISTINCT card_number) FROM undo_card_rows WHERE run_id = $1)",
            [run_id],
        )
        customers = scalar(
            con,
            "SELECT (SELECT count(*) FROM undo_customers WHERE run_id = $1)"
            " + (SELECT count(DISTINCT customer_id) FROM undo_customer_rows WHERE run_id = $1)",
            [run_id],
        )
        with transaction(con):
            provenance.record_revert(con, revert_run_id, run_id)  # reads the undo log before it is played
            run_script(con, _REVERT, {"run_id": run_id})
            con.execute("UPDATE runs SET reverted_by = ? WHERE run_id = ?", [revert_run_id, run_id])
            after = store_counts(con)
            ledger.record_revert(con, revert_run_id, run_id, local_only=pushed is not None and local_only)
        return RevertResult(
            revert_run_id, run_id, counts.get("deleted", 0), counts.get("inserted", 0), cards, customers, after, pushed
        )
    finally:
        con.close()
