"""`store refresh`: bring a store to the platform's next snapshot, keeping everything the store knows.

The snapshot is staged and checked as `store init` checks one; the store is then compared with it key by key
(store/diff.py) and the changed keys are written, with their undo log, provenance and a ledger entry of kind
`refresh`, in one transaction: a kill leaves the store as it was or as the snapshot says. Its ledger, undo logs,
provenance and applied-file fingerprints stay, so a file applied last night is still refused, `explain` still
answers and `revert` can undo the refresh itself. Before writing, it says what the platform kept of the store's
own runs since the last init or refresh, and writes the lost changes as a request file that `run` takes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import faults
from pipeline.config import OrgConfig, load_config
from pipeline.errors import EXIT_OK, EXIT_REFUSED, SnapshotRefused, StoreError
from pipeline.files import write_csv, write_json
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.reports.refresh_html import write_refresh_html
from pipeline.results import StageClock, StageObserver, StoreCounts
from pipeline.store.binding import refuse_other_config
from pipeline.store.connect import open_store
from pipeline.store.diff import (
    KINDS,
    TABLE_OF_KIND,
    RunKept,
    SnapshotDiff,
    apply_diff,
    changes_frame,
    diff_snapshot,
    drop_diff,
    platform_kept,
)
from pipeline.store.duck import transaction
from pipeline.store.ledger import record_event
from pipeline.store.mobiles import stored_mobile_countries
from pipeline.store.schema import TABLES, store_counts
from pipeline.store.snapshot import SnapshotLayout, findings_on_staged, source_file, stage_snapshot

DEFAULT_MAX_REMOVED_SHARE = 0.05
"""A snapshot that would remove more than this share of the store's customers, identifiers or cards is refused
unless the user allows removals: a truncated export must not empty a store."""

CHANGES_FILE, LOST_FILE, SUMMARY_FILE, FINDINGS_FILE = (
    "changes.csv",
    "not_on_platform.csv",
    "refresh-summary.json",
    "snapshot-findings.csv",
)


@dataclass(frozen=True)
class Guard:
    """The truncation guard's figures: per table, the rows the snapshot would remove and their share."""

    max_removed_share: float
    allow_removals: bool
    removed: dict[str, int]
    store_rows: dict[str, int]
    snapshot_rows: dict[str, int]
    breaches: tuple[str, ...]

    @property
    def refuses(self) -> bool:
        return bool(self.breaches) and not self.allow_removals

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_removed_share": self.max_removed_share,
            "allow_removals": self.allow_removals,
            "tables": {
                table: {
                    "store_rows": self.store_rows[table],
                    "snapshot_rows": self.snapshot_rows[table],
                    "removed": self.removed[table],
                    "removed_share": round(self.removed[table] / self.store_rows[table], 6)
                    if self.store_rows[table]
                    else 0.0,
                }
                for table in TABLES
            },
            "breaches": list(self.breaches),
            "refused": self.refuses,
        }


