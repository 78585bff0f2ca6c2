"""The polars face of SPEC section 2's normalisation and format rules agrees with their plain-Python
reading (tests/reference_rules.py)."""

from __future__ import annotations

import sys

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.values.normalize import WHITESPACE, format_error_expr, normalize_expr, trim_expr
from reference_rules import WHITESPACE as REFERENCE_WHITESPACE
from reference_rules import format_error, normalize_value, trim

ID_TYPES = ("mobile", "email", "externalId", "wechat", "cardnumber")
CONTROL = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))
NON_ASCII_LETTERS = "éÉßÄäİıΣσςЖжǅﬃÅ中"

TOKENS = st.one_of(
    st.sampled_from(WHITESPACE),
    st.sampled_from(CONTROL),
    st.sampled_from("0123456789"),
    st.sampled_from(["+", "00", "-", ".", "(", ")", "@", "@", "."]),
    st.sampled_from("abcxyzABCXYZ"),
    st.sampled_from(NON_ASCII_LETTERS),
    st.characters(categories=("Lu", "Ll", "Lt", "Lo"), min_codepoint=0x80),
)
TEXT = st.lists(TOKENS, max_size=40).map("".join)
LONG_TEXT = st.builds(lambda ch, n, tail: ch * n + tail, st.sampled_from(["a", "1", "É"]), st.integers(50, 300), TEXT)
"""Long values around the 64, 128, 254 and 15-character limits."""
VALUES = st.lists(st.one_of(TEXT, TEXT, TEXT, LONG_TEXT), min_size=1, max_size=12)


def polars_faces(values: list[str]) -> pl.DataFrame:
    """Trim, normalise and check every value as each id type, the way check.py does."""
    frame = pl.DataFrame(
        {
            "id_type": [t for t in ID_TYPES for _ in values],
            "raw": [v for _ in ID_TYPES for v in values],
        },
        schema={"id_type": pl.String, "raw": pl.String},
    )
    return (
        frame.with_columns(trimmed=trim_expr("raw"))
        .with_columns(normalised=normalize_expr(pl.col("id_type"), pl.col("trimmed")))
        .with_columns(
            code=format_error_expr(pl.col("id_type"), pl.col("normalised")),
            raw_code=format_error_expr(pl.col("id_type"), pl.col("raw")),
        )
    )


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_polars_and_python_faces_agree(values: list[str]):
    for row in polars_faces(values).iter_rows(named=True):
        id_type, raw = row["id_type"], row["raw"]
        trimmed = raw.strip()
        normalised = normalize_value(id_type, trimmed)
        assert row["trimmed"] == trimmed, (id_type, raw)
        assert row["normalised"] == normalised, (id_type, raw)
        assert row["code"] == format_error(id_type, normalised), (id_type, raw)


@settings(max_examples=150, deadline=None)
@given(VALUES)
@example(["foo@example.com\n", "ext-1\n", "12345678\n"])
def test_format_error_faces_agree_on_untrimmed_text(values: list[str]):
    """The format rules hold for any text, not only trimmed text (a trailing newline is still white space)."""
    for row in polars_faces(values).iter_rows(named=True):
        assert row["raw_code"] == format_error(row["id_type"], row["raw"]), (row["id_type"], row["raw"])


def test_trim_turns_missing_into_empty():
    frame = pl.DataFrame({"raw": [None, " \u3000x\u2029 ", "\u200b"]}, schema={"raw": pl.String})
    assert frame.select(trim_expr("raw"))["raw"].to_list() == ["", "x", "\u200b"]
    assert [trim(v) for v in (None, " \u3000x\u2029 ", "\u200b")] == ["", "x", "\u200b"]


@pytest.mark.parametrize(
    ("id_type", "raw", "normalised"),
    [
        ("mobile", " +33 (6) 12-34.56 78 ", "33612345678"),
        ("mobile", "0033 6 12 34 56 78", "33612345678"),
        ("mobile", "+0033612345678", "0033612345678"),
        ("mobile", "\u00a0612\u200734\u20095678\u3000", "612345678"),
        ("email", "Foo@EXAMPLE.com", "foo@example.com"),
        ("email", "  ÉLODIE@Exemple.FR\t", "élodie@exemple.fr"),
        ("cardnumber", " GLD0000000001 ", "GLD0000000001"),
        ("cardnumber", "slv-00 12.34x", "slv-00 12.34x"),
        ("externalId", "AbC-00+1", "AbC-00+1"),
        ("wechat", "WeChat_User", "WeChat_User"),
    ],
)
def test_normalisation_examples(id_type: str, raw: str, normalised: str):
    assert normalize_value(id_type, raw.strip()) == normalised
    assert polars_faces([raw]).filter(pl.col("id_type") == id_type)["normalised"].item() == normalised


@pytest.mark.parametrize(
    ("id_type", "value", "code"),
    [
        ("email", "foo@example.com", None),
        ("email", "a" * 242 + "@example.com", None),
        ("email", "a" * 243 + "@example.com", 8055),
        ("email", "a" * 243 + "@example.com" + "m", 8055),
        ("email", "foo@example", 8055),
        ("email", "foo@@example.com", 8055),
        ("email", "foo bar@example.com", 8055),
        ("mobile", "1234567", 8056),
        ("mobile", "12345678", None),
        ("mobile", "123456789012345", None),
        ("mobile", "1234567890123456", 8056),
        ("mobile", "١٢٣٤٥٦٧٨", 8056),
        ("externalId", "ext 1", 8064),
        ("externalId", "x" * 64, None),
        ("externalId", "x" * 65, 8064),
        ("externalId", "", 8064),
        ("wechat", "wx\x07id", 7001),
        ("wechat", "w" * 128, None),
        ("wechat", "w" * 129, 7001),
        ("wechat", "", 7001),
        ("wechat", "wx id", None),
        ("cardnumber", "anything at all \x07", None),
    ],
)
def test_format_error_examples(id_type: str, value: str, code: int | None):
    assert format_error(id_type, value) == code
    frame = pl.DataFrame({"id_type": [id_type], "value": [value]})
    assert frame.select(format_error_expr(pl.col("id_type"), pl.col("value"))).item() == code


def test_email_of_255_characters_is_8055():
    email = "a" * 243 + "@example.com"
    assert len(email) == 255
    assert format_error("email", normalize_value("email", email)) == 8055


def test_whitespace_is_every_code_point_str_isspace_accepts():
    """normalize scans only up to U+3000 at import; the reference scans every code point."""
    assert WHITESPACE == REFERENCE_WHITESPACE
    assert "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()) == WHITESPACE
