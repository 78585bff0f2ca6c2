"""summary.html: a run's summary for a person who never opened a CSV.

One self-contained file (inline CSS, inline SVG charts drawn here, no script, no network), so it
opens from a mail attachment or a file share. Every value from the run is escaped: request values
can be hostile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.catalog import CATALOG
from pipeline.errors import EXIT_MEANINGS
from pipeline.files import write_text

if TYPE_CHECKING:
    from pipeline.results import RunResult, RunState

MAX_MERGE_ROWS = 1000
"""Merges listed in the page; merges.csv has all of them."""

TOP_CODES = 10
"""Error codes drawn in the chart; the table lists every code."""

OUTCOMES: dict[str, tuple[str, str]] = {
    "applied": ("#2f855a", "the change was made (or, in a dry run, would be)"),
    "unchanged": ("#718096", "nothing to change: the customer already had it"),
    "merged": ("#2b6cb0", "the change merged the row's customer into the customer holding the value"),
    "failed": ("#c53030", "the row was refused; see the error codes below and errors.csv"),
}
"""Colour and plain-words meaning of each row outcome."""

STATES: dict[RunState, tuple[str, str]] = {
    "applied": ("state-applied", "applied"),
    "applied with failures": ("state-failures", "applied with failures"),
    "dry run": ("state-dry", "dry run, nothing applied"),
    "aborted": ("state-aborted", "aborted, nothing applied"),
}
"""The banner's colour class and name for each state of the store (RunResult.state): green, amber, blue, red."""

PUSH_SLOT = ("<!-- push -->", "<!-- /push -->")
"""Where, right under the banner, a push puts what reached the platform (delivery/push_report.py fills it;
a later push of the same run replaces what is between the markers)."""
PUSH_DETAILS_SLOT = ("<!-- push-details -->", "<!-- /push-details -->")
"""Where, at the end of the page, a push puts its detailed tables."""

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1a202c;
  background:#f7fafc;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.sub{color:#4a5568;margin:0 0 16px}
