"""The request columns, spelled once: the reader, the check, resolve, the reports, job files and the sample
generator all take them from here. No data library is imported, so any room may."""

from __future__ import annotations

REQUEST_COLUMNS: tuple[str, ...] = (
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
"""The columns a request file may have, in the documented order (docs/requests.md)."""
REQUEST_FIELDS: tuple[str, ...] = REQUEST_COLUMNS[1:]
"""The columns that say what a row asks for: every request column but row_id."""
REQUIRED_COLUMNS: tuple[str, ...] = ("source", "action", "id_type", "id_value")
LOOKUP_COLUMNS: tuple[str, ...] = ("lookup_type", "lookup_value")
REPORT_POSITION_COLUMNS: tuple[str, ...] = ("file", "row_number")
"""The columns errors.csv puts before a failed row's request columns: where the row was read."""
REPORT_ERROR_COLUMNS: tuple[str, ...] = ("error_code", "error_name", "error_field", "error_message", "stage")
"""The columns errors.csv puts after a failed row's request columns: why it failed. A request file whose header
holds these and REPORT_POSITION_COLUMNS is an errors file, read with them ignored (input/read.py)."""
REPLACES_COLUMN = "replaces"
"""The value a `replace` row read from a call line removes (the line's one remove item; null on any other row).
Not a request column: no file names it, no report shows it; it only carries the removed value from the call
line (input/calls.py) to the engine, which refuses the row (7009) when the customer does not hold it."""
SOURCE_COLUMN = "source_column"
"""The file column a wide file's operation was read from (input/wide.py; null on every other row). The reports
show it as their last column (success.csv, errors.csv); an errors file given as input has it and it is ignored."""
LOOKUP_SCOPE_COLUMNS: tuple[str, ...] = ("lookup_source", "lookup_account_id")
"""The scope a wide file's `lookup` finds its customer in, when the job gives one (null on every other row, whose
lookup is in the row's own scope). Not request columns: the job's [wide] sets them, no report shows them."""
SERIES_FROM_NUMBER = "series_from_number"
"""'1' on a card row whose series is found from its number (a job's `series = "from_number"`), null elsewhere: the
reader fills series_id when exactly one series fits, and the check stage says so when none does (3004)."""
INTERNAL_COLUMNS: tuple[str, ...] = (REPLACES_COLUMN, SOURCE_COLUMN, *LOOKUP_SCOPE_COLUMNS, SERIES_FROM_NUMBER)
"""The batch frame's columns after the request columns: what a row carries besides its request, null on the rows
of a plain request file."""
FRAME_COLUMNS: tuple[str, ...] = ("seq", "file", "row_number", *REQUEST_COLUMNS, *INTERNAL_COLUMNS)
"""The batch frame the reader makes: each row's position in the batch (seq), its file and line, its request
columns as raw text, and its internal columns (INTERNAL_COLUMNS)."""
