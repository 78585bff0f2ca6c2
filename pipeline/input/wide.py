"""Wide files: one row per customer with a column per identifier, read as one request row per operation.

Marketing and CRM exports hold a customer per line (`User ID,Mobile,Email,Old Email,WeChat,Card Number`). A
job's `[wide]` (job.py) says which column holds the customer reference and what each identifier or card column
means; `expand_wide` turns a file read with it into the batch frame's request rows, so that every later stage
sees long rows only:

- each non-empty cell of a mapped column is one operation, a row of its own with the line's row_number (the
  line's 1-based position among the data rows, as a long file's row) and the column's name in `source_column`;
  an empty cell (or one of white space only) is no operation;
- within a line the operations run removes first (identifier columns whose action is remove, in the order of
  `[[wide.columns]]`), then adds and replaces in that order, then cards (either action) in that order;
- every operation carries the line's customer reference: the customer_id column, or the lookup column as the
  lookup pair, with the lookup's scope in `lookup_source` and `lookup_account_id` (input/columns.py), so the
  operation finds its customer in that scope whatever its own; a line whose reference is empty yields operations
  that the check stage fails with 7003;
- a card column's series and status come fixed from the job or from the line's own cells (`series_column`,
  `status_column`), or its series is found from the card number (`series = "from_number"`, input/read.py);
- the row_id column, when named, is every operation's row_id.

The unpivot is vectorised: the mapped cells of a line are gathered into one list per line in the order above and
exploded, so the operations come out line by line in run order without a sort or a Python loop over lines.

`check_wide_header` refuses a file whose header does not fit the layout: a mapped column the file lacks (7103),
or a file column that is neither mapped nor ignored (7104), each naming the columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from pipeline.config import CARD
from pipeline.errors import MISSING_COLUMN, UNKNOWN_COLUMN, InputFileError
from pipeline.input.columns import (
    LOOKUP_SCOPE_COLUMNS,
    REQUEST_COLUMNS,
    SERIES_FROM_NUMBER,
    SOURCE_COLUMN,
)
from pipeline.values.normalize import trim_expr
from pipeline.values.spreadsheet import noted_expr

WIDE_ACTIONS = ("add", "remove", "replace")
NUMBER_TYPES = frozenset({"mobile", CARD})
"""The identifier types whose workbook number cells may carry a spreadsheet note (values/spreadsheet.py)."""
NOTE_PREFIX = " note of "
"""Prefix of the columns the workbook reader adds beside a wide file's cells: the note of each number cell
(header names are trimmed, so no file column starts with it)."""
_OP = " operation "
"""The exploded column that holds each operation's position in the run order of a line."""


@dataclass(frozen=True)
class WideColumn:
    """One mapped column: each non-empty cell of it is one operation of this kind on the line's customer.

    `series_id` is a fixed series id; `series_code` a fixed series code, which the job translates to its id
    through the org config before any file is read (the reader reads series_id only). A card column has at most
    one of these, series_column and series_from_number, and at most one of status_label and status_column.
    """

    column: str
    id_type: str
    source: str
    account_id: str = ""
    action: str = "add"
    series_id: str | None = None
    series_code: str | None = None
    series_column: str | None = None
    series_from_number: bool = False
    status_label: str | None = None
    status_column: str | None = None

    @property
    def is_card(self) -> bool:
        return self.id_type == CARD

    @property
    def rank(self) -> int:
        """The operation's group in a line's order: removes, then adds and replaces, then cards."""
        return 2 if self.is_card else 0 if self.action == "remove" else 1

    @property
    def file_columns(self) -> tuple[str, ...]:
        """The file columns this mapping reads: its own, and its card's series and status columns."""
        return tuple(c for c in (self.column, self.series_column, self.status_column) if c is not None)


@dataclass(frozen=True)
class WideLookup:
    """The column whose value finds each line's customer, as a long row's lookup pair, in this scope.

    `source` is None for a card lookup (cards are organisation-wide); `account_id` is '' for a single-account
    source."""

    column: str
    id_type: str
    source: str | None = None
    account_id: str = ""


@dataclass(frozen=True)
class WideLayout:
    """A job's `[wide]`: the customer reference (a customer_id column or a lookup), the mapped columns, the
    row_id column and the columns ignored."""

    columns: tuple[WideColumn, ...]
    customer_id: str | None = None
    lookup: WideLookup | None = None
    row_id: str | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.customer_id is None) == (self.lookup is None):
            raise ValueError("a wide layout takes exactly one of customer_id and lookup")
        if not self.columns:
            raise ValueError("a wide layout maps at least one column")

    @property
    def reference(self) -> str:
        """The column that holds each line's customer reference."""
        return self.customer_id if self.lookup is None else self.lookup.column  # type: ignore[return-value]

    def operations(self) -> tuple[WideColumn, ...]:
        """The mapped columns in the order a line's operations run (a stable sort of [[wide.columns]])."""
        return tuple(sorted(self.columns, key=lambda c: c.rank))

    def read_columns(self) -> tuple[str, ...]:
        """Every file column the layout reads, each once, in the order the job names them."""
        names = [self.reference, *([self.row_id] if self.row_id else [])]
        names += [name for column in self.columns for name in column.file_columns]
        return tuple(dict.fromkeys(names))

    def number_columns(self) -> frozenset[str]:
        """The file columns a workbook number cell is noted in whatever the operation: the customer reference
        (a customer_id, or a lookup by mobile or card number)."""
        if self.lookup is None:
            return frozenset({self.reference})
        return frozenset({self.reference}) if self.lookup.id_type in NUMBER_TYPES else frozenset()


