"""The check stage: one row per check code from the case file, precedence, trimming, normalisation."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

import regex_strategies
from conftest import ROOT
from pipeline.catalog import error_codes
from pipeline.config import CARD, BlockedValues, OrgConfig, load_config
from pipeline.engine.check import (
    CHECKED_COLUMNS,
    ERRORS_SCHEMA,
    build_rules,
    build_schema,
    check_requests,
    prepare_fields,
)
from pipeline.values.normalize import WHITESPACE
from reference_rules import format_error, normalize_value

CASES = ROOT / "tests" / "cases"
CONFIG = load_config(ROOT / "tests" / "cases" / "org-plain.toml")
REQUEST_COLUMNS = (
    "row_id",
    "customer_id",
    "lookup_type",
    "lookup_value",
    "source",
    "account_id",
    "action",
    "id_type",
    "id_value",
    "series_id",
    "status_label",
)


def request_frame(rows: Sequence[Mapping[str, str | None]], file: str = "t.csv") -> pl.DataFrame:
    """A frame shaped like read.py's: seq, file, row_number, then the 11 request columns as raw text (and the
    value a call line's replace removes, when a row gives one)."""
    columns = (*REQUEST_COLUMNS, "replaces") if any("replaces" in row for row in rows) else REQUEST_COLUMNS
    return pl.DataFrame(
        {
            "seq": list(range(len(rows))),
            "file": [file] * len(rows),
            "row_number": list(range(1, len(rows) + 1)),
            **{name: [row.get(name) for row in rows] for name in columns},
        },
        schema={
            "seq": pl.Int64,
            "file": pl.String,
            "row_number": pl.Int64,
            **dict.fromkeys(columns, pl.String),
        },
    )


def case_frame() -> pl.DataFrame:
    raw = pl.read_csv(CASES / "check_codes.csv", infer_schema=False)
    return raw.select(
        pl.int_range(0, raw.height, dtype=pl.Int64).alias("seq"),
        pl.lit("check_codes.csv").alias("file"),
        pl.int_range(1, raw.height + 1, dtype=pl.Int64).alias("row_number"),
        *REQUEST_COLUMNS,
    )


def outcomes(frame: pl.DataFrame, config: OrgConfig = CONFIG) -> list[tuple[int, int, str]]:
    """(row_number, error_code, error_field) of every failed row, in row order."""
    errors = check_requests(frame, config).errors
    return [
        tuple(r)
        for r in errors.join(frame.select("seq", "row_number"), on="seq")
        .sort("seq")
        .select("row_number", "error_code", "error_field")
        .iter_rows()
    ]


def one(**fields: str | None) -> tuple[int, str] | None:
    """The (code, field) of a single row, or None when it passes."""
    found = outcomes(request_frame([fields]))
    return (found[0][1], found[0][2]) if found else None


CARD_ADD = {
    "customer_id": "1001",
    "source": "INSTORE",
    "action": "add",
    "id_type": "cardnumber",
    "id_value": "GLD0000000001",
    "series_id": "101",
    "status_label": "Active",
}
MOBILE_ADD = {
    "customer_id": "1001",
    "source": "INSTORE",
    "action": "add",
    "id_type": "mobile",
    "id_value": "13800138000",
}


def test_case_file_matches_expected_codes():
    expected = pl.read_csv(CASES / "check_codes_expected.csv", infer_schema=False)
    wanted = [(int(r), int(c), f) for r, c, f in expected.select("row_number", "error_code", "error_field").iter_rows()]
    assert outcomes(case_frame()) == wanted


def test_case_file_covers_every_check_code():
    expected = pl.read_csv(CASES / "check_codes_expected.csv", infer_schema=False)
    covered = {int(code) for code in expected["error_code"]}
    assert covered == set(error_codes("check"))
    pairs = set(expected.select("error_code", "error_field").iter_rows())
    for pair in [
        ("7001", "action"),
        ("7001", "source"),
        ("7001", "customer_id"),
        ("7001", "id_type"),
        ("7001", "id_value"),
        ("7004", "id_type"),
        ("7004", "lookup_type"),
    ]:
        assert pair in pairs


