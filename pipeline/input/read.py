"""The read stage: request files (SPEC section 2) into one frame of raw text, or a file-level refusal.

Fields keep their raw text (no trimming, no type inference), so the check stage sees exactly what the
caller wrote and reports can echo it. A file that cannot be read as a whole raises `InputFileError`
with code 7101-7105 naming the file and, for CSV, the physical line; no file's rows are returned
unless every file reads.

Decisions where SPEC section 2 is silent:
- A line ends at \n, \r\n or a lone \r; line numbers in refusals are physical lines (a quoted
  newline starts a new line but not a new row), counting blank lines and the header.
- A blank line is a line of only white space (as `str.strip` sees it); blank lines are skipped
  anywhere, including before the header, and never counted in `row_number`. A row of empty fields
  (",,,") is a row, not a blank line.
- CSV follows RFC 4180 strictly: a quote may only open a field or close it (inner quotes doubled).
  A stray quote, an unclosed quote, or a row with more or fewer fields than the header is 7102.
- Header names are trimmed of surrounding white space (like every field) but stay case-sensitive.
- A duplicate header name, including two names that a job's `[columns]` maps onto one column, is 7102
  (FILE_FORMAT), not 7104: the name is known, but the file is ambiguous about which value to use.
- Parquet columns of text, integer, float, decimal, boolean or null type are cast to text; any other
  type (binary, nested, temporal, ...) is 7102 naming the column.
- A file that cannot be opened at all (missing, a directory), an Excel 97-2003 or password-protected
  workbook (an OLE compound file) and binary content (a NUL byte anywhere, refused with its line) are
  7102; a UTF-16 file, with or without a byte order mark, is 7101 unless its encoding is given.
- An empty cell is "" in CSV and null in Parquet; a column the file lacks is null.
- When several files fail, the error raised is `RequestFilesRefused` (an `InputFileError` carrying
  the first failure's code and line) listing every failure, so one run shows them all.
- A job's `InputLayout` may drop a column (mapped to "-"; a dropped Parquet column's type is not
  checked), fix a column's value for every row (a file that also has that column is 7102: which value
  applies would be ambiguous), and read series_id as a series code: a known code becomes its series id,
  an unknown one stays as written so the check stage reports 3004 showing it (one of ASCII digits only
  gets " (unknown series code)" appended, so it cannot pass as a series id).
- NDJSON (a name ending .ndjson or .jsonl, optionally .gz) holds the platform's call bodies, one per
  line, each read by input/calls.py (as the emulator and push read calls); blank lines are skipped, line
  numbers are physical. A line must be a JSON object with customer_id (or customerId) and at least one
  add or remove item; source, account_id (accountId) and row_id are optional. The keys calls.ndjson
  adds around a call (call_id, file, row_number, after, expect) are ignored; any other key, a repeated
  spelling, a non-list add/remove, an item without type and value or with other keys than type, value,
  seriesId and statusLabel, or a value that is neither a string nor an integer is 7102 naming the line.
  Strings are kept as given (trimmed later like every field), integers become their decimal text. A
  job's [columns] do not apply to NDJSON (its keys are the platform's); a [fixed] column other than the
  lookup pair is 7102 (every call gives it itself). A line of exactly one remove and one add of the same
  identifier type (not a card) is one `replace` row, its removed value in the frame's `replaces` column
  (input/columns.py), which no other format fills.
- A zip archive is an Excel workbook, whatever its name (input/workbook.py: one sheet, a header row, every
  cell as text); its header and rows then follow the rules of a CSV's (names trimmed, layout, errors file).
  In customer_id, and in id_value or lookup_value when the row's id_type or lookup_type (a fixed one
  included) is mobile or cardnumber, a number cell with a fraction or of more than 15 digits reads as its
  value followed by the reason (values/spreadsheet.py), which the check stage reports as spreadsheet damage.
- CSV is comma-separated UTF-8 unless the layout gives `delimiter` (one ASCII character that is not a letter,
  digit, quote or line break; a job or the command line may write a tab as "tab") and `encoding` (a text
  encoding Python knows, e.g. cp1252). The file is decoded with its encoding and read as UTF-8 from then on, so
  every later check and line number is the same; a UTF-8 byte order mark under another encoding is 7101 (the
  file is UTF-8). A header read as one column holding a semicolon, tab, comma or vertical bar is 7104 with a
  hint naming the delimiter option. Other formats ignore both.
- An errors file (a run's errors.csv or its Parquet copy, or a workbook saved from it) is known by its header:
  every column errors.csv puts around the request columns (REPORT_POSITION_COLUMNS, REPORT_ERROR_COLUMNS in
  input/columns.py) is there. Those columns are ignored, and the layout's [columns] and [fixed] do not apply:
  its columns are request columns already, with the fixed values written in them. A known series code in
  series_id is still translated and any other value kept (the run that wrote the file wrote series ids). In a
  CSV or workbook errors file, a cell that errors.csv neutralised against formulas (a quote before = + - @ tab
  or carriage return) reads back without the quote. Its rows are numbered as the errors file's own rows.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from pipeline.config import CARD
from pipeline.errors import (
    FILE_ENCODING,
    FILE_FORMAT,
    MISSING_COLUMN,
    NO_HEADER,
    UNKNOWN_COLUMN,
    InputFileError,
    NotACallBody,
    RequestFilesRefused,
)
from pipeline.files import FORMULA_PREFIXES
from pipeline.input.calls import call_rows
from pipeline.input.columns import (
    FRAME_COLUMNS,
    LOOKUP_COLUMNS,
    LOOKUP_SCOPE_COLUMNS,
    REPLACES_COLUMN,
    REPORT_ERROR_COLUMNS,
    REPORT_POSITION_COLUMNS,
    REQUEST_COLUMNS,
    REQUIRED_COLUMNS,
    SERIES_FROM_NUMBER,
    SOURCE_COLUMN,
)
from pipeline.input.wide import WideLayout, check_wide_header, expand_wide, note_column
from pipeline.input.workbook import read_sheet
from pipeline.values.normalize import trim_expr
from pipeline.values.spreadsheet import noted_expr

Format = Literal["csv", "parquet", "ndjson", "xlsx"]

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
"""A request file with one of these suffixes (before an optional .gz) holds the platform's call bodies."""
IGNORE = "-"
"""A column mapped to this is dropped as the file is read."""
_IGNORED = " ignored column "
"""Prefix of the placeholder names dropped columns carry until dropped (header names are trimmed, so never one)."""

