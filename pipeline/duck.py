"""Small DuckDB helpers shared by the stages: multi-statement scripts and whole results as frames."""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from pipeline.errors import InternalError


def run_script(con: duckdb.DuckDBPyConnection, script: str, params: dict | None = None) -> None:
    """Run several ';'-separated statements; each gets only the parameters it names.

    DuckDB binds prepared parameters per statement. Scripts are constants of this package, so
    splitting on ';' is safe: no request value ever becomes SQL text.
    """
    for statement in filter(str.strip, script.split(";")):
        used = {k: v for k, v in (params or {}).items() if f"${k}" in statement}
        con.execute(statement, used)


def query_frame(con: duckdb.DuckDBPyConnection, query: str, params: dict | list | None = None) -> pl.DataFrame:
    """A query's whole result as a polars frame, consumed so the connection is free again."""
    frame = pl.from_arrow(con.sql(query, params=params or None).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)  # an Arrow table always becomes a frame
    return frame


def one_row(con: duckdb.DuckDBPyConnection, query: str, params: dict | list | None = None) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (aggregates, counts), or InternalError."""
    row = con.execute(query, params or None).fetchone()
    if row is None:
        raise InternalError(f"expected one row from: {query.strip().splitlines()[0]}")
    return row


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: dict | list | None = None) -> Any:
    """The one value of a query that returns one row, such as a count."""
    return one_row(con, query, params)[0]
