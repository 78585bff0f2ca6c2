"""Small DuckDB helpers shared by the stages: multi-statement scripts and whole results as frames."""

from __future__ import annotations

import duckdb
import polars as pl


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
    return pl.from_arrow(con.sql(query, params=params or None).to_arrow_table())
