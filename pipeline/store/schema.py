"""Every table of the store file, defined in one place, and the counts a run reports.

The store is one DuckDB file (this module's SQL is DuckDB's): the three tables made from a snapshot
(customers, identifiers, cards), store_meta, and the store's record of itself: the run ledger (runs,
run_files), the undo log of every applied run (undo_*) and provenance. `store init` makes them all;
`ensure` gives a store made by an older version the ones it lacks when a command opens it for writing.
"""

from __future__ import annotations

import duckdb
import polars as pl

from pipeline.results import StoreCounts
from pipeline.store.duck import run_script

SCHEMA_VERSION = "2"
"""2: identifiers carry value_hash. A store of version 1 gains it when a command first opens it for writing."""


TABLES = ("customers", "identifiers", "cards")


IDENTIFIERS_DDL = """CREATE TABLE {table} (
    customer_id BIGINT NOT NULL,
    source VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    id_type VARCHAR NOT NULL,
    id_value VARCHAR NOT NULL,
    value_hash UBIGINT NOT NULL
);"""


SCHEMA_SQL = f"""
CREATE TABLE store_meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
);
CREATE TABLE customers (
    customer_id BIGINT NOT NULL,
    status VARCHAR NOT NULL,
    merged_into BIGINT,
    customer_type VARCHAR NOT NULL
);
{IDENTIFIERS_DDL.format(table="identifiers")}
CREATE TABLE cards (
    card_number VARCHAR NOT NULL,
    series_id INTEGER NOT NULL,
    customer_id BIGINT,
    status_label VARCHAR NOT NULL
);
"""


def value_hash(id_type: str, id_value: str) -> str:
    """SQL of identifiers.value_hash over the SQL expressions of an id_type and an id_value."""
    return f"hash({id_type}, {id_value})"


VALUE_HASH_SQL = value_hash("id_type", "id_value")
"""identifiers.value_hash, computed by every statement that writes identifiers (`stored_columns`).

A run finds the customers holding its values by scanning these 8-byte hashes, where a join on the
values themselves decodes every stored id_value (1 s on 25M identifiers: engine/resolve.py). Equal
values have equal hashes, so no holder is missed; a collision only pulls in a customer that did not
need pulling, and the values are then compared exactly. `store_meta.value_hash_probe` records what
the expression gives for a fixed value: a DuckDB whose hash() differs recomputes the column when it
first opens the store for writing (`open_store`)."""


VALUE_HASH_PROBE_SQL = "SELECT " + value_hash("'email'", "'probe@loyalty-bulk.invalid'") + "::VARCHAR"


VALUE_HASH_PROBE_KEY = "value_hash_probe"


COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "customers": {
        "customer_id": pl.Int64(),
        "status": pl.String(),
        "merged_into": pl.Int64(),
        "customer_type": pl.String(),
    },
    "identifiers": {
        "customer_id": pl.Int64(),
        "source": pl.String(),
        "account_id": pl.String(),
        "id_type": pl.String(),
        "id_value": pl.String(),
    },
    "cards": {
        "card_number": pl.String(),
        "series_id": pl.Int32(),
        "customer_id": pl.Int64(),
        "status_label": pl.String(),
    },
}
"""Snapshot columns per table, in store order, with their types (identifiers add value_hash in the store)."""


def stored_columns(table: str, customer_id: str = "customer_id") -> str:
    """The select list that writes rows of a table's snapshot columns into the store: for identifiers,
    value_hash computed after them. `customer_id` names the column that holds the customer."""
    columns = [customer_id if c == "customer_id" else c for c in COLUMNS[table]]
    if table == "identifiers":
        columns.append(VALUE_HASH_SQL)
    return ", ".join(columns)


SORT_KEYS = {
    "customers": ("customer_id",),
    "identifiers": ("customer_id", "source", "account_id", "id_type", "id_value"),
    "cards": ("card_number",),
}
"""Export order: unique per table, so an export is byte-for-byte reproducible."""


COUNTS_SQL = """
SELECT c.*, (SELECT count(*) FROM identifiers), k.*
FROM (SELECT count(*), count(*) FILTER (WHERE status = 'ACTIVE'), count(*) FILTER (WHERE status = 'MERGED')
      FROM customers) c,
     (SELECT count(*), count(customer_id) FROM cards) k
"""
"""One scan of customers and one of cards (a run counts before and after its changes)."""


def store_counts(con: duckdb.DuckDBPyConnection) -> StoreCounts:
    """Count the rows of the store behind `con`."""
    row = con.execute(COUNTS_SQL).fetchall()[0]  # consumed whole: a pending result blocks register()
    return StoreCounts(*(int(v) for v in row))


LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR NOT NULL, ordinal BIGINT NOT NULL, job VARCHAR, dry_run BOOLEAN NOT NULL,
    started_at VARCHAR NOT NULL, ended_at VARCHAR NOT NULL, rows BIGINT NOT NULL,
    succeeded BIGINT NOT NULL, failed BIGINT NOT NULL, merges BIGINT NOT NULL, exit_code INTEGER NOT NULL,
    config_sha256 VARCHAR NOT NULL, summary VARCHAR NOT NULL, reverts VARCHAR, reverted_by VARCHAR, kind VARCHAR);
CREATE TABLE IF NOT EXISTS run_files (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
    rows BIGINT NOT NULL, fingerprint VARCHAR);
ALTER TABLE run_files ADD COLUMN IF NOT EXISTS fingerprint VARCHAR;
"""
"""run_files.fingerprint: the fingerprint of a batch file's rows as read (input/read.py rows_fingerprint), what
"already applied" compares (store/ledger.py); null for a refresh's snapshot files and for the files of runs
recorded before it (a store made before it gains the column here), whose sha256 stands in for it."""


UNDO_SQL = """
CREATE TABLE IF NOT EXISTS undo_identifiers (
    run_id VARCHAR NOT NULL, op VARCHAR NOT NULL, customer_id BIGINT NOT NULL, source VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL, id_type VARCHAR NOT NULL, id_value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS undo_cards (
    run_id VARCHAR NOT NULL, card_number VARCHAR NOT NULL, old_customer_id BIGINT, old_label VARCHAR NOT NULL,
    new_customer_id BIGINT, new_label VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS undo_customers (
    run_id VARCHAR NOT NULL, customer_id BIGINT NOT NULL, old_status VARCHAR NOT NULL, old_merged_into BIGINT,
    new_status VARCHAR NOT NULL, new_merged_into BIGINT);
CREATE TABLE IF NOT EXISTS undo_customer_rows (
    run_id VARCHAR NOT NULL, op VARCHAR NOT NULL, customer_id BIGINT NOT NULL, status VARCHAR NOT NULL,
    merged_into BIGINT, customer_type VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS undo_card_rows (
    run_id VARCHAR NOT NULL, op VARCHAR NOT NULL, card_number VARCHAR NOT NULL, series_id INTEGER NOT NULL,
    customer_id BIGINT, status_label VARCHAR NOT NULL)
"""
"""undo_identifiers holds whole rows a run deleted and inserted (op); undo_cards and undo_customers the before
and after of what a batch run changes in place. A refresh, which also makes and removes customers and cards, logs
whole rows of all three tables (undo_identifiers, undo_customer_rows, undo_card_rows)."""

PUSHES_SQL = """
CREATE TABLE IF NOT EXISTS pushes (
    run_id VARCHAR NOT NULL, recorded_at VARCHAR NOT NULL, summary VARCHAR NOT NULL, merges_reached BIGINT NOT NULL)
"""
"""Each push of a run's calls that the store learned of (store/pushes.py): when it ended, its push-summary.json,
and how many of the run's merges reached the platform."""

RUN_KINDS_SQL = """
ALTER TABLE runs ADD COLUMN IF NOT EXISTS kind VARCHAR;
UPDATE runs SET kind = CASE WHEN config_sha256 = '' AND job IN ('revert', 'set-config') THEN job ELSE 'run' END
WHERE kind IS NULL
"""
"""runs.kind (run, refresh, revert, set-config): stores made before it said revert and set-config in `job`."""


PROVENANCE_SQL = """
CREATE TABLE IF NOT EXISTS provenance (
    run_id VARCHAR NOT NULL, file_position INTEGER, row_number BIGINT,
    row_id VARCHAR USING COMPRESSION uncompressed, action VARCHAR NOT NULL,
    from_customer_id BIGINT, to_customer_id BIGINT, source VARCHAR, account_id VARCHAR,
    id_type VARCHAR NOT NULL, id_value VARCHAR NOT NULL USING COMPRESSION uncompressed,
    old_label VARCHAR, new_label VARCHAR)
"""
"""One change per row: from_customer_id lost the identifier or card (or is the merge victim),
to_customer_id gained it (or is the survivor); file_position is the file's position in run_files;
file, row and row_id are empty for a revert's rows. row_id and id_value are nearly unique per row:
compressing them made writing 1M rows 3-5x slower for half the bytes, so they are stored
uncompressed (bench/RESULTS.md, scenario p, quotes the store growth)."""


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ledger, undo-log and provenance tables where missing (stores made before them lack them)."""
    run_script(con, LEDGER_SQL + ";" + UNDO_SQL + ";" + PROVENANCE_SQL + ";" + PUSHES_SQL + ";" + RUN_KINDS_SQL)
