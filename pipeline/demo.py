"""`make demo`: validate the sample requests, build a fresh store from sample_data, run the nightly job,
then show `[mobile]`: a store made with `store init --config sample_data/org-mobile.toml` and national
numbers meeting the stored international ones.

Run from the repository root (the Makefile does): the job file's paths are relative to jobs/, its
reports go to reports/nightly_migration/<run id>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.binding import set_config
from pipeline.config import load_config
from pipeline.errors import LoyaltyBulkError
from pipeline.job import load_job, run_job
from pipeline.run import new_run_id, run_batch
from pipeline.store import init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
MOBILE_CONFIG = SAMPLE / "org-mobile.toml"
MOBILE_REQUESTS = SAMPLE / "mobile" / "national_numbers.csv"
DEMO = Path("reports/demo")
NIGHTLY_JOB = Path("jobs/nightly_migration.toml")


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
        mobile_store = DEMO / "store-mobile.duckdb"
        # as `store init --config`: the snapshot's mobiles are read with the org's [mobile] countries
        counts = init_store(mobile_store, SAMPLE / "snapshot", force=True, countries=load_config(MOBILE_CONFIG).mobile)
        print(f"\n== store init {mobile_store} --config {MOBILE_CONFIG}: {counts.render()}")
        print(set_config(mobile_store, MOBILE_CONFIG, new_run_id()))
        print(f"\n== run {MOBILE_REQUESTS} ([mobile] CN, HK): national numbers meet the stored international ones")
        mobile = run_batch(mobile_store, MOBILE_CONFIG, [MOBILE_REQUESTS], DEMO / "mobile", allow_reapply=True)
        print(mobile.render())
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