def test_every_row_lands_once():
    frame = case_frame()
    result = check_requests(frame, CONFIG)
    seqs = result.checked["seq"].to_list() + result.errors["seq"].to_list()
    assert sorted(seqs) == frame["seq"].to_list()
    assert result.errors.schema == pl.Schema(ERRORS_SCHEMA)
    assert result.errors["seq"].is_unique().all()
    assert tuple(result.checked.columns) == CHECKED_COLUMNS


def test_checked_rows_are_typed_and_normalised():
    frame = request_frame(
        [
            {
                "row_id": "  r1 ",
                "customer_id": "0042",
                "source": "INSTORE",
                "action": " ADD ",
                "id_type": "mobile",
                "id_value": " +86 (138) 0013-8000 ",
            },
            {
                "row_id": "",
                "lookup_type": "email",
                "lookup_value": " Ann@Example.COM ",
                "source": "WECHAT",
                "account_id": " WX-MAIN ",
                "action": "Remove",
                "id_type": "email",
                "id_value": "Bob@EXAMPLE.com",
            },
            {
                "lookup_type": "mobile",
                "lookup_value": "0086 138.0013.8001",
                "source": "MOBILE_APP",
                "action": "add",
                "id_type": "cardnumber",
                "id_value": " SLV12345678X ",
                "series_id": " 102 ",
                "status_label": " Issued ",
            },
            {
                "customer_id": "7",
                "source": "INSTORE",
                "action": "Replace",
                "id_type": "email",
                "id_value": " New@X.com ",
                "replaces": " Old@X.COM ",
            },
        ]
    )
    result = check_requests(frame, CONFIG)
    assert result.errors.height == 0
    internal = ("source_column", "lookup_source", "lookup_account_id", "series_from_number")  # null: a long file
    assert all(result.checked.get_column(name).is_null().all() for name in internal)
    assert result.checked.drop("seq", "file", "row_number", *internal).rows(named=True) == [
        {
            "row_id": "r1",
            "customer_id": 42,
            "lookup_type": None,
            "lookup_value": None,
            "source": "INSTORE",
            "account_id": "",
            "action": "add",
            "id_type": "mobile",
            "id_value": "8613800138000",
            "series_id": None,
            "status_label": None,
            "replaces": None,
        },
        {
            "row_id": None,
            "customer_id": None,
            "lookup_type": "email",
            "lookup_value": "ann@example.com",
            "source": "WECHAT",
            "account_id": "WX-MAIN",
            "action": "remove",
            "id_type": "email",
            "id_value": "bob@example.com",
            "series_id": None,
            "status_label": None,
            "replaces": None,
        },
        {
            "row_id": None,
            "customer_id": None,
            "lookup_type": "mobile",
            "lookup_value": "8613800138001",
            "source": "MOBILE_APP",
            "account_id": "",
            "action": "add",
            "id_type": "cardnumber",
            "id_value": "SLV12345678X",
            "series_id": 102,
            "status_label": "Issued",
            "replaces": None,
        },
        {
            "row_id": None,
            "customer_id": 7,
            "lookup_type": None,
            "lookup_value": None,
            "source": "INSTORE",
            "account_id": "",
            "action": "replace",
            "id_type": "email",
            "id_value": "new@x.com",
            "series_id": None,
            "status_label": None,
            "replaces": "old@x.com",
        },
    ]
    assert result.checked.schema["customer_id"] == pl.Int64
    assert result.checked.schema["series_id"] == pl.Int64


def test_missing_columns_are_empty_fields():
    frame = request_frame(
        [{"customer_id": "7", "source": "LINE", "action": "add", "id_type": "line", "id_value": "U1"}]
    )
    assert frame["lookup_type"].is_null().all() and frame["row_id"].is_null().all()
    result = check_requests(frame, CONFIG)
    assert result.errors.height == 0 and result.checked["account_id"].to_list() == [""]


