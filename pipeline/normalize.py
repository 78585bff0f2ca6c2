"""Normalisation and format rules of SPEC section 2, as polars expressions and as plain functions.

Both faces implement the same rules; the tests compare them on random strings.
"""
from __future__ import annotations

import re
import sys
import unicodedata

import polars as pl

WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
"""Exactly the characters Python's str.strip removes (SPEC: trimmed 'as Python's str.strip')."""

_WS_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)
_MOBILE_NOISE = f"[{_WS_CLASS}\\-.()]"
_MOBILE_PREFIX = r"^(\+|00)"
EMAIL_PATTERN = f"^[^@{_WS_CLASS}]+@[^@{_WS_CLASS}]+\\.[^@{_WS_CLASS}]+$"
MOBILE_PATTERN = r"^[0-9]{8,15}$"
EXTERNAL_ID_PATTERN = f"^[^{_WS_CLASS}]{{1,64}}$"
CONTROL_PATTERN = r"\p{Cc}"

_py_mobile_noise = re.compile("[" + re.escape(WHITESPACE) + r"\-.()]")
_py_email = re.compile("^[^@" + re.escape(WHITESPACE) + "]+@[^@" + re.escape(WHITESPACE) + "]+\\.[^@"
                       + re.escape(WHITESPACE) + "]+$")
_py_external_id = re.compile("^[^" + re.escape(WHITESPACE) + "]{1,64}$")


def trim(value: str | None) -> str:
    return "" if value is None else value.strip()


def normalize_value(id_type: str, value: str) -> str:
    """The normalised form of a trimmed identifier value (SPEC section 2)."""
    if id_type == "email":
        return value.lower()
    if id_type == "mobile":
        digits = _py_mobile_noise.sub("", value)
        if digits.startswith("+"):
            return digits[1:]
        if digits.startswith("00"):
            return digits[2:]
        return digits
    return value


def format_error(id_type: str, value: str) -> int | None:
    """The check code for a normalised add value that may not enter the store, else None.

    Card numbers are checked against their series elsewhere (they need the series).
    """
    if id_type == "email":
        return None if len(value) <= 254 and _py_email.fullmatch(value) else 8055
    if id_type == "mobile":
        return None if re.fullmatch(r"[0-9]{8,15}", value) else 8056
    if id_type == "externalId":
        return None if _py_external_id.fullmatch(value) else 8064
    if id_type == "cardnumber":
        return None
    if not 1 <= len(value) <= 128 or any(unicodedata.category(c) == "Cc" for c in value):
        return 7001
    return None


def trim_expr(column: str) -> pl.Expr:
    """Trim like str.strip and turn a missing value into ''."""
    return pl.col(column).fill_null("").str.strip_chars(WHITESPACE)


def normalize_expr(type_expr: pl.Expr, value_expr: pl.Expr) -> pl.Expr:
    """Normalise a trimmed value column according to a type column."""
    mobile = value_expr.str.replace_all(_MOBILE_NOISE, "").str.replace(_MOBILE_PREFIX, "")
    return (
        pl.when(type_expr == "email").then(value_expr.str.to_lowercase())
        .when(type_expr == "mobile").then(mobile)
        .otherwise(value_expr)
    )


def format_error_expr(type_expr: pl.Expr, value_expr: pl.Expr) -> pl.Expr:
    """Check code (Int32) for a normalised add value by type, null when the value may enter the store."""
    code = pl.lit(None, dtype=pl.Int32)
    return (
        pl.when(type_expr == "email").then(
            pl.when((value_expr.str.len_chars() <= 254) & value_expr.str.contains(EMAIL_PATTERN))
            .then(code).otherwise(pl.lit(8055, dtype=pl.Int32)))
        .when(type_expr == "mobile").then(
            pl.when(value_expr.str.contains(MOBILE_PATTERN)).then(code).otherwise(pl.lit(8056, dtype=pl.Int32)))
        .when(type_expr == "externalId").then(
            pl.when(value_expr.str.contains(EXTERNAL_ID_PATTERN)).then(code).otherwise(pl.lit(8064, dtype=pl.Int32)))
        .when(type_expr == "cardnumber").then(code)
        .otherwise(
            pl.when((value_expr.str.len_chars() >= 1) & (value_expr.str.len_chars() <= 128)
                    & ~value_expr.str.contains(CONTROL_PATTERN))
            .then(code).otherwise(pl.lit(7001, dtype=pl.Int32)))
    )

