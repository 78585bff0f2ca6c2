"""pipeline/store/duck.py's helpers that are more than one statement: evicting DuckDB's cached table blocks."""

from __future__ import annotations

from typing import cast

import duckdb
import pytest

from pipeline.store.duck import evict_cached_blocks, scalar

CACHED = "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'BASE_TABLE'"
LIMIT = "SELECT current_setting('memory_limit')"


def test_evicting_drops_cached_table_blocks_keeps_temp_tables_and_restores_the_limit(tmp_path):
    """A run's store blocks leave DuckDB's cache once resolve is done; its temp tables stay in memory, unspilled."""
    store, spill = tmp_path / "s.duckdb", tmp_path / "spill"
    with duckdb.connect(str(store)) as con:
        con.execute("CREATE TABLE t AS SELECT i, md5(i::VARCHAR) AS s FROM range(3000000) r(i)")
    con = duckdb.connect(str(store), config={"memory_limit": "1GB", "temp_directory": str(spill)})
    try:
        limit = scalar(con, LIMIT)
        con.execute("CREATE TEMP TABLE run_rows AS SELECT i, s FROM t WHERE i % 3 = 0")
        assert scalar(con, "SELECT count(DISTINCT s) FROM t") == 3_000_000  # a scan that caches every block
        cached = scalar(con, CACHED)
        margin = 4 * 2**20  # the run's 128 MiB would hold this small table's every block
        assert cached > 4 * margin
        evict_cached_blocks(con, "1GB", margin)
        assert scalar(con, CACHED) < cached / 2
        assert scalar(con, LIMIT) == limit
        assert not spill.exists() or not any(spill.iterdir()), "a temp table was written out"
        assert scalar(con, "SELECT count(*) FROM run_rows") == 1_000_000
        assert scalar(con, "SELECT count(*) FROM t") == 3_000_000  # the table reads back from the file
    finally:
        con.close()


class _RefusingLowerLimits:
    """A connection whose DuckDB cannot get under a lowered limit: it says so and changes nothing, as DuckDB does
    when it holds more than the limit and cannot write it out (forcing that for real is not deterministic)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, limit: str):
        self.con, self.limit = con, limit

    def execute(self, query: str, params: dict | None = None) -> duckdb.DuckDBPyConnection:
        if query.startswith("SET memory_limit") and params and params["limit"] != self.limit:
            raise duckdb.OutOfMemoryException("Failed to change memory limit: could not free up enough memory")
        return self.con.execute(query, params)


def test_an_eviction_duckdb_cannot_make_changes_nothing(tmp_path):
    """A limit DuckDB cannot get under leaves the run as it was, with no error, and the limit restored."""
    con = duckdb.connect(str(tmp_path / "s.duckdb"), config={"memory_limit": "1GB", "temp_directory": str(tmp_path)})
    try:
        con.execute("CREATE TEMP TABLE run_rows AS SELECT i, md5(i::VARCHAR) AS s FROM range(2000000) r(i)")
        limit = scalar(con, LIMIT)
        refusing = cast(duckdb.DuckDBPyConnection, _RefusingLowerLimits(con, "1GB"))
        with pytest.raises(duckdb.OutOfMemoryException):
            refusing.execute("SET memory_limit = $limit", {"limit": "1000B"})
        evict_cached_blocks(refusing, "1GB")
        assert scalar(con, LIMIT) == limit
        assert scalar(con, "SELECT count(*) FROM run_rows") == 2_000_000
    finally:
        con.close()
