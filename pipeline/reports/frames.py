"""The rows of success.csv, errors.csv and merges.csv, built from a decided batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from pipeline.catalog import CATALOG
from pipeline.engine.check import CheckResult
from pipeline.errors import InternalError
from pipeline.input.columns import REPORT_ERROR_COLUMNS, REPORT_POSITION_COLUMNS, REQUEST_FIELDS, SOURCE_COLUMN
from pipeline.input.read import RequestBatch
from pipeline.reports.pii import mask_reports
from pipeline.values.normalize import trim_expr

SUCCESS_COLUMNS = (
    "file",
    "row_number",
    "row_id",
    "action",
    "source",
    "account_id",
    "id_type",
    "id_value",
    "customer_id",
    "resolved_customer_id",
    "outcome",
    "survivor_id",
    "victim_id",
    "warning_codes",
    SOURCE_COLUMN,
)
"""success.csv's columns; source_column, last, names a wide file's column the row was read from (else empty)."""


MERGE_COLUMNS = ("victim_id", "survivor_id", "file", "row_number", "id_type", "id_value")


@dataclass(frozen=True)
class ReportFrames:
    """A run's report rows and counts: success, errors and merges as their CSV files hold them."""

    success: pl.DataFrame
    errors: pl.DataFrame
    merges: pl.DataFrame
    outcome_counts: dict[str, int]
    errors_by_code: dict[int, int]


def build_reports(batch: RequestBatch, checked: CheckResult, outcomes: pl.DataFrame, mask_pii: bool) -> ReportFrames:
    """success.csv, errors.csv and merges.csv rows; every input row lands in exactly one of the first two."""
    raw = batch.frame
    succeeded = outcomes.filter(pl.col("outcome").is_not_null())
    failed = pl.concat(
        [
            checked.errors.select("seq", pl.col("error_code").cast(pl.Int32), "error_field", "error_message"),
            outcomes.filter(pl.col("error_code").is_not_null()).select(
                "seq", pl.col("error_code").cast(pl.Int32), "error_field", "error_message"
            ),
        ]
    )
    seen = pl.concat([succeeded["seq"], failed["seq"]])
    if seen.n_unique() != seen.len() or seen.len() != raw.height:
        raise InternalError("some input rows would appear in no report or in two; nothing was applied")
    success = (
        succeeded.join(checked.checked, on="seq", how="left")
        .join(raw.select("seq", pl.col("customer_id").alias("customer_id_given")), on="seq", how="left")
        .sort("seq")
        .with_columns(
            trim_expr("customer_id_given").alias("customer_id"),
            pl.col("warnings").list.eval(pl.element().cast(pl.String)).list.join(";").alias("warning_codes"),
        )
        .select(SUCCESS_COLUMNS)
    )
    merges = (
        succeeded.filter(pl.col("outcome") == "merged")
        .join(checked.checked, on="seq", how="left")
        .sort("seq")
        .select(*MERGE_COLUMNS)
    )
    errors = error_report(raw, failed)
    if mask_pii:
        success, errors, merges = mask_reports(success, errors, merges)
    return ReportFrames(
        success=success,
        errors=errors,
        merges=merges,
        outcome_counts={k: succeeded.filter(pl.col("outcome") == k).height for k in ("applied", "unchanged", "merged")},
        errors_by_code={int(code): int(n) for code, n in failed.group_by("error_code").len().iter_rows()},
    )


ERROR_REPORT_COLUMNS = (*REPORT_POSITION_COLUMNS, "row_id", *REQUEST_FIELDS, *REPORT_ERROR_COLUMNS, SOURCE_COLUMN)
"""errors.csv's columns; the reader knows an errors file given as input by the columns around the request ones, and
ignores source_column (a wide file's operation is written as the request row it stands for, its column last)."""


def error_report(
    frame: pl.DataFrame, errors: pl.DataFrame, stage_by_code: Mapping[int, str] | None = None
) -> pl.DataFrame:
    """errors.csv rows: each failed row's input as read (raw, untrimmed) plus its error, by seq.

    `frame` holds seq and the raw input columns (input/read.py's frame); `errors` holds seq, error_code,
    error_field and error_message. A code's stage comes from `stage_by_code`, else the catalog.
    """
    stages = {code: entry.stage for code, entry in CATALOG.items()} | dict(stage_by_code or {})
    names = {code: entry.name for code, entry in CATALOG.items()}
    raw = frame.select(
        "seq",
        *(
            pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.String).alias(name)
            for name in ("file", "row_number", "row_id", *REQUEST_FIELDS, SOURCE_COLUMN)
        ),
    )
    joined = errors.join(raw, on="seq", how="left").sort("seq")
    code = pl.col("error_code")
    return joined.select(
        "file",
        pl.col("row_number").cast(pl.Int64),
        "row_id",
        *REQUEST_FIELDS,
        code.cast(pl.Int32),
        code.replace_strict(names, default=None, return_dtype=pl.String).alias("error_name"),
        "error_field",
        "error_message",
        code.replace_strict(stages, default=None, return_dtype=pl.String).alias("stage"),
        SOURCE_COLUMN,
    )
