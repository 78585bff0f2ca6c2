"""`make demo`: build a fresh store from sample_data, run the sample requests, say where the reports are."""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import LoyaltyBulkError
from pipeline.run import new_run_id, run_batch
from pipeline.store import init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
DEMO = Path("reports/demo")


def main() -> int:
    config = SAMPLE / "org.toml"
    requests = sorted((SAMPLE / "requests").glob("*.csv"))
    store = DEMO / "store.duckdb"
    DEMO.mkdir(parents=True, exist_ok=True)
    try:
        checked = validate_files(config, requests, DEMO / "validate")
        print("== validate (checks only, no store)")
        print(checked.render())
        counts = init_store(store, SAMPLE / "snapshot", force=True)
        print(f"\n== store init {store}: {counts.render()}")
        run_id = new_run_id()
        result = run_batch(store, config, requests, DEMO / run_id, job="demo", run_id=run_id)
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n== run")
    print(result.render())
    print(f"\nReports: {result.reports_dir}/success.csv, errors.csv, merges.csv, summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
