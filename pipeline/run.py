"""One run, composed of the stages read → check → resolve → apply → report.

`run_batch` is what `loyalty-bulk run` and `loyalty-bulk job` call; it returns a RunResult that
renders the console summary and summary.json from the same object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
import polars as pl

from pipeline import binding, faults, ledger, provenance, undo
from pipeline.apply import apply_changes, decide
from pipeline.catalog import CATALOG
from pipeline.check import CheckResult, check_requests
from pipeline.components import core_count, replay_pool
from pipeline.config import OrgConfig, load_config
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED, InternalError
from pipeline.html_summary import write_summary_html
from pipeline.normalize import trim_expr
from pipeline.pii import mask_reports
from pipeline.plan import CALL_CHANGES, CALLS_FILE, build_plan
from pipeline.read import InputLayout, RequestBatch, read_requests
from pipeline.report import error_report, write_csv, write_json, write_lines, write_parquet
from pipeline.resolve import register_config, resolve_targets
from pipeline.settings import DEFAULT_MEMORY_LIMIT
from pipeline.store import StoreCounts, open_store, store_counts

SUCCESS_COLUMNS = (
    "file",
    "row_number",
    "row_id",
    "action",
    "source",
    "account_id",
    "id_type",
    "id_value",
    "customer_id",
    "resolved_customer_id",
    "outcome",
    "survivor_id",
    "victim_id",
    "warning_codes",
)
MERGE_COLUMNS = ("victim_id", "survivor_id", "file", "row_number", "id_type", "id_value")


class StageObserver(Protocol):
    """Told when each stage ends (progress display); stages: read, check, resolve, decide, apply, report."""

    def stage_done(self, stage: str, seconds: float) -> None: ...


@dataclass
class StageClock:
    """Seconds spent per stage, in the order the stages ran; tells an optional observer."""

    seconds: dict[str, float] = field(default_factory=dict)
    observer: StageObserver | None = None

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


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


@dataclass(frozen=True)
class RunOptions:
    """How a run behaves beyond its inputs; the job file and the command line fill it."""

    dry_run: bool = False
    allow_reapply: bool = False
    job: str | None = None
    run_id: str | None = None
    parquet_reports: bool = False
    layout: InputLayout | None = None
    """A job's input layout (renames, dropped columns, fixed values, series codes)."""
    max_errors: int | None = None
    max_error_rate: float | None = None
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    threads: int | None = None
    workers: int | None = None
    """Cores for the interacting rows' replay (components.py); None: every core."""
    observer: StageObserver | None = None
    mask_pii: bool = False


def run_batch(
    store_path: Path | str,
    config_path: Path | str,
    files: Sequence[Path | str],
    reports_dir: Path | str,
    options: RunOptions = RunOptions(),
    **overrides: Any,
) -> RunResult:
    """Apply request files to a store with the result of applying their rows one at a time.

    Keyword overrides replace fields of `options` (e.g. `dry_run=True`).
    """
    opts = dataclasses.replace(options, **overrides)
    clock, started_at = StageClock(observer=opts.observer), _now()
    run_id = opts.run_id or new_run_id()
    reports_dir = Path(reports_dir)
    config = load_config(config_path)
    t = time.perf_counter()
    con = open_store(store_path, memory_limit=opts.memory_limit, threads=opts.threads)
    try:
        ledger.ensure(con)
        binding.refuse_other_config(con, config, store_path)
        batch = read_requests(files, layout=opts.layout)
        t = clock.lap("read", t)
        if not opts.dry_run and not opts.allow_reapply:
            ledger.refuse_reapplied(con, batch.files)
        record_provenance = provenance.enabled()
        checked, outcomes = decide_batch(
            con,
            batch.frame,
            config,
            clock,
            events=record_provenance and not opts.dry_run,
            workers=opts.workers or core_count(),
        )
        t = time.perf_counter()
        reports = _report_frames(batch, checked, outcomes, opts.mask_pii)
        before = store_counts(con)
        aborted = _threshold_breach(reports, batch.frame.height, opts)
        # an aborted run changed nothing, so there is nothing to deliver either
        calls = 0 if aborted else reports.outcome_counts["applied"] + reports.outcome_counts["merged"]
        # built before the transaction, so a plan that does not match the outcomes stops the run unapplied
        plan = build_plan(run_id, checked.checked, outcomes.filter(pl.lit(not aborted)), config)
        if plan.height != calls:
            raise InternalError(f"the call plan has {plan.height} calls for {calls} changing rows; nothing was applied")
        faults.kill_point("after-decide")
        con.execute("BEGIN TRANSACTION")
        try:
            after = before
            if not aborted:
                apply_changes(con)
                # counted before the logs are written: they change no count, and the counts' scans then
                # find the store's blocks still in DuckDB's buffer pool
                after = store_counts(con)
                if not opts.dry_run:
                    undo.record_changes(con, run_id)
                    if record_provenance:
                        changed = outcomes.filter(pl.col("outcome").is_in(CALL_CHANGES)).select("seq")
                        rows = checked.checked.join(changed, on="seq", how="semi")
                        provenance.record(con, run_id, provenance.row_positions(rows, batch.files))
                    else:
                        provenance.record_unrecorded(con, run_id)
                    if not binding.bound_config(con):
                        binding.bind(con, config)
            t = clock.lap("apply", t)
            result = _result(
                run_id, opts, started_at, clock, batch, reports, before, after, reports_dir, aborted, calls
            )
            if opts.dry_run or aborted:
                con.execute("ROLLBACK")
                con.execute("BEGIN TRANSACTION")
            # the ledger entry commits with the changes, so an applied file is always known as applied
            ledger.record(con, result, batch.files, config.sha256)
            faults.kill_point("in-transaction")
            with faults.kill_during("during-commit"):
                con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        faults.kill_point("after-commit")
        t = time.perf_counter()
        _write_reports(reports, result, reports_dir, opts.parquet_reports, plan)
        clock.lap("report", t)
        return result
    finally:
        with faults.kill_during("during-checkpoint"):  # closing checkpoints the WAL into the file
            con.close()


