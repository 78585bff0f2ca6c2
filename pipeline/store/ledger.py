"""The run ledger kept inside the store: which runs happened, on which files, with which counts.

Its tables, and those of the undo log beside it, are defined in schema.py; engine/record.py writes the
undo log and lineage/revert.py plays it back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AppliedFile:
    """An input file whose content a real run already applied: the file, and that run with the path it read."""

    file: InputFile
    run_id: str
    started_at: str
    applied_path: str

    def describe(self) -> str:
        """The file, the run that applied it and when, and the earlier file's path when it was another."""
        earlier = "" if self.applied_path == self.file.path else f" (the same rows as {self.applied_path})"
        return f"{self.file.path} was already applied by run {self.run_id} at {self.started_at}{earlier}"


_APPLIED_SQL = """
SELECT r.run_id, r.started_at, f.path FROM run_files f JOIN runs r USING (run_id)
WHERE (f.fingerprint = $fingerprint OR (f.fingerprint IS NULL AND f.sha256 = $sha256))
  AND r.kind = 'run' AND NOT r.dry_run AND r.exit_code IN (0, 1) AND r.reverted_by IS NULL
ORDER BY r.ordinal LIMIT 1
"""
"""The earliest applying run of a file. A file is matched by its fingerprint (its rows as read through the run's
layout, input/read.py rows_fingerprint); a file recorded before the ledger kept fingerprints (null) by its sha256,
so a store made before them still refuses the same bytes."""


def applied_files(con: duckdb.DuckDBPyConnection, files: Sequence[InputFile]) -> list[AppliedFile]:
    """The files whose content a real run applied (not a dry run, an aborted or a reverted one), in input order:
    what a run refuses (`refuse_reapplied`) or, with a job's skip_applied, leaves out.

    A file of no rows is never one: it applies nothing, and every such file has the same content, so yesterday's
    empty export would otherwise refuse today's."""
    applied = []
    for f in files:
        if not f.rows:
            continue
        hit = con.execute(_APPLIED_SQL, {"fingerprint": f.fingerprint, "sha256": f.sha256}).fetchone()
        if hit:
            applied.append(AppliedFile(f, run_id=hit[0], started_at=hit[1], applied_path=hit[2]))
    return applied


def refuse_reapplied(con: duckdb.DuckDBPyConnection, files: Sequence[InputFile]) -> None:
    """Refuse files whose content a real run applied (not a dry run, an aborted or a reverted one)."""
    applied = applied_files(con, files)
    if applied:
        more = f"; {len(applied) - 1} more of the inputs too" if len(applied) > 1 else ""
        raise StoreError(
            f"{applied[0].describe()}{more}; nothing was applied (use --allow-reapply to apply it again, or "
            "skip_applied = true in a job file to leave applied inputs out)"
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
        "INSERT INTO run_files (run_id, position, path, sha256, rows, fingerprint) VALUES (?, ?, ?, ?, ?, ?)",
        [[entry.run_id, i, f.path, f.sha256, f.rows, f.fingerprint] for i, f in enumerate(files)],
    )


def record_revert(
    con: duckdb.DuckDBPyConnection, revert_run_id: str, reverted_run_id: str, local_only: bool = False
) -> None:
    """Record a revert as a run of its own, inside the caller's transaction; `local_only`: the reverted run's calls
    had reached the platform, which keeps them."""
    details: dict[str, object] = {"reverts": reverted_run_id}
    if local_only:
        details["local_only"] = True
    record_event(con, revert_run_id, "revert", details, reverts=reverted_run_id)


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
            "INSERT INTO run_files (run_id, position, path, sha256, rows) VALUES (?, ?, ?, ?, ?)",
            [[run_id, i, path, sha256, rows] for i, (path, sha256, rows) in enumerate(files)],
        )
