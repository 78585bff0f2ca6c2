"""What a run tells the person at the terminal: stage progress on stderr, the end-of-run summary on stdout.

`run` and `job` both use `stage_progress` (the observer given to RunOptions) and `report_run`, so
the two commands print alike. Progress is drawn only when stderr is a terminal: CI logs, pipes and
tests get plain text or nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.files import json_text

if TYPE_CHECKING:
    from pipeline.delivery.push import PushProgress
    from pipeline.results import RunResult, RunState, StageObserver

STAGES = ("read", "check", "resolve", "decide", "apply", "report")
"""The stages in the order run_batch finishes them; the progress bar has one step per stage."""
REFRESH_STAGES = ("stage", "diff", "apply", "report")
"""The stages of `store refresh` (pipeline/refresh.py): stage and check the snapshot, compare, write, report."""
STATE_COLOURS: dict[RunState, str] = {
    "applied": "green",
    "applied with failures": "yellow",
    "dry run": "cyan",
    "aborted": "red",
}
"""The terminal colour of a run's first line by its state, as summary.html's banner: failures in a warning colour."""


class StageProgress:
    """A rich progress bar over the stages, naming the running stage and the seconds of the done ones."""

    BAR_WIDTH = 58
    """Columns taken by everything but the list of done stages."""

    def __init__(self, console: Console, verbose: bool = False, stages: tuple[str, ...] = STAGES) -> None:
        self.verbose, self.stages = verbose, stages
        self.done: dict[str, float] = {}
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<9}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("stages"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[done]}"),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(stages[0], total=len(stages), done="")

    def __enter__(self) -> StageProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage_done(self, stage: str, seconds: float) -> None:
        """Advance one step; the description names the stage that runs next."""
        self.done[stage] = self.done.get(stage, 0.0) + seconds
        following = self.stages[self.stages.index(stage) + 1] if stage in self.stages[:-1] else "done"
        self.progress.update(self.task, advance=1, description=following, refresh=True, done=self._done_text())
        if self.verbose:
            self.progress.console.print(f"{stage} done in {seconds:.2f} s", highlight=False)

    def _done_text(self) -> str:
        """The finished stages with their seconds, oldest dropped first so the line fits the terminal."""
        parts = [f"{name} {s:.2f}s" for name, s in self.done.items()]
        room = self.progress.console.width - self.BAR_WIDTH
        while len(parts) > 1 and len(", ".join(parts)) + 2 > room:
            parts = parts[1:]
        text = ", ".join(parts)
        return text if len(parts) == len(self.done) else "… " + text


class StageLog:
    """Plain lines on a stream as stages finish: what --verbose shows when stderr is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def stage_done(self, stage: str, seconds: float) -> None:
        print(f"{stage} done in {seconds:.2f} s", file=self.stream, flush=True)


@contextmanager
def stage_progress(
    quiet: bool = False, verbose: bool = False, stream: TextIO | None = None, stages: tuple[str, ...] = STAGES
) -> Iterator[StageObserver | None]:
    """The observer for RunOptions.observer, or None when nothing should be shown.

    A progress bar when `stream` (default stderr) is a terminal and not quiet; with --verbose and no
    terminal, one plain line per finished stage; otherwise nothing.
    """
    stream = stream if stream is not None else sys.stderr
    if quiet:
        yield None
    elif stream.isatty():
        with StageProgress(Console(file=stream, force_terminal=True), verbose, stages) as progress:
            yield progress
    elif verbose:
        yield StageLog(stream)
    else:
        yield None


def summary_json(result: RunResult) -> str:
    """The run as JSON, the same document as summary.json."""
    return json_text(result.to_dict())


def report_run(result: RunResult, json_output: bool = False, quiet: bool = False, verbose: bool = False) -> None:
    """Print a finished run: JSON only with --json; nothing on stdout with --quiet; else the summary.

    The summary's first line says what happened to the store, coloured by its state on a terminal (click
    drops the colour in pipes and logs). With --quiet a run that aborted or had failed rows still says so in
    one line on stderr.
    """
    if json_output:
        click.echo(summary_json(result))
    elif not quiet:
        status, _, rest = result.render(verbose=verbose).partition("\n")
        click.echo(click.style(status, fg=STATE_COLOURS[result.state], bold=True) + "\n" + rest)
    if quiet and result.exit_code != 0:
        click.echo(f"run {result.run_id}: {result.status}; see {result.reports_dir}", err=True)


PLAIN_PROGRESS_SECONDS = 10.0
"""Off a terminal a push says where it stands in a plain line on stderr this often."""
PUSH_OUTCOME_ORDER = ("confirmed", "already_applied", "drift", "blocked", "failed")


def plain_push_line(state: PushProgress) -> str:
    """One plain progress line of a push: calls ended of all, by outcome, the achieved rate, the time elapsed."""
    ended = sum(state.ended.values())
    by_outcome = ", ".join(f"{o} {state.ended[o]}" for o in PUSH_OUTCOME_ORDER if state.ended.get(o))
    rate = state.requests / state.elapsed * 60 if state.elapsed > 0 else 0.0
    return (
        f"push: {ended}/{state.total} calls ended" + (f" ({by_outcome})" if by_outcome else "")
        + f"; {rate:.0f} requests/min; {time.strftime('%H:%M:%S', time.gmtime(state.elapsed))} elapsed"
    )  # fmt: skip


@contextmanager
def push_progress(
    enabled: bool = True, stream: TextIO | None = None, every: float = PLAIN_PROGRESS_SECONDS
) -> Iterator[Callable[[PushProgress], None] | None]:
    """A push's progress on stderr: on a terminal a bar (calls ended, achieved rate, time left); elsewhere (a
    log, a pipe, cron) a plain line at least every `every` seconds, so a long push shows it is alive."""
    out = sys.stderr if stream is None else stream
    if not enabled:
        yield None
        return
    if not out.isatty():
        last = time.monotonic()

        def line(state: PushProgress) -> None:
            nonlocal last
            if time.monotonic() - last >= every:
                last = time.monotonic()
                print(plain_push_line(state), file=out, flush=True)

        yield line
        return
    progress = Progress(
        SpinnerColumn(),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("calls · {task.fields[rate]:.0f} requests/min"),
        TimeRemainingColumn(),
        console=Console(file=out),
        transient=True,
    )
    task = progress.add_task("push", total=None, rate=0.0)

    def advance(state: PushProgress) -> None:
        rate = state.requests / max(state.elapsed, 1e-6) * 60
        progress.update(task, completed=sum(state.ended.values()), total=state.total, rate=rate)

    with progress:
        yield advance
