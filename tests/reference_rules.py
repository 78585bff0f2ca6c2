"""SPEC section 2's normalisation and format rules read in plain Python, value by value.

The reference the tests hold the package's polars expressions (pipeline/values/normalize.py) to: written
from SPEC's text with Python's own `re` and `str`, not shared with the package, so that both cannot
be wrong the same way.
"""

from __future__ import annotations

import re
import sys
import unicodedata

WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
"""What str.strip removes."""
INVISIBLE_RANGES = [
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
"""SPEC section 2's control and invisible format characters, as it lists them."""
LOOKALIKE_RANGES = [(0x370, 0x3FF), (0x400, 0x52F)]
"""SPEC section 2's Greek and Cyrillic letters."""


def _python_class(ranges: list[tuple[int, int]]) -> re.Pattern:
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]")


_py_invisible = _python_class(INVISIBLE_RANGES)
_py_lookalike = _python_class(LOOKALIKE_RANGES)
_py_ascii_letter = re.compile("[A-Za-z]")

_py_email = re.compile(
    "^[^@" + re.escape(WHITESPACE) + "]+@[^@" + re.escape(WHITESPACE) + "]+\\.[^@" + re.escape(WHITESPACE) + "]+$"
)
_py_external_id = re.compile("^[^" + re.escape(WHITESPACE) + "]{1,64}$")


_PY_MOBILE_NOISE = re.compile("[" + re.escape(WHITESPACE) + r"\-.()]")


def trim(value: str | None) -> str:
    return "" if value is None else value.strip()


def normalize_value(id_type: str, value: str) -> str:
    """The normalised form of a trimmed identifier value (SPEC section 2)."""
    if id_type == "email":
        return value.lower()
    if id_type == "mobile":
        digits = _PY_MOBILE_NOISE.sub("", value)
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
        ok = (
            len(value) <= 254
            and _py_email.fullmatch(value)
            and not _py_invisible.search(value)
            and not (_py_ascii_letter.search(value) and _py_lookalike.search(value))
        )
        return None if ok else 8055
    if id_type == "mobile":
        return None if re.fullmatch(r"[0-9]{8,15}", value) else 8056
    if id_type == "externalId":
        return None if _py_external_id.fullmatch(value) and not _py_invisible.search(value) else 8064
    if id_type == "cardnumber":
        return None
    if not 1 <= len(value) <= 128 or any(unicodedata.category(c) == "Cc" for c in value):
        return 7001
    return None
