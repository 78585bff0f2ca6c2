"""What reached the platform: each push of a run's reports, recorded in the store beside the run it delivered.

A push ends by recording its counts here (`record_push`, called with the run's reports folder, whose
summary.json names the run and its store). When the store cannot be opened then (another machine, a run holding
it), the counts stay in the reports folder's push-summary.json, and the next command that reads the store's
pushes picks them up from the folder the ledger names for the run (`pushes_of`; a writable open also records
them). `runs`, `revert` and the refresh read what reached the platform from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline.errors import StoreError
from pipeline.settings import PUSH_CSV_FILE, PUSH_SUMMARY_FILE, RUN_SUMMARY_FILE
from pipeline.store.connect import open_store

REACHED = ("confirmed", "already_applied")
"""Push outcomes whose change is in place on the platform."""


@dataclass(frozen=True)
class PushRecord:
    """The last push of a run: its outcome counts and when it ended."""

    run_id: str
    recorded_at: str
    outcomes: dict[str, int]
    api: str | None
    merges_reached: int
    """Merge calls of the run that reached the platform: the platform's API cannot undo them."""

    @property
    def reached(self) -> int:
        return sum(self.outcomes.get(outcome, 0) for outcome in REACHED)

    @property
    def complete(self) -> bool:
        """Every call of the run reached the platform."""
        return self.reached == sum(self.outcomes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"recorded_at": self.recorded_at, "api": self.api, "outcomes": self.outcomes, "reached": self.reached}


_LATEST = """
SELECT run_id, recorded_at, summary, merges_reached FROM pushes
QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY recorded_at DESC, rowid DESC) = 1
"""
_INSERT = "INSERT INTO pushes VALUES ($run_id, $recorded_at, $summary, $merges_reached)"
_REPORTS_OF_RUNS = """
SELECT run_id, json_extract_string(summary, '$.reports_dir') FROM runs
WHERE kind = 'run' AND NOT dry_run AND exit_code IN (0, 1)
"""


def record_push(reports_dir: Path | str) -> str:
    """Record the push of a run's reports folder in the run's store; a message says where the counts are kept."""
    folder = Path(reports_dir)
    run = _read_json(folder / RUN_SUMMARY_FILE)
    if run is None or not run.get("store"):
        return f"push counts kept in {folder / PUSH_SUMMARY_FILE} (the run's summary.json names no store)"
    try:
        con = open_store(run["store"])
    except StoreError as exc:
        return (
            f"push counts kept in {folder / PUSH_SUMMARY_FILE}; the store was not updated ({exc}); the next command"
            " that reads the store's pushes with this reports folder in place picks them up"
        )
    try:
        adopt(con, run["run_id"], folder)
    finally:
        con.close()
    return f"push counts recorded in the store {_shown(Path(run['store']))} beside run {run['run_id']}"


def _shown(path: Path) -> Path:
    """A path as a person reads it: relative to the current folder when under it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def pushes_of(con: duckdb.DuckDBPyConnection, writable: bool = False) -> dict[str, PushRecord]:
    """The last push of every run: from the ledger, or from a newer push-summary.json in the folder the ledger
    names for the run (recorded as well when `writable`)."""
    found = _recorded(con)
    for run_id, reports_dir in con.execute(_REPORTS_OF_RUNS).fetchall():
        if not reports_dir:
            continue
        pushed = _push_summary(Path(reports_dir))
        if pushed is None:
            continue
        known = found.get(run_id)
        if known is None or known.recorded_at < pushed["ended_at"]:
            found[run_id] = _record(run_id, pushed["ended_at"], json.dumps(pushed), _merges_reached(pushed))
            if writable:
                _insert(con, run_id, pushed)
    return found


def adopt(con: duckdb.DuckDBPyConnection, run_id: str, folder: Path) -> None:
    """Record the push summary of a run's reports folder, unless the ledger already has it."""
    pushed = _push_summary(folder)
    if pushed is None:
        return
    known = _recorded(con).get(run_id)
    if known is None or known.recorded_at < pushed["ended_at"]:
        _insert(con, run_id, pushed)


def _recorded(con: duckdb.DuckDBPyConnection) -> dict[str, PushRecord]:
    """The last push of each run the ledger recorded (none in a store made before pushes were recorded)."""
    has_table = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'pushes'").fetchall()[0][0]
    return {row[0]: _record(*row) for row in con.execute(_LATEST).fetchall()} if has_table else {}


def _insert(con: duckdb.DuckDBPyConnection, run_id: str, pushed: dict[str, Any]) -> None:
    params = {
        "run_id": run_id,
        "recorded_at": pushed["ended_at"],
        "summary": json.dumps(pushed),
        "merges_reached": _merges_reached(pushed),
    }
    con.execute(_INSERT, params)


def _merges_reached(pushed: dict[str, Any]) -> int:
    """Merge calls that reached the platform, from push.csv beside the summary (its expected and final outcomes)."""
    csv = Path(pushed.get("reports_dir", "")) / PUSH_CSV_FILE
    if not csv.is_file():
        return 0
    calls = pl.read_csv(csv, columns=["expected_outcome", "outcome"], infer_schema=False)
    return calls.filter((pl.col("expected_outcome") == "merged") & pl.col("outcome").is_in(REACHED)).height


def _record(run_id: str, recorded_at: str, summary: str, merges_reached: int) -> PushRecord:
    pushed = json.loads(summary)
    return PushRecord(run_id, recorded_at, dict(pushed.get("outcomes", {})), pushed.get("api"), int(merges_reached))


def _push_summary(folder: Path) -> dict[str, Any] | None:
    """A folder's push-summary.json, with when it ended (the file's time when it does not say) and its folder."""
    path = folder / PUSH_SUMMARY_FILE
    pushed = _read_json(path)
    if pushed is None:
        return None
    ended = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return {**pushed, "ended_at": pushed.get("ended_at") or ended, "reports_dir": str(folder)}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
