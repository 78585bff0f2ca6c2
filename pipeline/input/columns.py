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
FRAME_COLUMNS: tuple[str, ...] = ("seq", "file", "row_number", *REQUEST_COLUMNS)
"""The batch frame the reader makes: each row's position in the batch (seq), its file and line, and its
request columns as raw text."""
