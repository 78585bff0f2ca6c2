"""Provenance's vocabulary and a revert's rows: what each action of a provenance row means, the order of one
row's changes, and the rows that say what a revert undid.

A run's own provenance rows are written inside its transaction by engine/record.py; `explain` reads them
(explain.py). One row is one change: an identifier added, removed, dropped from a campaign holder or moved by a
merge, a customer merged, a card linked, relabelled, delinked or moved by a merge, or what a revert undid.
Identifiers, cards and merges present since `store init` have no row: "no row" means "from the snapshot".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import duckdb

from pipeline.store.duck import run_script

if TYPE_CHECKING:
    pass


Action = Literal[
    "add",
    "remove",
    "replace",
    "drop",
    "move",
    "merge",
    "card_link",
    "card_label",
    "card_delink",
    "card_move",
    "platform_move",
    "unmerge",
    "card_relink",
    "revert_remove",
    "revert_restore",
    "revert_unmerge",
    "revert_card",
    "unrecorded",
]
"""What a provenance row says happened (README "Explain"): `replace` is a replace row taking value id_value away
from from_customer_id, with new_label holding the value V that took its place (held now by to_customer_id: the
row's customer, or the survivor it merged into); `drop` is a CAMPAIGN holder losing a value another customer took
(reuse on); `move` an identifier going from a merge victim to its survivor;
`unrecorded` marks a run made with the bench's switch off, whose changes have no rows. A refresh's rows
(store/diff.py) say what changed on the platform: `add`, `remove`, `platform_move` (another holder), `merge`,
`unmerge`, `card_link`, `card_delink`, `card_relink` (another holder), `card_label`."""


_ROW_ORDER = (
    "replace",
    "merge",
    "move",
    "card_move",
    "drop",
    "remove",
    "add",
    "card_link",
    "card_label",
    "card_delink",
)


ACTION_ORDER: dict[str, int] = {
    action: i for i, action in enumerate([*_ROW_ORDER, *(a for a in get_args(Action) if a not in _ROW_ORDER)])
}
"""The order of a row's changes among themselves: a replace's value taken away first (it is gone before V is
checked, so a merge does not move it), a merge before the moves it makes, then the add."""


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
UNION ALL
SELECT $revert_id, NULL, NULL, NULL, 'revert_card', i.customer_id, d.customer_id, NULL, NULL, 'cardnumber',
    card_number, i.status_label, d.status_label
FROM (SELECT * FROM undo_card_rows WHERE run_id = $run_id AND op = 'inserted') i
FULL OUTER JOIN (SELECT * FROM undo_card_rows WHERE run_id = $run_id AND op = 'deleted') d USING (card_number)
UNION ALL
SELECT $revert_id, NULL, NULL, NULL, 'revert_unmerge', i.customer_id, i.merged_into, NULL, NULL, '', '', NULL, NULL
FROM undo_customer_rows i JOIN undo_customer_rows d
    ON d.run_id = i.run_id AND d.customer_id = i.customer_id AND d.op = 'deleted'
WHERE i.run_id = $run_id AND i.op = 'inserted' AND i.status = 'MERGED' AND d.status = 'ACTIVE'
"""


def record_revert(con: duckdb.DuckDBPyConnection, revert_id: str, run_id: str) -> None:
    """Record what a revert undoes, from the reverted run's undo log, inside the revert's transaction."""
    run_script(con, _RECORD_REVERT, {"revert_id": revert_id, "run_id": run_id})