def _threshold_breach(reports: ReportFrames, rows: int, opts: RunOptions) -> str | None:
    """Why the run must be aborted by its error thresholds, or None."""
    failed = sum(reports.errors_by_code.values())
    if opts.max_errors is not None and failed > opts.max_errors:
        return f"{failed} failed rows exceed max_errors = {opts.max_errors}"
    if opts.max_error_rate is not None and rows and failed / rows > opts.max_error_rate:
        return f"error rate {failed / rows:.2%} exceeds max_error_rate = {opts.max_error_rate:.2%}"
    return None


def decide_batch(
    con: duckdb.DuckDBPyConnection,
    raw: pl.DataFrame,
    config: OrgConfig,
    clock: StageClock | None = None,
    events: bool = True,
    workers: int = 1,
) -> tuple[CheckResult, pl.DataFrame]:
    """Check, resolve and decide a batch of raw request rows; the changes wait in chg_* tables
    (with `events`, also each changing row's provenance events, chg_events).

    Returns the check result and one outcome row per checked row (OUTCOME_SCHEMA + error_message, and the
    call plan's plan_group and plan_fresh, null for rows that share no key with another).
    The interacting rows replay on `workers` cores; their worker processes start now, so that they
    are ready when decide needs them (components.replay_pool).
    """
    clock = clock or StageClock()
    with replay_pool(workers, raw.height) as pool:
        t = time.perf_counter()
        checked = check_requests(raw, config)
        t = clock.lap("check", t)
        faults.kill_point("after-check")
        register_config(con, config)
        groups = resolve_targets(con, checked.checked)
        t = clock.lap("resolve", t)
        outcomes = _with_messages(decide(con, config, groups, events, pool), checked.checked).join(
            groups, on="seq", how="left", maintain_order="left"
        )
        clock.lap("decide", t)
    return checked, outcomes


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _with_messages(outcomes: pl.DataFrame, checked: pl.DataFrame) -> pl.DataFrame:
    """Add error_message to resolve/apply errors from the catalog templates and the row's values."""
    failed = outcomes.filter(pl.col("error_code").is_not_null()).join(
        checked.select("seq", "customer_id", "lookup_value", "id_type", "id_value"), on="seq", how="left"
    )
    values = {
        "field": pl.col("error_field"),
        "value": pl.when(pl.col("error_code") != 8015)
        .then(pl.col("id_value"))
        .when(pl.col("error_field") == "customer_id")
        .then(pl.col("customer_id").cast(pl.String))
        .otherwise(pl.col("lookup_value")),
        "id_type": pl.col("id_type"),
        "customer": pl.col("resolved_customer_id"),
        "holder": pl.col("holder_id"),
        "limit": pl.col("limit"),
        "series": pl.col("card_series"),
        "status": pl.col("card_status"),
    }
    message = pl.lit(None, dtype=pl.String)
    for code in failed["error_code"].unique().to_list():
        message = pl.when(pl.col("error_code") == code).then(CATALOG[code].message_expr(**values)).otherwise(message)
    return outcomes.join(failed.select("seq", message.alias("error_message")), on="seq", how="left")


