"""Normalisation and format rules of SPEC section 2, as polars expressions.

tests/reference_rules.py reads the same rules in plain Python; the tests compare both on random strings.
"""

from __future__ import annotations

import polars as pl

_LAST_WHITESPACE = 0x3000
"""The largest code point str.isspace accepts (U+3000 IDEOGRAPHIC SPACE): scanning up to it, not to
sys.maxunicode, saves every run 0.05 s of start-up. tests/test_normalize.py compares the result with a scan
of every code point, so a Python whose Unicode adds a space beyond it fails there."""
WHITESPACE = "".join(chr(c) for c in range(_LAST_WHITESPACE + 1) if chr(c).isspace())
"""Exactly the characters Python's str.strip removes (SPEC: trimmed 'as Python's str.strip')."""

_WS_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)
_MOBILE_NOISE = f"[{_WS_CLASS}\\-.()]"
_MOBILE_PREFIX = r"^(\+|00)"
EMAIL_PATTERN = f"^[^@{_WS_CLASS}]+@[^@{_WS_CLASS}]+\\.[^@{_WS_CLASS}]+$"
MOBILE_PATTERN = r"^[0-9]{8,15}$"
EXTERNAL_ID_PATTERN = f"^[^{_WS_CLASS}]{{1,64}}$"
CONTROL_PATTERN = r"\p{Cc}"

_INVISIBLE_RANGES = [
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x61C, 0x61C),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
]
"""Control and invisible format characters (zero-width space, BOM, direction marks, soft hyphen...).

SPEC's email and externalId rules only exclude white space, which would let `alice\u200b@example.com`
enter the store as a new identifier that looks exactly like alice@example.com. We refuse these
characters in email (8055) and externalId (8064) values: see README, decisions."""
_LOOKALIKE_RANGES = [(0x370, 0x3FF), (0x400, 0x52F)]
"""Greek and Cyrillic letters; mixed with ASCII letters in one email they make a look-alike (8055)."""


def _rust_class(ranges: list[tuple[int, int]]) -> str:
    return "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"


INVISIBLE_PATTERN = _rust_class(_INVISIBLE_RANGES)
LOOKALIKE_PATTERN = _rust_class(_LOOKALIKE_RANGES)


def normalized_value(id_type: str, value: str) -> str:
    """One trimmed value normalised by the same expression the check stage uses (for a value a person types)."""
    return str(pl.select(normalize_expr(pl.lit(id_type), pl.lit(value))).item())


def trim_expr(column: str) -> pl.Expr:
    """Trim like str.strip and turn a missing value into ''."""
    return pl.col(column).fill_null("").str.strip_chars(WHITESPACE)


def normalize_expr(type_expr: pl.Expr, value_expr: pl.Expr) -> pl.Expr:
    """Normalise a trimmed value column according to a type column."""
    mobile = value_expr.str.replace_all(_MOBILE_NOISE, "").str.replace(_MOBILE_PREFIX, "")
    return (
        pl.when(type_expr == "email")
        .then(value_expr.str.to_lowercase())
        .when(type_expr == "mobile")
        .then(mobile)
        .otherwise(value_expr)
    )


def format_error_expr(type_expr: pl.Expr, value_expr: pl.Expr, mobile_valid: pl.Expr | None = None) -> pl.Expr:
    """Check code (Int32) for a normalised add value by type, null when the value may enter the store.

    `mobile_valid`, with `[mobile]`, says which mobiles had a valid reading (mobile.read_mobiles):
    it replaces the plain 8-to-15-digits rule.
    """
    code = pl.lit(None, dtype=pl.Int32)
    mobile_ok = value_expr.str.contains(MOBILE_PATTERN) if mobile_valid is None else mobile_valid
    return (
        pl.when(type_expr == "email")
        .then(
            pl.when(
                (value_expr.str.len_chars() <= 254)
                & value_expr.str.contains(EMAIL_PATTERN)
                & ~value_expr.str.contains(INVISIBLE_PATTERN)
                & ~(value_expr.str.contains("[A-Za-z]") & value_expr.str.contains(LOOKALIKE_PATTERN))
            )
            .then(code)
            .otherwise(pl.lit(8055, dtype=pl.Int32))
        )
        .when(type_expr == "mobile")
        .then(pl.when(mobile_ok).then(code).otherwise(pl.lit(8056, dtype=pl.Int32)))
        .when(type_expr == "externalId")
        .then(
            pl.when(value_expr.str.contains(EXTERNAL_ID_PATTERN) & ~value_expr.str.contains(INVISIBLE_PATTERN))
            .then(code)
            .otherwise(pl.lit(8064, dtype=pl.Int32))
        )
        .when(type_expr == "cardnumber")
        .then(code)
        .otherwise(
            pl.when(
                (value_expr.str.len_chars() >= 1)
                & (value_expr.str.len_chars() <= 128)
                & ~value_expr.str.contains(CONTROL_PATTERN)
            )
            .then(code)
            .otherwise(pl.lit(7001, dtype=pl.Int32))
        )
    )
