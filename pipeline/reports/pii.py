"""Masking of identifier values in reports (--mask-pii): enough left to recognise a row, not the person.

email keeps its domain (`***@example.com`), mobile its last 3 digits (`********678`), a card number
its last 4 characters, any other identifier its first character. Error messages, which quote values,
are replaced by the catalog's meaning of the code and the field.
"""

from __future__ import annotations

import polars as pl

from pipeline.catalog import CATALOG


def mask_expr(type_expr: pl.Expr, value_expr: pl.Expr) -> pl.Expr:
    """The masked form of a value column according to a type column; nulls and '' stay as they are."""
    length = value_expr.str.len_chars()
    masked = (
        pl.when((type_expr == "email") & value_expr.str.contains("@", literal=True))
        .then(pl.lit("***@") + value_expr.str.split("@").list.last())
        .when(type_expr == "email")
        .then(pl.lit("***"))
        .when(type_expr == "mobile")
        .then(value_expr.str.slice(-3).str.pad_start(length, "*"))
        .when(type_expr == "cardnumber")
        .then(value_expr.str.slice(-4).str.pad_start(length, "*"))
        .otherwise(value_expr.str.slice(0, 1) + pl.lit("***"))
    )
    return pl.when(value_expr.is_null() | (value_expr == "")).then(value_expr).otherwise(masked)


def masked_messages() -> pl.Expr:
    """error_message without any value: the code's meaning and the field at fault."""
    meanings = {code: entry.meaning for code, entry in CATALOG.items()}
    return (
        pl.col("error_field").fill_null("")
        + pl.lit(": ")
        + pl.col("error_code").replace_strict(meanings, default="", return_dtype=pl.String)
    )


def mask_reports(success: pl.DataFrame, errors: pl.DataFrame, merges: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    """The three report frames with every identifier value masked."""
    trimmed_type = pl.col("id_type").fill_null("").str.strip_chars()
    lookup_type = pl.col("lookup_type").fill_null("").str.strip_chars()
    return (
        success.with_columns(mask_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value")),
        errors.with_columns(
            mask_expr(trimmed_type, pl.col("id_value")).alias("id_value"),
            mask_expr(lookup_type, pl.col("lookup_value")).alias("lookup_value"),
            masked_messages().alias("error_message"),
        ),
        merges.with_columns(mask_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value")),
    )


def mask_value(id_type: str, value: str) -> str:
    """One value masked by the rule of mask_expr (explain masks its answers value by value)."""
    masked = pl.select(mask_expr(pl.lit(id_type, dtype=pl.String), pl.lit(value, dtype=pl.String))).item()
    return str(masked)