_BINARY_SNIFF_BYTES = 8192
"""A NUL byte this close to the start marks a binary file; later, one bad line of a text file."""
_CSV_BLOCK_SIZE = 1 << 20
"""pyarrow's default parse block; a row longer than one block is parsed with one block for the whole body."""
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
"""An OLE compound file: an Excel 97-2003 workbook (.xls), or an encrypted (password-protected) .xlsx."""
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_NON_BLANK = re.compile(rb"\S")
_QUOTE, _NEWLINE, _CR = ord('"'), ord("\n"), ord("\r")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
"""The separators a header read as one column is searched for, named as the hint names them."""
_MOBILE = "mobile"
_NUMBER_TYPED = {"customer_id": None, "id_value": "id_type", "lookup_value": "lookup_type"}
"""The columns whose number cells may carry a spreadsheet note, and the column of the type that decides it."""
_NEUTRALISED = "^'[" + "".join(f"\\x{{{ord(c):x}}}" for c in FORMULA_PREFIXES) + "]"
"""A cell errors.csv neutralised against formulas: a quote, then a character a formula starts with."""


@dataclass(frozen=True)
class InputFile:
    """One request file as read: its identity (sha256 of the stored bytes, fingerprint of its rows) and its size."""

    path: str
    sha256: str
    rows: int
    columns: tuple[str, ...]
    """Request column names present in the file, in file order, after the layout's renaming."""
    format: Format
    fingerprint: str = ""
    """`rows_fingerprint` of the file's rows as read through the run's layout: what "already applied" compares."""


@dataclass(frozen=True)
class RequestBatch:
    """All rows of all request files, in processing order, with one InputFile per file."""

    frame: pl.DataFrame
    files: tuple[InputFile, ...]

    def without(self, paths: Collection[str]) -> RequestBatch:
        """The batch without the files of these paths (a run leaving out inputs already applied): the other
        files' rows keep their order and row numbers, and seq counts them again from 0."""
        if not paths:
            return self
        frame = self.frame.filter(~pl.col("file").is_in(list(paths)))
        frame = frame.with_columns(pl.int_range(0, frame.height, dtype=pl.Int64).alias("seq"))
        return RequestBatch(frame=frame, files=tuple(f for f in self.files if f.path not in paths))


@dataclass(frozen=True)
class InputLayout:
    """How a job's files map onto SPEC section 2: renamed or dropped columns, fixed values, series codes.

    `columns`: file header name -> request column, or IGNORE to drop the column.
    `fixed`: request column -> the value every row gets (the file must not have that column).
    `series_codes`: when set, series_id holds a series code, translated with this code -> id table.
    `sheet`: the workbook sheet to read; None reads the first. Other formats ignore it.
    `delimiter`, `encoding`: how a CSV file is written (check_delimiter, check_encoding). Other formats ignore them.
    `wide`: read each CSV, workbook and Parquet file (not an errors file, not NDJSON) as a wide file
    (input/wide.py); it takes the place of `columns` and `fixed`.
    `series_patterns`: series id -> the whole-value pattern of its card numbers (config.CardSeries.number_pattern),
    for the card rows whose series is found from the number: every card row without a series_id when
    `series_from_number`, and the operations of a wide file's card columns that say so.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)
    series_codes: Mapping[str, int] | None = None
    sheet: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    wide: WideLayout | None = None
    series_from_number: bool = False
    series_patterns: Mapping[int, str] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fixed) - set(REQUEST_COLUMNS))
        if unknown:
            raise ValueError(f"fixed values for unknown request columns: {', '.join(unknown)}")
        if self.wide is not None and (self.columns or self.fixed):
            raise ValueError("a wide layout takes the place of columns and fixed values")
        from_number = self.series_from_number or (
            self.wide is not None and any(c.series_from_number for c in self.wide.columns)
        )
        if from_number and self.series_patterns is None:
            raise ValueError("finding a card's series from its number needs the series' patterns")
        check_delimiter(self.delimiter)
        check_encoding(self.encoding)


def check_delimiter(value: str) -> str:
    """A CSV delimiter as given by a job or the command line ("tab" or "\\t" for a tab); ValueError if unusable.

    One ASCII character that can separate fields: not a letter, digit, quote, space or line break.
    """
    delimiter = "\t" if value in ("tab", "\\t") else value
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter.isalnum() or delimiter in '"\r\n ':
        raise ValueError(f"{value!r} cannot separate CSV fields: give one character such as ',' or ';', or 'tab'")
    return delimiter


def check_encoding(value: str) -> str:
    """A text encoding's canonical name (cp1252, utf-8, ...); ValueError if Python knows no such text encoding."""
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise ValueError(f"{value!r} is not a text encoding Python knows (e.g. utf-8, cp1252, latin-1)") from None
    if not info._is_text_encoding:  # base64 and the like turn bytes into bytes
        raise ValueError(f"{value!r} is not a text encoding (e.g. utf-8, cp1252, latin-1)")
    return info.name


