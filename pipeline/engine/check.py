"""The check stage (SPEC section 3 step 1): each row on its own, against the org config.

The rules are Pandera checks (polars backend) on a frame of trimmed and normalised fields. Every
check carries our error code and field in `Check(error=...)`, so Pandera's lazy `failure_cases`
maps back to rows by position; of a row's failures the first by field precedence is reported and
the others are listed in its message.

Decisions where SPEC is silent:
- Emptiness is judged on the trimmed value, formats and blocked lists on the normalised one: a
  mobile add of "()" is 8056 (malformed), not 7001 (missing).
- customer_id and series_id may carry leading zeros ('0001' is customer 1, '0101' is series 101);
  any other form (sign, decimal point, non-ASCII digits) is 7001 / 3004.
- A series_id or status_label on a row that is not a card add must still be known (3004 / 8086);
  otherwise it is ignored, except a delink's label, which must map to NOT_ISSUED (7011).
- With an unknown source, id_type and lookup_type are judged against all known types, so the
  message's list of other problems does not blame a type only because the source is wrong.
- Blocked patterns are Python regular expressions matched as `re.fullmatch` (SPEC section 7); they
  run on polars' regex engine only when rewritten from Python's own reading of them, and otherwise
  on Python's `re` over the distinct values of their type (patterns.py).
- A wide file's operation whose lookup has a scope of its own (lookup_source, input/columns.py) has its
  lookup_type judged against the lookup's source, not the operation's; its empty customer reference is 7003
  saying the line has none. A card add whose series was to be found from its number (SERIES_FROM_NUMBER) and
  fits no single series is 3004 saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from pipeline.catalog import CATALOG
from pipeline.config import CARD, ID_TYPES, LINKABLE_STATUSES, OrgConfig
from pipeline.errors import InternalError
from pipeline.input.columns import (
    FRAME_COLUMNS,
    LOOKUP_SCOPE_COLUMNS,
    REPLACES_COLUMN,
    SERIES_FROM_NUMBER,
    SOURCE_COLUMN,
)
from pipeline.values.mobile import with_countries
from pipeline.values.normalize import WHITESPACE, format_error_expr, normalize_expr, trim_expr
from pipeline.values.patterns import full_match_expr
from pipeline.values.spreadsheet import damage_expr, damage_message_expr, written_expr

FIELDS = (
    "action",
    "source",
    "account_id",
    "customer_id",
    "lookup_type",
    "lookup_value",
    "id_type",
    "id_value",
    "series_id",
    "status_label",
)
"""The fields whose rules are checked, in the order of SPEC section 3 step 1 (reporting precedence)."""

CHECKED_COLUMNS = FRAME_COLUMNS
"""The checked rows keep the batch frame's columns, typed and normalised."""
ERRORS_SCHEMA = pl.Schema(
    {"seq": pl.Int64, "error_code": pl.Int32, "error_field": pl.String, "error_message": pl.String}
)

MAX_CUSTOMER_ID = 2**63 - 1
_DIGITS = r"^[0-9]+$"
MOBILE = "mobile"
_DAMAGEABLE = ("customer_id", "lookup_value", "id_value")
"""The fields a spreadsheet's number damage is looked for in (values/spreadsheet.py): prepare_fields gives each
a boolean `<name>_damaged`, computed once because several rules read it."""
_SEP = "\x1f"
_CARRIED = (SOURCE_COLUMN, *LOOKUP_SCOPE_COLUMNS, SERIES_FROM_NUMBER)
"""Internal columns the checked rows carry as read: the reports, resolve and the messages read them."""


@dataclass(frozen=True)
class CheckResult:
    checked: pl.DataFrame
    """Rows that passed, typed and normalised (columns CHECKED_COLUMNS)."""
    errors: pl.DataFrame
    """One row per failed input row: seq, error_code, error_field, error_message."""


@dataclass(frozen=True)
class Rule:
    """One check of one field: `ok` is true for a row that passes; `message` explains a failure."""

    key: str
    code: int
    field: str
    ok: pl.Expr
    message: pl.Expr

    @property
    def error(self) -> str:
        """The identifier Pandera reports in failure_cases' `check` column: code, field, rule."""
        return f"{self.code}|{self.field}|{self.key}"


