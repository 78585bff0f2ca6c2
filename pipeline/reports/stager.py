"""The run's large reports, written by a thread beside the apply transaction and published after its commit.

Each is written under a temporary name and fsynced while DuckDB applies (files.stage_*), moved into
place once the run has committed (`publish`), or removed when it does not commit, so a reports folder
never shows the reports of a run that did not happen.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import polars as pl

from pipeline.files import Staged, discard, publish, stage_csv, stage_lines, stage_parquet
from pipeline.reports.frames import ReportFrames
from pipeline.settings import CALLS_FILE


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

    def start(self, reports: ReportFrames, calls: Iterable[pl.Series], parquet: bool) -> ReportFrames:
        """Stage calls.ndjson and the three CSV reports (and Parquet copies) in the thread; it takes the large
        frames over and drops each once written. Returns what the caller keeps: the counts and the merges
        (summary.html lists them), with success and errors emptied."""
        frames = {"success": reports.success, "errors": reports.errors, "merges": reports.merges}
        self._future = self._pool.submit(_stage_reports, self.reports_dir, frames, calls, parquet)
        return dataclasses.replace(reports, success=reports.success.clear(), errors=reports.errors.clear())

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
