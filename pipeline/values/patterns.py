"""Blocked-value patterns (SPEC section 7): Python regular expressions, matched as `re.fullmatch`.

polars runs regular expressions on Rust's regex engine, which reads some patterns otherwise than
Python without refusing them: `\\w`, `\\d` and `\\s` follow other Unicode tables (`x²`, `e` + U+0301),
`&&` in a class is an intersection and `[[:digit:]]` a POSIX class there, and `$` never matches
before a final newline. So a pattern runs on polars only when it is provably read the same way:
Python's own parser reads it, every node of the tree must be in a whitelist whose meaning is the
same in both engines, and the Rust pattern is written anew from that tree, every character other
than an ASCII letter or digit as `\\x{HEX}`, so that the Rust parser has nothing left to interpret.
Any other pattern runs on Python's `re` itself, once per distinct value of the batch.

The whitelist (flags: none beyond the default UNICODE; no inline or scoped flags, so no IGNORECASE,
DOTALL, MULTILINE or ASCII):
- a literal, `[^c]`, and `.` (any character but a newline, written `[^\\n]`);
- classes of literals, ranges and the categories `\\d \\D \\s \\S \\w \\W`, optionally negated; a
  category is written as the explicit ranges of code points that Python's own engine puts in it;
- groups (written non-capturing: only whether the whole value matches counts) and alternation;
- greedy and lazy repeats (not possessive repeats nor atomic groups, which can refuse a match);
- `^` and `\\A` (the start of the value, MULTILINE being off) and `\\Z` (Rust's `\\z`);
- `$` only where nothing in the pattern can follow it: a full match ends at the end of the value,
  where Python's `$` and Rust's `\\z` agree. Elsewhere Python's `$` also holds before a final
  newline, which Rust cannot say without a look-ahead.
Everything else falls back to `re`: back-references, look-arounds, `\\b` and `\\B` (they read the
neighbours with Rust's own `\\w`), conditionals, flags, surrogate code points.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import polars as pl

_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_START = (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)


class _NotProvable(Exception):
    """A node outside the whitelist: the pattern runs on Python's `re`."""


@lru_cache(maxsize=1024)
def rust_fullmatch(pattern: str) -> str | None:
    """A Rust regex that matches exactly the strings `re.fullmatch(pattern, ...)` matches, or None.

    None when the pattern uses anything outside the whitelist (module docstring), or when the
    rewritten pattern is one Rust's engine refuses (a repeat count past its size limit, say).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on '[[' and '&&': Python's reading is what counts
            tree = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    if tree.state.flags != sre.SRE_FLAG_UNICODE:
        return None
    try:
        body = _sequence(tree, tail=True)
    except (_NotProvable, RecursionError):
        return None
    rust = rf"\A(?:{body})\z"
    return rust if _rust_accepts(rust) else None


def _rust_accepts(rust: str) -> bool:
    try:
        pl.Series([""], dtype=pl.String).str.contains(rust)
    except Exception:  # polars raises ComputeError for what the engine refuses; any refusal means fall back
        return False
    return True


def _sequence(items: Any, tail: bool) -> str:
    """A sequence of nodes; `tail`: nothing in the whole pattern can follow this sequence's end."""
    nodes = list(items)
    return "".join(_node(op, av, tail and i == len(nodes) - 1) for i, (op, av) in enumerate(nodes))


def _node(op: Any, av: Any, tail: bool) -> str:
    if op is sre.LITERAL:
        return _char(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(av)}]"
    if op is sre.ANY:
        return r"[^\x{A}]"
    if op is sre.IN:
        return _class(av)
    if op is sre.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        if add_flags or del_flags:
            raise _NotProvable
        return f"(?:{_sequence(sub, tail)})"
    if op is sre.BRANCH:
        _, branches = av
        return "(?:" + "|".join(_sequence(b, tail) for b in branches) + ")"
    if op is sre.MAX_REPEAT or op is sre.MIN_REPEAT:
        low, high, sub = av
        bound = f"{{{low},}}" if high == sre.MAXREPEAT else f"{{{low},{high}}}"
        return f"(?:{_sequence(sub, tail=False)}){bound}{'?' if op is sre.MIN_REPEAT else ''}"
    if op is sre.AT:
        if av in _START:
            return r"\A"
        if av is sre.AT_END_STRING or (av is sre.AT_END and tail):
            return r"\z"
    raise _NotProvable