def read_requests(paths: Sequence[Path | str], layout: InputLayout | None = None) -> RequestBatch:
    """Read request files (CSV, gzip CSV, Parquet, NDJSON or an Excel workbook) in order into one frame of raw text.

    `layout` (a job's) renames file headers to request columns before the column checks, drops
    columns, fixes values and translates series codes; without it files use SPEC section 2's names.
    Every file is read before anything is returned; any refusal raises `InputFileError`.
    """
    layout = layout if layout is not None else InputLayout()
    frames: list[pl.DataFrame] = []
    files: list[InputFile] = []
    errors: list[InputFileError] = []
    seq_offset = 0
    for given in paths:
        name = str(given)
        try:
            frame, info = _read_one(name, layout)
        except InputFileError as error:
            errors.append(error)
            frames.clear()
            continue
        if errors:
            continue
        frames.append(_with_positions(frame, name, seq_offset))
        files.append(info)
        seq_offset += info.rows
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RequestFilesRefused(errors)
    frame = pl.concat(frames, how="vertical") if frames else _empty_frame()
    return RequestBatch(frame=frame, files=tuple(files))


def _read_one(name: str, layout: InputLayout) -> tuple[pl.DataFrame, InputFile]:
    """Read one file into a frame of its request columns (as String) and describe it."""
    try:
        stored = Path(name).read_bytes()
    except OSError as error:
        raise InputFileError(name, FILE_FORMAT, f"cannot be read: {error.strerror or error}") from None
    sha256 = hashlib.sha256(stored).hexdigest()
    content = _gunzip(name, stored) if stored.startswith(_GZIP_MAGIC) else stored
    fmt = _format_of(name, content)
    frame, errors_file = _READERS[fmt](name, content, layout)
    frame = _apply_layout(frame, layout, errors_file, wide=fmt != "ndjson")
    return frame, InputFile(
        path=name,
        sha256=sha256,
        rows=frame.height,
        columns=tuple(c for c in frame.columns if c in REQUEST_COLUMNS),
        format=fmt,
        fingerprint=rows_fingerprint(frame),
    )


def _format_of(name: str, content: bytes) -> Format:
    """A file's format, by its content and, for NDJSON, its name."""
    if content.startswith(_PARQUET_MAGIC):
        return "parquet"
    if content.startswith(_ZIP_MAGIC):
        return "xlsx"
    return "ndjson" if is_ndjson_name(name) else "csv"


FINGERPRINT_VERSION = b"loyalty-bulk request rows 1\n"
"""Opens every fingerprint's serialisation. The serialisation must not change: a store compares the fingerprints
of files applied months ago, and a changed one would let those files be applied again."""


def rows_fingerprint(frame: pl.DataFrame) -> str:
    """The sha256 of a file's request rows as read (after the layout), hex: the file's content, not its bytes.

    The same rows give the same fingerprint whatever the file's line endings, byte-order mark, gzip, quoting,
    column order or format (CSV, Parquet, NDJSON), while the same bytes read through another layout give
    another. The serialisation is defined here, not by a library (polars' row hashes may change between
    versions, and a store keeps fingerprints for months): FINGERPRINT_VERSION, the row count in decimal and
    a newline, then for each request column in REQUEST_COLUMNS order its name and a newline, each cell's
    UTF-8 byte length as 4 bytes little-endian, and the cells' UTF-8 bytes one after another. A null cell and
    a column the file lacks count as empty text, as the check stage reads them (trim_expr); the row order
    counts. An NDJSON file with a replace line (input/calls.py) serialises its removed values after the request
    columns the same way, as a column `replaces`; a file without one is serialised as before. A wide file
    (input/wide.py) then serialises its operations' source_column, lookup_source and lookup_account_id the same
    way (each when a row has it), so the same cells read through another [wide] mapping are another file. A
    column at a time, one pass over the values: 0.23-0.26 s for the benchmark's 1M-row file (73 MB), which
    read_requests reads in 0.5-0.7 s without it (2 shared cores, 2026-12-06).
    """
    digest = hashlib.sha256(FINGERPRINT_VERSION + b"%d\n" % frame.height)
    extra = [
        column
        for column in (REPLACES_COLUMN, SOURCE_COLUMN, *LOOKUP_SCOPE_COLUMNS)
        if column in frame.columns and frame.get_column(column).null_count() < frame.height
    ]
    for column in (*REQUEST_COLUMNS, *extra):
        digest.update(column.encode() + b"\n")
        if column not in frame.columns:
            digest.update(bytes(4 * frame.height))
            continue
        values = frame.get_column(column).fill_null("")
        digest.update(np.ascontiguousarray(values.str.len_bytes().to_numpy(), dtype="<u4").data)
        digest.update(values.str.join("").item().encode())
    return digest.hexdigest()


