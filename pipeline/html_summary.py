"""summary.html: a run's summary for a person who never opened a CSV."""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from pipeline.catalog import CATALOG
from pipeline.report import write_text

if TYPE_CHECKING:
    from pipeline.run import RunResult


def render_summary_html(result: RunResult, merges: pl.DataFrame) -> str:
    """A self-contained page: totals, outcomes, error codes with their meaning, merges."""
    outcome_rows = "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>"
                           for k, v in (result.outcomes | {"failed": result.failed}).items())
    code_rows = "".join(
        f"<tr><td>{code}</td><td>{escape(CATALOG[code].name)}</td><td>{escape(CATALOG[code].meaning)}</td>"
        f"<td>{n}</td></tr>" for code, n in sorted(result.errors_by_code.items(), key=lambda kv: (-kv[1], kv[0])))
    merge_rows = "".join(f"<tr><td>{v}</td><td>{s}</td><td>{escape(str(f))}</td><td>{n}</td></tr>"
                         for v, s, f, n in merges.select("victim_id", "survivor_id", "file", "row_number").rows())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loyalty-bulk run {escape(result.run_id)}</title></head>
<body>
<h1>Run {escape(result.run_id)}</h1>
<p id="totals">{result.rows} rows; {result.rows - result.failed} succeeded, {result.failed} failed;
{result.merges} merges; {"dry run" if result.dry_run else "applied"}; exit code {result.exit_code}</p>
<h2>Outcomes</h2><table id="outcomes"><tr><th>outcome</th><th>rows</th></tr>{outcome_rows}</table>
<h2>Errors by code</h2><table id="errors"><tr><th>code</th><th>name</th><th>meaning</th><th>rows</th></tr>{code_rows}</table>
<h2>Merges</h2><table id="merges"><tr><th>victim</th><th>survivor</th><th>file</th><th>row</th></tr>{merge_rows}</table>
</body></html>
"""


def write_summary_html(result: RunResult, merges: pl.DataFrame, path: Path) -> Path:
    return write_text(render_summary_html(result, merges), path)
