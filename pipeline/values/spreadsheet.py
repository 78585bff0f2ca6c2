"""Spreadsheet damage: a long number that a spreadsheet changed, recognised in a value (docs/requests.md).

A spreadsheet holds a number in 15 significant digits and shows a long one in scientific notation, so a
customer_id, a mobile or a card number typed into one as a number can reach a request file changed: 919972752991
saved as `9.19972E+11`, a 16-digit card number whose last digit became 0, a value with a fraction. Such a value
is malformed, and the check stage says that a spreadsheet changed it rather than only that it is wrong.

Two signs are read, each by the part that can see it:
- scientific notation (`9.19972E+11`, or `9,19972E+11` where the spreadsheet writes a decimal comma) is text, so
  the check stage recognises it in any file: a CSV saved from a spreadsheet holds the number as it was shown;
- a workbook's number cell with a fraction or of more than 15 digits looks like any other text once read, so the
  workbook reader, which alone knows the cell held a number, writes the cell's value followed by a note
  (`919972752991.5 (a number cell with a fraction)`); the reports echo it and the check stage reads it.
"""

from __future__ import annotations

import math

import polars as pl

SCIENTIFIC = "scientific notation"
FRACTION = "a number cell with a fraction"
MORE_THAN_15_DIGITS = "a number cell of more than 15 digits"
MAX_EXACT_DIGITS = 15
"""A spreadsheet keeps 15 significant digits of a number: an integer of up to 15 digits survives a number cell."""

SCIENTIFIC_PATTERN = r"^[+-]?[0-9]+([.,][0-9]*)?[eE][+-]?[0-9]+$"
_NOTED_PATTERN = rf"^(.*) \(({FRACTION}|{MORE_THAN_15_DIGITS})\)$"


def number_cell_text(value: float) -> tuple[str, str | None]:
    """A workbook number cell as text, and why it may not be the value that was typed (None when it is).

    An integer of up to 15 digits reads as its digits (919972752991, never 9.19972752991E+11). Any other number
    reads as its shortest exact decimal (no exponent), with FRACTION or MORE_THAN_15_DIGITS as the reason.
    """
    if not math.isfinite(value):  # no workbook cell holds one; kept as Python writes it
        return repr(value), None
    if value.is_integer():
        digits = str(int(value))
        return digits, MORE_THAN_15_DIGITS if len(digits.lstrip("-")) > MAX_EXACT_DIGITS else None
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = _positional(mantissa, int(exponent))
    return text, FRACTION


def noted_expr(value: pl.Expr, reason: pl.Expr) -> pl.Expr:
    """A workbook number cell's text with the note the check stage recognises: `text (reason)`."""
    return pl.concat_str(value, pl.lit(" ("), reason, pl.lit(")"))


def damage_expr(value: pl.Expr) -> pl.Expr:
    """Why a trimmed value looks like a number a spreadsheet changed (SCIENTIFIC, FRACTION, ...), or null."""
    return (
        pl.when(value.str.contains(SCIENTIFIC_PATTERN))
        .then(pl.lit(SCIENTIFIC))
        .otherwise(value.str.extract(_NOTED_PATTERN, 2))
    )


def damage_message_expr(value: pl.Expr, subject: pl.Expr | None = None) -> pl.Expr:
    """What a row's message says of a damaged value: the value as the spreadsheet had it (or `subject`), the reason."""
    return pl.format(
        "{} looks like a number a spreadsheet changed ({}); write the value as text",
        written_expr(value) if subject is None else subject,
        damage_expr(value),
    )


def written_expr(value: pl.Expr) -> pl.Expr:
    """A value without the workbook reader's note: the number as the cell held it."""
    return pl.coalesce(value.str.extract(_NOTED_PATTERN, 1), value)


def _positional(mantissa: str, exponent: int) -> str:
    """repr's `m e x` written out without the exponent (1e-06 -> 0.000001)."""
    sign, mantissa = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
    whole, _, fraction = mantissa.partition(".")
    digits, point = whole + fraction, len(whole) + exponent
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"
