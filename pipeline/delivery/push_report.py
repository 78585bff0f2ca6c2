"""A push's report: push.csv (one row per call, spreadsheet-safe, identifier values masked on request),
push-summary.json, the "push" section of the run's summary.html, and the PushResult they show.

It writes with the run's own CSV writer and PII masking, which need polars; push imports it only once the
calls are sent, so a push starts sending without loading a data library.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.delivery.journal import CallState, Journal, Outcome
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED
from pipeline.files import write_csv, write_json, write_text
from pipeline.input.calls import Call
from pipeline.reports.pii import mask_expr

OUTCOMES: tuple[Outcome, ...] = ("confirmed", "already_applied", "drift", "blocked", "failed")
SUMMARY_FILE, CSV_FILE = "push-summary.json", "push.csv"
HTML_START, HTML_END = "<!-- push -->", "<!-- /push -->"

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
        }

    def render(self) -> str:
        lines = [f"push of {self.calls} call(s) to {self.api}: exit code {self.exit_code}"]
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
    """Put (or replace) the "push" section of the run's summary.html: outcomes, rate, drifted calls first."""
    if not path.exists():
        return
    page = path.read_text(encoding="utf-8")
    if HTML_START in page:
        page = page[: page.index(HTML_START)] + page[page.index(HTML_END) + len(HTML_END) :]
    rows = "".join(
        f"<tr><td>{html.escape(str(d['call_id']))}</td><td>{d['customer_id']}</td><td>{html.escape(str(d['action']))}"
        f"</td><td>{html.escape(str(d['id_type']))}</td><td>{html.escape(str(d['codes']))}</td></tr>"
        for d in result.drifted
    )
    outcomes = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in result.outcomes.items())
    section = (
        f'{HTML_START}<section id="push"><h2>push</h2>'
        + (
            "<h3>drifted calls</h3><table><tr><th>call</th><th>customer</th><th>action</th><th>type</th>"
            f"<th>codes</th></tr>{rows}</table>"
            if rows
            else ""
        )
        + f"<table>{outcomes}</table><p>{result.achieved_rate:.1f} requests/min achieved of "
        f"{result.configured_rate:g} configured; {result.requests} requests in {result.elapsed_seconds:.1f} s; "
        f"critical path {result.critical_path}; exit code {result.exit_code}"
        + (f"; stopped: {html.escape(result.stopped)}" if result.stopped else "")
        + f"</p></section>{HTML_END}"
    )
    write_text(page.replace("</main></body></html>", section + "</main></body></html>"), path)