def _gunzip(name: str, stored: bytes) -> bytes:
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as error:
        raise InputFileError(name, FILE_ENCODING, f"the gzip stream is broken or truncated ({error})") from None


def _read_parquet(name: str, content: bytes, layout: InputLayout) -> tuple[pl.DataFrame, bool]:
    """Read a Parquet file, casting its text-like and numeric columns to String; and whether it is an errors file."""
    import pyarrow.parquet as pq  # here, not at the top: it loads pyarrow's filesystems, which a CSV run never needs

    try:
        table = pq.read_table(io.BytesIO(content))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InputFileError(
            name, FILE_FORMAT, f"not a readable Parquet file, truncated or damaged ({error})"
        ) from None
    columns, errors_file = _header_columns(name, [f.name for f in table.schema], layout, line=None)
    for arrow_field, column in zip(table.schema, columns, strict=True):
        if not column.startswith(_IGNORED) and not _castable_to_text(arrow_field.type):
            raise InputFileError(
                name,
                FILE_FORMAT,
                f"column '{arrow_field.name}' has Parquet type {arrow_field.type}; "
                "request columns must be text or numbers",
            )
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        pl.col(old).cast(pl.String).alias(new)
        for old, new in zip(frame.columns, columns, strict=True)
        if not new.startswith(_IGNORED)
    ), errors_file


def is_ndjson_name(name: str) -> bool:
    """Whether a request file is NDJSON of call bodies, by its name (.ndjson / .jsonl, optionally .gz)."""
    lowered = name.lower().removesuffix(".gz")
    return lowered.endswith(NDJSON_SUFFIXES)


def _read_ndjson(name: str, content: bytes, fixed: Mapping[str, str] = {}) -> pl.DataFrame:
    """Read NDJSON call bodies into request rows: per line its removes, then its adds, each in list order.

    Every value is kept as text, as in CSV; a line that is not a call object is 7102 naming the line.
    """
    _refuse_non_text(name, content)
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8) :]
    _check_utf8(name, content)
    clashing = sorted(set(fixed) - set(LOOKUP_COLUMNS))
    if clashing:
        raise InputFileError(
            name,
            FILE_FORMAT,
            f"the job fixes {', '.join(clashing)}, which every call of an NDJSON file gives itself; "
            "which value applies would be ambiguous",
        )
    rows: dict[str, list[str | None]] = {
        column: [] for column in (*REQUEST_COLUMNS, REPLACES_COLUMN) if column not in fixed
    }
    for number, text in enumerate(_LINE_BREAK.split(content), 1):
        if not text.strip():
            continue
        for row in _call_rows(name, number, text):
            for column, values in rows.items():
                values.append(row.get(column))
    return pl.DataFrame(rows, schema=dict.fromkeys(rows, pl.String))


def _call_rows(name: str, line: int, text: bytes) -> list[dict[str, str | None]]:
    """The request rows of one NDJSON line (a call body); InputFileError 7102 naming the line if it is not one."""
    try:
        call = json.loads(text)
    except ValueError as error:
        raise InputFileError(name, FILE_FORMAT, f"not a call body: invalid JSON ({error})", line=line) from None
    try:
        return call_rows(call)
    except NotACallBody as error:
        raise InputFileError(name, FILE_FORMAT, f"not a call body: {error}", line=line) from None


