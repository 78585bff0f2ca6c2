"""What a run hands back: RunResult (the console summary and summary.json from one object), the store's
counts, the ledger's record of a run, and the clock of its stages. On the ground floor so that the store,
the engine, the reports and the console read them without importing the orchestrator (run.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

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


RunState = Literal["applied", "applied with failures", "dry run", "aborted"]
"""What a run did to the store (RunResult.state): the console's first line and summary.html's banner."""


def share(part: int, whole: int) -> str:
    """`part` as a percentage of `whole` with one decimal, e.g. "67.2 %"; a share that is neither none nor all
    never rounds to "0.0 %" or "100.0 %" (one failed row in a million reads "< 0.1 %", not "0.0 %")."""
    if not whole:
        return "-"
    percent = 100 * part / whole
    if part > 0 and percent < 0.05:
        return "< 0.1 %"
    if part < whole and percent >= 99.95:
        return "> 99.9 %"
    return f"{percent:.1f} %"


def _all_rows(rows: int, what: str) -> str:
    """Every row did `what`: "all 12 rows succeeded", "the 1 row succeeded", or "there were no rows"."""
    return "there were no rows" if rows == 0 else f"the 1 row {what}" if rows == 1 else f"all {rows} rows {what}"


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
    store: str = ""
    """The store the run applied to (absolute): a push of its reports records what reached the platform there."""
    skipped: tuple[dict[str, Any], ...] = ()
    """Inputs left out as already applied (a job's skip_applied): each file and the run that applied it."""

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
            "skipped": list(self.skipped),
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
            "store": self.store,
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
    def state(self) -> RunState:
        """What happened to the store, one of four: aborted and dry run applied nothing; a real run is
        "applied with failures" as soon as one row failed, so a run that mostly failed never reads as applied."""
        if self.aborted:
            return "aborted"
        if self.dry_run:
            return "dry run"
        return "applied with failures" if self.failed else "applied"

    @property
    def failed_share(self) -> str:
        """The failed rows' share of all rows, e.g. "67.2 %" (see `share`)."""
        return share(self.failed, self.rows)

    @property
    def state_detail(self) -> str:
        """What the state means for this run: the abort's reason, or how many rows failed and their share."""
        failed = f"{self.failed} of {self.rows} rows"
        if self.aborted:
            return self.aborted
        if self.dry_run:
            return (
                f"{failed} would fail ({self.failed_share})" if self.failed else _all_rows(self.rows, "would succeed")
            )
        if self.failed:
            nothing = "; no row was applied" if self.failed == self.rows else ""
            return f"{failed} failed ({self.failed_share}){nothing}"
        return _all_rows(self.rows, "succeeded")

    @property
    def nothing_ran(self) -> bool:
        """Every input was already applied and left out (skip_applied): no run was recorded, no reports written."""
        return bool(self.skipped) and not self.files

    @property
    def status(self) -> str:
        """The state and its detail in one phrase, as the console's first line and --quiet's line say it
        ("applied with failures: 45 of 67 rows failed (67.2 %)"); an abort is shouted."""
        if self.nothing_ran:
            return f"nothing to run: every input ({len(self.skipped)}) was already applied; nothing was recorded"
        label = {"aborted": "ABORTED, nothing applied", "dry run": "dry run, nothing applied"}.get(
            self.state, self.state
        )
        return f"{label}: {self.state_detail}"

    def render(self, verbose: bool = False) -> str:
        """The end-of-run summary for a person, led by what happened to the store (`status`); `verbose` adds
        the input files and the store counts."""
        job = f" (job {self.job})" if self.job else ""
        lines = [self.status, f"run {self.run_id}{job}: {self.rows} rows, exit code {self.exit_code}"]
        lines += [
            f"  skipped, already applied: {s['path']} (by run {s['applied_by']} at {s['applied_at']})"
            for s in self.skipped
        ]
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
        if self.nothing_ran:
            lines.append("  reports: none (nothing ran)")
            return "\n".join(lines)
        lines.append(f"  reports: {self.reports_dir}")
        lines += [f"    {Path(self.reports_dir) / name}" for name in self.REPORT_FILES]
        return "\n".join(lines)