def check_wide_header(name: str, header: Sequence[str], wide: WideLayout, line: int | None) -> None:
    """Refuse a header that does not fit the layout: unknown columns (7104), then missing ones (7103).

    Duplicate names are refused before (input/read.py), as for any file.
    """
    read = set(wide.read_columns())
    unknown = [(position, field) for position, field in enumerate(header, 1) if field not in read | set(wide.ignore)]
    if unknown:
        described = ", ".join(f"'{field}' (column {position})" for position, field in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise InputFileError(
            name,
            UNKNOWN_COLUMN,
            f"unknown column{plural} {described}: neither mapped nor ignored by the job's [wide] "
            "(add it to [[wide.columns]], or to ignore)",
            line=line,
        )
    missing = [column for column in wide.read_columns() if column not in header]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise InputFileError(
            name,
            MISSING_COLUMN,
            f"missing column{plural} {', '.join(repr(c) for c in missing)}, which the job's [wide] reads",
            line=line,
        )


def note_column(column: str) -> str:
    """The name of the column that holds the spreadsheet notes of a file column's number cells."""
    return f"{NOTE_PREFIX}{column}"


def expand_wide(frame: pl.DataFrame, wide: WideLayout) -> pl.DataFrame:
    """A wide file's lines (one String column per file column, by header name, plus any note columns) as the
    request rows of their operations, in run order: row_number (Int64), the request columns, source_column and
    the lookup scope (String), and SERIES_FROM_NUMBER for the cards whose series the number gives."""
    operations = wide.operations()
    count = len(operations)
    present = set(frame.columns)

    def cell(column: str | None) -> pl.Expr:
        return pl.col(column) if column is not None else pl.lit(None, dtype=pl.String)

    def noted(column: str, applies: bool) -> pl.Expr:
        note = note_column(column)
        if not applies or note not in present:
            return pl.col(column)
        return (
            pl.when(pl.col(note).is_not_null()).then(noted_expr(pl.col(column), pl.col(note))).otherwise(pl.col(column))
        )

    reference = noted(wide.reference, wide.reference in wide.number_columns())
    lists = {
        "id_value": [noted(op.column, op.id_type in NUMBER_TYPES) for op in operations],
        "series_id": [cell(op.series_column) for op in operations],
        "status_label": [cell(op.status_column) for op in operations],
    }
    used = {
        name: cells for name, cells in lists.items() if name == "id_value" or any(c.meta.is_column() for c in cells)
    }
    lines = frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row_number"),
        cell(wide.row_id).alias("row_id"),
        reference.alias("reference"),
        *(pl.concat_list(cells).alias(name) for name, cells in used.items()),
    )
    exploded = lines.explode(list(used)).with_columns((pl.int_range(pl.len(), dtype=pl.Int64) % count).alias(_OP))
    kept = exploded.filter(trim_expr("id_value") != "")
    spec = pl.DataFrame(
        {
            _OP: list(range(count)),
            "source": [op.source for op in operations],
            "account_id": [op.account_id for op in operations],
            "action": [op.action for op in operations],
            "id_type": [op.id_type for op in operations],
            "fixed_series": [op.series_id for op in operations],
            "fixed_status": [op.status_label for op in operations],
            SOURCE_COLUMN: [op.column for op in operations],
            SERIES_FROM_NUMBER: ["1" if op.series_from_number else None for op in operations],
        },
        schema={_OP: pl.Int64, **dict.fromkeys(("source", "account_id", "action", "id_type"), pl.String)}
        | dict.fromkeys(("fixed_series", "fixed_status", SOURCE_COLUMN, SERIES_FROM_NUMBER), pl.String),
    )
    joined = kept.join(spec, on=_OP, how="left", maintain_order="left")
    lookup = wide.lookup
    by_lookup = lookup is not None
    scoped = lookup is not None and lookup.source is not None
    text = pl.String
    columns: Mapping[str, pl.Expr] = {
        "row_id": pl.col("row_id"),
        "customer_id": pl.lit(None, dtype=text) if by_lookup else pl.col("reference"),
        "lookup_type": pl.lit(lookup.id_type if lookup else None, dtype=text),
        "lookup_value": pl.col("reference") if by_lookup else pl.lit(None, dtype=text),
        "source": pl.col("source"),
        "account_id": pl.col("account_id"),
        "action": pl.col("action"),
        "id_type": pl.col("id_type"),
        "id_value": pl.col("id_value"),
        "series_id": pl.coalesce(_maybe(joined, "series_id"), pl.col("fixed_series")),
        "status_label": pl.coalesce(_maybe(joined, "status_label"), pl.col("fixed_status")),
    }
    assert tuple(columns) == REQUEST_COLUMNS
    scope = (lookup.source, lookup.account_id) if scoped and lookup is not None else (None, None)
    return joined.select(
        "row_number",
        *(expr.alias(name) for name, expr in columns.items()),
        SOURCE_COLUMN,
        *(pl.lit(value, dtype=text).alias(name) for name, value in zip(LOOKUP_SCOPE_COLUMNS, scope, strict=True)),
        SERIES_FROM_NUMBER,
    )


def _maybe(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A column of the exploded lines, or null when no mapping reads one."""
    return pl.col(column) if column in frame.columns else pl.lit(None, dtype=pl.String)
