"""Blocked-value patterns: the polars expression equals Python's re.fullmatch on every pattern and value."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.values.patterns import full_match_expr, rust_fullmatch
from regex_strategies import patterns, quiet, values_for, whitelist_patterns

pytestmark = quiet

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)


def python_fullmatch(pattern: str, value: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.fullmatch(pattern, value) is not None


def engine_fullmatch(pattern_list: list[str], values: Sequence[str | None]) -> list[bool | None]:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    return frame.select(full_match_expr(pattern_list, pl.col("v"))).to_series().to_list()


def assert_same_as_python(pattern: str, values: list[str]) -> None:
    values = values + [v + "\n" for v in values]  # Python's $ also matches before a final newline
    expected = [python_fullmatch(pattern, v) for v in values]
    assert engine_fullmatch([pattern], values) == expected, (pattern, rust_fullmatch(pattern))


@PROPERTY
@given(st.data(), patterns)
def test_every_pattern_matches_as_python(data, pattern):
    """Whitelisted or not (flags, back-references, look-arounds...), each value is decided as re.fullmatch does."""
    assert_same_as_python(pattern, data.draw(st.lists(values_for(pattern), min_size=1, max_size=12)))


@PROPERTY
@given(st.data(), whitelist_patterns)
def test_whitelisted_patterns_match_as_python_on_polars(data, pattern):
    """Patterns of the constructs both engines have, nearly all rewritten for polars, decide as re.fullmatch."""
    assert_same_as_python(pattern, data.draw(st.lists(values_for(pattern), min_size=1, max_size=12)))


ISSUE_CASES = [
    (r"\w+", "x\u00b2", True),  # superscript two is a word character for Python, not for Rust
    (r"\w+", "e\u0301", False),  # a combining mark is a word character for Rust, not for Python
    (r"[a-c&&b]x", "cx", True),  # '&&' is two ampersands for Python, an intersection for Rust
    (r"^[[:digit:]]+$", "123", False),  # a class of '[:digt' then ']' for Python, a POSIX class for Rust
]


@pytest.mark.parametrize(("pattern", "value", "blocked"), ISSUE_CASES)
def test_issue_cases_run_on_polars_as_python_reads_them(pattern, value, blocked):
    assert python_fullmatch(pattern, value) is blocked
    assert rust_fullmatch(pattern) is not None, "the whitelist covers these: they run on polars"
    assert engine_fullmatch([pattern], [value]) == [blocked]


@pytest.mark.parametrize(
    ("pattern", "values"),
    [
        ("a$", ["a", "a\n"]),  # in tail position $ is the end of the value
        (r"(?:x|a$)", ["a", "a\n", "x"]),
        (r"\Aa\Z", ["a", "a\n"]),
        ("^0+$", ["000", "000\n", "0a"]),
        (r"^noreply@.*", ["noreply@x", "noreply@\n", "noreply@a\nb"]),  # . is not a newline
        (r"[^a]", ["\n", "a", "b"]),  # a negated class is a newline
        (r"[\s]", ["\x1c", "\u0085", "\u180e", " "]),  # Python's own white space
        (r"\d+", ["\u0663", "\u00b2", "12"]),
        (r"\W", ["\u0301", "\u00b2", "-"]),
        ("k", ["K", "\u212a"]),  # case-sensitive
    ],
)
def test_whitelisted_constructs(pattern, values):
    assert rust_fullmatch(pattern) is not None
    assert engine_fullmatch([pattern], values) == [python_fullmatch(pattern, v) for v in values]


@pytest.mark.parametrize(
    ("pattern", "values"),
    [
        ("a$\n", ["a\n", "a"]),  # $ that something follows: Python's also holds before a final newline
        ("a$$", ["a", "a\n"]),
        ("(?i)k", ["K", "\u212a", "k"]),
        ("(?i:k)x", ["Kx", "\u212ax"]),
        ("(?s).", ["\n"]),
        ("(?m)^a$", ["a"]),
        ("(?a)\\w", ["\u00e9", "a"]),
        ("(?x) a b", ["ab"]),
        (r"\bx", ["x"]),
        (r"(a)\1", ["aa", "ab"]),
        (r"(?=a)\w", ["a", "b"]),
        (r"(?!EXT-).*", ["EXT-1", "OTHER"]),
        (r"(?>a*)a", ["aa"]),
        (r"a*+a", ["aa"]),
        ("\ud800?x", ["x"]),
        (r"x{100000000}", ["x"]),  # past the Rust engine's size limit
    ],
)
def test_other_patterns_fall_back_to_python(pattern, values):
    assert rust_fullmatch(pattern) is None
    assert engine_fullmatch([pattern], values) == [python_fullmatch(pattern, v) for v in values]


def test_nulls_stay_null_and_patterns_combine():
    """Several patterns of one type: a value is blocked by any; Rust and Python ones together."""
    got = engine_fullmatch([r"\w+", r"(a)\1"], ["x\u00b2", "aa", "-", None])
    assert got == [True, True, False, None]
