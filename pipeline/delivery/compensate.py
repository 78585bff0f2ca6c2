"""`revert --compensate`: a run undone in the store and, through the calls written for `push`, on the platform.

A run's undo log (engine/record.py) holds what it changed, net: identifiers it inserted and deleted, cards whose
holder or label it changed, customers it merged. The compensating calls are the platform's own calls that put
each back: a remove of every identifier the run added, an add of every identifier it removed, a card delinked
or linked and relabelled as it was. They are written as `revert-calls.ndjson`, in the call plan's format
(delivery/plan.py encodes them), with an `after` that is sound: every call that gives a customer or a value back
waits for the calls that take one from the same customer or value, so that any order respecting it leaves the
platform as the revert left the store. A merge cannot be undone through the platform's API, so a run whose merge
reached the platform is reverted with --local-only only; and a change the platform's API would not take back as
it was (a card relinked in a status an add may not give) is refused the same way, with the list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from pipeline.config import CARD, LINKABLE_STATUSES, load_config
from pipeline.delivery.plan import call_lines
from pipeline.errors import StoreError
from pipeline.files import discard, publish, stage_lines, write_json
from pipeline.lineage.revert import RevertResult, revert_run
from pipeline.settings import REVERT_CALLS_FILE, RUN_SUMMARY_FILE
from pipeline.store.connect import open_store
from pipeline.store.duck import query_frame
from pipeline.store.pushes import pushes_of

_COMPENSATION = """
WITH idents AS (
    SELECT CASE op WHEN 'inserted' THEN 'remove' ELSE 'add' END AS action, customer_id, source, account_id, id_type,
        id_value, NULL::BIGINT AS series_id, NULL::VARCHAR AS status_label,
        CASE op WHEN 'deleted' THEN (
            SELECT count(*) FROM identifiers i
            WHERE i.id_type = u.id_type AND i.id_value = u.id_value AND i.customer_id <> u.customer_id
              AND NOT EXISTS (SELECT 1 FROM undo_identifiers r WHERE r.run_id = $run_id AND r.op = 'inserted'
                  AND r.customer_id = i.customer_id AND r.source = i.source AND r.account_id = i.account_id
                  AND r.id_type = i.id_type AND r.id_value = i.id_value)) ELSE 0 END AS other_holders
    FROM undo_identifiers u WHERE run_id = $run_id
),
cards AS (
    SELECT 'remove' AS action, u.new_customer_id AS customer_id, u.card_number, u.old_label AS status_label,
        c.series_id
    FROM undo_cards u JOIN cards c USING (card_number)
    WHERE u.run_id = $run_id AND u.new_customer_id IS NOT NULL AND u.old_customer_id IS DISTINCT FROM u.new_customer_id
    UNION ALL
    SELECT 'add', u.old_customer_id, u.card_number, u.old_label, c.series_id
    FROM undo_cards u JOIN cards c USING (card_number)
    WHERE u.run_id = $run_id AND u.old_customer_id IS NOT NULL
),
card_scope AS (
    SELECT id_value AS card_number, source, account_id FROM provenance
    WHERE run_id = $run_id AND id_type = 'cardnumber' AND source IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY id_value ORDER BY file_position DESC, row_number DESC) = 1
),
holder_scope AS (
    SELECT customer_id, min((source, account_id)) AS scope FROM identifiers GROUP BY customer_id
)
SELECT action, customer_id, source, account_id, id_type, id_value, series_id, status_label, other_holders
FROM idents
UNION ALL
SELECT k.action, k.customer_id, coalesce(s.source, h.scope[1]), coalesce(s.account_id, h.scope[2]), 'cardnumber',
    k.card_number, k.series_id, k.status_label, 0
FROM cards k LEFT JOIN card_scope s USING (card_number) LEFT JOIN holder_scope h USING (customer_id)
"""
"""The calls that undo a run's net changes, read before the store's revert (the platform is as the run left the
store). A card call goes through the scope its row came in, else one its customer holds an identifier in."""

_MERGES = "SELECT customer_id, new_merged_into FROM undo_customers WHERE run_id = $run_id ORDER BY customer_id"


@dataclass(frozen=True)
class Compensation:
    calls: pl.DataFrame
    """Rows in the shape delivery/plan.py's call_lines encodes."""
    refused: list[str]
    """Changes the platform's API cannot put back as they were."""


