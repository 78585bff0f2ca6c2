"""`loyalty-bulk runs`: a store's ledger as a person reads it, newest first.

Each entry is a run, a refresh, a revert or a set-config, with its files, its counts by outcome, its exit code,
whether its calls reached the platform (store/pushes.py) and whether it was reverted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.store.connect import open_store
from pipeline.store.pushes import PushRecord, pushes_of

_RUNS = """
SELECT r.run_id, coalesce(r.kind, 'run'), r.job, r.started_at, r.dry_run, r.exit_code, r.summary, r.reverted_by,
    r.reverts, (SELECT list(f.path ORDER BY f.position) FROM run_files f WHERE f.run_id = r.run_id)
FROM runs r ORDER BY r.ordinal DESC
"""


@dataclass(frozen=True)
class RunEntry:
    """One line of `runs`."""

    run_id: str
    kind: str
    job: str | None
    started_at: str
    dry_run: bool
    exit_code: int
    files: tuple[str, ...]
    outcomes: dict[str, int]
    reverted_by: str | None
    reverts: str | None
    push: PushRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "job": self.job if self.kind == "run" else None,
            "started_at": self.started_at,
            "dry_run": self.dry_run,
            "files": list(self.files),
            "outcomes": self.outcomes,
            "exit_code": self.exit_code,
            "pushed": self.push.to_dict() if self.push else None,
            "reverted_by": self.reverted_by,
            "reverts": self.reverts,
        }

    def render(self) -> str:
        what = {"run": f"job {self.job}" if self.job else "run", "revert": f"revert of {self.reverts}"}.get(
            self.kind, self.kind
        )
        if self.dry_run:
            what += " (dry run)"
        counts = ", ".join(f"{k} {v}" for k, v in self.outcomes.items() if v)
        line = f"{self.run_id}  {self.started_at}  {what}  exit {self.exit_code}"
        line += f"  {counts}" if counts else ""
        if self.push is not None:
            pushed = ", ".join(f"{k} {v}" for k, v in self.push.outcomes.items() if v)
            line += f"\n    pushed {self.push.recorded_at}: {pushed or 'nothing sent'}"
        if self.reverted_by:
            line += f"\n    reverted by {self.reverted_by}"
        if self.files:
            line += "\n    files: " + ", ".join(self.files)
        return line


@dataclass(frozen=True)
class RunList:
    store: str
    entries: tuple[RunEntry, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "runs": [e.to_dict() for e in self.entries]}

    def render(self) -> str:
        if not self.entries:
            return f"store {self.store}: no runs yet"
        return (
            f"store {self.store}: {len(self.entries)} entr{'y' if len(self.entries) == 1 else 'ies'}, newest first\n"
            + ("\n".join(e.render() for e in self.entries))
        )


def list_runs(store_path: Path | str) -> RunList:
    """The store's ledger, newest first, with what each run's pushes got onto the platform; read-only."""
    with open_store(store_path, read_only=True) as con:
        has_kind = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'runs' AND column_name = 'kind'"
        ).fetchall()[0][0]
        rows = con.execute(_RUNS if has_kind else _RUNS.replace("coalesce(r.kind, 'run')", "'run'")).fetchall()
        pushes = pushes_of(con) if has_kind else {}
    entries = []
    for run_id, kind, job, started_at, dry_run, exit_code, summary, reverted_by, reverts, files in rows:
        details = json.loads(summary) if summary else {}
        outcomes = details.get("outcomes", {}) if kind == "run" else {}
        entries.append(
            RunEntry(
                run_id,
                kind,
                job,
                started_at,
                bool(dry_run),
                int(exit_code),
                tuple(files or ()),
                {k: int(v) for k, v in outcomes.items()},
                reverted_by,
                reverts,
                pushes.get(run_id),
            )
        )
    return RunList(str(store_path), tuple(entries))