def _castable_to_text(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _read_csv(name: str, content: bytes, layout: InputLayout) -> tuple[pl.DataFrame, bool]:
    """Validate a CSV file's encoding, quoting and header, then parse its data rows as raw strings; and whether
    it is an errors file.

    pyarrow's parser is used rather than polars': polars pads a short row with "" and turns a blank
    line into a row of "", while pyarrow reports each row of the wrong width, so short rows are
    refused and blank lines skipped without a Python loop over rows.
    """
    content = _as_utf8(name, content, layout.encoding)
    _refuse_non_text(name, content)
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8) :]
    _check_utf8(name, content)
    delimiter = layout.delimiter
    _check_quotes(name, content, delimiter)
    header_line, header_text, body_start = _find_header(name, content)
    header = _split_header(name, header_text, header_line, delimiter)
    _refuse_one_column_header(name, header, header_line, layout)
    columns, errors_file = _header_columns(name, header, layout, line=header_line)
    if not _NON_BLANK.search(content, body_start):
        return pl.DataFrame(schema=dict.fromkeys(columns, pl.String)), errors_file
    wrong_width: list[int] = []

    def skip_blank_or_note(row: pa_csv.InvalidRow) -> str:
        if row.text.strip():
            wrong_width.append(row.actual_columns)
        return "skip"

    def parse(block_size: int) -> pa.Table:
        wrong_width.clear()
        return pa_csv.read_csv(
            pa.BufferReader(pa.py_buffer(content).slice(body_start)),
            read_options=pa_csv.ReadOptions(column_names=columns, block_size=block_size),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter,
                quote_char='"',
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=True,
                invalid_row_handler=skip_blank_or_note,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={column: pa.string() for column in columns},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=False,
            ),
        )

    try:
        try:
            table = parse(_CSV_BLOCK_SIZE)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error):
                raise
            # a row longer than a parse block (a 10 MB field): parse the whole body as one block
            table = parse(len(content) - body_start + 1)
    except (pa.ArrowException, OSError) as error:
        raise InputFileError(name, FILE_FORMAT, f"cannot be parsed as CSV ({error})") from None
    if wrong_width:
        _refuse_wrong_width(name, content, body_start, header_line, len(columns), wrong_width[0], delimiter)
    frame = pl.from_arrow(table, rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return (_restore_neutralised(frame) if errors_file else frame), errors_file


def _read_workbook(name: str, content: bytes, layout: InputLayout) -> tuple[pl.DataFrame, bool]:
    """Read a workbook's sheet (input/workbook.py) as a CSV's rows are read; and whether it is an errors file."""
    sheet = read_sheet(name, content, layout.sheet)
    header = [cell.strip() for cell in sheet.header]
    columns, errors_file = _header_columns(name, header, layout, line=sheet.header_line)
    frame = sheet.frame.rename(dict(zip(sheet.frame.columns, columns, strict=True)))
    if errors_file:
        frame = _restore_neutralised(frame)
    notes = {columns[position]: note for position, note in sheet.notes.items()}
    if layout.wide is not None and not errors_file:
        # a wide file's cells are noted per operation as it is expanded (input/wide.py): the notes go beside them
        return frame.with_columns(
            note.alias(note_column(column)) for column, note in notes.items() if not column.startswith(_IGNORED)
        ), False
    return _note_number_cells(frame, notes, {} if errors_file else layout.fixed), errors_file


def _read_ndjson_layout(name: str, content: bytes, layout: InputLayout) -> tuple[pl.DataFrame, bool]:
    """NDJSON as the other readers are called: only the layout's fixed lookup pair applies; never an errors file."""
    return _read_ndjson(name, content, layout.fixed), False


def _note_number_cells(frame: pl.DataFrame, notes: Mapping[str, pl.Series], fixed: Mapping[str, str]) -> pl.DataFrame:
    """Append its note to each number cell that may have been changed, where the column's value is an identifier
    a spreadsheet damages: every customer_id, and an id_value or lookup_value whose row's type is a mobile or a
    card number (the file's type column, else the layout's fixed type)."""
    marked = []
    for column, note in notes.items():
        if column not in _NUMBER_TYPED:
            continue
        type_column = _NUMBER_TYPED[column]
        applies = pl.lit(True)
        if type_column is not None:
            kind = trim_expr(type_column) if type_column in frame.columns else pl.lit(fixed.get(type_column, ""))
            applies = kind.is_in([_MOBILE, CARD])
        reason = pl.lit(note)
        marked.append(
            pl.when(reason.is_not_null() & applies)
            .then(noted_expr(pl.col(column), reason))
            .otherwise(pl.col(column))
            .alias(column)
        )
    return frame.with_columns(marked) if marked else frame


def _refuse_non_text(name: str, content: bytes) -> None:
    """Refuse obviously binary content (7102) and UTF-16 (7101) before the UTF-8 check blames a byte."""
    if content.startswith(_OLE_MAGIC):
        raise InputFileError(
            name,
            FILE_FORMAT,
            "an Excel 97-2003 workbook (.xls) or a password-protected one: save it as .xlsx without a password, "
            "or as CSV",
        )
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputFileError(name, FILE_ENCODING, "the file is UTF-16; save it as UTF-8", line=1)
    nul = content.find(b"\x00")
    if nul < 0:
        return
    head = content[:64]
    if len(head) >= 4 and (not any(head[1::2]) or not any(head[0::2])):
        raise InputFileError(
            name, FILE_ENCODING, "the file looks like UTF-16 without a byte order mark; save it as UTF-8", line=1
        )
    if nul < _BINARY_SNIFF_BYTES:
        raise InputFileError(name, FILE_FORMAT, "not a CSV or Parquet file: it contains binary data (NUL bytes)")
    # past the start too: a text file with one NUL byte must not bring it into a value (or the store)
    line, column = _line_and_column(content, nul)
    raise InputFileError(name, FILE_FORMAT, f"a NUL byte at column {column}: a text file cannot hold one", line=line)


def _check_utf8(name: str, content: bytes) -> None:
    """Decode the whole content once (fast); only on failure locate the bad byte's line and column."""
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_and_column(content, error.start)
        raise InputFileError(
            name,
            FILE_ENCODING,
            f"invalid UTF-8 byte 0x{content[error.start]:02x} at column {column}; save the file as UTF-8, "
            "or give its encoding (the job's encoding, --encoding; cp1252 for a Windows spreadsheet's CSV)",
            line=line,
        ) from None


def _header_columns(name: str, header: Sequence[str], layout: InputLayout, line: int | None) -> tuple[list[str], bool]:
    """The request column of each header name (_check_header), and whether the file is an errors file.

    An errors file's report columns are ignored and the layout's renames and fixed values do not apply to it.
    """
    if is_errors_file(header):
        ignored = dict.fromkeys((*REPORT_POSITION_COLUMNS, *REPORT_ERROR_COLUMNS, SOURCE_COLUMN), IGNORE)
        return _check_header(name, header, ignored, line=line, fixed={}), True
    if layout.wide is not None:
        return _check_wide_header(name, header, layout.wide, line), False
    return _check_header(name, header, dict(layout.columns), line=line, fixed=layout.fixed), False


def _check_wide_header(name: str, header: Sequence[str], wide: WideLayout, line: int | None) -> list[str]:
    """A wide file's columns: its header names, the ignored ones as placeholders (dropped after reading).

    A name that appears twice is 7102, as in any file; then input/wide.py's check of the mapping.
    """
    seen: dict[str, int] = {}
    for position, field_name in enumerate(header, 1):
        if field_name in seen:
            raise InputFileError(
                name,
                FILE_FORMAT,
                f"column '{field_name}' appears more than once (columns {seen[field_name]} and {position}); "
                "which value applies would be ambiguous",
                line=line,
            )
        seen[field_name] = position
    check_wide_header(name, header, wide, line)
    read = set(wide.read_columns())
    return [
        field_name if field_name in read else f"{_IGNORED}{position}" for position, field_name in enumerate(header, 1)
    ]


def is_errors_file(header: Collection[str]) -> bool:
    """Whether a header is errors.csv's: it holds every column errors.csv puts around the request columns (its
    last one, source_column, is not required: errors files written before it existed lack it)."""
    return set(REPORT_POSITION_COLUMNS).union(REPORT_ERROR_COLUMNS) <= set(header)


def _restore_neutralised(frame: pl.DataFrame) -> pl.DataFrame:
    """An errors file's cells as they were before errors.csv neutralised them: the formula-guarding quote removed."""
    return frame.with_columns(
        pl.when(pl.col(column).str.contains(_NEUTRALISED)).then(pl.col(column).str.slice(1)).otherwise(pl.col(column))
        for column in frame.columns
        if not column.startswith(_IGNORED)
    )


def _as_utf8(name: str, content: bytes, encoding: str) -> bytes:
    """A CSV file's bytes in UTF-8, decoded from its given encoding (7101 naming the line of a byte it lacks)."""
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):  # read as UTF-8 with an optional BOM anyway
        return content
    if content.startswith(codecs.BOM_UTF8):
        raise InputFileError(
            name,
            FILE_ENCODING,
            f"the file starts with a UTF-8 byte order mark, so it is UTF-8, not {encoding}; leave out the encoding",
            line=1,
        )
    try:
        return content.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _line_and_column(content, error.start)
        raise InputFileError(
            name,
            FILE_ENCODING,
            f"byte 0x{content[error.start]:02x} at column {column} is not {encoding} text; check the file's encoding",
            line=line,
        ) from None


