"""`make demo`: validate the sample requests, build a fresh store from sample_data, run the nightly job,
then explain a merged customer, its survivor, a value and a card, and write the explanation pages the
run's summary.html links its merges to.

Run from the repository root (the Makefile does): the job file's paths are relative to jobs/, its
reports go to reports/nightly_migration/<run id>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from pipeline.errors import LoyaltyBulkError
from pipeline.explain import Explainer, Target
from pipeline.explain_html import write_explanation_html
from pipeline.html_summary import explanation_href
from pipeline.job import load_job, run_job
from pipeline.store import init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
DEMO = Path("reports/demo")
NIGHTLY_JOB = Path("jobs/nightly_migration.toml")
EXPLAINED: tuple[tuple[str, Target], ...] = (
    ("1009", ("customer", 1009)),
    ("1023", ("customer", 1023)),
    ("--value email=erin@example.com", ("value", "email", "erin@example.com", None, None)),
    ("--card GLD0000000001", ("card", "GLD0000000001")),
)
"""A merged customer, its survivor (merged-in, moved identifiers, a linked card), a value, a card."""


def main() -> int:
    config = SAMPLE / "org.toml"
    requests = sorted((SAMPLE / "requests").glob("*.csv"))
    DEMO.mkdir(parents=True, exist_ok=True)
    try:
        checked = validate_files(config, requests, DEMO / "validate")
        print("== validate (checks only, no store)")
        print(checked.render())
        job = load_job(NIGHTLY_JOB)
        Path(job.store).parent.mkdir(parents=True, exist_ok=True)
        counts = init_store(job.store, SAMPLE / "snapshot", force=True)
        print(f"\n== store init {job.store}: {counts.render()}")
        print(f"\n== job {NIGHTLY_JOB}: {', '.join(job.inputs)}")
        result = run_job(job)
        print(result.render())
        with Explainer(job.store) as explainer:
            for shown, target in EXPLAINED:
                print(f"\n== explain --store {job.store} {shown}")
                print(explainer.explain(target).render())
            merges = pl.read_csv(Path(result.reports_dir) / "merges.csv")
            customers = sorted({*merges["victim_id"].to_list(), *merges["survivor_id"].to_list()})
            for customer_id in customers:
                page = Path(result.reports_dir) / explanation_href(customer_id)
                write_explanation_html(explainer.explain(("customer", customer_id)), page)
        print(f"\n== explanation pages of the merged customers (linked from summary.html): {len(customers)}")
        print(f"  {Path(result.reports_dir) / explanation_href('<customer id>')}")
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
