"""Excel workbooks (.xlsx): one sheet's header and rows, every cell as the text it stands for.

The cells come from python-calamine (the Rust calamine reader; pandas' own "calamine" engine), which gives each
cell's value with its type. The reader needs the type: a number cell and a text cell of the same digits read
differently when the number may have been changed (values/spreadsheet.py). fastexcel, the engine of polars'
read_excel, turns a sheet into typed columns: a column of numbers and text comes back as text with no trace of
which cell held a number, so a 16-digit card number typed as a number could not be told from one written as text.

- The first sheet, or the one a job names (`sheet`); leading empty rows and columns are skipped. The header is the
  first row with a non-blank cell; a later row whose cells are all empty or white space is blank and skipped
  (not counted in row_number), as a blank line of a CSV. Refusals name the sheet's own row as the line.
- A text cell reads as written (untrimmed, like a CSV field); a number cell as values/spreadsheet.py writes it
  (an integer of up to 15 digits as its digits), with the reason the number may have been changed kept beside
  it; a boolean as TRUE or FALSE; a date, a time or a date and time in ISO 8601 (2024-01-31, 10:30:00,
  2024-01-31 10:30:00); an empty cell, and a cell holding an error (#N/A), as "". A number's display format is
  not applied: a cell that shows 000123 holds 123 and reads as 123.
- A column whose header cell is empty is dropped when it holds nothing (a formatting leftover); a value under
  it is 7102 naming the row, as a CSV row wider than its header is.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from pipeline.errors import FILE_FORMAT, NO_HEADER, InputFileError
from pipeline.values.normalize import trim_expr
from pipeline.values.spreadsheet import number_cell_text

Cell = str | float | int | bool | dt.date | dt.datetime | dt.time | dt.timedelta


@dataclass(frozen=True)
class SheetText:
    """A sheet read as text: its header cells, and its data rows as one String column per header position.

    `frame` names its columns "0", "1", ... in header order, blank rows left out. `notes` holds, for the
    positions where a number cell may have been changed, a String column of the reason (null elsewhere) of
    the same rows.
    """

    sheet: str
    header: list[str]
    header_line: int
    frame: pl.DataFrame
    notes: dict[int, pl.Series] = field(default_factory=dict)


def read_sheet(name: str, content: bytes, sheet: str | None) -> SheetText:
    """Read one sheet of a workbook (the named one, else the first) as text; InputFileError when it cannot be."""
    from python_calamine import CalamineError, CalamineWorkbook  # here: a run without a workbook never loads it

    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(content))
        chosen = _sheet_name(name, book.sheet_names, sheet)
        found = book.get_sheet_by_name(chosen)
        rows: list[list[Cell]] = found.to_python()
        first_line = found.start[0] + 1 if found.start is not None else 1
    except CalamineError as error:
        raise InputFileError(
            name, FILE_FORMAT, f"a zip archive that is not a readable Excel workbook ({error})"
        ) from None
    header_index = next((i for i, row in enumerate(rows) if any(_text(cell).strip() for cell in row)), None)
    if header_index is None:
        raise InputFileError(name, NO_HEADER, f"sheet '{chosen}' is empty; expected a header row")
    header_line = first_line + header_index
    header = [_text(cell) for cell in rows[header_index]]
    width = len(header)
    data = [row if len(row) == width else [*row, *[""] * (width - len(row))] for row in rows[header_index + 1 :]]
    columns: list[Sequence[Cell]] = list(zip(*data, strict=True)) if data else [() for _ in header]
    kept = _named_columns(name, chosen, header, columns, header_line)
    series: list[pl.Series] = []
    notes: dict[int, pl.Series] = {}
    for position, index in enumerate(kept):
        texts, reasons = _column_text(columns[index])
        series.append(pl.Series(str(position), texts, dtype=pl.String))
        if reasons is not None:
            notes[position] = pl.Series(f"note {position}", reasons, dtype=pl.String)
    frame = pl.DataFrame([*series, *notes.values()]) if series else pl.DataFrame()
    if frame.width:
        frame = frame.filter(pl.any_horizontal(trim_expr(s.name) != "" for s in series))
    return SheetText(
        sheet=chosen,
        header=[header[index] for index in kept],
        header_line=header_line,
        frame=frame.select(s.name for s in series),
        notes={position: frame.get_column(f"note {position}") for position in notes},
    )


def _sheet_name(name: str, names: list[str], sheet: str | None) -> str:
    if sheet is None:
        if not names:
            raise InputFileError(name, FILE_FORMAT, "the workbook has no sheet")
        return names[0]
    if sheet not in names:
        raise InputFileError(
            name, FILE_FORMAT, f"the workbook has no sheet '{sheet}' (its sheets: {', '.join(names) or 'none'})"
        )
    return sheet


def _named_columns(
    name: str, sheet: str, header: list[str], columns: list[Sequence[Cell]], header_line: int
) -> list[int]:
    """The positions of the columns to read: every named one, and none without a name (7102 if it holds a value)."""
    kept = []
    for index, title in enumerate(header):
        if title.strip():
            kept.append(index)
            continue
        filled = next((row for row, cell in enumerate(columns[index]) if _text(cell).strip()), None)
        if filled is not None:
            raise InputFileError(
                name,
                FILE_FORMAT,
                f"sheet '{sheet}' has a value in column {_column_letters(index)}, whose header cell is empty",
                line=header_line + 1 + filled,
            )
    return kept


def _column_text(cells: Sequence[Cell]) -> tuple[Sequence[str], list[str | None] | None]:
    """A column's cells as text, and the reasons its number cells may have been changed (None if there are none)."""
    if set(map(type, cells)) <= {str}:
        return cells, None  # type: ignore[return-value]  # every cell is a str, checked just above
    texts: list[str] = []
    reasons: list[str | None] = []
    for cell in cells:
        if type(cell) is float:
            text, reason = number_cell_text(cell)
        else:
            text, reason = _text(cell), None
        texts.append(text)
        reasons.append(reason)
    return texts, reasons if any(reason is not None for reason in reasons) else None


def _text(cell: Cell) -> str:
    """One cell's text (numbers as values/spreadsheet.py writes them, without the reason)."""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, float):
        return number_cell_text(cell)[0]
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, dt.datetime):
        return cell.isoformat(sep=" ")
    if isinstance(cell, dt.date | dt.time):
        return cell.isoformat()
    return str(cell)


def _column_letters(index: int) -> str:
    """A 0-based column index as the sheet names it (0 -> A, 26 -> AA)."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters
