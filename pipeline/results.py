"""What a run hands back: RunResult (the console summary and summary.json from one object), the store's
counts, the ledger's record of a run, and the clock of its stages. On the ground floor so that the store,
the engine, the reports and the console read them without importing the orchestrator (run.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.catalog import CATALOG
from pipeline.errors import NOTHING_APPLIED, stage_failure


@dataclass(frozen=True)
class StoreCounts:
    """Row counts of a store, for the console and for summary.json."""

    customers: int
    active: int
    merged: int
    identifiers: int
    cards: int
    linked_cards: int

    def render(self) -> str:
        return (
            f"{self.customers} customers ({self.active} active, {self.merged} merged), "
            f"{self.identifiers} identifiers, {self.cards} cards ({self.linked_cards} linked)"
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class LedgerEntry:
    """A run as the store's ledger records it (store/ledger.py): its counts and its whole summary."""

    run_id: str
    job: str | None
    dry_run: bool
    started_at: str
    ended_at: str
    rows: int
    failed: int
    merges: int
    exit_code: int
    summary: dict[str, Any]


class StageObserver(Protocol):
    """Told when each stage ends (progress display); stages: read, check, resolve, decide, apply, report."""

    def stage_done(self, stage: str, seconds: float) -> None: ...


@dataclass
class StageClock:
    """Seconds spent per stage, in the order the stages ran; tells an optional observer."""

    seconds: dict[str, float] = field(default_factory=dict)
    observer: StageObserver | None = None

    @contextmanager
    def stage(self, stage: str, left: str = NOTHING_APPLIED, since: float | None = None) -> Iterator[None]:
        """Time the block (from `since`, when given) as `stage`; an unexpected failure inside it becomes
        StageFailed, naming the stage and the state it leaves (`left`)."""
        started = time.perf_counter() if since is None else since
        with stage_failure(stage, left):
            yield
        self.lap(stage, started)

    def lap(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - started, 3)
        if self.observer is not None:
            self.observer.stage_done(stage, now - started)
        return now


@dataclass(frozen=True)
class RunResult:
    run_id: str
    job: str | None
    dry_run: bool
    aborted: str | None
    started_at: str
    ended_at: str
    stage_seconds: dict[str, float]
    files: tuple[dict[str, Any], ...]
    rows: int
    outcomes: dict[str, int]
    errors_by_code: dict[int, int]
    merges: int
    store_before: StoreCounts
    store_after: StoreCounts
    exit_code: int
    reports_dir: str
    calls: int = 0
    """Lines of calls.ndjson: the platform calls a push of this run would send."""

    @property
    def failed(self) -> int:
        return sum(self.errors_by_code.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "dry_run": self.dry_run,
            "aborted": self.aborted is not None,
            "abort_reason": self.aborted,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "stage_seconds": self.stage_seconds,
            "files": list(self.files),
            "rows": self.rows,
            "outcomes": self.outcomes | {"failed": self.failed},
            "errors_by_code": {
                str(code): {"name": CATALOG[code].name, "count": n} for code, n in sorted(self.errors_by_code.items())
            },
            "merges": self.merges,
            "calls": self.calls,
            "store_before": self.store_before.to_dict(),
            "store_after": self.store_after.to_dict(),
            "exit_code": self.exit_code,
            "reports_dir": self.reports_dir,
        }

    def ledger_entry(self) -> LedgerEntry:
        return LedgerEntry(
            run_id=self.run_id,
            job=self.job,
            dry_run=self.dry_run,
            started_at=self.started_at,
            ended_at=self.ended_at,
            rows=self.rows,
            failed=self.failed,
            merges=self.merges,
            exit_code=self.exit_code,
            summary=self.to_dict(),
        )

    REPORT_FILES = ("success.csv", "errors.csv", "merges.csv", "summary.json", "summary.html", "calls.ndjson")

    @property
    def status(self) -> str:
        """One phrase for what happened to the store: aborted, dry run or applied."""
        return (
            f"ABORTED, nothing applied: {self.aborted}"
            if self.aborted
            else "dry run (nothing applied)"
            if self.dry_run
            else "applied"
        )

    def render(self, verbose: bool = False) -> str:
        """The end-of-run summary for a person; `verbose` adds the input files and the store counts."""
        job = f" (job {self.job})" if self.job else ""
        lines = [f"run {self.run_id}{job}: {self.rows} rows, {self.status}, exit code {self.exit_code}"]
        lines.append(
            "  outcomes: " + ", ".join(f"{k} {v}" for k, v in self.outcomes.items()) + f", failed {self.failed}"
        )
        if self.errors_by_code:
            lines.append("  errors by code:")
        for code, n in sorted(self.errors_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {code} {CATALOG[code].name}: {n}")
        lines.append(f"  merges: {self.merges}")
        lines.append(f"  calls to push: {self.calls}")
        lines.append(
            "  seconds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
            + f" (total {sum(self.stage_seconds.values()):.2f})"
        )
        if verbose:
            lines.append("  files:")
            lines += [f"    {f['path']}: {f['rows']} rows, sha256 {f['sha256']}" for f in self.files]
            lines.append(f"  store before: {self.store_before.render()}")
            lines.append(f"  store after:  {self.store_after.render()}")
        lines.append(f"  reports: {self.reports_dir}")
        lines += [f"    {Path(self.reports_dir) / name}" for name in self.REPORT_FILES]
        return "\n".join(lines)
