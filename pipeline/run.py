"""One run, composed of the stages read → check → resolve → decide → apply → report.

`run_batch` is what `loyalty-bulk run` and `loyalty-bulk job` call; the engine (pipeline/engine/)
decides the batch in the run's workspace, and the changes, the undo log, provenance and the ledger
entry commit in one transaction. It returns a RunResult (engine/result.py) that renders the console
summary and summary.json from the same object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline import binding, faults, ledger, provenance, undo
from pipeline.components import core_count
from pipeline.config import load_config
from pipeline.engine.apply import apply_changes
from pipeline.engine.batch import decide_batch
from pipeline.engine.check import CheckResult
from pipeline.engine.result import RunResult, StageClock, StageObserver
from pipeline.engine.workspace import Workspace
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED, InternalError
from pipeline.html_summary import write_summary_html
from pipeline.normalize import trim_expr
from pipeline.pii import mask_reports
from pipeline.plan import CALLS_FILE, call_lines, plan_changes
from pipeline.read import InputFile, InputLayout, RequestBatch, read_requests
from pipeline.report import Staged, discard, error_report, publish, stage_csv, stage_lines, stage_parquet, write_json
from pipeline.settings import DEFAULT_MEMORY_LIMIT
from pipeline.store import StoreCounts, defer_vacuum, open_store, store_counts

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
    ws = Workspace(con)
    try:
        defer_vacuum(con)
        ledger.ensure(con)
        binding.refuse_other_config(con, config, store_path)
        batch = read_requests(files, layout=opts.layout)
        t = clock.lap("read", t)
        if not opts.dry_run and not opts.allow_reapply:
            ledger.refuse_reapplied(con, batch.files)
        record_provenance = provenance.enabled()
        decision = decide_batch(
            ws,
            batch.frame,
            config,
            clock,
            events=record_provenance and not opts.dry_run,
            workers=opts.workers or core_count(),
            memory_limit=opts.memory_limit,
        )
        checked, outcomes = decision.checked, decision.outcomes
        t = time.perf_counter()
        reports = _report_frames(batch, checked, outcomes, opts.mask_pii)
        before = decision.store_before
        aborted = _threshold_breach(reports, batch.frame.height, opts)
        # an aborted run changed nothing, so there is nothing to deliver either
        calls = 0 if aborted else reports.outcome_counts["applied"] + reports.outcome_counts["merged"]
        # its rows are found before the transaction, so a plan that does not match the outcomes stops the run
        # unapplied; their lines are encoded by the stager, a chunk at a time, while DuckDB applies
        plan = plan_changes(checked.checked, outcomes.filter(pl.lit(not aborted)))
        if plan.height != calls:
            raise InternalError(f"the call plan has {plan.height} calls for {calls} changing rows; nothing was applied")
        # provenance names each changed row's file and row: the plan's rows are exactly the changed ones
        positions = provenance.row_positions(plan, batch.files)
        faults.kill_point("after-decide")
        with ReportStager(reports_dir) as stager:
            # the large reports are written by a thread while DuckDB applies, and published after the commit
            stager.start(
                reports.success, reports.errors, reports.merges, call_lines(plan, run_id, config), opts.parquet_reports
            )
            # this thread lets go of the large frames, so each is freed once the stager has written it;
            # what stays (counts, merges) is what the summary needs
            del plan
            reports = dataclasses.replace(reports, success=reports.success.clear(), errors=reports.errors.clear())
            # nor are the batch's rows, the checked rows and the outcomes needed any more: let go of before the
            # transaction, their memory is returned while DuckDB applies, the run's peak (~0.2 GiB of the 1M run)
            rows, replayed = batch.frame.height, decision.replayed
            batch = dataclasses.replace(batch, frame=batch.frame.clear())
            del decision, checked, outcomes
            con.execute("BEGIN TRANSACTION")
            try:
                after = before
                if not aborted:
                    applied = apply_changes(replayed)
                    # counted before the logs are written: they change no count, and the counts' scans then
                    # find the store's blocks still in DuckDB's buffer pool
                    after = store_counts(con)
                    if not opts.dry_run:
                        undo.record_changes(applied, run_id)
                        if record_provenance:
                            provenance.record(applied, run_id, positions)
                        else:
                            provenance.record_unrecorded(con, run_id)
                        if not binding.bound_config(con):
                            binding.bind(con, config)
                t = clock.lap("apply", t)
                result = _result(
                    run_id,
                    opts,
                    started_at,
                    clock,
                    batch.files,
                    rows,
                    reports,
                    before,
                    after,
                    reports_dir,
                    aborted,
                    calls,
                )
                if opts.dry_run or aborted:
                    con.execute("ROLLBACK")
                    con.execute("BEGIN TRANSACTION")
                # the ledger entry commits with the changes, so an applied file is always known as applied
                ledger.record(con, result, batch.files, config.sha256)
                ws.close()  # every temp table of the run goes, and a table no stage named stops the run unapplied
                stager.wait()  # a report that cannot be written stops the run unapplied
                faults.kill_point("in-transaction")
                with faults.kill_during("during-commit"):
                    con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            faults.kill_point("after-commit")
            t = time.perf_counter()
            stager.publish()
            write_json(result.to_dict(), reports_dir / "summary.json")
            write_summary_html(result, reports.merges, reports_dir / "summary.html")
        clock.lap("report", t)
        return result
    finally:
        with faults.kill_during("during-checkpoint"):  # closing checkpoints the WAL into the file
            con.close()


class ReportStager:
    """The run's large reports (calls.ndjson, success, errors and merges CSV, their Parquet copies), staged by a
    thread beside the transaction (report.stage_*), published after the commit or discarded.

    The thread drops each frame once it is written, so the frames are gone before the commit's peak.
    Leaving the block without `publish` (an error, a refusal) waits for the thread and removes what it wrote.
    """

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir
        self._created = not reports_dir.exists()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
        self._future: Future[list[Staged]] | None = None
        self._published = False

    def __enter__(self) -> ReportStager:
        return self

    def start(
        self,
        success: pl.DataFrame,
        errors: pl.DataFrame,
        merges: pl.DataFrame,
        calls: Iterable[pl.Series],
        parquet: bool,
    ) -> None:
        frames = {"success": success, "errors": errors, "merges": merges}
        self._future = self._pool.submit(_stage_reports, self.reports_dir, frames, calls, parquet)

    def wait(self) -> list[Staged]:
        assert self._future is not None, "start() first"
        return self._future.result()

    def publish(self) -> None:
        publish(self.wait())
        self._published = True

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._published and self._future is not None:
                with contextlib.suppress(BaseException):
                    discard(self._future.result())
                if self._created:
                    with contextlib.suppress(OSError):
                        self.reports_dir.rmdir()  # only if empty: nothing else of ours was there
        finally:
            self._pool.shutdown(wait=True)


def _stage_reports(
    reports_dir: Path, frames: dict[str, pl.DataFrame], calls: Iterable[pl.Series], parquet: bool
) -> list[Staged]:
    """Write every large report under a temporary name; on any failure remove what was written and raise."""
    staged: list[Staged] = []
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        staged.append(stage_lines(calls, reports_dir / CALLS_FILE))
        del calls
        for name in list(frames):
            frame = frames.pop(name)
            staged.append(stage_csv(frame, reports_dir / f"{name}.csv"))
            if parquet:
                staged.append(stage_parquet(frame, reports_dir / f"{name}.parquet"))
    except BaseException:
        discard(staged)
        raise
    return staged


def _threshold_breach(reports: ReportFrames, rows: int, opts: RunOptions) -> str | None:
    """Why the run must be aborted by its error thresholds, or None."""
    failed = sum(reports.errors_by_code.values())
    if opts.max_errors is not None and failed > opts.max_errors:
        return f"{failed} failed rows exceed max_errors = {opts.max_errors}"
    if opts.max_error_rate is not None and rows and failed / rows > opts.max_error_rate:
        return f"error rate {failed / rows:.2%} exceeds max_error_rate = {opts.max_error_rate:.2%}"
    return None


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    files: tuple[InputFile, ...],
    rows: int,
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
        files=tuple({"path": f.path, "sha256": f.sha256, "rows": f.rows} for f in files),
        rows=rows,
        outcomes=reports.outcome_counts,
        errors_by_code=reports.errors_by_code,
        merges=reports.merges.height,
        store_before=before,
        store_after=after,
        exit_code=exit_code,
        reports_dir=str(reports_dir),
        calls=calls,
    )
