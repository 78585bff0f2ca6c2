"""The call plan (calls.ndjson): a run's succeeded changes as the platform's own calls, with `after`.

Rows that share no key (engine/resolve.py) are independent: their calls have an empty `after`. The rows that
do share keys fall into connected components of the graph "rows joined by a shared key" (engine/groups.py); nothing a
row of one component reads or writes is ever reached by a row of another (engine/resolve.py's closure
argument, applied to each component), so components need no order between them. Within a
component, a row that shares no key with any earlier row reads only state no earlier row wrote, and
writes only state no earlier row read, so it needs no predecessor; every other row waits for the
last such row's chain (the previous non-fresh applied row of its component) and for the fresh rows
since it. That is the run order restricted to what can interact, so any send order respecting
`after` replays each component in its run order and leaves the platform as the run left the store.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from pipeline.config import CARD, OrgConfig
from pipeline.delivery.platform import FOLLOWED_CODE

_LINES_CHUNK = 200_000
"""Rows per chunk of lines that call_lines yields (and a run writes before the next is encoded)."""


_ENCODE_CHUNK = 50_000
"""Rows per JSON-encoding task within a chunk: the parts are encoded in parallel (pl.collect_all), one core each."""


CALL_CHANGES = ("applied", "merged")
"""Outcomes whose row becomes a call; an `unchanged` row needs none."""


def chain_after(grouped: pl.DataFrame) -> pl.DataFrame:
    """`after_seq` of each changing row of a component (seq, plan_group, plan_fresh): the seqs it waits for.

    Only rows that change something are given: a failed or unchanged row sends nothing and changed
    nothing, so the rows around it keep their order without it. Set-based: within a component, a
    row's block is the number of non-fresh rows up to it; a non-fresh row of block b waits for the
    rows of block b - 1 (the previous non-fresh row and the fresh rows since), a fresh row for none.
    """
    empty = pl.lit([], dtype=pl.List(pl.Int64))
    blocks = grouped.sort("plan_group", "seq").with_columns(
        (~pl.col("plan_fresh")).cast(pl.Int64).cum_sum().over("plan_group").alias("block")
    )
    members = blocks.group_by("plan_group", "block").agg(pl.col("seq").sort().alias("after_seq"))
    return blocks.join(members.with_columns(pl.col("block") + 1), on=["plan_group", "block"], how="left").select(
        "seq",
        pl.when(pl.col("plan_fresh")).then(empty).otherwise(pl.col("after_seq").fill_null(empty)).alias("after_seq"),
    )


def call_lines(changes: pl.DataFrame, run_id: str, config: OrgConfig) -> Iterator[pl.Series]:
    """calls.ndjson's lines for plan_changes' rows, in row order, a chunk of _LINES_CHUNK rows at a time: a run
    writes each chunk as it comes (files.stage_lines), so the file's text is never whole in memory (~280 MB
    for a million calls)."""
    multi = [name for name, source in config.sources.items() if source.kind == "multi"]
    for start in range(0, changes.height, _LINES_CHUNK):
        yield _call_lines(changes.slice(start, _LINES_CHUNK), run_id, multi, config.delink_label)


def plan_changes(checked: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """The rows that become calls (applied or merged), in row order, with what their lines are made of: the
    checked row, the outcome and `after_seq`, the rows each waits for (call_lines encodes them)."""
    changes = (
        outcomes.filter(pl.col("outcome").is_in(CALL_CHANGES))
        .select(
            "seq",
            "outcome",
            "resolved_customer_id",
            "survivor_id",
            "warnings",
            "replaced_value",
            "plan_group",
            "plan_fresh",
        )
        .join(
            checked.select(
                "seq",
                "file",
                "row_number",
                "row_id",
                "source",
                "account_id",
                "action",
                "id_type",
                "id_value",
                "series_id",
                "status_label",
            ),
            on="seq",
            how="left",
        )
        .sort("seq")
    )
    grouped = changes.filter(pl.col("plan_group").is_not_null())
    waits = chain_after(grouped)
    return changes.join(waits, on="seq", how="left", maintain_order="left").with_columns(
        pl.col("after_seq").fill_null(pl.lit([], dtype=pl.List(pl.Int64)))
    )


def _call_lines(changes: pl.DataFrame, run_id: str, multi: list[str], delink_label: str) -> pl.Series:
    """Each change as its JSON line, in the frame's order.

    A line's shape (its body's keys, the item's fields, whether `expect` names a survivor) varies with the row,
    and a polars struct has fixed fields; so the rows are split by shape (at most 3 x 3 x 2 of them) and each
    part is encoded by one `json_encode` of the whole nested struct: every row is encoded once. A replace that
    took a value W away is one call, {"remove": [W], "add": [V]}; one that found no value of its type in the
    scope was an add, and is sent as one.
    """
    is_card = pl.col("id_type") == CARD
    shaped = changes.with_row_index("_order").with_columns(
        pl.when((pl.col("action") == "replace") & pl.col("replaced_value").is_null())
        .then(pl.lit("add"))
        .otherwise(pl.col("action"))
        .alias("action"),
        pl.when(is_card & (pl.col("action") == "add"))
        .then(pl.lit("card_add"))
        .when(is_card)
        .then(pl.lit("card"))
        .otherwise(pl.lit("identifier"))
        .alias("_item"),
        (pl.col("outcome") == "merged").alias("_merged"),
        (pl.col("_order") // _ENCODE_CHUNK).alias("_chunk"),
    )
    label = (
        pl.when(pl.col("action") == "add")
        .then("status_label")
        .otherwise(pl.col("status_label").fill_null(delink_label))
    )
    items = {
        "card_add": [
            pl.col("id_type").alias("type"),
            pl.col("id_value").alias("value"),
            pl.col("series_id").alias("seriesId"),
            label.alias("statusLabel"),
        ],
        "card": [pl.col("id_type").alias("type"), pl.col("id_value").alias("value"), label.alias("statusLabel")],
        "identifier": [pl.col("id_type").alias("type"), pl.col("id_value").alias("value")],
    }
    # a followed merge is not expected from a call: it addresses the customer the run resolved, so none is followed
    warnings = pl.col("warnings").list.eval(pl.element().filter(pl.element() != FOLLOWED_CODE))
    prefix = f"{run_id}:"
    parts = []
    for (action, item, merged, _), part in shaped.partition_by(
        "action", "_item", "_merged", "_chunk", as_dict=True
    ).items():
        expect = [pl.col("outcome"), warnings.alias("warnings")] + ([pl.col("survivor_id")] if merged else [])
        added = pl.concat_list(pl.struct(*items[str(item)]))
        body = (
            pl.struct(
                pl.concat_list(
                    pl.struct(pl.col("id_type").alias("type"), pl.col("replaced_value").alias("value"))
                ).alias("remove"),
                added.alias("add"),
            )
            if action == "replace"
            else pl.struct(added.alias(str(action)))
        )
        line = pl.struct(
            (pl.lit(prefix) + pl.col("seq").cast(pl.String)).alias("call_id"),
            "file",
            "row_number",
            "row_id",
            pl.col("resolved_customer_id").alias("customer_id"),
            "source",
            pl.when(pl.col("source").is_in(multi)).then(pl.col("account_id")).alias("account_id"),
            body.alias("body"),
            pl.col("after_seq").list.eval(pl.lit(prefix) + pl.element().cast(pl.String)).alias("after"),
            pl.struct(*expect).alias("expect"),
        ).struct.json_encode()
        parts.append(part.lazy().select("_order", line.alias("line")))
    if not parts:
        return pl.Series("line", [], dtype=pl.String)
    return pl.concat(pl.collect_all(parts)).sort("_order")["line"]