@dataclass(frozen=True)
class ReportFrames:
    success: pl.DataFrame
    errors: pl.DataFrame
    merges: pl.DataFrame
    outcome_counts: dict[str, int]
    errors_by_code: dict[int, int]


def _report_frames(batch: RequestBatch, checked: CheckResult, outcomes: pl.DataFrame, mask_pii: bool) -> ReportFrames:
    """success.csv, errors.csv and merges.csv rows; every input row lands in exactly one of the first two."""
    raw = batch.frame
    succeeded = outcomes.filter(pl.col("outcome").is_not_null())
    failed = pl.concat(
        [
            checked.errors.select("seq", pl.col("error_code").cast(pl.Int32), "error_field", "error_message"),
            outcomes.filter(pl.col("error_code").is_not_null()).select(
                "seq", pl.col("error_code").cast(pl.Int32), "error_field", "error_message"
            ),
        ]
    )
    seen = pl.concat([succeeded["seq"], failed["seq"]])
    if seen.n_unique() != seen.len() or seen.len() != raw.height:
        raise InternalError("some input rows would appear in no report or in two; nothing was applied")
    success = (
        succeeded.join(checked.checked, on="seq", how="left")
        .join(raw.select("seq", pl.col("customer_id").alias("customer_id_given")), on="seq", how="left")
        .sort("seq")
        .select(
            "file",
            "row_number",
            "row_id",
            "action",
            "source",
            "account_id",
            "id_type",
            "id_value",
            trim_expr("customer_id_given").alias("customer_id"),
            "resolved_customer_id",
            "outcome",
            "survivor_id",
            "victim_id",
            pl.col("warnings").list.eval(pl.element().cast(pl.String)).list.join(";").alias("warning_codes"),
        )
    )
    merges = (
        succeeded.filter(pl.col("outcome") == "merged")
        .join(checked.checked, on="seq", how="left")
        .sort("seq")
        .select(*MERGE_COLUMNS)
    )
    errors = error_report(raw, failed)
    if mask_pii:
        success, errors, merges = mask_reports(success, errors, merges)
    return ReportFrames(
        success=success,
        errors=errors,
        merges=merges,
        outcome_counts={k: succeeded.filter(pl.col("outcome") == k).height for k in ("applied", "unchanged", "merged")},
        errors_by_code={int(code): int(n) for code, n in failed.group_by("error_code").len().iter_rows()},
    )


def _result(
    run_id: str,
    opts: RunOptions,
    started_at: str,
    clock: StageClock,
    batch: RequestBatch,
    reports: ReportFrames,
    before: StoreCounts,
    after: StoreCounts,
    reports_dir: Path,
    aborted: str | None,
    calls: int,
) -> RunResult:
    failed = sum(reports.errors_by_code.values())
    exit_code = EXIT_REFUSED if aborted else EXIT_ROWS_FAILED if failed else EXIT_OK
    return RunResult(
        run_id=run_id,
        job=opts.job,
        dry_run=opts.dry_run,
        aborted=aborted,
        started_at=started_at,
        ended_at=_now(),
        stage_seconds=dict(clock.seconds),
        files=tuple({"path": f.path, "sha256": f.sha256, "rows": f.rows} for f in batch.files),
        rows=batch.frame.height,
        outcomes=reports.outcome_counts,
        errors_by_code=reports.errors_by_code,
        merges=reports.merges.height,
        store_before=before,
        store_after=after,
        exit_code=exit_code,
        reports_dir=str(reports_dir),
        calls=calls,
    )


def _write_reports(
    reports: ReportFrames, result: RunResult, reports_dir: Path, parquet: bool, calls: pl.DataFrame
) -> None:
    reports_dir.mkdir(parents=True, exist_ok=True)
    write_lines(calls["line"], reports_dir / CALLS_FILE)
    for name in ("success", "errors", "merges"):
        frame = getattr(reports, name)
        write_csv(frame, reports_dir / f"{name}.csv")
        if parquet:
            write_parquet(frame, reports_dir / f"{name}.parquet")
    write_json(result.to_dict(), reports_dir / "summary.json")
    write_summary_html(result, reports.merges, reports_dir / "summary.html")