def _refuse_one_column_header(name: str, header: Sequence[str], line: int, layout: InputLayout) -> None:
    """A header read as one column that holds another separator: 7104 with a hint naming the delimiter option."""
    known = layout.wide.read_columns() if layout.wide is not None else ()
    if len(header) != 1 or header[0] in REQUEST_COLUMNS or header[0] in layout.columns or header[0] in known:
        return
    found = [other for other in DELIMITER_NAMES if other != layout.delimiter and other in header[0]]
    if not found:
        return
    other = found[0]
    option, flag = ("tab", "tab") if other == "\t" else (other, f"'{other}'")
    shown = (header[0] if len(header[0]) <= 60 else header[0][:57] + "...").replace("\t", "\\t")
    raise InputFileError(
        name,
        UNKNOWN_COLUMN,
        f"the header row is one column, '{shown}', holding {DELIMITER_NAMES[other]}s: the file looks "
        f'{DELIMITER_NAMES[other]}-separated; read it with delimiter = "{option}" in the job, or --delimiter {flag}',
        line=line,
    )


def _check_header(
    name: str, header: Sequence[str], mapping: dict[str, str], line: int | None, fixed: Mapping[str, str]
) -> list[str]:
    """Map header names to request columns and refuse unknown (7104), duplicate (7102) or missing (7103) ones.

    A column mapped to IGNORE gets a placeholder name (dropped after reading); `fixed` columns count as
    present, and one the file also has is 7102.
    """
    columns = [
        f"{_IGNORED}{position}" if mapping.get(field, field) == IGNORE else mapping.get(field, field)
        for position, field in enumerate(header, 1)
    ]
    known = set(REQUEST_COLUMNS) | {column for column in columns if column.startswith(_IGNORED)}
    unknown = [
        (position, field, column)
        for position, (field, column) in enumerate(zip(header, columns, strict=True), 1)
        if column not in known
    ]
    if unknown:
        described = ", ".join(
            f"'{field}' (column {position})"
            if field == column
            else f"'{field}' (column {position}, mapped to '{column}')"
            for position, field, column in unknown
        )
        raise InputFileError(
            name,
            UNKNOWN_COLUMN,
            f"unknown column{'s' if len(unknown) > 1 else ''} {described}; allowed: {', '.join(REQUEST_COLUMNS)}",
            line=line,
        )
    positions: dict[str, list[int]] = {}
    for position, column in enumerate(columns, 1):
        positions.setdefault(column, []).append(position)
    for column, where in positions.items():
        if len(where) > 1:
            if all(header[p - 1] == column for p in where):
                detail = "columns " + " and ".join(str(p) for p in where)
            else:
                detail = "header names " + " and ".join(f"'{header[p - 1]}' (column {p})" for p in where)
            raise InputFileError(
                name,
                FILE_FORMAT,
                f"column '{column}' appears more than once ({detail}); which value applies would be ambiguous",
                line=line,
            )
    clashing = [(position, column) for position, column in enumerate(columns, 1) if column in fixed]
    if clashing:
        position, column = clashing[0]
        raise InputFileError(
            name,
            FILE_FORMAT,
            f"column '{column}' (column {position}, header '{header[position - 1]}') is also given a fixed value "
            f"by the job; which value applies would be ambiguous",
            line=line,
        )
    present = set(columns) | set(fixed)
    missing = [column for column in REQUIRED_COLUMNS if column not in present]
    if missing:
        raise InputFileError(
            name,
            MISSING_COLUMN,
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            line=line,
        )
    if "customer_id" not in present and not all(column in present for column in LOOKUP_COLUMNS):
        found = [column for column in LOOKUP_COLUMNS if column in present]
        detail = f" (found only {found[0]})" if found else ""
        raise InputFileError(
            name,
            MISSING_COLUMN,
            f"missing the customer reference: a customer_id column, or both lookup_type and lookup_value{detail}",
            line=line,
        )
    return columns


