"""Hypothesis strategies for Python regular expressions and the values to match them against.

The patterns are built from the constructs where Python's `re` and Rust's regex engine disagree, or
could: Unicode word characters, digits and spaces, combining marks, `&&` and `[[:digit:]]` inside a
class, `$` before a final newline, case (literals and `(?i)`), anchors, classes, repeats, groups,
alternation, and constructs only Python has (back-references, look-arounds, atomic groups).
"""

from __future__ import annotations

import re
import warnings

import pytest
from hypothesis import strategies as st

quiet = pytest.mark.filterwarnings("ignore:Possible (nested set|set intersection|set difference):FutureWarning")
"""Python warns that '[[' and '&&' in a class may change meaning in a future version; here they are meant."""

ALPHABET = (
    "a",
    "b",
    "c",
    "x",
    "A",
    "X",
    "K",
    "k",
    "\u212a",  # Kelvin sign: a case variant of k for Python's (?i)
    "_",
    "0",
    "1",
    "3",
    "\u0663",  # Arabic-Indic three: a decimal digit
    "\u00b2",  # superscript two: a word character in Python, not in Rust
    "\u00e9",
    "e",
    "\u0301",  # combining acute: a word character in Rust, not in Python
    "\u00df",
    "&",
    ":",
    "[",
    "]",
    "-",
    ".",
    "@",
    " ",
    "\u00a0",
    "\x1c",  # a space for Python's \s, not for Rust's
    "\n",
    "\r",
)
"""Characters of the generated values (and, escaped or not, of the patterns)."""

_LITERALS = [
    "a",
    "b",
    "c",
    "x",
    "A",
    "X",
    "k",
    "K",
    "_",
    "1",
    "3",
    "&",
    ":",
    "-",
    "@",
    " ",
    "\u00e9",
    "\u00b2",
    "e\u0301",
    "\u0301",
    "\u00df",
    "\u212a",
    "\u0663",
    r"\.",
    r"\$",
    r"\^",
    r"\[",
    r"\]",
    r"\\",
    r"\n",
    "\n",
    r"\x1c",
    r"\u00e9",
    r"\-",
]
_ESCAPES = [".", r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", "^", "$", r"\A", r"\Z"]
_CLASS_ITEMS = [
    "a-c",
    "&&",
    "[:digit:]",
    "b",
    "x",
    "X",
    "k",
    "-",
    ":",
    "&",
    "0-9",
    "\u00e9",
    "\u00b2",
    "\u0300-\u036f",
    r"\d",
    r"\w",
    r"\s",
    r"\W",
    r"\D",
    r"\S",
    r"\]",
    r"\n",
    "^",
    "[",
]
_QUANTIFIERS = ["*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{,2}", "{2,}", "{0}", "{1,3}?"]
_GROUPS = ["({})", "(?:{})"]

_PYTHON_ONLY_ESCAPES = [r"\b", r"\B"]
_PYTHON_ONLY_QUANTIFIERS = ["*+", "++", "?+"]
_PYTHON_ONLY_GROUPS = ["(?i:{})", "(?s:{})", "(?>{})", "(?={})", "(?!{})"]
_PYTHON_ONLY_PREFIXES = ["(?i)", "(?s)", "(?m)", "(?a)", "(?x)"]


def _compiles(pattern: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


def _patterns(with_python_only: bool) -> st.SearchStrategy[str]:
    escapes = _ESCAPES + (_PYTHON_ONLY_ESCAPES if with_python_only else [])
    quantifiers = _QUANTIFIERS + (_PYTHON_ONLY_QUANTIFIERS if with_python_only else [])
    groups = _GROUPS + (_PYTHON_ONLY_GROUPS if with_python_only else [])
    prefixes = [""] * 5 + (_PYTHON_ONLY_PREFIXES if with_python_only else [])
    atoms = st.one_of(
        st.sampled_from(_LITERALS),
        st.sampled_from(escapes),
        st.builds(
            lambda negate, items: "[" + ("^" if negate else "") + "".join(items) + "]",
            st.booleans(),
            st.lists(st.sampled_from(_CLASS_ITEMS), min_size=1, max_size=4),
        ),
    )

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        options = [
            st.lists(inner, min_size=2, max_size=4).map("".join),
            st.lists(inner, min_size=2, max_size=3).map("|".join),
            st.tuples(inner, st.sampled_from(quantifiers)).map("".join),
            st.tuples(st.sampled_from(groups), inner).map(lambda t: t[0].format(t[1])),
        ]
        if with_python_only:
            options.append(st.tuples(st.just("(a)"), inner, st.just(r"\1")).map("".join))
        return st.one_of(options)

    tree = st.recursive(atoms, extend, max_leaves=8)
    return st.tuples(st.sampled_from(prefixes), tree).map("".join).filter(_compiles)


patterns = _patterns(with_python_only=True)
"""Valid Python regular expressions over all the constructs above."""

whitelist_patterns = _patterns(with_python_only=False)
"""The same without the constructs only Python's `re` has (flags, back-references, look-arounds,
atomic groups, possessive repeats, word boundaries): most of these run on polars."""


def values_for(pattern: str) -> st.SearchStrategy[str]:
    """Values to match against `pattern`: random text of the alphabet, and strings the pattern matches."""
    random_text = st.text(alphabet=ALPHABET, max_size=8)
    matching = st.from_regex(pattern, fullmatch=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matching.validate()
    except Exception:  # from_regex refuses some patterns (a class no character fits, say)
        return random_text
    return st.one_of(random_text, matching.filter(lambda v: len(v) <= 40))
