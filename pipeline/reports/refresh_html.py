"""A refresh's summary.html: what the snapshot changed, the truncation guard's figures, what the platform kept
of the store's own runs, and the first changed keys. Same rules as a run's page (html.py): inline CSS, no
script, every value escaped; with `mask_pii` identifier values and card numbers are masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipeline.files import write_text
from pipeline.reports.html import CSS, _e, _table, bar_chart
from pipeline.reports.pii import mask_expr

FIRST_CHANGES = 200
"""Changed keys listed on the page; changes.csv holds them all."""

COLOURS = {"customer": "#2b6cb0", "identifier": "#2f855a", "card": "#b7791f"}


def _status(summary: dict[str, Any]) -> str:
    guard = summary["guard"]
    if guard["refused"]:
        css, text = "aborted", "REFUSED, nothing applied: " + "; ".join(guard["breaches"])
    elif summary["dry_run"]:
        css, text = "dry", "DRY RUN: nothing applied"
    else:
        css, text = "applied", f"REFRESHED: {summary['changed_keys']} key(s) changed on the platform"
    return f'<div class="status status-{css}">{_e(text)}</div>'


def _changes(summary: dict[str, Any]) -> str:
    bars = [
        (f"{kind} {change}", n, COLOURS[kind])
        for kind, by_change in summary["changes"].items()
        for change, n in by_change.items()
    ]
    rows = [(kind, change, n) for kind, by_change in summary["changes"].items() for change, n in by_change.items()]
    return (
        "<section><h2>Changes by kind</h2>"
        + bar_chart("changes-chart", "changed keys", bars, label_width=200)
        + _table("changes", ("kind", "change", "keys"), rows, frozenset({2}))
        + "</section>"
    )


def _guard(summary: dict[str, Any]) -> str:
    guard = summary["guard"]
    rows = [
        (table, t["store_rows"], t["snapshot_rows"], t["removed"], f"{100 * t['removed_share']:.2f}%")
        for table, t in guard["tables"].items()
    ]
    note = (
        f"A snapshot that removes more than {100 * guard['max_removed_share']:.2f}% of a table, or is empty where the"
        " store is not, is refused unless removals are allowed" + (" (they were)." if guard["allow_removals"] else ".")
    )
    return (
        f'<section><h2>Truncation guard</h2><p class="note">{_e(note)}</p>'
        + _table("guard", ("table", "store rows", "snapshot rows", "removed", "share"), rows, frozenset({1, 2, 3, 4}))
        + "</section>"
    )


def _runs(summary: dict[str, Any]) -> str:
    if not summary["runs"]:
        return (
            '<section><h2>The store\'s own runs</h2><p class="note">No run was applied since the last init or'
            " refresh.</p></section>"
        )
    rows = [(r["run_id"], r["changes_on_platform"], r["changes_not_on_platform"]) for r in summary["runs"]]
    lost = summary["not_on_platform"]
    note = (
        f"{lost} change(s) are not on the platform; not_on_platform.csv holds them as request rows that"
        " `loyalty-bulk run` takes."
        if lost
        else "The platform shows every change of these runs."
    )
    return (
        f'<section><h2>The store\'s own runs</h2><p class="note">{_e(note)}</p>'
        + _table("runs", ("run", "on the platform", "not on the platform"), rows, frozenset({1, 2}), frozenset({0}))
        + "</section>"
    )


def _first_changes(changes: pl.DataFrame, mask_pii: bool) -> str:
    shown = changes.head(FIRST_CHANGES)
    if mask_pii:
        shown = shown.with_columns(
            mask_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value"),
            mask_expr(pl.lit("cardnumber"), pl.col("card_number")).alias("card_number"),
        )
    columns = [c for c in shown.columns if shown.get_column(c).null_count() < shown.height] or shown.columns
    more = (
        f" (the first {FIRST_CHANGES} of {changes.height}; changes.csv has all)"
        if changes.height > FIRST_CHANGES
        else ""
    )
    return (
        f'<section><h2>Changed keys</h2><p class="note">Each changed key once{_e(more)}.</p>'
        + _table("changed-keys", columns, shown.select(columns).rows())
        + "</section>"
    )


def render_refresh_html(summary: dict[str, Any], changes: pl.DataFrame, mask_pii: bool = False) -> str:
    """The page of a refresh from its refresh-summary.json and changes.csv frame."""
    sections = [_status(summary), _changes(summary), _guard(summary), _runs(summary), _first_changes(changes, mask_pii)]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loyalty-bulk refresh {_e(summary["run_id"])} · {_e(summary["started_at"][:10])}</title>
<style>{CSS}</style></head>
<body><main>
<h1>loyalty-bulk refresh {_e(summary["run_id"])}</h1>
<p class="sub">Store <span class="mono">{_e(summary["store"])}</span> from snapshot
<span class="mono">{_e(summary["snapshot"])}</span></p>
{"".join(sections)}
</main></body></html>
"""


def write_refresh_html(summary: dict[str, Any], changes: pl.DataFrame, path: Path, mask_pii: bool = False) -> Path:
    """Write a refresh's summary.html, atomically."""
    return write_text(render_refresh_html(summary, changes, mask_pii), path)