def _line_and_column(content: bytes, offset: int) -> tuple[int, int]:
    """The 1-based physical line and character column of a byte offset (\\n, \\r\\n and \\r end lines)."""
    line = 1 + content.count(b"\n", 0, offset) + content.count(b"\r", 0, offset) - content.count(b"\r\n", 0, offset)
    line_start = max(content.rfind(b"\n", 0, offset), content.rfind(b"\r", 0, offset)) + 1
    column = len(content[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def _check_quotes(name: str, content: bytes, delimiter: str = ",") -> None:
    """Refuse a quote that neither opens nor closes a whole field, or a quoted field never closed (7102)."""
    found = _first_bad_quote(content, delimiter)
    if found is None:
        return
    offset, never_closed = found
    line, column = _line_and_column(content, offset)
    if never_closed:
        raise InputFileError(
            name, FILE_FORMAT, f"the quoted field starting at column {column} is never closed", line=line
        )
    raise InputFileError(
        name,
        FILE_FORMAT,
        f"stray quote character at column {column}: a quote may only enclose a whole field "
        f'(inside a quoted field, write a quote as "")',
        line=line,
    )


@functools.cache
def _quote_boundaries(delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    """The bytes after which a quote may open a field (a delimiter or a line break; or the file's start), and
    those before which one may close it (the same, and a quote: a doubled quote; or the file's end)."""
    opens_after = np.zeros(256, dtype=bool)
    opens_after[[ord(delimiter), _NEWLINE, _CR]] = True
    closes_before = opens_after.copy()
    closes_before[_QUOTE] = True
    return opens_after, closes_before


def _first_bad_quote(content: bytes, delimiter: str = ",", chunk_size: int = 1 << 20) -> tuple[int, bool] | None:
    """The offset of the first misplaced quote and whether it is an unclosed one, or None if quoting is sound.

    Quotes alternate opening and closing (a doubled quote inside a field closes and reopens). An opening
    quote must follow a field boundary, a closing one must precede one. Vectorised per chunk of bytes,
    carrying the quote parity across chunks, so memory stays small even when every field is quoted.
    """
    opens_after, closes_before = _quote_boundaries(delimiter)
    data = np.frombuffer(content, dtype=np.uint8)
    size = data.size
    quotes_seen, last_quote = 0, -2
    for base in range(0, size, chunk_size):
        positions = np.flatnonzero(data[base : base + chunk_size] == _QUOTE)
        if not positions.size:
            continue
        positions += base
        previous = np.concatenate(([last_quote], positions[:-1]))
        first_opening = quotes_seen % 2
        opening = positions[first_opening::2]
        opening_ok = (
            (opening == 0) | opens_after[data[np.maximum(opening - 1, 0)]] | (previous[first_opening::2] == opening - 1)
        )
        closing = positions[1 - first_opening :: 2]
        closing_ok = (closing == size - 1) | closes_before[data[np.minimum(closing + 1, size - 1)]]
        bad = [int(opening[~opening_ok][0])] if not opening_ok.all() else []
        if not closing_ok.all():
            bad.append(int(closing[~closing_ok][0]))
        if bad:
            return min(bad), False
        quotes_seen += positions.size
        last_quote = int(positions[-1])
    return (last_quote, True) if quotes_seen % 2 else None


def _find_header(name: str, content: bytes) -> tuple[int, str, int]:
    """The header: the first non-blank line, as (line number, text, offset where the data rows start)."""
    position, line = 0, 1
    while position < len(content):
        match = _LINE_BREAK.search(content, position)
        end, next_position = (match.start(), match.end()) if match else (len(content), len(content))
        text = content[position:end].decode("utf-8")
        if text.strip():
            if text.count('"') % 2:
                raise InputFileError(
                    name, FILE_FORMAT, "the header row has a line break inside a quoted name", line=line
                )
            return line, text, next_position
        position, line = next_position, line + 1
    reason = "the file is empty" if not content else "the file has only blank lines; expected a header row"
    raise InputFileError(name, NO_HEADER, reason)


def _split_header(name: str, text: str, line: int, delimiter: str = ",") -> list[str]:
    """The header's names, unquoted and trimmed of surrounding white space."""
    names = [field.strip() for field in next(csv.reader([text], delimiter=delimiter))]
    if not any(names):
        raise InputFileError(name, NO_HEADER, "the header row has no column names", line=line)
    return names


def _refuse_wrong_width(
    name: str, content: bytes, body_start: int, header_line: int, width: int, seen_fields: int, delimiter: str = ","
) -> None:
    """Find the first data row whose field count differs from the header's, and refuse it with its line.

    Only on the failure path, so a per-record Python scan is fine here.
    """
    reader = csv.reader(io.StringIO(content[body_start:].decode("utf-8"), newline=""), delimiter=delimiter)
    lines_read = 0
    try:
        for record in reader:
            first_line = header_line + lines_read + 1
            lines_read = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(record) != width:
                raise InputFileError(name, FILE_FORMAT, _width_reason(len(record), width, delimiter), line=first_line)
    except csv.Error:
        pass
    raise InputFileError(name, FILE_FORMAT, _width_reason(seen_fields, width, delimiter))


def _width_reason(fields: int, width: int, delimiter: str = ",") -> str:
    separator = DELIMITER_NAMES.get(delimiter, f"'{delimiter}'")
    hint = f" (an unquoted {separator} in a value?)" if fields > width else ""
    return f"{fields} field{'s' if fields != 1 else ''}, but the header has {width}{hint}"


def _apply_layout(
    frame: pl.DataFrame, layout: InputLayout, errors_file: bool = False, wide: bool = True
) -> pl.DataFrame:
    """Drop ignored columns, expand a wide file's lines into their operations (input/wide.py), add the fixed
    columns, translate series codes to series ids and find the series of the cards that take it from their number.

    An errors file gets no fixed values (it holds them), and only its known series codes are translated; it is
    never wide, nor is an NDJSON file (`wide` False).
    """
    frame = frame.drop([column for column in frame.columns if column.startswith(_IGNORED)])
    if layout.wide is not None and wide and not errors_file:
        frame = expand_wide(frame, layout.wide)
    if layout.fixed and not errors_file:
        frame = frame.with_columns(
            pl.lit(value, dtype=pl.String).alias(column) for column, value in layout.fixed.items()
        )
    if layout.series_codes is not None and "series_id" in frame.columns:
        code = trim_expr("series_id")
        known = code.replace_strict(
            {c: str(i) for c, i in layout.series_codes.items()}, default=None, return_dtype=pl.String
        )
        unknown = pl.col("series_id") if errors_file else pl.col("series_id") + " (unknown series code)"
        frame = frame.with_columns(
            pl.when(known.is_not_null())
            .then(known)
            .when(code.str.contains(r"^[0-9]+$"))
            .then(unknown)
            .otherwise(pl.col("series_id"))
            .alias("series_id")
        )
    if layout.series_patterns is not None and (layout.series_from_number or SERIES_FROM_NUMBER in frame.columns):
        frame = _series_from_number(frame, layout.series_patterns, layout.series_from_number)
    return frame


def _series_from_number(frame: pl.DataFrame, patterns: Mapping[int, str], every_card: bool) -> pl.DataFrame:
    """The series of the card rows that find it from their number: the one series whose pattern the trimmed card
    number fits, written in series_id as its id. Those rows are a wide file's operations marked
    SERIES_FROM_NUMBER and, when `every_card`, every card row with an empty series_id (marked here). A number that
    fits no series, or several, leaves series_id empty: the check stage fails a card add with 3004, saying why."""
    number, series = trim_expr("id_value"), trim_expr("series_id")
    marked = pl.col(SERIES_FROM_NUMBER).is_not_null() if SERIES_FROM_NUMBER in frame.columns else pl.lit(False)
    if every_card:
        marked = marked | ((trim_expr("id_type") == CARD) & (series == ""))
    fits = [number.str.contains(pattern) for pattern in patterns.values()]
    found: pl.Expr = pl.lit(None, dtype=pl.String)
    for series_id, fit in zip(reversed(list(patterns)), reversed(fits), strict=True):
        found = pl.when(fit).then(pl.lit(str(series_id))).otherwise(found)
    single = pl.sum_horizontal(fits) == 1 if fits else pl.lit(False)
    return frame.with_columns(
        pl.when(marked & single).then(found).otherwise(pl.col("series_id")).alias("series_id"),
        pl.when(marked).then(pl.lit("1")).alias(SERIES_FROM_NUMBER),
    )


_READERS: dict[Format, Callable[[str, bytes, InputLayout], tuple[pl.DataFrame, bool]]] = {
    "csv": _read_csv,
    "parquet": _read_parquet,
    "ndjson": _read_ndjson_layout,
    "xlsx": _read_workbook,
}
"""Each format's reader: the file's request columns as String, and whether it is an errors file."""


def _with_positions(frame: pl.DataFrame, name: str, seq_offset: int) -> pl.DataFrame:
    """Add seq, file and row_number (a wide file's operations keep their line's), and every column of the frame
    the file lacks (as null), in frame order."""
    height = frame.height
    present = set(frame.columns)
    return frame.select(
        pl.int_range(seq_offset, seq_offset + height, dtype=pl.Int64).alias("seq"),
        pl.lit(name, dtype=pl.String).alias("file"),
        pl.col("row_number")
        if "row_number" in present
        else pl.int_range(1, height + 1, dtype=pl.Int64).alias("row_number"),
        *(
            pl.col(column) if column in present else pl.lit(None, dtype=pl.String).alias(column)
            for column in FRAME_COLUMNS[3:]
        ),
    )


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "seq": pl.Int64,
            "file": pl.String,
            "row_number": pl.Int64,
            **dict.fromkeys(FRAME_COLUMNS[3:], pl.String),
        }
    )