@pytest.mark.parametrize("space", sorted(set(WHITESPACE)))
def test_every_unicode_white_space_is_trimmed(space: str):
    row = {k: f"{space}{v}{space}" for k, v in MOBILE_ADD.items()}
    result = check_requests(request_frame([row]), CONFIG)
    assert result.errors.height == 0
    assert result.checked.select("customer_id", "source", "action", "id_value").row(0) == (
        1001,
        "INSTORE",
        "add",
        "13800138000",
    )


def test_white_space_only_is_empty():
    assert one(**{**MOBILE_ADD, "action": "\u3000\u00a0"}) == (7001, "action")
    assert one(**{**MOBILE_ADD, "id_value": "\u2003"}) == (7001, "id_value")


@pytest.mark.parametrize(
    ("customer_id", "outcome"),
    [
        ("0", (7001, "customer_id")),
        ("1", None),
        ("0001", None),
        (str(2**63 - 1), None),
        (str(2**63), (7001, "customer_id")),
        ("99999999999999999999999", (7001, "customer_id")),
        ("12a", (7001, "customer_id")),
        ("-1", (7001, "customer_id")),
        ("+1", (7001, "customer_id")),
        ("1.0", (7001, "customer_id")),
        ("\uff11", (7001, "customer_id")),
    ],
)
def test_customer_id_bounds(customer_id: str, outcome):
    assert one(**{**MOBILE_ADD, "customer_id": customer_id}) == outcome


def test_customer_id_value_is_parsed():
    frame = request_frame([{**MOBILE_ADD, "customer_id": cid} for cid in ("0001", str(2**63 - 1))])
    assert check_requests(frame, CONFIG).checked["customer_id"].to_list() == [1, 2**63 - 1]


def test_precedence_follows_field_order():
    everything_wrong = {
        "customer_id": "x",
        "lookup_type": "nope",
        "source": "NOPE",
        "account_id": "A",
        "action": "zap",
        "id_type": "",
        "id_value": "",
        "series_id": "abc",
        "status_label": "Nope",
    }
    # (what is reported, then the fix that uncovers the next problem)
    steps: list[tuple[tuple[int, str] | None, str | None, str | None]] = [
        ((7002, "action"), "action", "add"),
        ((8003, "source"), "source", "WECHAT"),
        ((8127, "account_id"), "account_id", "WX-MAIN"),
        ((7003, "customer_id"), "lookup_type", ""),
        ((7001, "customer_id"), "customer_id", "5"),
        ((7001, "id_type"), "id_type", "cardnumber"),
        ((7001, "id_value"), "id_value", "GLD1"),
        ((3004, "series_id"), "series_id", "101"),
        ((7001, "id_value"), "id_value", "GLD0000000001"),
        ((8086, "status_label"), "status_label", "Active"),
        (None, None, None),
    ]
    row: dict[str, str | None] = dict(everything_wrong)
    for expected, name, value in steps:
        assert one(**row) == expected, row
        if name is not None:
            row[name] = value


def test_message_lists_the_other_problems():
    frame = request_frame(
        [
            {
                "customer_id": "1",
                "source": "INSTORE",
                "action": "add",
                "id_type": "email",
                "id_value": "bad",
                "status_label": "Gold",
            }
        ]
    )
    message = check_requests(frame, CONFIG).errors["error_message"][0]
    assert message.startswith("'bad' is not a valid email")
    assert "status_label 'Gold'" in message


def test_a_replace_is_checked_as_an_add_and_never_on_a_card():
    """A replace's value enters the store (format and blocked rules apply); on a card row it is 7002 on action,
    found after id_type's own checks and before id_value's."""
    assert one(**{**MOBILE_ADD, "action": " REPLACE "}) is None
    assert one(**{**MOBILE_ADD, "action": "replace", "id_type": "email", "id_value": "bad"}) == (8055, "id_value")
    assert one(**{**MOBILE_ADD, "action": "replace", "id_type": "email", "id_value": "Test@Test.com"}) == (
        7005,
        "id_value",
    )
    card = {**CARD_ADD, "action": "Replace", "id_value": "", "series_id": "abc", "status_label": "Nope"}
    assert one(**card) == (7002, "action")
    assert one(**{**card, "id_type": ""}) == (7001, "id_type")
    assert one(**{**card, "source": "LINE", "id_type": "email"}) == (7004, "id_type")
    assert one(**{**card, "customer_id": "x"}) == (7001, "customer_id")
    message = check_requests(request_frame([card]), CONFIG).errors["error_message"][0]
    assert message.startswith("action 'Replace' is not for cards")