.status{display:inline-block;padding:6px 14px;border-radius:6px;font-weight:700;color:#fff;margin:8px 0}
.status-applied{background:#2f855a}.status-dry{background:#b7791f}.status-aborted{background:#c53030}
.state{border:1px solid;border-left-width:10px;border-radius:8px;padding:12px 18px;margin:12px 0 8px}
.state-name{font-size:22px;font-weight:800;text-transform:uppercase;letter-spacing:.03em}
.state-detail{font-size:18px;font-weight:600;margin-top:2px}.state-note{font-size:14px;margin-top:6px}
.state-applied{background:#f0fff4;border-color:#2f855a;color:#1c4532}
.state-failures{background:#fffbeb;border-color:#d97706;color:#78350f}
.state-dry{background:#ebf8ff;border-color:#2b6cb0;color:#1a365d}
.state-aborted{background:#fff5f5;border-color:#c53030;color:#63171b}
.card.warn{background:#fffbeb;border-color:#d97706}
.push-lines{list-style:none;padding:0;margin:8px 0}
.push-lines li{background:#fff;border:1px solid #e2e8f0;border-left:6px solid #718096;border-radius:6px;
  padding:6px 12px;margin:6px 0}
.push-lines li.push-confirmed{border-left-color:#2f855a}.push-lines li.push-already_applied{border-left-color:#2b6cb0}
.push-lines li.push-drift,.push-lines li.push-blocked{border-left-color:#d97706}
.push-lines li.push-failed{border-left-color:#c53030}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 18px;min-width:120px}
.card .n{font-size:26px;font-weight:700}.card .l{color:#4a5568;font-size:13px}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:14px}
th,td{border:1px solid #e2e8f0;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}
.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
.note{color:#4a5568;font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
svg{background:#fff;border:1px solid #e2e8f0;border-radius:8px}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#1a202c}
"""


def _e(value: Any) -> str:
    """A value as escaped HTML text; None is an empty cell."""
    return "" if value is None else escape(str(value))


def _table(
    table_id: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: frozenset[int] = frozenset(),
    mono: frozenset[int] = frozenset(),
) -> str:
    """A table of escaped cells; columns at `numeric` are right-aligned, at `mono` monospaced."""

    def cell(i: int, value: Any) -> str:
        css = "num" if i in numeric else "mono" if i in mono else ""
        return f'<td class="{css}">{_e(value)}</td>' if css else f"<td>{_e(value)}</td>"

    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, int, str]], label_width: int = 250) -> str:
    """A horizontal bar chart as inline SVG: one `rect.bar` per (label, value, colour)."""
    bar_area, row, top = 300, 28, 30
    width, height = label_width + bar_area + 70, top + row * len(bars) + 10
    longest = max((v for _, v, _ in bars), default=0) or 1
    parts = [
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<text x="10" y="20" font-weight="bold">{_e(title)}</text>',
    ]
    for i, (label, value, colour) in enumerate(bars):
        y = top + i * row
        length = round(bar_area * value / longest, 1)
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end">{_e(label)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 4}" width="{length}" height="{row - 8}" rx="3" '
            f'fill="{colour}"><title>{_e(label)}: {value}</title></rect>'
            f'<text x="{label_width + length + 6}" y="{y + 17}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def run_date(result: RunResult) -> str:
    """The day the run started, as the title names it (2026-01-01); the start as written when it is no date."""
    try:
        return datetime.fromisoformat(result.started_at).date().isoformat()
    except ValueError:
        return result.started_at


def _state_note(result: RunResult) -> str:
    """A sentence under the banner: what the state means for the store and where to look next."""
    succeeded = result.rows - result.failed
    if result.state == "aborted":
        return "The run stopped before it changed anything: the store is as it was. errors.csv lists the failed rows."
    if result.state == "dry run":
        return "The store was not changed: the counts below are what a real run on the same store would do."
    if result.state == "applied":
        return "Every row succeeded, and the store holds the run's changes."
    kept = (
        "No row succeeded, so the store did not change."
        if succeeded == 0
        else f"The {succeeded} row(s) that succeeded changed the store; the {result.failed} that failed did not."
    )
    return f"{kept} errors.csv lists each failed row with its reason, in a layout that can be fixed and run again."


def _status(result: RunResult) -> str:
    """The banner that leads the page: the state of the store in its colour, its detail and what it means."""
    css, name = STATES[result.state]
    return (
        f'<div class="state {css}" id="status" role="status"><div class="state-name">{_e(name)}</div>'
        f'<div class="state-detail">{_e(result.state_detail)}</div>'
        f'<div class="state-note">{_e(_state_note(result))}</div></div>'
    )


def _totals(result: RunResult) -> str:
    cards = [
        (result.rows, "rows read", ""),
        (result.rows - result.failed, "succeeded", ""),
        (
            result.failed,
            f"failed ({result.failed_share})" if result.rows else "failed",
            " warn" if result.failed else "",
        ),
        (result.merges, "merges", ""),
        (len(result.files), "input files", ""),
        (result.exit_code, "exit code", ""),
    ]
    body = "".join(
        f'<div class="card{css}"><div class="n">{_e(n)}</div><div class="l">{_e(label)}</div></div>'
        for n, label, css in cards
    )
    return (
        f'<section id="totals"><h2>Totals</h2><div class="cards">{body}</div>'
        f'<p class="note">Exit code {_e(result.exit_code)}: '
        f"{_e(EXIT_MEANINGS.get(result.exit_code, 'unknown'))}.</p></section>"
    )


def _outcomes(result: RunResult) -> str:
    counts = result.outcomes | {"failed": result.failed}
    rows = [(k, n, _percent(n, result.rows), OUTCOMES.get(k, ("", ""))[1]) for k, n in counts.items()]
    chart = bar_chart(
        "outcomes-chart",
        "Rows by outcome",
        [(k, n, OUTCOMES.get(k, ("#4a5568", ""))[0]) for k, n in counts.items()],
        label_width=110,
    )
    return (
        '<section><h2>Outcomes</h2><div class="row">'
        + _table("outcomes", ("outcome", "rows", "share", "meaning"), rows, frozenset({1, 2}))
        + chart
        + "</div></section>"
    )


def _error_codes(result: RunResult) -> str:
    ranked = sorted(result.errors_by_code.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return '<section><h2>Errors by code</h2><p id="no-errors">No row failed.</p></section>'
    rows = [
        (code, CATALOG[code].name, CATALOG[code].meaning, CATALOG[code].stage, n, _percent(n, result.failed))
        for code, n in ranked
    ]
    top = ranked[:TOP_CODES]
    chart = bar_chart(
        "errors-chart",
        f"Top {len(top)} error codes",
        [(f"{code} {CATALOG[code].name}", n, OUTCOMES["failed"][0]) for code, n in top],
    )
    return (
        "<section><h2>Errors by code</h2>"
        '<p class="note">Each failed row has one code; errors.csv lists the rows with their message.</p>'
        + chart
        + _table("errors", ("code", "name", "meaning", "stage", "rows", "share of failed"), rows, frozenset({4, 5}))
        + "</section>"
    )


EXPLAIN_FOLDER = "explain"
"""Where, beside summary.html, each merge's link points: `explain --html` writes the page there."""


def explanation_href(customer_id: Any) -> str:
    """The link from summary.html to a customer's explanation page (explain_html.customer_page's name)."""
    return f"{EXPLAIN_FOLDER}/customer-{customer_id}.html"


def _merges(merges: pl.DataFrame) -> str:
    if merges.height == 0:
        return '<section><h2>Merges</h2><p id="no-merges">No customer was merged.</p></section>'
    shown = merges.head(MAX_MERGE_ROWS).select("victim_id", "survivor_id", "file", "row_number", "id_type", "id_value")
    note = (
        f'<p class="note" id="merges-note">Showing the first {MAX_MERGE_ROWS} of {merges.height} merges; '
        "merges.csv has all of them.</p>"
        if merges.height > MAX_MERGE_ROWS
        else ""
    )

    def linked(customer_id: Any) -> str:
        return f'<td class="num"><a href="{_e(explanation_href(customer_id))}">{_e(customer_id)}</a></td>'

    head = "".join(f"<th>{h}</th>" for h in ("victim", "survivor", "file", "row", "id_type", "id_value", "explained"))
    body = "".join(
        f'<tr>{linked(victim)}{linked(survivor)}<td>{_e(file)}</td><td class="num">{_e(row)}</td>'
        f'<td>{_e(id_type)}</td><td>{_e(value)}</td><td><a href="{_e(explanation_href(victim))}">why</a></td></tr>'
        for victim, survivor, file, row, id_type, value in shown.rows()
    )
    return (
        '<section><h2>Merges</h2><p class="note">The victim customer was merged into the survivor '
        "by the request row named. Each customer links to its explanation page, which "
        "<code>loyalty-bulk explain --store STORE CUSTOMER_ID --html "
        f"{EXPLAIN_FOLDER}/customer-CUSTOMER_ID.html</code> "
        "writes beside this page (the store keeps every merge's provenance, so the page can be made at any time).</p>"
        f'<table id="merges"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>' + note + "</section>"
    )


def _files(result: RunResult) -> str:
    rows = [(f.get("path"), f.get("rows"), f.get("sha256")) for f in result.files]
    table = _table("files", ("file", "rows", "sha256"), rows, frozenset({1}), frozenset({2}))
    return '<section><h2>Input files</h2><p class="note">In the order they were applied.</p>' + table + "</section>"


def _stages(result: RunResult) -> str:
    rows = [(stage, f"{s:.2f}") for stage, s in result.stage_seconds.items()]
    rows.append(("total", f"{sum(result.stage_seconds.values()):.2f}"))
    return (
        "<section><h2>Seconds per stage</h2>"
        f'<p class="note">Started {_e(result.started_at)}, ended {_e(result.ended_at)}.</p>'
        + _table("stages", ("stage", "seconds"), rows, frozenset({1}))
        + "</section>"
    )


def _store(result: RunResult) -> str:
    before, after = result.store_before.to_dict(), result.store_after.to_dict()
    rows = [(name.replace("_", " "), before[name], after[name], f"{after[name] - before[name]:+d}") for name in before]
    note = " (a dry run: what the store would be)" if result.dry_run and not result.aborted else ""
    return (
        f'<section><h2>Store counts</h2><p class="note">Before and after the run{note}.</p>'
        + _table("store", ("count", "before", "after", "change"), rows, frozenset({1, 2, 3}))
        + "</section>"
    )


def render_summary_html(result: RunResult, merges: pl.DataFrame) -> str:
    """The page: the state of the store first (with, after a push, what reached the platform), then totals,
    outcomes, error codes with their meaning, merges, files, stages, store counts (and a push's details)."""
    job = f"job {_e(result.job)}" if result.job else "no job"
    sections = [
        _status(result),
        "".join(PUSH_SLOT),
        _totals(result),
        _outcomes(result),
        _error_codes(result),
        _merges(merges),
        _files(result),
        _stages(result),
        _store(result),
        "".join(PUSH_DETAILS_SLOT),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{job} · {_e(run_date(result))} · {_e(STATES[result.state][1])} · loyalty-bulk run {_e(result.run_id)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>loyalty-bulk run {_e(result.run_id)}</h1>
<p class="sub">{f"Job {_e(result.job)}" if result.job else "No job file"} · started {_e(result.started_at)} ·
reports in <span class="mono">{_e(result.reports_dir)}</span></p>
{"".join(sections)}
</main></body></html>
"""


def write_summary_html(result: RunResult, merges: pl.DataFrame, path: Path) -> Path:
    """Write summary.html for a finished run, atomically; `merges` is the merges.csv frame."""
    return write_text(render_summary_html(result, merges), path)