def check_requests(
    frame: pl.DataFrame, config: OrgConfig, direct: bool = False, rules: list[Rule] | None = None
) -> CheckResult:
    """Check request rows (read.py's frame shape) and split them into checked rows and errors.

    `direct` evaluates the same rules in one polars select instead of through Pandera: Pandera's fixed
    cost (one collect per check, ~100 of them) dominates for the few rows of one API call, so the
    emulator checks that way; tests/test_check.py holds both evaluations equal. `rules` (build_rules of
    the same config) saves building them again for every call.
    """
    fields = prepare_fields(frame, config)
    rules = rules if rules is not None else build_rules(config)
    failures = _failures_direct(fields, rules) if direct else _failures(fields, rules)
    errors = _first_failures(fields, rules, failures)
    failed = errors.get_column("seq")
    passed = fields.filter(~pl.col("seq").is_in(failed.implode()))
    return CheckResult(checked=_typed(passed), errors=errors)


def prepare_fields(frame: pl.DataFrame, config: OrgConfig | None = None) -> pl.DataFrame:
    """Trim every field ('' for missing) and normalise id_value and lookup_value by their types.

    With `[mobile]` in the config, mobiles are read with its countries (pipeline.values.mobile), and the
    8056 rule is whether the id_value had a valid reading.

    The trimmed id and lookup values are kept beside the normalised ones: emptiness is judged on
    what the caller wrote, formats on the normalised value. The removed value a call line's replace carries
    (REPLACES_COLUMN; null on every other row, and on a frame without the column) is trimmed and normalised
    by the row's id_type, as a remove's value is. `id_value_format` is the code of
    normalize.format_error_expr for the normalised value (null when it fits), computed once here
    because four rules (8055, 8056, 8064, 7001) read it and it is the costliest expression. `customer_id_damaged`,
    `lookup_value_damaged` and `id_value_damaged` say whether the trimmed value looks like a number a spreadsheet
    changed (values/spreadsheet.py), for the same reason.
    """
    # only call lines carry a replace's removed value: a batch without one pays nothing for the column
    replaces = REPLACES_COLUMN in frame.columns and frame.get_column(REPLACES_COLUMN).null_count() < frame.height
    given = pl.col(REPLACES_COLUMN) if replaces else pl.lit(None, dtype=pl.String)
    trimmed = frame.select(
        pl.col("seq").cast(pl.Int64),
        pl.col("file").cast(pl.String),
        pl.col("row_number").cast(pl.Int64),
        *(
            trim_expr(name).alias(name)
            for name in (
                "row_id",
                "action",
                "source",
                "account_id",
                "customer_id",
                "lookup_type",
                "lookup_value",
                "id_type",
                "id_value",
                "series_id",
                "status_label",
            )
        ),
        pl.when(given.is_not_null()).then(given.fill_null("").str.strip_chars(WHITESPACE)).alias(REPLACES_COLUMN),
        *(
            pl.col(name).cast(pl.String) if name in frame.columns else pl.lit(None, dtype=pl.String).alias(name)
            for name in _CARRIED
        ),
    )
    normalised = trimmed.with_columns(
        normalize_expr(pl.col("lookup_type"), pl.col("lookup_value")).alias("lookup_value"),
        normalize_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value"),
        normalize_expr(pl.col("id_type"), pl.col(REPLACES_COLUMN)).alias(REPLACES_COLUMN),
        pl.col("lookup_value").alias("lookup_value_trimmed"),
        pl.col("id_value").alias("id_value_trimmed"),
        pl.col(REPLACES_COLUMN).alias("replaces_trimmed"),
        *(damage_expr(pl.col(name)).is_not_null().alias(f"{name}_damaged") for name in _DAMAGEABLE),
    )
    countries = config.mobile if config is not None else None
    if countries is None:
        return normalised.with_columns(
            format_error_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value_format")
        )
    normalised = with_countries(
        normalised,
        countries,
        [
            ("id_type", "id_value_trimmed", "id_value"),
            ("lookup_type", "lookup_value_trimmed", "lookup_value"),
            *([("id_type", "replaces_trimmed", REPLACES_COLUMN)] if replaces else []),
        ],
    )
    return normalised.with_columns(
        format_error_expr(pl.col("id_type"), pl.col("id_value"), pl.col("id_value_mobile_valid")).alias(
            "id_value_format"
        )
    ).drop("id_value_mobile_valid", "lookup_value_mobile_valid", f"{REPLACES_COLUMN}_mobile_valid", strict=False)


