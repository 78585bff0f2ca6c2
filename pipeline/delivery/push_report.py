"""A push's report: push.csv (one row per call, spreadsheet-safe, identifier values masked on request),
push-summary.json, the "push" section of the run's summary.html, and the PushResult they show.

It writes with the run's own CSV writer and PII masking, which need polars; push imports it only once the
calls are sent, so a push starts sending without loading a data library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.delivery.journal import CallState, Journal, Outcome
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED
from pipeline.files import write_csv, write_json, write_text
from pipeline.input.calls import Call
from pipeline.reports.html import PUSH_DETAILS_SLOT, PUSH_SLOT, _e, _table
from pipeline.reports.pii import mask_expr
from pipeline.results import share

OUTCOMES: tuple[Outcome, ...] = ("confirmed", "already_applied", "drift", "blocked", "failed")
SUMMARY_FILE, CSV_FILE = "push-summary.json", "push.csv"
HTML_START, HTML_END = PUSH_SLOT

OUTCOME_WORDS: dict[str, tuple[str, str]] = {
    "confirmed": ("change reached the platform as expected", "changes reached the platform as expected"),
    "already_applied": (
        "was already in place (an earlier attempt had reached the platform)",
        "were already in place (an earlier attempt had reached the platform)",
    ),
    "drift": (
        "was answered otherwise: the platform no longer matched the store; refresh the store and run it again",
        "were answered otherwise: the platform no longer matched the store; refresh the store and run them again",
    ),
    "blocked": (
        "was not sent because a change it depends on did not go through",
        "were not sent because a change they depend on did not go through",
    ),
    "failed": (
        "could not be sent (retries ran out); `loyalty-bulk push --retry` sends it again once the platform answers",
        "could not be sent (retries ran out); `loyalty-bulk push --retry` sends them again once the platform answers",
    ),
    "planned": (
        "was not sent yet: the push stopped before it; the same command resumes",
        "were not sent yet: the push stopped before them; the same command resumes",
    ),
}
"""What each push outcome means for the platform, in words a manager reads (one call, several calls)."""


def outcome_lines(outcomes: Mapping[str, int]) -> list[tuple[str, str]]:
    """(outcome, sentence) for each outcome that occurred, in OUTCOME_WORDS' order: what reached the platform
    ("23 changes reached the platform as expected"), the console's and summary.html's lines of a push."""
    counted = ((outcome, outcomes.get(outcome, 0), words) for outcome, words in OUTCOME_WORDS.items())
    return [(outcome, f"{n} {one if n == 1 else many}") for outcome, n, (one, many) in counted if n > 0]


PUSH_CSV_SCHEMA: dict[str, type[pl.DataType]] = {
    "call_id": pl.String,
    "file": pl.String,
    "row_number": pl.Int64,
    "row_id": pl.String,
    "customer_id": pl.Int64,
    "source": pl.String,
    "account_id": pl.String,
    "action": pl.String,
    "id_type": pl.String,
    "id_value": pl.String,
    "expected_outcome": pl.String,
    "outcome": pl.String,
    "http_status": pl.Int64,
    "codes": pl.String,
    "warnings": pl.String,
    "attempts": pl.Int64,
    "request_id": pl.String,
    "seconds": pl.Float64,
}
"""push.csv's columns in order, with their types; `_row` gives a call's values in this order."""


@dataclass(frozen=True)
class PushResult:
    """A push's outcome counts and figures; renders the console summary and push-summary.json."""

    reports_dir: str
    api: str
    calls: int
    outcomes: dict[str, int]
    retries: dict[str, int]
    configured_rate: float
    achieved_rate: float
    requests: int
    elapsed_seconds: float
    critical_path: int
    stopped: str | None
    exit_code: int
    drifted: list[dict[str, Any]] = field(default_factory=list)
    retry: dict[str, Any] | None = None
    """With --retry: the series of attempts and how many calls it re-opened (push.retry_series); else None."""
    recorded: str = ""
    """Where the push's counts were recorded: beside the run in its store, or only in the reports folder."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "reports_dir": self.reports_dir,
            "api": self.api,
            "calls": self.calls,
            "outcomes": self.outcomes,
            "retries_by_cause": self.retries,
            "configured_rate_per_minute": self.configured_rate,
            "achieved_rate_per_minute": round(self.achieved_rate, 2),
            "requests": self.requests,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "critical_path_length": self.critical_path,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "drifted": self.drifted,
            "retry": self.retry,
        }

    def retry_line(self) -> str | None:
        """What --retry did, in words: how many calls it re-opened, or why none."""
        r = self.retry
        if r is None:
            return None
        if r["resumed"]:
            return "retry: the last push had not finished, so this one went on with it and re-opened nothing"
        if not r["reopened"]:
            return "retry: nothing to re-open (no call had failed; drift and the calls blocked by it stay as they are)"
        return (
            f"retry: re-opened {r['reopened']} call(s) for series {r['series']} of attempts: {r['failed']} failed, "
            f"{r['blocked']} blocked by them"
        )

    def render(self) -> str:
        """The console summary: what reached the platform in words first, one line per outcome that occurred,
        then the counts by outcome, retries, rate and reports."""
        lines = [f"push of {self.calls} call(s) to {self.api}: exit code {self.exit_code}"]
        retry = self.retry_line()
        if retry:
            lines.append(f"  {retry}")
        lines += [f"  {line}" for _, line in outcome_lines(self.outcomes)] or ["  no call to send"]
        lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in self.outcomes.items()))
        if self.retries:
            lines.append("  retries: " + ", ".join(f"{k} {v}" for k, v in self.retries.items()))
        lines.append(
            f"  rate: {self.achieved_rate:.1f} requests/min achieved of {self.configured_rate:g} configured "
            f"({self.requests} requests in {self.elapsed_seconds:.1f} s); critical path {self.critical_path} call(s)"
        )
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}; the rest stays planned, run the same command to resume")
        lines.append(f"  reports: {Path(self.reports_dir) / CSV_FILE}, {Path(self.reports_dir) / SUMMARY_FILE}")
        if self.recorded:
            lines.append(f"  {self.recorded}")
        return "\n".join(lines)


def critical_path(calls: list[Call]) -> int:
    """The longest chain of `after` (calls in plan order, `after` naming earlier calls only)."""
    depth: dict[str, int] = {}
    for call in calls:
        depth[call.call_id] = 1 + max((depth.get(a, 0) for a in call.after), default=0)
    return max(depth.values(), default=0)


def write_report(
    folder: Path,
    calls: list[Call],
    journal: Journal,
    api: str,
    rate: float,
    requests: int,
    elapsed: float,
    stopped: str | None,
    mask_pii: bool,
    retry: dict[str, Any] | None = None,
) -> PushResult:
    """Write push.csv, push-summary.json and summary.html's push section from the journal; return the result."""
    states = journal.states()
    frame = pl.DataFrame([_row(call, states[call.call_id]) for call in calls], schema=PUSH_CSV_SCHEMA, orient="row")
    if mask_pii:
        frame = frame.with_columns(mask_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value"))
    write_csv(frame, folder / CSV_FILE)
    counts: dict[str, int] = {o: frame.filter(pl.col("outcome") == o).height for o in OUTCOMES}
    planned = frame.filter(pl.col("outcome") == "planned").height
    if planned:
        counts["planned"] = planned
    sent, _, _ = journal.sends()
    achieved = (requests / elapsed * 60.0) if elapsed > 0 and requests > 1 else 0.0
    ok = counts["confirmed"] + counts["already_applied"] == len(calls)
    exit_code = EXIT_REFUSED if stopped else EXIT_OK if ok else EXIT_ROWS_FAILED
    drifted = (
        frame.filter(pl.col("outcome") == "drift")
        .select("call_id", "customer_id", "action", "id_type", "codes")
        .head(100)
        .to_dicts()
    )
    result = PushResult(
        reports_dir=str(folder),
        api=api,
        calls=len(calls),
        outcomes=counts,
        retries=journal.retries(),
        configured_rate=rate,
        achieved_rate=achieved,
        requests=sent,
        elapsed_seconds=elapsed,
        critical_path=critical_path(calls),
        stopped=stopped,
        exit_code=exit_code,
        drifted=drifted,
        retry=retry,
    )
    write_json(result.to_dict(), folder / SUMMARY_FILE)
    _add_html_section(folder / "summary.html", result)
    return result


def _row(call: Call, s: CallState) -> tuple[Any, ...]:
    """A call's row of push.csv, in PUSH_CSV_SCHEMA's order."""
    action, item = call.change
    seconds = round(s.answered_at - s.first_sent, 3) if s.answered_at and s.first_sent else None
    return (
        call.call_id,
        call.file,
        call.row_number,
        call.row_id,
        call.customer_id,
        call.source,
        call.account_id,
        action,
        item["type"],
        item["value"],
        call.expect.outcome,
        s.outcome or "planned",
        s.http_status,
        s.codes,
        s.warnings,
        s.attempts,
        s.request_id,
        seconds,
    )


def _add_html_section(path: Path, result: PushResult) -> None:
    """Put what reached the platform under the banner of the run's summary.html and the push's tables at its
    end, replacing what an earlier push of the run (stopped, resumed, retried) put there."""
    if not path.exists():
        return
    page = path.read_text(encoding="utf-8")
    page = _in_slot(page, PUSH_SLOT, _push_section(result), before='<section id="totals">')
    page = _in_slot(page, PUSH_DETAILS_SLOT, _push_details(result), before="</main>")
    write_text(page, path)


def _in_slot(page: str, slot: tuple[str, str], content: str, before: str) -> str:
    """The page with `content` between the slot's markers, instead of what was there; a page without the slot
    (written before it existed) gets it just before `before`, else at the end of its main."""
    start, end = slot
    if start in page and end in page:
        head, _, rest = page.partition(start)
        return head + start + content + end + rest.partition(end)[2]
    anchor = before if before in page else "</main>"
    return page.replace(anchor, start + content + end + anchor, 1)


def _words_html(sentence: str) -> str:
    """A sentence escaped, its `command` set as code."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", _e(sentence))


def _push_section(result: PushResult) -> str:
    """What reached the platform, one line per outcome that occurred, in words; near the top of the page."""
    lines = "".join(
        f'<li class="push-{outcome}">{_words_html(line)}</li>' for outcome, line in outcome_lines(result.outcomes)
    )
    stopped = (
        f'<p class="note" id="push-stopped">The push stopped: {_e(result.stopped)}. '
        "Running the same command resumes it.</p>"
        if result.stopped
        else ""
    )
    return (
        '<section id="push"><h2>What reached the platform</h2>'
        f'<p class="note">The run\'s {result.calls} call(s) were pushed to <span class="mono">{_e(result.api)}</span> '
        f'(exit code {result.exit_code}); the counts and the drifted calls are <a href="#push-details">at the end '
        "of this page</a>, every call in push.csv.</p>"
        + (
            f'<ul class="push-lines" id="push-lines">{lines}</ul>'
            if lines
            else '<p id="push-lines">No call to send.</p>'
        )
        + stopped
        + "</section>"
    )


def _push_details(result: PushResult) -> str:
    """The push in numbers at the end of the page: calls by outcome, retries, rate, the drifted calls."""
    outcomes = _table(
        "push-outcomes",
        ("outcome", "calls", "share of calls"),
        [(k, v, share(v, result.calls)) for k, v in result.outcomes.items()],
        frozenset({1, 2}),
    )
    retries = (
        _table("push-retries", ("retried because", "retries"), list(result.retries.items()), frozenset({1}))
        if result.retries
        else ""
    )
    drifted = (
        "<h3>Drifted calls</h3>"
        + _table(
            "push-drifted",
            ("call", "customer", "action", "type", "codes"),
            [(d["call_id"], d["customer_id"], d["action"], d["id_type"], d["codes"]) for d in result.drifted],
            frozenset({1}),
            frozenset({0}),
        )
        if result.drifted
        else ""
    )
    return (
        '<section id="push-details"><h2>Push details</h2>'
        + drifted
        + outcomes
        + retries
        + f'<p class="note">{result.achieved_rate:.1f} requests/min achieved of {result.configured_rate:g} '
        f"configured; {result.requests} requests in {result.elapsed_seconds:.1f} s; critical path "
        f"{result.critical_path} call(s); exit code {result.exit_code}"
        + (f"; stopped: {_e(result.stopped)}" if result.stopped else "")
        + "</p></section>"
    )