def _class(items: Any) -> str:
    parts: list[str] = []
    negate = False
    for i, (op, av) in enumerate(items):
        if op is sre.NEGATE and i == 0:
            negate = True
        elif op is sre.LITERAL:
            parts.append(_char(av))
        elif op is sre.RANGE:
            parts.append(f"{_char(av[0])}-{_char(av[1])}")
        elif op is sre.CATEGORY and av in _CATEGORIES:
            parts.extend(
                _char(low) if low == high else f"{_char(low)}-{_char(high)}" for low, high in _category_ranges(av)
            )
        else:
            raise _NotProvable
    if not parts:
        raise _NotProvable
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


_CATEGORIES = {
    sre.CATEGORY_DIGIT: (r"\d", False),
    sre.CATEGORY_NOT_DIGIT: (r"\d", True),
    sre.CATEGORY_SPACE: (r"\s", False),
    sre.CATEGORY_NOT_SPACE: (r"\s", True),
    sre.CATEGORY_WORD: (r"\w", False),
    sre.CATEGORY_NOT_WORD: (r"\w", True),
}
_SURROGATES = (0xD800, 0xDFFF)


@lru_cache(maxsize=len(_CATEGORIES))
def _category_ranges(category: Any) -> tuple[tuple[int, int], ...]:
    """The characters of `\\d` `\\s` `\\w` (or their negations) exactly as Python's `re` reads them, as ranges.

    Python's engine itself decides each code point: with no flag but UNICODE a category is a test of
    one character alone, so one scan of a string of every code point, in order, gives the ranges.
    Surrogates are left out: no polars string holds one.
    """
    escape, negated = _CATEGORIES[category]
    ranges = [(m.start(), m.end() - 1) for m in re.finditer(f"{escape}+", _every_character())]
    if negated:
        ranges = _complement(ranges)
    return tuple(piece for r in ranges for piece in _without_surrogates(r))


@lru_cache(maxsize=1)
def _every_character() -> str:
    """Every code point in order, so that a character's index in the string is its code point.

    Decoded from UTF-32 in one go: ten times faster than joining 1.1M one-character strings.
    """
    return np.arange(sys.maxunicode + 1, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    gaps, start = [], 0
    for low, high in ranges:
        if low > start:
            gaps.append((start, low - 1))
        start = high + 1
    if start <= sys.maxunicode:
        gaps.append((start, sys.maxunicode))
    return gaps


def _without_surrogates(span: tuple[int, int]) -> list[tuple[int, int]]:
    low, high = span
    pieces = [(low, min(high, _SURROGATES[0] - 1)), (max(low, _SURROGATES[1] + 1), high)]
    return [(a, b) for a, b in pieces if a <= b]


def _char(code: int) -> str:
    if _SURROGATES[0] <= code <= _SURROGATES[1]:  # in no polars string, and no character in Rust's syntax
        raise _NotProvable
    char = chr(code)
    return char if char in _ASCII_ALNUM else f"\\x{{{code:X}}}"


def full_match_expr(patterns: Sequence[str], values: pl.Expr, where: pl.Expr | None = None) -> pl.Expr:
    """Whether some pattern fully matches each value, with Python's `re.fullmatch` semantics.

    Provable patterns run on polars; the others on Python's `re`, over the distinct values only,
    mapped back with `is_in`. `where` marks the rows the caller will read: patterns that run on `re`
    skip the others (and say False there), so that they see as few distinct values as possible.
    """
    hit: pl.Expr | None = None
    python: list[str] = []
    for pattern in patterns:
        rust = rust_fullmatch(pattern)
        if rust is None:
            python.append(pattern)
        else:
            matched = values.str.contains(rust)
            hit = matched if hit is None else hit | matched
    if python:
        selected = values if where is None else pl.when(where).then(values)
        matched = selected.map_batches(_python_fullmatch(python), return_dtype=pl.Boolean)
        hit = matched if hit is None else hit | matched
    return pl.lit(False) if hit is None else hit


def _python_fullmatch(patterns: Sequence[str]) -> Callable[[pl.Series], pl.Series]:
    compiled = [re.compile(p) for p in patterns]

    def blocked(values: pl.Series) -> pl.Series:
        distinct = values.drop_nulls().unique()
        hits = [v for v in distinct if any(c.fullmatch(v) for c in compiled)]
        return values.is_in(pl.Series(hits, dtype=pl.String).implode()).fill_null(False)

    return blocked
