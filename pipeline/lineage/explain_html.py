"""The explanation as one self-contained HTML page (`explain --html FILE`), linked from summary.html.

Same rules as summary.html (reports/html.py): inline CSS, no script, no network, every value escaped
with the same helpers. Customer ids link to `customer-<id>.html` beside the page, where `explain
--html` writes that customer's page (summary.html links its merges to `explain/customer-<id>.html`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.files import write_text
from pipeline.lineage.explain import (
    CardExplanation,
    CardHistory,
    CustomerExplanation,
    Explanation,
    MergeStep,
    RunTouch,
    ValueExplanation,
)
from pipeline.reports.html import CSS, _e, _table


def customer_page(customer_id: int | None) -> str:
    """The file name of a customer's explanation page."""
    return f"customer-{customer_id}.html"


def _link(customer_id: int | None) -> str:
    if customer_id is None:
        return ""
    return f'<a href="{_e(customer_page(customer_id))}">{_e(customer_id)}</a>'


def _merges(table_id: str, title: str, steps: tuple[MergeStep, ...]) -> str:
    if not steps:
        return f'<section><h2>{_e(title)}</h2><p id="{table_id}-none">None.</p></section>'
    rows = "".join(
        f"<tr><td>{_link(s.victim_id)}</td><td>{_link(s.survivor_id)}</td>"
        f"<td>{_e(f'{s.event.id_type}={s.event.id_value}' if s.event else '')}</td>"
        f'<td class="mono">{_e(s.cause.render())}</td><td class="mono">{_e(s.cause.sha256)}</td></tr>'
        for s in steps
    )
    head = "".join(f"<th>{h}</th>" for h in ("victim", "survivor", "on value", "by", "file sha256"))
    return (
        f'<section><h2>{_e(title)}</h2><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def _runs(runs: tuple[RunTouch, ...]) -> str:
    rows = [(r.run_id, r.at, r.kind, r.job or r.reverts or "", r.changes, r.reverted_by or "") for r in runs]
    table = _table("runs", ("run", "at", "kind", "job / reverts", "changes", "reverted by"), rows, frozenset({4}))
    return "<section><h2>Runs that touched it (newest first)</h2>" + table + "</section>"


def _cards(cards: tuple[CardHistory, ...]) -> str:
    parts = ["<section><h2>Cards</h2>"]
    if not cards:
        parts.append('<p id="cards-none">None.</p>')
    for card in cards:
        now = f"held by {card.customer_id}" if card.customer_id is not None else "unheld"
        parts.append(
            f"<h3>Card {_e(card.card_number)} (series {_e(card.series_id)}): {_e(now)}, {_e(card.status_label)}</h3>"
        )
        rows = [
            (s.customer_id, s.status_label, s.event.action if s.event else "snapshot", s.cause.render())
            for s in card.states
        ]
        parts.append(_table("card-history", ("holder", "label", "change", "by"), rows, mono=frozenset({3})))
    return "".join(parts) + "</section>"


def _body(result: Explanation) -> tuple[str, str]:
    """The page's title and its sections."""
    if isinstance(result, CustomerExplanation):
        title = f"customer {result.customer_id}"
        if not result.found:
            return title, '<p id="not-found">Not in the store.</p>'
        idents = [
            (
                f"{h.source}/{h.account_id}" if h.account_id else h.source,
                h.id_type,
                h.id_value,
                " ← ".join(s.render() for s in h.origin),
            )
            for h in result.identifiers
        ]
        chain = " → ".join([str(result.customer_id), *(str(s.survivor_id) for s in result.chain)])
        sections = [
            f'<div class="status status-applied" id="status">{_e(result.status)} ({_e(result.customer_type)})</div>',
            f'<p class="sub" id="chain">Chain to the active customer: {_e(chain)}</p>' if result.chain else "",
            _merges("merged-into", "Merged into", result.chain),
            _merges("merged-in", "Customers merged into it", result.merged_in),
            "<section><h2>Identifiers now, and where each came from</h2>"
            + _table("identifiers", ("scope", "type", "value", "came from"), idents, mono=frozenset({2, 3}))
            + "</section>",
            _cards(result.cards),
            _runs(result.runs),
        ]
        return title, "".join(sections)
    if isinstance(result, ValueExplanation):
        title = f"value {result.id_type}={result.id_value}"
        rows = [
            (
                h.customer_id,
                f"{h.source}/{h.account_id}" if h.account_id else h.source,
                (h.since.action + ": " if h.since else "") + h.since_cause.render(),
                "still holds it" if h.until is None else h.until.render(),
            )
            for h in result.holdings
        ]
        table = _table("holdings", ("customer", "scope", "from", "until"), rows, mono=frozenset({2, 3}))
        return title, "<section><h2>Holders over time</h2>" + table + "</section>" + _runs(result.runs)
    assert isinstance(result, CardExplanation) and result.card is not None
    return f"card {result.card.card_number}", _cards((result.card,)) + _runs(result.runs)


def render_explanation_html(result: Explanation) -> str:
    """The page for one explanation: the same facts as the console and --json forms."""
    title, body = _body(result)
    masked = '<p class="note" id="masked">Identifier values are masked.</p>' if result.masked else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loyalty-bulk explain {_e(title)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Explain {_e(title)}</h1>
<p class="sub">Store <span class="mono">{_e(result.store)}</span> · snapshot
<span class="mono">{_e(result.snapshot.snapshot)}</span> loaded {_e(result.snapshot.at)}</p>
{masked}{body}
</main></body></html>
"""


def write_explanation_html(result: Explanation, path: Path | str) -> Path:
    """Write the page atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text(render_explanation_html(result), target)
