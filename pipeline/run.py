"""One run, composed of the stages read → check → resolve → decide → apply → report.

`run_batch` is what `loyalty-bulk run` and `loyalty-bulk job` call. The engine (engine/) decides the batch
in the run's workspace; the reports (reports/) are staged by a thread while the engine's commit writes the
changes, their undo log and provenance, and the ledger entry (store/ledger.py) in one transaction. It
returns a RunResult (results.py) that renders the console summary and summary.json from the same object.
A failure names its stage and what it left (errors.StageFailed).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl

from pipeline import faults
from pipeline.config import OrgConfig, load_config
from pipeline.delivery.plan import call_lines, plan_changes
from pipeline.engine.batch import Decision, decide_batch
from pipeline.engine.commit import commit_changes
from pipeline.engine.components import core_count
from pipeline.engine.record import provenance_enabled, row_positions
from pipeline.engine.replay import Replayed
from pipeline.engine.workspace import Workspace
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED, InternalError, stage_failure
from pipeline.files import write_json
from pipeline.input.read import InputFile, InputLayout, RequestBatch, read_requests
from pipeline.reports.frames import ReportFrames, build_reports
from pipeline.reports.html import write_summary_html
from pipeline.reports.stager import ReportStager
from pipeline.results import RunResult, StageClock, StageObserver, StoreCounts
from pipeline.settings import DEFAULT_MEMORY_LIMIT
from pipeline.store.binding import bind, bound_config, refuse_other_config
from pipeline.store.connect import defer_vacuum, open_store
from pipeline.store.duck import transaction
from pipeline.store.ledger import AppliedFile, applied_files, record, refuse_reapplied
from pipeline.store.schema import store_counts

Decider = Callable[[Workspace, RequestBatch, OrgConfig, StageClock, bool], Decision]
"""Decides a batch (its rows: read.py's frame) with the run's workspace, config and clock, and whether the run
records provenance."""


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


@dataclass(frozen=True)
class RunOptions:
    """How a run behaves beyond its inputs; the job file and the command line fill it."""

    dry_run: bool = False
    allow_reapply: bool = False
    skip_applied: bool = False
    """Leave out the inputs whose content a real run already applied, each with a note, instead of refusing the
    run (a job's skip_applied); `allow_reapply` wins. A dry run leaves them out too, as the real run would."""
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
    """Cores for the interacting rows' replay (engine/components.py); None: every core."""
    observer: StageObserver | None = None
    mask_pii: bool = False
    store_label: str | None = None
    """How the reports name the run's store; None: the store file's absolute path. The Spark engine's run store is a
    DuckDB file holding its Delta store's meta and ledger (spark/run.py), and the reports name the Delta store."""
    counts_base: StoreCounts | None = None
    """With the Spark engine: the whole store's counts, where the run's store file holds none of its rows. The
    reports then show the whole store's counts, before and after (after = these + what the run changed)."""
    decide: Decider | None = None
    """Who decides the batch: None, the DuckDB engine on the run's store (engine/batch.py); the Spark engine passes
    its executors' decision (spark/decide.py), whose changes it publishes itself: the run's store then holds none of
    the store's rows, only its ledger, which takes the run's entry."""


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
    opened = time.perf_counter()
    con = open_store(store_path, memory_limit=opts.memory_limit, threads=opts.threads)
    ws = Workspace(con)
    try:
        batch, skipped = _read(ws, files, config, opts, clock, store_path, opened)
        if skipped and not batch.files:
            counts = store_counts(con)
            counts = _whole(counts, counts, opts)
            return _nothing_to_run(run_id, opts, started_at, clock, skipped, counts, reports_dir)
        with ReportStager(reports_dir) as stager:
            run = _decide(ws, batch, skipped, config, opts, clock, run_id, stager)
            del batch  # the batch's rows go before the transaction (DecidedRun)
            with stage_failure("commit"), transaction(con, commit_point="during-commit") as tx:
                with clock.stage("apply", since=run.decided_at):
                    after = run.before
                    if not run.aborted and run.after is not None:  # decided and applied elsewhere (Spark)
                        after = run.after
                        if not opts.dry_run and not bound_config(con):
                            bind(con, config)
                    elif not run.aborted:
                        after = commit_changes(
                            cast(Replayed, run.replayed), run_id, run.positions, config, keep=not opts.dry_run
                        )
                result = _result(run_id, opts, started_at, clock, run, after, reports_dir, store_path)
                if opts.dry_run or run.aborted:
                    tx.discard_so_far()  # of a dry or aborted run only the ledger entry commits
                # the ledger entry commits with the changes, so an applied file is always known as applied
                record(con, result.ledger_entry(), run.files, config.sha256)
                ws.close()  # every temp table of the run goes, and a table no stage named stops the run unapplied
                stager.wait()  # a report that cannot be written stops the run unapplied
                faults.kill_point("in-transaction")
            faults.kill_point("after-commit")
            left = "the run was applied" if not (opts.dry_run or run.aborted) else "the store was not changed"
            with clock.stage("report", left=f"{left}; its reports in {reports_dir} may be incomplete"):
                stager.publish()
                write_json(result.to_dict(), reports_dir / "summary.json")
                write_summary_html(result, run.reports.merges, reports_dir / "summary.html")
        return result
    finally:
        with faults.kill_during("during-checkpoint"):  # closing checkpoints the WAL into the file
            con.close()


@dataclass(frozen=True)
class DecidedRun:
    """What a run keeps of its decision once the reports have gone to the stager.

    The batch's rows, the checked rows and the outcomes stay inside `_decide`, so their memory is given back
    before the transaction, while DuckDB applies: the run's peak (~0.2 GiB of the 1M-row run).
    """

    files: tuple[InputFile, ...]
    rows: int
    replayed: Replayed | None
    before: StoreCounts
    after: StoreCounts | None
    """The counts after a batch decided elsewhere (Decision.after); None: apply `replayed` to find them."""
    reports: ReportFrames
    """Counts and merges only: the stager took success and errors."""
    positions: pl.DataFrame | None
    """Each changed row's file position, row_number and row_id, for provenance (None: the bench's switch)."""
    aborted: str | None
    calls: int
    decided_at: float
    """When the engine's decision ended: the apply stage's time runs from here, through the reports and plan."""
    skipped: tuple[AppliedFile, ...] = ()
    """Inputs left out because a real run already applied them (RunOptions.skip_applied)."""


def _read(
    ws: Workspace,
    files: Sequence[Path | str],
    config: OrgConfig,
    opts: RunOptions,
    clock: StageClock,
    store_path: Path | str,
    opened: float,
) -> tuple[RequestBatch, tuple[AppliedFile, ...]]:
    """Read the request files; refuse the run when a real run already applied one, or with skip_applied leave
    those out of the batch (returned beside it). Which files were applied is the ledger's to say."""
    with clock.stage("read", since=opened):
        defer_vacuum(ws.con)
        refuse_other_config(ws.con, config, store_path)
        batch = read_requests(files, layout=opts.layout)
    if opts.allow_reapply:
        return batch, ()
    if opts.skip_applied:
        skipped = tuple(applied_files(ws.con, batch.files))
        return batch.without({s.file.path for s in skipped}), skipped
    if not opts.dry_run:
        refuse_reapplied(ws.con, batch.files)
    return batch, ()


def _decide(
    ws: Workspace,
    batch: RequestBatch,
    skipped: tuple[AppliedFile, ...],
    config: OrgConfig,
    opts: RunOptions,
    clock: StageClock,
    run_id: str,
    stager: ReportStager,
) -> DecidedRun:
    """Check, resolve and decide the batch, build its reports and call plan, and hand them to the stager."""
    provenance = provenance_enabled()
    decision = (
        opts.decide(ws, batch, config, clock, provenance)
        if opts.decide is not None
        else decide_batch(
            ws,
            batch.frame,
            config,
            clock,
            events=provenance and not opts.dry_run,
            workers=opts.workers or core_count(),
            memory_limit=opts.memory_limit,
        )
    )
    decided_at = time.perf_counter()
    with stage_failure("report"):
        reports = build_reports(batch, decision.checked, decision.outcomes, opts.mask_pii)
        aborted = _threshold_breach(reports, batch.frame.height, opts)
        # an aborted run changed nothing, so there is nothing to deliver either
        calls = 0 if aborted else reports.outcome_counts["applied"] + reports.outcome_counts["merged"]
        # its rows are found before the transaction, so a plan that does not match the outcomes stops the run
        # unapplied; their lines are encoded by the stager, a chunk at a time, while DuckDB applies
        plan = plan_changes(decision.checked.checked, decision.outcomes.filter(pl.lit(not aborted)))
        if plan.height != calls:
            raise InternalError(f"the call plan has {plan.height} calls for {calls} changing rows; nothing was applied")
        # provenance names each changed row's file and row: the plan's rows are exactly the changed ones
        positions = row_positions(plan, batch.files) if provenance else None
    faults.kill_point("after-decide")
    # the large reports are written by a thread while DuckDB applies, and published after the commit
    kept = stager.start(reports, call_lines(plan, run_id, config), opts.parquet_reports)
    return DecidedRun(
        batch.files,
        batch.frame.height,
        decision.replayed,
        decision.store_before,
        decision.after,
        kept,
        positions,
        aborted,
        calls,
        decided_at,
        skipped,
    )


def _threshold_breach(reports: ReportFrames, rows: int, opts: RunOptions) -> str | None:
    """Why the run must be aborted by its error thresholds, or None."""
    failed = sum(reports.errors_by_code.values())
    if opts.max_errors is not None and failed > opts.max_errors:
        return f"{failed} failed rows exceed max_errors = {opts.max_errors}"
    if opts.max_error_rate is not None and rows and failed / rows > opts.max_error_rate:
        return f"error rate {failed / rows:.2%} exceeds max_error_rate = {opts.max_error_rate:.2%}"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _result(
    run_id: str,
    opts: RunOptions,
    started_at: str,
    clock: StageClock,
    run: DecidedRun,
    after: StoreCounts,
    reports_dir: Path,
    store_path: Path | str,
) -> RunResult:
    failed = sum(run.reports.errors_by_code.values())
    exit_code = EXIT_REFUSED if run.aborted else EXIT_ROWS_FAILED if failed else EXIT_OK
    return RunResult(
        run_id=run_id,
        job=opts.job,
        dry_run=opts.dry_run,
        aborted=run.aborted,
        started_at=started_at,
        ended_at=_now(),
        stage_seconds=dict(clock.seconds),
        files=_files(run.files),
        rows=run.rows,
        outcomes=run.reports.outcome_counts,
        errors_by_code=run.reports.errors_by_code,
        merges=run.reports.merges.height,
        store_before=_whole(run.before, run.before, opts),
        store_after=_whole(after, run.before, opts),
        exit_code=exit_code,
        reports_dir=str(reports_dir),
        calls=run.calls,
        store=opts.store_label or str(Path(store_path).resolve()),
        skipped=_skipped(run.skipped),
    )


def _whole(counts: StoreCounts, part: StoreCounts, opts: RunOptions) -> StoreCounts:
    """The counts of the whole store when the run's store file holds a part of it (RunOptions.counts_base), whose
    counts before the run were `part`: the whole store's, plus what the run changed."""
    if opts.counts_base is None:
        return counts
    base, before = opts.counts_base.to_dict(), part.to_dict()
    return StoreCounts(**{name: base[name] + value - before[name] for name, value in counts.to_dict().items()})


def _files(files: Sequence[InputFile]) -> tuple[dict[str, Any], ...]:
    """The input files as summary.json lists them."""
    return tuple({"path": f.path, "sha256": f.sha256, "fingerprint": f.fingerprint, "rows": f.rows} for f in files)


def _skipped(skipped: Sequence[AppliedFile]) -> tuple[dict[str, Any], ...]:
    """The inputs left out as already applied, as summary.json lists them: each file and the run that applied it."""
    return tuple(
        {
            "path": s.file.path,
            "sha256": s.file.sha256,
            "fingerprint": s.file.fingerprint,
            "rows": s.file.rows,
            "applied_by": s.run_id,
            "applied_at": s.started_at,
            "applied_path": s.applied_path,
        }
        for s in skipped
    )


def _nothing_to_run(
    run_id: str,
    opts: RunOptions,
    started_at: str,
    clock: StageClock,
    skipped: Sequence[AppliedFile],
    counts: StoreCounts,
    reports_dir: Path,
) -> RunResult:
    """The result of a run whose every input was already applied and left out (skip_applied): nothing ran, so the
    ledger records no run and no reports are written; the result (console, --json) lists what was skipped."""
    return RunResult(
        run_id=run_id,
        job=opts.job,
        dry_run=opts.dry_run,
        aborted=None,
        started_at=started_at,
        ended_at=_now(),
        stage_seconds=dict(clock.seconds),
        files=(),
        rows=0,
        outcomes=dict.fromkeys(("applied", "unchanged", "merged"), 0),
        errors_by_code={},
        merges=0,
        store_before=counts,
        store_after=counts,
        exit_code=EXIT_OK,
        reports_dir=str(reports_dir),
        skipped=_skipped(skipped),
    )
