"""Scenario (e): the floor under scenario (a), only the work no implementation can avoid, in bare DuckDB.

Read the request CSV, join it once (hash join) against the store's identifiers, apply the changed
rows in one transaction (insert the adds whose value is free, with the value_hash the store keeps
beside each identifier; delete the removes that found their row) and write one CSV with a line per
request. No checks, normalisation, ordering semantics, merges or cards: a lower bound, not a
competitor. Its join is on the values themselves, as it was before the store kept value_hash (the
engine looks values up by the hash: engine/resolve.py), so the script, and the floor it measures,
stayed what the targets were set against. `bench/run.py` times it as a subprocess on a fresh copy
of the same store as (a) and reports (a) / floor.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import duckdb


def one_value(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The count a DML statement reports (the floor imports nothing of the package it is the floor of)."""
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


READ_SQL = """
CREATE TEMP TABLE requests AS
SELECT row_number() OVER () AS seq, *
FROM read_csv($path, header = true, all_varchar = true)
"""
JOIN_SQL = """
CREATE TEMP TABLE joined AS
SELECT r.*, i.rowid AS held_rowid, i.customer_id AS holder_id
FROM requests r LEFT JOIN identifiers i
  ON i.source = r.source AND i.account_id = coalesce(r.account_id, '')
 AND i.id_type = r.id_type AND i.id_value = r.id_value
"""
INSERT_SQL = """
INSERT INTO identifiers
SELECT TRY_CAST(customer_id AS BIGINT), source, coalesce(account_id, ''), id_type, id_value, hash(id_type, id_value)
FROM joined
WHERE lower(action) = 'add' AND id_type <> 'cardnumber' AND holder_id IS NULL
  AND TRY_CAST(customer_id AS BIGINT) IS NOT NULL
  AND source IS NOT NULL AND id_type IS NOT NULL AND id_value IS NOT NULL
"""
DELETE_SQL = """
DELETE FROM identifiers
WHERE rowid IN (SELECT held_rowid FROM joined WHERE lower(action) = 'remove' AND held_rowid IS NOT NULL)
"""
REPORT_SQL = "COPY (SELECT * EXCLUDE (held_rowid) FROM joined ORDER BY seq) TO $out (FORMAT csv, HEADER)"


def run_floor(
    store: Path, requests: Path, out_csv: Path, memory_limit: str = "2GB", threads: int | None = None
) -> tuple[int, int]:
    """Do the floor's work on `store`; returns (identifiers inserted, identifiers deleted)."""
    config: dict = {"memory_limit": memory_limit, "temp_directory": f"{store}.tmp"}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(str(store), config=config)
    try:
        con.execute(READ_SQL, {"path": str(requests)})
        con.execute(JOIN_SQL)
        con.execute("BEGIN TRANSACTION")
        inserted = one_value(con, INSERT_SQL)
        deleted = one_value(con, DELETE_SQL)
        con.execute("COMMIT")
        tmp = out_csv.with_name(out_csv.name + ".tmp")
        con.execute(REPORT_SQL, {"out": str(tmp)})
        os.replace(tmp, out_csv)
    finally:
        con.close()
    return inserted, deleted


def main() -> None:
    """`python bench/floor.py --store S --requests R.csv --out OUT.csv [--memory-limit 2GB] [--threads N]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    inserted, deleted = run_floor(args.store, args.requests, args.out, args.memory_limit, args.threads)
    print(f"floor: {inserted} identifiers inserted, {deleted} deleted, report {args.out}")


if __name__ == "__main__":
    main()