def guard_figures(diff: SnapshotDiff, max_removed_share: float, allow_removals: bool) -> Guard:
    removed = {TABLE_OF_KIND[kind]: diff.removed(kind) for kind in KINDS}
    breaches = []
    for table in TABLES:
        stored, snapped = diff.store_rows[table], diff.snapshot_rows[table]
        if stored and not snapped:
            breaches.append(f"the snapshot's {table} is empty while the store holds {stored}")
        elif stored and removed[table] / stored > max_removed_share:
            breaches.append(
                f"{removed[table]} of the store's {stored} {table} ({removed[table] / stored:.2%}) would be removed,"
                f" more than --max-removed-share {max_removed_share:.2%}"
            )
    return Guard(max_removed_share, allow_removals, removed, diff.store_rows, diff.snapshot_rows, tuple(breaches))


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did or would do; the console summary and refresh-summary.json from one object."""

    run_id: str
    store: str
    snapshot: str
    dry_run: bool
    started_at: str
    ended_at: str
    files: tuple[dict[str, Any], ...]
    counts: dict[str, dict[str, int]]
    guard: Guard
    runs: tuple[RunKept, ...]
    not_on_platform: int
    store_before: StoreCounts
    store_after: StoreCounts
    exit_code: int
    reports_dir: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(sum(by_change.values()) for by_change in self.counts.values())

    @property
    def status(self) -> str:
        if self.guard.refuses:
            return "REFUSED, nothing applied: " + "; ".join(self.guard.breaches) + " (--allow-removals to apply)"
        if self.dry_run:
            return "dry run (nothing applied)"
        return "refreshed" if self.changed else "nothing to change"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": "refresh",
            "store": self.store,
            "snapshot": self.snapshot,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "files": list(self.files),
            "changes": self.counts,
            "changed_keys": self.changed,
            "guard": self.guard.to_dict(),
            "runs": [
                {"run_id": r.run_id, "changes_on_platform": r.kept, "changes_not_on_platform": r.not_kept}
                for r in self.runs
            ],
            "not_on_platform": self.not_on_platform,
            "store_before": self.store_before.to_dict(),
            "store_after": self.store_after.to_dict(),
            "exit_code": self.exit_code,
            "reports_dir": self.reports_dir,
            "stage_seconds": self.seconds,
        }

    def render(self) -> str:
        lines = [
            f"refresh {self.run_id} of {self.store} from {self.snapshot}: {self.status}, exit code {self.exit_code}"
        ]
        for kind, by_change in self.counts.items():
            lines.append(f"  {kind}s: " + ", ".join(f"{change} {n}" for change, n in by_change.items()))
        if self.guard.breaches:
            lines += [f"  guard: {breach}" for breach in self.guard.breaches]
        if self.runs:
            lines.append("  the store's own runs since the last init or refresh:")
            lines += [f"    {r.run_id}: {r.kept} change(s) on the platform, {r.not_kept} not" for r in self.runs]
        if self.not_on_platform:
            lines.append(
                f"  {self.not_on_platform} change(s) not on the platform: run "
                f"{Path(self.reports_dir) / LOST_FILE} to make them again"
            )
        lines.append(f"  store before: {self.store_before.render()}")
        lines.append(f"  store after:  {self.store_after.render()}")
        lines.append(f"  reports: {self.reports_dir}")
        return "\n".join(lines)


def refresh_store(
    store_path: Path | str,
    snapshot_dir: Path | str,
    run_id: str,
    config_path: Path | str | None = None,
    reports_dir: Path | str | None = None,
    dry_run: bool = False,
    max_removed_share: float = DEFAULT_MAX_REMOVED_SHARE,
    allow_removals: bool = False,
    mask_pii: bool = False,
    layout: SnapshotLayout | None = None,
    observer: StageObserver | None = None,
) -> RefreshResult:
    """Refresh a store from a snapshot folder (module docstring); refuse (SnapshotRefused, exit 3) a snapshot that
    breaks an invariant, and return a refused result (exit 3, nothing applied) past the truncation guard."""
    started, t = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    store_path, snapshot_dir = Path(store_path), Path(snapshot_dir)
    reports = Path(reports_dir) if reports_dir is not None else Path("reports") / "refresh" / run_id
    if not snapshot_dir.is_dir():
        raise StoreError(f"no snapshot folder at {snapshot_dir}; nothing was applied")
    config = load_config(config_path) if config_path is not None else None
    clock = StageClock(observer=observer)
    con = open_store(store_path)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{store_path.name}.refresh-", dir=store_path.parent))
    try:
        _refuse_other_countries(con, config, store_path)
        staged = stage_snapshot(snapshot_dir, work_dir, config.mobile if config is not None else None, layout)
        fingerprints = {table: _fingerprint(source_file(snapshot_dir, table, layout)) for table in TABLES}
        findings = findings_on_staged(staged, work_dir)
        t = clock.lap("stage", t)
        if not findings.is_empty():
            report = write_csv(findings, reports / FINDINGS_FILE)
            raise SnapshotRefused(snapshot_dir, findings.height, report)
        diff = diff_snapshot(con, staged)
        files = tuple({**fingerprints[table], "rows": diff.snapshot_rows[table]} for table in TABLES)
        guard = guard_figures(diff, max_removed_share, allow_removals)
        runs, lost = platform_kept(con)
        changes = changes_frame(con)
        before = store_counts(con)
        t = clock.lap("diff", t)
        faults.kill_point("refresh-after-diff")
        apply = not dry_run and not guard.refuses
        with transaction(con, commit=apply, commit_point="refresh-during-commit"):
            after = before
            if apply:
                apply_diff(con, run_id)
                after = store_counts(con)
                details = {"snapshot": str(snapshot_dir.resolve()), "changes": diff.counts, "guard": guard.to_dict()}
                files_read = [(f["path"], f["sha256"], f["rows"]) for f in files]
                record_event(con, run_id, "refresh", details, files=files_read, started_at=started)
                faults.kill_point("refresh-in-transaction")
        faults.kill_point("refresh-after-commit")
        drop_diff(con)
        t = clock.lap("apply", t)
        result = RefreshResult(
            run_id=run_id,
            store=str(store_path),
            snapshot=str(snapshot_dir),
            dry_run=dry_run,
            started_at=started,
            ended_at=datetime.now(UTC).isoformat(timespec="seconds"),
            files=files,
            counts=diff.counts,
            guard=guard,
            runs=tuple(runs),
            not_on_platform=lost.height,
            store_before=before,
            store_after=after,
            exit_code=EXIT_REFUSED if guard.refuses else EXIT_OK,
            reports_dir=str(reports),
            seconds=clock.seconds,
        )
        left = "the store was refreshed" if apply else "the store was not changed"
        with clock.stage("report", left=f"{left}; its reports in {reports} may be incomplete", since=t):
            _write_reports(result, changes, lost, reports, mask_pii)
        return result
    finally:
        with faults.kill_during("refresh-during-checkpoint"):  # closing checkpoints the WAL into the file
            con.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def _refuse_other_countries(con: Any, config: OrgConfig | None, store_path: Path) -> None:
    """A snapshot's mobiles must be read as the store's were: with the config's countries (binding's rule), or,
    without a config, only for a store whose mobiles were read by the plain rule."""
    if config is not None:
        refuse_other_config(con, config, store_path)
        return
    stored = stored_mobile_countries(con)
    if stored:
        raise StoreError(
            f"store {store_path} holds mobiles read with the [mobile] countries {stored}; give --config with that org"
            " config so that the snapshot's mobiles are read the same way; nothing was applied"
        )


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}


def _write_reports(
    result: RefreshResult, changes: pl.DataFrame, lost: pl.DataFrame, reports: Path, mask_pii: bool
) -> None:
    """changes.csv, not_on_platform.csv (request layout), refresh-summary.json and summary.html."""
    reports.mkdir(parents=True, exist_ok=True)
    write_csv(changes, reports / CHANGES_FILE)
    write_csv(lost.select(REQUEST_COLUMNS), reports / LOST_FILE)
    write_json(result.to_dict(), reports / SUMMARY_FILE)
    write_refresh_html(result.to_dict(), changes, reports / "summary.html", mask_pii)