def build_schema(config: OrgConfig) -> pa.DataFrameSchema:
    """The Pandera schema of the prepared fields: one Check per rule, attached to its field."""
    return _schema(build_rules(config))


def _schema(rules: list[Rule]) -> pa.DataFrameSchema:
    by_field: dict[str, list[pa.Check]] = {name: [] for name in FIELDS}
    for rule in rules:
        by_field[rule.field].append(_pandera_check(rule))
    return pa.DataFrameSchema(
        {name: pa.Column(pl.String, checks=checks, nullable=False) for name, checks in by_field.items()},
        strict=False,
        coerce=False,
        name="request_fields",
    )


def _pandera_check(rule: Rule) -> pa.Check:
    # A null check result would count as a pass (TECH_NOTES): rules are total, and fill_null(False)
    # plus ignore_na=False make any null that slips through a failure rather than a silent pass.
    ok = rule.ok.fill_null(False)
    return pa.Check(lambda data: data.lazyframe.select(ok), error=rule.error, name=rule.key, ignore_na=False)


def _failures(fields: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Every (row index, rule) pair that failed, from Pandera's lazy failure cases."""
    empty = pl.DataFrame(schema={"index": pl.Int64, "check": pl.String})
    if fields.height == 0:
        return empty
    with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            _schema(rules).validate(fields, lazy=True)
        except SchemaErrors as exc:
            cases = exc.failure_cases
        else:
            return empty
    known = {rule.error for rule in rules}
    unexpected = cases.filter(pl.col("index").is_null() | ~pl.col("check").is_in(list(known)))
    if unexpected.height:
        raise InternalError(f"the check schema failed outside its rules: {unexpected.head(5).rows()}")
    return cases.select(pl.col("index").cast(pl.Int64), pl.col("check"))


def _failures_direct(fields: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """The (row index, rule) pairs that failed, as `_failures` gives them, from one select of every rule."""
    verdicts = fields.select(rule.ok.fill_null(False).alias(rule.error) for rule in rules)
    return (
        verdicts.with_row_index("index")
        .unpivot(index="index", variable_name="check", value_name="ok")
        .filter(~pl.col("ok"))
        .select(pl.col("index").cast(pl.Int64), "check")
    )


def _first_failures(fields: pl.DataFrame, rules: list[Rule], failures: pl.DataFrame) -> pl.DataFrame:
    """One error per failing row: the first rule by precedence, the others listed in the message."""
    if failures.height == 0:
        return pl.DataFrame(schema=ERRORS_SCHEMA)
    rank = {rule.error: i for i, rule in enumerate(rules)}
    parts = []
    for check, group in failures.group_by("check"):
        rule = rules[rank[check[0]]]
        rows = fields.select(pl.all().gather(group.get_column("index")))
        parts.append(
            rows.select(
                pl.col("seq"),
                pl.lit(rank[rule.error], dtype=pl.Int32).alias("rank"),
                pl.lit(rule.code, dtype=pl.Int32).alias("error_code"),
                pl.lit(rule.field).alias("error_field"),
                rule.message.fill_null("").alias("message"),
            )
        )
    return (
        pl.concat(parts)
        .sort("seq", "rank")
        .group_by("seq", maintain_order=True)
        .agg(
            pl.col("error_code").first(),
            pl.col("error_field").first(),
            pl.col("message").first().alias("first"),
            pl.col("message").slice(1).str.join("; ").alias("others"),
        )
        .select(
            "seq",
            "error_code",
            "error_field",
            pl.when(pl.col("others") == "")
            .then(pl.col("first"))
            .otherwise(pl.format("{} (also: {})", "first", "others"))
            .alias("error_message"),
        )
        .cast(ERRORS_SCHEMA)
    )


def _typed(passed: pl.DataFrame) -> pl.DataFrame:
    """The checked rows in their output types; a reference not used by the row is null."""
    by_id = pl.col("customer_id") != ""
    return passed.select(
        "seq",
        "file",
        "row_number",
        _null_if_empty("row_id"),
        pl.when(by_id).then(pl.col("customer_id").cast(pl.Int64, strict=False)).alias("customer_id"),
        pl.when(~by_id).then(pl.col("lookup_type")).alias("lookup_type"),
        pl.when(~by_id).then(pl.col("lookup_value")).alias("lookup_value"),
        "source",
        "account_id",
        pl.col("action").str.to_lowercase(),
        "id_type",
        "id_value",
        pl.when(pl.col("series_id") != "").then(pl.col("series_id").cast(pl.Int64, strict=False)).alias("series_id"),
        _null_if_empty("status_label"),
        pl.col(REPLACES_COLUMN)
        if passed.get_column(REPLACES_COLUMN).null_count() == passed.height
        else pl.when(pl.col("action").str.to_lowercase() == "replace")
        .then(pl.col(REPLACES_COLUMN))
        .alias(REPLACES_COLUMN),
        SOURCE_COLUMN,
        # a lookup's own scope matters to a row that looks its customer up, and only to it
        *(
            pl.col(name)
            if passed.get_column(name).null_count() == passed.height
            else pl.when(~by_id).then(pl.col(name)).alias(name)
            for name in LOOKUP_SCOPE_COLUMNS
        ),
        SERIES_FROM_NUMBER,
    )


def _null_if_empty(name: str) -> pl.Expr:
    return pl.when(pl.col(name) != "").then(pl.col(name)).alias(name)


def build_rules(config: OrgConfig) -> list[Rule]:
    """All check rules in reporting precedence: field order, then the order within a field."""
    c = pl.col
    action, source, account = c("action"), c("source"), c("account_id")
    customer, lookup_type, lookup_value = c("customer_id"), c("lookup_type"), c("lookup_value_trimmed")
    id_type, id_value, id_value_given = c("id_type"), c("id_value"), c("id_value_trimmed")
    series, label = c("series_id"), c("status_label")

    verb = action.str.to_lowercase()
    is_add, is_remove, is_replace = verb == "add", verb == "remove", verb == "replace"
    card_add, card_remove = is_add & (id_type == CARD), is_remove & (id_type == CARD)
    sources = config.sources
    multi = [name for name, s in sources.items() if s.kind == "multi"]
    single = [name for name, s in sources.items() if s.kind == "single"]
    source_known = source.is_in(list(sources))
    scopes = [_pair(name, acc) for name in multi for acc in sources[name].accounts]
    typed_sources = [_pair(name, t) for name, s in sources.items() for t in s.id_types]

    def accepted(type_expr: pl.Expr, by: pl.Expr = source) -> pl.Expr:
        """cardnumber anywhere; for a known source its types; for an unknown one any known type."""
        return (
            (type_expr == CARD)
            | pl.concat_str(by, pl.lit(_SEP), type_expr).is_in(typed_sources)
            | (~by.is_in(list(sources)) & type_expr.is_in(sorted(ID_TYPES)))
        )

    lookup_source = pl.coalesce(c("lookup_source"), source)  # a wide file's lookup may have a scope of its own

    has_id, has_type, has_value = customer != "", lookup_type != "", lookup_value != ""
    series_number = pl.when(series.str.contains(_DIGITS)).then(series.cast(pl.Int64, strict=False))
    series_known = series_number.is_in(list(config.card_series)).fill_null(False)
    label_status = label.replace_strict(config.card_labels, default=None, return_dtype=pl.String)
    label_known = label.is_in(list(config.card_labels))
    add_value_given = (is_add | is_replace) & (id_value_given != "")  # a replace's value enters the store too
    # a long number a spreadsheet changed (values/spreadsheet.py), in a customer_id, a mobile or a card number: its
    # field's usual code with a message saying so, instead of the field's other rules
    numbered = [MOBILE, CARD]
    customer_damaged = c("customer_id_damaged")
    id_damaged = id_type.is_in(numbered) & c("id_value_damaged")
    mobile_enters_damaged = id_damaged & add_value_given & (id_type == MOBILE)

    def message(code: int, **values: pl.Expr | str) -> pl.Expr:
        return CATALOG[code].message_expr(**values)

    def invalid(field: str, reason: pl.Expr | str) -> pl.Expr:
        return message(7001, field=field, reason=reason)

    return [
        Rule("action.required", 7001, "action", action != "", invalid("action", "missing (add, remove or replace)")),
        Rule(
            "action.known",
            7002,
            "action",
            (action == "") | is_add | is_remove | is_replace,
            message(7002, value=action, reason="is not add, remove or replace"),
        ),
        Rule("source.required", 7001, "source", source != "", invalid("source", "missing")),
        Rule("source.known", 8003, "source", (source == "") | source_known, message(8003, value=source)),
        Rule(
            "account_id.required",
            8045,
            "account_id",
            ~(source.is_in(multi) & (account == "")),
            message(8045, source=source),
        ),
        Rule(
            "account_id.known",
            8127,
            "account_id",
            (account == "")
            | ~source_known
            | (source.is_in(multi) & pl.concat_str(source, pl.lit(_SEP), account).is_in(scopes)),
            pl.concat_str(
                message(8127, value=account, source=source),
                pl.when(source.is_in(single))
                .then(pl.lit(" (a single-account source takes no account_id)"))
                .otherwise(pl.lit("")),
            ),
        ),
        Rule(
            "customer_reference.shape",
            7003,
            "customer_id",
            (has_id & ~has_type & ~has_value) | (~has_id & has_type & has_value),
            message(7003, reason=_reference_problem(has_id, has_type, has_value, c(SOURCE_COLUMN).is_not_null())),
        ),
        Rule(
            "customer_id.spreadsheet",
            7001,
            "customer_id",
            ~customer_damaged,
            invalid("customer_id", damage_message_expr(customer)),
        ),
        Rule(
            "customer_id.form",
            7001,
            "customer_id",
            ~has_id
            | customer_damaged
            | (customer.str.contains(_DIGITS) & (customer.cast(pl.Int64, strict=False) >= 1).fill_null(False)),
            invalid(
                "customer_id",
                pl.format("'{}' is not a customer id (digits only, 1 to {})", customer, pl.lit(str(MAX_CUSTOMER_ID))),
            ),
        ),
        Rule(
            "lookup_type.allowed",
            7004,
            "lookup_type",
            ~has_type | accepted(lookup_type, lookup_source),
            message(7004, field="lookup_type", value=lookup_type, source=lookup_source),
        ),
        Rule("id_type.required", 7001, "id_type", id_type != "", invalid("id_type", "missing")),
        Rule(
            "id_type.allowed",
            7004,
            "id_type",
            (id_type == "") | accepted(id_type),
            message(7004, field="id_type", value=id_type, source=source),
        ),
        Rule(
            "action.replace_card",
            7002,
            "action",
            ~(is_replace & (id_type == CARD)),
            message(7002, value=action, reason="is not for cards (a card is added or removed)"),
        ),
        Rule(
            "lookup_value.spreadsheet",
            7001,
            "lookup_value",
            ~(has_type & lookup_type.is_in(numbered) & c("lookup_value_damaged")),
            invalid("lookup_value", damage_message_expr(lookup_value)),
        ),
        Rule("id_value.required", 7001, "id_value", id_value_given != "", invalid("id_value", "missing")),
        Rule(
            "id_value.spreadsheet_mobile",
            8056,
            "id_value",
            ~mobile_enters_damaged,
            message(8056, value=written_expr(id_value_given), rule=damage_message_expr(id_value_given, pl.lit("it"))),
        ),
        Rule(
            "id_value.spreadsheet",
            7001,
            "id_value",
            ~(id_damaged & ~mobile_enters_damaged),
            invalid("id_value", damage_message_expr(id_value_given)),
        ),
        *_format_rules(id_value, add_value_given & ~id_damaged, message, invalid, _mobile_rule(config)),
        Rule(
            "id_value.card_number",
            7001,
            "id_value",
            ~(card_add & series_known) | id_damaged | _fits_series(config, series_number, id_value),
            invalid("id_value", pl.format("card number '{}' does not fit series {}", id_value, series)),
        ),
        Rule(
            "id_value.blocked",
            7005,
            "id_value",
            ~(add_value_given & _blocked(config, id_type, id_value, add_value_given)),
            message(7005, id_type=id_type, value=id_value),
        ),
        Rule(
            "series_id.required",
            3004,
            "series_id",
            ~(card_add & (series == "")),
            message(
                3004,
                reason=pl.when(c(SERIES_FROM_NUMBER).is_not_null())
                .then(
                    pl.format(
                        "the card number '{}' fits no single configured series, so its series cannot be found "
                        "from it; give series_id",
                        id_value_given,
                    )
                )
                .otherwise(pl.lit("series_id is required when adding a card")),
            ),
        ),
        Rule(
            "series_id.known",
            3004,
            "series_id",
            (series == "") | series_known,
            message(3004, reason=pl.format("series_id '{}' is not a configured card series", series)),
        ),
        Rule(
            "status_label.required",
            8086,
            "status_label",
            ~(card_add & (label == "")),
            message(8086, reason="status_label is required when adding a card"),
        ),
        Rule(
            "status_label.known",
            8086,
            "status_label",
            (label == "") | label_known,
            message(8086, reason=pl.format("status_label '{}' is not a configured card label", label)),
        ),
        Rule(
            "status_label.link",
            7011,
            "status_label",
            ~(card_add & label_known & ~label_status.is_in(sorted(LINKABLE_STATUSES))),
            message(7011, value=label, status=label_status, operation="adding a card (ISSUED or ACTIVE)"),
        ),
        Rule(
            "status_label.delink",
            7011,
            "status_label",
            ~(card_remove & label_known & (label_status != "NOT_ISSUED")),
            message(7011, value=label, status=label_status, operation="removing a card (NOT_ISSUED)"),
        ),
    ]


def _format_rules(
    id_value: pl.Expr,
    add_value_given: pl.Expr,
    message: Callable[..., pl.Expr],
    invalid: Callable[[str, pl.Expr | str], pl.Expr],
    mobile_rule: str,
) -> list[Rule]:
    """SPEC section 2's format rules, one Pandera check per code, all from normalize.format_error_expr."""
    code = pl.col("id_value_format")

    def failing(expected: int) -> pl.Expr:
        return ~(add_value_given & (code == expected).fill_null(False))

    return [
        Rule("id_value.email", 8055, "id_value", failing(8055), message(8055, value=id_value)),
        Rule("id_value.mobile", 8056, "id_value", failing(8056), message(8056, value=id_value, rule=mobile_rule)),
        Rule("id_value.external_id", 8064, "id_value", failing(8064), message(8064, value=id_value)),
        Rule(
            "id_value.format",
            7001,
            "id_value",
            failing(7001),
            invalid("id_value", pl.format("'{}' must be 1 to 128 characters without control characters", id_value)),
        ),
    ]


def _mobile_rule(config: OrgConfig) -> str:
    """What an 8056 message says a mobile must be: the plain rule, or a number of the countries."""
    if config.mobile is None:
        return "8 to 15 digits"
    return f"not a valid number of {config.mobile.describe()}"


def _reference_problem(has_id: pl.Expr, has_type: pl.Expr, has_value: pl.Expr, wide: pl.Expr) -> pl.Expr:
    """What is wrong with a row's customer reference; a wide file's operation is told that its line has none."""
    return (
        pl.when(wide & ~has_id & ~has_value)
        .then(pl.lit("the line has no customer reference (its customer column is empty)"))
        .when(has_id & (has_type | has_value))
        .then(pl.lit("give either customer_id or the lookup pair, not both"))
        .when(has_type | has_value)
        .then(pl.lit("lookup_type and lookup_value must be given together"))
        .otherwise(pl.lit("a customer reference is required: customer_id, or lookup_type with lookup_value"))
    )


def _fits_series(config: OrgConfig, series_number: pl.Expr, number: pl.Expr) -> pl.Expr:
    """Whether a card number matches the number_pattern of its (known) series."""
    fits = pl.lit(True)  # a row of no known series is judged by the series check, not here
    for series in config.card_series.values():
        fits = pl.when(series_number == series.id).then(number.str.contains(series.number_pattern)).otherwise(fits)
    return fits


def _blocked(config: OrgConfig, id_type: pl.Expr, value: pl.Expr, checked: pl.Expr) -> pl.Expr:
    """Whether a normalised value is on the blocked list of its type (exact, or a pattern's full match).

    The caller reads only the rows where `checked` holds (adds with a value): a pattern that runs on
    Python's `re` reads the distinct values of those rows of its type and no others.
    """
    blocked = pl.lit(False)
    for type_name, values in config.blocked_values.items():
        of_type = id_type == type_name
        hit = value.is_in(sorted(values.exact))
        if values.patterns:
            hit = hit | full_match_expr(values.patterns, value, where=checked & of_type)
        blocked = blocked | (of_type & hit)
    return blocked


def _pair(left: str, right: str) -> str:
    return f"{left}{_SEP}{right}"
