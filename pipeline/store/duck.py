"""Small DuckDB helpers shared by the store and the engine: transactions, multi-statement scripts, whole
results as frames, and the eviction of cached blocks. DuckDB-specific, as every module of store/ is."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import duckdb
import polars as pl

from pipeline import faults
from pipeline.errors import InternalError


class Transaction:
    """The open transaction of a `transaction` block."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def discard_so_far(self) -> None:
        """Roll back what the block wrote so far and go on in a new transaction (a dry run keeps its ledger entry
        only)."""
        self.con.execute("ROLLBACK")
        self.con.execute("BEGIN TRANSACTION")


@contextlib.contextmanager
def transaction(
    con: duckdb.DuckDBPyConnection, commit: bool = True, commit_point: str | None = None
) -> Iterator[Transaction]:
    """BEGIN, the block, then COMMIT (or ROLLBACK when not `commit`); any failure in the block or the commit
    rolls back and is raised again, so the store is as it was before the block or as the block left it.

    `commit_point` names the fault hook that can kill the process during the COMMIT (faults.kill_during).
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield Transaction(con)
        if not commit:
            con.execute("ROLLBACK")
            return
        with faults.kill_during(commit_point) if commit_point else contextlib.nullcontext():
            con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already ended the transaction
            con.execute("ROLLBACK")
        raise


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


HELD_BESIDE_CACHE_SQL = """
SELECT coalesce(sum(memory_usage_bytes) FILTER (WHERE tag <> 'BASE_TABLE'), 0)::BIGINT FROM duckdb_memory()
"""
"""What DuckDB holds besides the blocks of the database's tables that it keeps cached (temp tables, hash tables)."""

EVICTION_MARGIN = 128 * 2**20
"""Room left above what DuckDB holds besides its cached table blocks while they are evicted, so that the lowered
limit never makes it write a temp table out to its spill folder."""


def evict_cached_blocks(con: duckdb.DuckDBPyConnection, memory_limit: str, margin: int = EVICTION_MARGIN) -> None:
    """Let DuckDB drop the table blocks it keeps cached, then give it back `memory_limit` (the connection's limit).

    DuckDB keeps every block a scan has read in its buffer pool until the limit needs the room. Once a run's
    resolve has pulled what the run reads of the store into its own temp tables, the store's cached blocks are
    dead weight at the run's memory peak (0.6-0.9 GiB of the 1M-row benchmark run). Lowering the limit to what
    DuckDB holds besides them makes it evict them: they are clean, so they are dropped, not written.
    """
    held = scalar(con, HELD_BESIDE_CACHE_SQL)
    try:
        con.execute("SET memory_limit = $limit", {"limit": f"{held + margin}B"})
    except duckdb.OutOfMemoryException:
        pass  # DuckDB could not get under it (and changed nothing): the cache stays, which costs memory only
    finally:
        con.execute("SET memory_limit = $limit", {"limit": memory_limit})