def test_format_and_blocked_rules_apply_to_adds_only():
    for value in ("bad", "test@test.com", "NOREPLY@x.org"):
        assert one(**{**MOBILE_ADD, "id_type": "email", "id_value": value, "action": "remove"}) is None
    assert one(**{**MOBILE_ADD, "id_type": "email", "id_value": "Test@Test.com"}) == (7005, "id_value")
    assert one(**{**MOBILE_ADD, "id_value": "00 0000 0000"}) == (7005, "id_value")
    assert one(**{**MOBILE_ADD, "id_type": "externalId", "id_value": "N/A"}) == (7005, "id_value")
    assert one(**{**MOBILE_ADD, "id_type": "externalId", "id_value": "n/a"}) is None


def test_lookup_value_is_not_format_checked():
    row = {
        "lookup_type": "email",
        "lookup_value": "not an email",
        "source": "INSTORE",
        "action": "add",
        "id_type": "mobile",
        "id_value": "13800138000",
    }
    assert one(**row) is None
    assert one(**{**row, "lookup_type": "cardnumber", "lookup_value": "anything"}) is None


def test_card_rules():
    assert one(**CARD_ADD) is None
    assert one(**{**CARD_ADD, "series_id": "0101"}) is None
    assert one(**{**CARD_ADD, "series_id": "101.0"}) == (3004, "series_id")
    assert one(**{**CARD_ADD, "id_value": "SLV12345678X", "series_id": "102"}) is None
    assert one(**{**CARD_ADD, "id_value": "SLV1234567X", "series_id": "102"}) == (7001, "id_value")
    assert one(**{**CARD_ADD, "id_value": "P-anything at all", "series_id": "103"}) is None
    assert one(**{**CARD_ADD, "id_value": "X-1", "series_id": "103"}) == (7001, "id_value")
    assert one(**{**CARD_ADD, "status_label": "Issued"}) is None
    assert one(**{**CARD_ADD, "status_label": "Not Issued"}) == (7011, "status_label")
    delink = {**CARD_ADD, "action": "remove", "series_id": "", "status_label": ""}
    assert one(**delink) is None
    assert one(**{**delink, "id_value": "whatever"}) is None
    assert one(**{**delink, "status_label": "Not Issued"}) is None
    assert one(**{**delink, "status_label": "Expired"}) == (7011, "status_label")
    assert one(**{**MOBILE_ADD, "series_id": "999"}) == (3004, "series_id")
    assert one(**{**MOBILE_ADD, "series_id": "101", "status_label": "Active"}) is None


def test_cardnumber_is_accepted_by_every_source():
    for source in CONFIG.sources:
        account = CONFIG.sources[source].accounts[0] if CONFIG.sources[source].accounts else ""
        assert one(**{**CARD_ADD, "source": source, "account_id": account}) is None


def test_schema_checks_carry_codes_and_fields():
    schema = build_schema(CONFIG)
    carried = {
        check.error.split("|")[0] + "|" + name for name, column in schema.columns.items() for check in column.checks
    }
    codes = {int(entry.split("|")[0]) for entry in carried}
    assert codes == set(error_codes("check"))
    assert {"7003|customer_id", "7004|lookup_type", "7004|id_type", "8127|account_id", "7005|id_value"} <= carried
    for name, column in schema.columns.items():
        assert all(check.error.split("|")[1] == name for check in column.checks)


def test_error_code_travels_through_pandera():
    fields = prepare_fields(request_frame([MOBILE_ADD, {**MOBILE_ADD, "id_type": "email", "id_value": "x"}]))
    with pytest.raises(SchemaErrors) as raised:
        build_schema(CONFIG).validate(fields, lazy=True)
    cases = raised.value.failure_cases
    assert cases.select("column", "check", "index").rows() == [("id_value", "8055|id_value|id_value.email", 1)]


