"""The run ledger kept inside the store: which runs happened, on which files, with which counts.

Its tables, and those of the undo log beside it, are defined in schema.py; engine/record.py writes the
undo log and lineage/revert.py plays it back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb

from pipeline.errors import StoreError
from pipeline.results import LedgerEntry

if TYPE_CHECKING:
    from pipeline.input.read import InputFile


_NEXT_ORDINAL = "(SELECT coalesce(max(ordinal), 0) + 1 FROM runs)"
_COLUMNS = (
    "run_id, ordinal, job, dry_run, started_at, ended_at, rows, succeeded, failed, merges, exit_code, config_sha256,"
    " summary, reverts, reverted_by, kind"
)
"""Named in every INSERT: a store made before `kind` has the column last, as a new store has it."""


def refuse_reapplied(con: duckdb.DuckDBPyConnection, files: Sequence[InputFile]) -> None:
    """Refuse files whose content a real run applied (not a dry run, an aborted or a reverted one)."""
    for f in files:
        hit = con.execute(
            """SELECT r.run_id, r.started_at FROM run_files f JOIN runs r USING (run_id)
               WHERE f.sha256 = ? AND r.kind = 'run' AND NOT r.dry_run AND r.exit_code IN (0, 1)
                 AND r.reverted_by IS NULL
               ORDER BY r.ordinal LIMIT 1""",
            [f.sha256],
        ).fetchone()
        if hit:
            raise StoreError(
                f"{f.path} (sha256 {f.sha256[:12]}…) was already applied by run {hit[0]} at {hit[1]}; "
                "nothing was applied (use --allow-reapply to apply it again)"
            )


def record(con: duckdb.DuckDBPyConnection, entry: LedgerEntry, files: Sequence[InputFile], config_sha256: str) -> None:
    """Write the run and its files to the ledger, inside the caller's transaction."""
    con.execute(
        f"INSERT INTO runs ({_COLUMNS})"
        f" VALUES (?, {_NEXT_ORDINAL}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 'run')",
        [
            entry.run_id,
            entry.job,
            entry.dry_run,
            entry.started_at,
            entry.ended_at,
            entry.rows,
            entry.rows - entry.failed,
            entry.failed,
            entry.merges,
            entry.exit_code,
            config_sha256,
            json.dumps(entry.summary),
        ],
    )
    con.executemany(
        "INSERT INTO run_files VALUES (?, ?, ?, ?, ?)",
        [[entry.run_id, i, f.path, f.sha256, f.rows] for i, f in enumerate(files)],
    )


def record_revert(con: duckdb.DuckDBPyConnection, revert_run_id: str, reverted_run_id: str) -> None:
    """Record a revert as a run of its own, inside the caller's transaction."""
    record_event(con, revert_run_id, "revert", {"reverts": reverted_run_id}, reverts=reverted_run_id)


def record_event(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    kind: str,
    details: dict,
    reverts: str | None = None,
    files: Sequence[tuple[str, str, int]] = (),
    started_at: str | None = None,
) -> None:
    """Record a store-changing command that is not a batch (refresh, revert, set-config) in the ledger, with the
    files it read (path, sha256, rows: a refresh's snapshot files), inside the caller's transaction."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    con.execute(
        f"INSERT INTO runs ({_COLUMNS}) VALUES (?, {_NEXT_ORDINAL}, ?, false, ?, ?, 0, 0, 0, 0, 0, '', ?, ?, NULL, ?)",
        [run_id, kind, started_at or now, now, json.dumps(details), reverts, kind],
    )
    if files:
        con.executemany(
            "INSERT INTO run_files VALUES (?, ?, ?, ?, ?)",
            [[run_id, i, path, sha256, rows] for i, (path, sha256, rows) in enumerate(files)],
        )
