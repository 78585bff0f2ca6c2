"""Opening a store: the DuckDB connection with its memory limit and spill folder, a clear refusal when another
process holds the file, the migration of older stores on a writable open, and the vacuum policy of a run's close.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipeline.errors import StoreBusy, StoreError
from pipeline.settings import DEFAULT_MEMORY_LIMIT
from pipeline.store.duck import transaction
from pipeline.store.schema import (
    IDENTIFIERS_DDL,
    SCHEMA_VERSION,
    VALUE_HASH_PROBE_KEY,
    VALUE_HASH_PROBE_SQL,
    ensure,
    stored_columns,
)

VACUUM_SHARE = 0.2
"""A run lets DuckDB vacuum (compact row groups to reclaim deleted rows) at its closing checkpoint only once a
store table's deleted rows not yet reclaimed reach this share of its stored rows. Vacuuming rewrites the row
groups the deletions touched: after 170k identifier deletions scattered over 25M rows that is nearly every
row group, 1.2-1.9 s of a 1M-row run's close against 0.2 s without (bench/RESULTS.md). Deferred, the
deleted rows cost scans that share and nothing else; the run that crosses the share pays the compaction of
all of them at once (README "Decisions", Store)."""


TOMBSTONES_SQL = """
SELECT t.table_name, t.estimated_size, c.live FROM duckdb_tables() t JOIN (
    SELECT 'customers' AS table_name, count(*) AS live FROM customers
    UNION ALL SELECT 'identifiers', count(*) FROM identifiers
    UNION ALL SELECT 'cards', count(*) FROM cards) c USING (table_name)
WHERE t.database_name = current_database() AND t.schema_name = 'main'
"""
"""Per store table (TABLES), the rows its row groups hold, deleted ones included (estimated_size), and the
live ones (count(*)); both come from metadata, so this costs milliseconds on any store."""


def tombstone_shares(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """Per store table, the share of its stored rows that are deleted and not yet reclaimed by a vacuum."""
    return {
        table: (stored - live) / stored if stored else 0.0
        for table, stored, live in con.execute(TOMBSTONES_SQL).fetchall()
    }


def defer_vacuum(con: duckdb.DuckDBPyConnection, share: float = VACUUM_SHARE) -> bool:
    """Turn off DuckDB's checkpoint vacuum for this connection unless a store table's deleted rows reach
    `share` (VACUUM_SHARE); True when the vacuum was deferred."""
    if max(tombstone_shares(con).values(), default=0.0) >= share:
        return False
    con.execute("SET max_vacuum_tasks = 0")
    return True


def connect(
    path: Path | str,
    read_only: bool,
    temp_dir: Path,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    config: dict = {"memory_limit": memory_limit, "temp_directory": str(temp_dir)}
    if threads:
        config["threads"] = threads
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            pid = re.search(r"PID (\d+)", str(exc))
            holder = f" (PID {pid.group(1)})" if pid else ""
            raise StoreBusy(
                f"store {path} is in use by another process{holder}; nothing was applied; "
                "run again once that process has finished",
                holder,
            ) from exc
        raise StoreError(f"cannot open store {path}: {exc}; nothing was done") from exc
    except duckdb.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}; nothing was done") from exc


def open_store(
    path: Path | str, read_only: bool = False, memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """Open an existing store, with a memory limit and a spill folder beside it.

    A writable open brings a store made by an older version up to date first: its identifiers gain
    value_hash, and the ledger, undo-log and provenance tables it lacks are made (schema.ensure).
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no store at {path}; make one with 'loyalty-bulk store init'")
    con = connect(path, read_only, Path(f"{path}.tmp"), memory_limit, threads)
    try:
        row = next(iter(con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()), None)
    except duckdb.CatalogException:
        row = None
    if row is None or row[0] not in (SCHEMA_VERSION, "1"):
        con.close()
        found = "no schema_version" if row is None else f"schema_version {row[0]}"
        raise StoreError(f"{path} is not a loyalty-bulk store of schema_version {SCHEMA_VERSION} ({found})")
    if not read_only:
        try:
            _current_value_hashes(con, row[0])
            ensure(con)
        except BaseException:
            con.close()
            raise
    return con


def _current_value_hashes(con: duckdb.DuckDBPyConnection, version: str) -> None:
    """Give a version-1 store its value_hash column, and recompute the column when this DuckDB's hash()
    differs from the one that wrote it; both in one transaction, before anything else reads the store.

    A read-only open does neither: its readers (export, audit, explain) use the values, not the hashes.
    """
    # fetched whole: a pending result would block the caller's next register()
    [(probe, stored)] = con.execute(
        f"SELECT ({VALUE_HASH_PROBE_SQL}), (SELECT max(value) FROM store_meta WHERE key = $1)", [VALUE_HASH_PROBE_KEY]
    ).fetchall()
    if version == SCHEMA_VERSION and stored == probe:
        return
    with transaction(con):
        # rebuilt in the same order, not updated: one append, and DuckDB adds no NOT NULL after an UPDATE
        con.execute(IDENTIFIERS_DDL.format(table="identifiers_rehashed"))
        con.execute(f"INSERT INTO identifiers_rehashed SELECT {stored_columns('identifiers')} FROM identifiers")
        con.execute("DROP TABLE identifiers")
        con.execute("ALTER TABLE identifiers_rehashed RENAME TO identifiers")
        for key, value in (("schema_version", SCHEMA_VERSION), (VALUE_HASH_PROBE_KEY, probe)):
            con.execute("INSERT OR REPLACE INTO store_meta VALUES ($1, $2)", [key, value])