def test_rules_are_null_safe():
    """A rule must decide every row: a null result would pass silently in Pandera."""
    rows = case_frame()
    fields = prepare_fields(rows)
    results = fields.select(rule.ok.alias(rule.key) for rule in build_rules(CONFIG))
    assert results.null_count().row(0) == (0,) * results.width


def test_empty_frame():
    result = check_requests(request_frame([]), CONFIG)
    assert result.checked.height == 0 and result.errors.height == 0
    assert tuple(result.checked.columns) == CHECKED_COLUMNS


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["mobile", "email", "externalId", "cuid"]),
            st.one_of(
                st.text(max_size=20),
                st.sampled_from(
                    [
                        "1234567890",
                        "+00 000",
                        "test@test.com",
                        "noreply@a.b",
                        "N/A",
                        "a@b.c",
                        "+86 138 0013 8000",
                        " x\u0085",
                        "a" * 129,
                    ]
                ),
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_value_rules_match_the_python_definitions(values):
    """The vectorised format and blocked rules agree with reference_rules.py and config.is_blocked."""
    rows = [
        {"customer_id": "1", "source": "MOBILE_APP", "action": "add", "id_type": t, "id_value": v} for t, v in values
    ]
    got = {row: code for row, code, _ in outcomes(request_frame(rows))}
    for number, (id_type, raw) in enumerate(values, 1):
        value = normalize_value(id_type, raw.strip())
        expected: int | None
        if not raw.strip():
            expected = 7001
        else:
            expected = format_error(id_type, value) or (7005 if CONFIG.is_blocked(id_type, value) else None)
        assert got.get(number) == expected, (id_type, raw)


def test_python_only_blocked_pattern(tmp_path: Path):
    """A pattern polars' regex engine refuses (a look-ahead) still blocks with Python's semantics."""
    text = (ROOT / "tests" / "cases" / "org-plain.toml").read_text(encoding="utf-8")
    text = text.replace('exact = ["N/A", "null"]\npatterns = []', 'exact = ["N/A", "null"]\npatterns = ["(?!EXT-).*"]')
    path = tmp_path / "org.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    frame = request_frame([{**MOBILE_ADD, "id_type": "externalId", "id_value": v} for v in ("EXT-1", "OTHER")])
    result = check_requests(frame, config)
    assert result.errors.select("seq", "error_code").rows() == [(1, 7005)]


def test_the_pandera_schema_runs_its_data_checks_on_polars_frames():
    """Pandera's polars backend: every data check runs on eager and lazy frames alike (at the stage's
    validation depth), and failures come back as a polars frame naming row position and our code."""
    fields = prepare_fields(request_frame([MOBILE_ADD, {**MOBILE_ADD, "id_value": "12-34"}]))
    schema = build_schema(CONFIG)
    for validate in (lambda: schema.validate(fields, lazy=True), lambda: schema.validate(fields.lazy(), lazy=True)):
        with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA), pytest.raises(SchemaErrors) as raised:
            validate()
        cases = raised.value.failure_cases
        assert isinstance(cases, pl.DataFrame)
        assert cases.select("check", "index").rows() == [("8056|id_value|id_value.mobile", 1)]


def test_the_direct_evaluation_equals_pandera_on_the_case_file_and_random_batches():
    """The emulator checks one call's rows with `direct=True`: the same rules, the same results."""
    from pipeline.config import parse_config
    from test_engine_properties import BASE_CONFIG

    frame = case_frame()
    via_pandera, direct = check_requests(frame, CONFIG), check_requests(frame, CONFIG, direct=True)
    assert direct.errors.height > 0
    assert direct.errors.rows() == via_pandera.errors.rows()
    assert direct.checked.rows() == via_pandera.checked.rows()
    hostile = ROOT / "tests" / "cases" / "hostile"
    config = parse_config(BASE_CONFIG)
    for path in sorted(hostile.glob("*.csv")):
        try:
            from pipeline.input.read import read_requests

            raw = read_requests([path]).frame
        except Exception:
            continue
        for cfg in (CONFIG, config):
            a, b = check_requests(raw, cfg), check_requests(raw, cfg, direct=True)
            assert (a.errors.rows(), a.checked.rows()) == (b.errors.rows(), b.checked.rows()), path


