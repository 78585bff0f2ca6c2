"""The run ledger kept inside the store: which runs happened, on which files, with which counts.

The undo log of each applied run (written and read by undo.py) lives beside it; `ensure` makes both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb

from pipeline import provenance
from pipeline.duck import run_script
from pipeline.errors import StoreError

if TYPE_CHECKING:
    from pipeline.engine.result import RunResult
    from pipeline.read import InputFile

LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR NOT NULL, ordinal BIGINT NOT NULL, job VARCHAR, dry_run BOOLEAN NOT NULL,
    started_at VARCHAR NOT NULL, ended_at VARCHAR NOT NULL, rows BIGINT NOT NULL,
    succeeded BIGINT NOT NULL, failed BIGINT NOT NULL, merges BIGINT NOT NULL, exit_code INTEGER NOT NULL,
    config_sha256 VARCHAR NOT NULL, summary VARCHAR NOT NULL, reverts VARCHAR, reverted_by VARCHAR);
CREATE TABLE IF NOT EXISTS run_files (
    run_id VARCHAR NOT NULL, position INTEGER NOT NULL, path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL,
    rows BIGINT NOT NULL);
"""

UNDO_SQL = """
CREATE TABLE IF NOT EXISTS undo_identifiers (
    run_id VARCHAR NOT NULL, op VARCHAR NOT NULL, customer_id BIGINT NOT NULL, source VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL, id_type VARCHAR NOT NULL, id_value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS undo_cards (
    run_id VARCHAR NOT NULL, card_number VARCHAR NOT NULL, old_customer_id BIGINT, old_label VARCHAR NOT NULL,
    new_customer_id BIGINT, new_label VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS undo_customers (
    run_id VARCHAR NOT NULL, customer_id BIGINT NOT NULL, old_status VARCHAR NOT NULL, old_merged_into BIGINT,
    new_status VARCHAR NOT NULL, new_merged_into BIGINT)
"""


_NEXT_ORDINAL = "(SELECT coalesce(max(ordinal), 0) + 1 FROM runs)"


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ledger, undo-log and provenance tables where missing (store init makes them; older stores
    lack them)."""
    run_script(con, LEDGER_SQL + ";" + UNDO_SQL)
    provenance.ensure(con)


def refuse_reapplied(con: duckdb.DuckDBPyConnection, files: Sequence[InputFile]) -> None:
    """Refuse files whose content a real run applied (not a dry run, an aborted or a reverted one)."""
    for f in files:
        hit = con.execute(
            """SELECT r.run_id, r.started_at FROM run_files f JOIN runs r USING (run_id)
               WHERE f.sha256 = ? AND NOT r.dry_run AND r.exit_code IN (0, 1) AND r.reverted_by IS NULL
               ORDER BY r.ordinal LIMIT 1""",
            [f.sha256],
        ).fetchone()
        if hit:
            raise StoreError(
                f"{f.path} (sha256 {f.sha256[:12]}…) was already applied by run {hit[0]} at {hit[1]}; "
                "nothing was applied (use --allow-reapply to apply it again)"
            )


def record(con: duckdb.DuckDBPyConnection, result: RunResult, files: Sequence[InputFile], config_sha256: str) -> None:
    """Write the run and its files to the ledger, inside the caller's transaction."""
    summary = result.to_dict()
    con.execute(
        f"INSERT INTO runs VALUES (?, {_NEXT_ORDINAL}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        [
            result.run_id,
            result.job,
            result.dry_run,
            result.started_at,
            result.ended_at,
            result.rows,
            result.rows - result.failed,
            result.failed,
            result.merges,
            result.exit_code,
            config_sha256,
            json.dumps(summary),
        ],
    )
    con.executemany(
        "INSERT INTO run_files VALUES (?, ?, ?, ?, ?)",
        [[result.run_id, i, f.path, f.sha256, f.rows] for i, f in enumerate(files)],
    )


def record_revert(con: duckdb.DuckDBPyConnection, revert_run_id: str, reverted_run_id: str) -> None:
    """Record a revert as a run of its own, inside the caller's transaction."""
    record_event(con, revert_run_id, "revert", {"reverts": reverted_run_id}, reverts=reverted_run_id)


def record_event(
    con: duckdb.DuckDBPyConnection, run_id: str, kind: str, details: dict, reverts: str | None = None
) -> None:
    """Record a store-changing command that is not a batch (revert, set-config) in the ledger."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    con.execute(
        f"INSERT INTO runs VALUES (?, {_NEXT_ORDINAL}, ?, false, ?, ?, 0, 0, 0, 0, 0, '', ?, ?, NULL)",
        [run_id, kind, now, now, json.dumps(details), reverts],
    )