def revert_and_compensate(
    store_path: Path | str, run_id: str, revert_run_id: str, config_path: Path | str, reports_dir: Path | str
) -> RevertResult:
    """Revert the run in the store and write the calls that undo it on the platform (revert-calls.ndjson in
    `reports_dir`), or refuse (StoreError, nothing changed) a run whose merges or cards the platform cannot take
    back, and a run whose push did not finish."""
    config = load_config(config_path)
    folder = Path(reports_dir)
    with open_store(store_path, read_only=True) as con:
        pushed = pushes_of(con).get(run_id)
        merges = con.execute(_MERGES, {"run_id": run_id}).fetchall()
    if pushed is not None and pushed.reached and not pushed.complete:
        raise StoreError(
            f"run {run_id}'s push did not finish ({', '.join(f'{k} {v}' for k, v in pushed.outcomes.items() if v)});"
            " finish it ('loyalty-bulk push DIR --retry') before compensating, or revert with --local-only; nothing"
            " was changed"
        )
    if merges:
        listed = ", ".join(f"{victim} into {survivor}" for victim, survivor in merges)
        raise StoreError(
            f"run {run_id} merged customers ({listed}); a merge cannot be undone through the platform's API: "
            "revert it with --local-only (the platform keeps the merges); nothing was changed"
        )
    with open_store(store_path, read_only=True) as con:
        compensation = _compensation(query_frame(con, _COMPENSATION, {"run_id": run_id}), config.card_labels)
    if compensation.refused:
        raise StoreError(
            f"run {run_id} cannot be undone through the platform's API: {'; '.join(compensation.refused)}; revert "
            "it with --local-only; nothing was changed"
        )
    folder.mkdir(parents=True, exist_ok=True)
    staged = [
        stage_lines(call_lines(_with_after(compensation.calls), revert_run_id, config), folder / REVERT_CALLS_FILE)
    ]
    try:
        result = revert_run(store_path, run_id, revert_run_id, pushed_ok=True)
    except BaseException:
        discard(staged)
        raise
    publish(staged)
    # a push of the folder records itself beside the revert in the store (store/pushes.py reads this)
    write_json(
        {"run_id": revert_run_id, "kind": "revert", "store": str(Path(store_path).resolve())}, folder / RUN_SUMMARY_FILE
    )
    return replace(result, compensating_calls=folder / REVERT_CALLS_FILE)


def _compensation(rows: pl.DataFrame, labels: dict[str, str]) -> Compensation:
    """Removes first, adds after; a card add whose label the platform would not take on an add is refused."""
    addable = [label for label, status in labels.items() if status in LINKABLE_STATUSES]
    card_add = (pl.col("id_type") == CARD) & (pl.col("action") == "add")
    refused = rows.filter(card_add & ~pl.col("status_label").is_in(addable))
    notes = [
        f"card {r['id_value']} of customer {r['customer_id']}: its label '{r['status_label']}' cannot be given back by "
        "an add (the platform links cards as ISSUED or ACTIVE only)"
        for r in refused.iter_rows(named=True)
    ]
    held = rows.filter(pl.col("other_holders") > 0)
    notes += [
        f"{r['id_type']} {r['id_value']} of customer {r['customer_id']} ({r['source']}): another customer holds"
        " the value on the platform, where giving it back would merge them or be refused"
        for r in held.iter_rows(named=True)
    ]
    kept = rows.filter(~(card_add & ~pl.col("status_label").is_in(addable)))
    ordered = kept.sort(pl.col("action") == "add", "customer_id", "id_type", "id_value")
    return Compensation(ordered, notes)


def _with_after(calls: pl.DataFrame) -> pl.DataFrame:
    """The columns call_lines takes; each add waits for every remove of its customer or its value."""
    numbered = calls.with_row_index("seq").with_columns(pl.col("seq").cast(pl.Int64))
    removes = numbered.filter(pl.col("action") == "remove")
    by_customer = removes.group_by("customer_id").agg(pl.col("seq").alias("_by_customer"))
    by_value = removes.group_by("id_type", "id_value").agg(pl.col("seq").alias("_by_value"))
    empty = pl.lit([], dtype=pl.List(pl.Int64))
    joined = numbered.join(by_customer, on="customer_id", how="left").join(
        by_value, on=["id_type", "id_value"], how="left"
    )
    after = (
        pl.when(pl.col("action") == "add")
        .then(pl.concat_list(pl.col("_by_customer").fill_null(empty), pl.col("_by_value").fill_null(empty)))
        .otherwise(empty)
        .list.unique()
        .list.sort()
    )
    return joined.sort("seq").select(
        "seq",
        pl.lit("applied").alias("outcome"),
        pl.lit([], dtype=pl.List(pl.Int32)).alias("warnings"),
        pl.lit(None, dtype=pl.Int64).alias("survivor_id"),
        pl.lit(REVERT_CALLS_FILE).alias("file"),
        (pl.col("seq") + 1).alias("row_number"),
        pl.lit(None, dtype=pl.String).alias("row_id"),
        pl.col("customer_id").alias("resolved_customer_id"),
        "source",
        "account_id",
        "action",
        "id_type",
        "id_value",
        "series_id",
        "status_label",
        pl.lit(None, dtype=pl.String).alias("replaced_value"),  # each call is one item: a remove or an add
        after.alias("after_seq"),
    )