def _random_batches():
    from test_engine_properties import request_rows

    return st.lists(request_rows(), min_size=1, max_size=20)


@settings(max_examples=30, deadline=None)
@given(_random_batches())
def test_the_direct_evaluation_equals_pandera_on_random_rows(rows):
    from engine_harness import raw_frame
    from pipeline.config import parse_config
    from test_engine_properties import BASE_CONFIG

    config = parse_config(BASE_CONFIG)
    a, b = check_requests(raw_frame(rows), config), check_requests(raw_frame(rows), config, direct=True)
    assert (a.errors.rows(), a.checked.rows()) == (b.errors.rows(), b.checked.rows())


def _with_patterns(tmp_path: Path, patterns: list[str]) -> OrgConfig:
    """The sample org config with externalId's blocked patterns replaced, written as TOML and loaded."""
    text = (ROOT / "sample_data" / "org.toml").read_text(encoding="utf-8")
    listed = ", ".join("'" + p + "'" for p in patterns)  # TOML literal strings: no escapes
    text = text.replace('exact = ["N/A", "null"]\npatterns = []', f'exact = ["N/A", "null"]\npatterns = [{listed}]')
    path = tmp_path / "org.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@regex_strategies.quiet
@pytest.mark.parametrize(
    ("pattern", "value", "blocked"),
    [
        (r"\w+", "x\u00b2", True),  # superscript two is a word character for Python
        (r"\w+", "e\u0301", False),  # a combining mark is not
        (r"[a-c&&b]x", "cx", True),  # '&&' is two ampersands in a Python class, not an intersection
        (r"^[[:digit:]]+$", "123", False),  # '[[:digit:]]' is the class '[:digt' then ']', not a POSIX class
    ],
)
def test_blocked_patterns_are_read_as_python_reads_them(tmp_path: Path, pattern, value, blocked):
    """SPEC section 7: a pattern blocks exactly the values Python's re.fullmatch matches (issue 10's cases)."""
    config = _with_patterns(tmp_path, [pattern])
    frame = request_frame([{**MOBILE_ADD, "id_type": "externalId", "id_value": value}])
    codes = check_requests(frame, config).errors.get_column("error_code").to_list()
    assert codes == ([7005] if blocked else [])


SPREADSHEET_CHANGED = re.compile(r"[+-]?[0-9]+([.,][0-9]*)?[eE][+-]?[0-9]+")
"""A number in scientific notation, as a spreadsheet writes a long number (`9.19972E+11`): a card number written so
is malformed (7001), whatever else its value is."""


@pytest.mark.slow
@regex_strategies.quiet
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.data(), regex_strategies.patterns | regex_strategies.whitelist_patterns)
def test_blocked_patterns_match_as_re_fullmatch(data, pattern):
    """The check stage blocks a card add exactly when re.fullmatch(pattern, trimmed value) matches.

    Card numbers are not normalised and, without a series, fit no format rule, so any trimmed value a spreadsheet
    did not change reaches the blocked rule: 7005 when blocked, else 3004 (no series) or 7001 (empty). A card
    number in scientific notation (`0e0`) is one a spreadsheet changed: 7001 before any other check of its value.
    """
    values = data.draw(st.lists(regex_strategies.values_for(pattern), min_size=1, max_size=10), label="values")
    config = dataclasses.replace(CONFIG, blocked_values={CARD: BlockedValues(frozenset(), (pattern,))})
    rows = [{**CARD_ADD, "id_value": v, "series_id": "", "status_label": ""} for v in values]
    codes = {row: code for row, code, _ in outcomes(request_frame(rows), config)}
    for number, value in enumerate(values, 1):
        trimmed = value.strip()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = re.fullmatch(pattern, trimmed) is not None
        if SPREADSHEET_CHANGED.fullmatch(trimmed):
            assert codes.get(number) == 7001, (pattern, value, codes.get(number))
            continue
        assert (codes.get(number) == 7005) is (expected and trimmed != ""), (pattern, value, codes.get(number))
