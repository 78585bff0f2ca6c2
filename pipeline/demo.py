"""`make demo`: validate the sample requests, build a fresh store from sample_data with the sample org
(`store init --config`: its `[mobile]` CN, HK reads the snapshot's mobiles), run the nightly job, then
show national numbers meeting the stored international ones on a second fresh store.

Run from the repository root (the Makefile does): the job file's paths are relative to jobs/, its
reports go to reports/nightly_migration/<run id>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import LoyaltyBulkError
from pipeline.job import load_job, run_job
from pipeline.run import run_batch
from pipeline.store import init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
NATIONAL_REQUESTS = SAMPLE / "mobile" / "national_numbers.csv"
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
        # as `store init --config`: the snapshot's mobiles are read with the org's [mobile] countries
        countries = load_config(config).mobile
        counts = init_store(job.store, SAMPLE / "snapshot", force=True, countries=countries)
        print(f"\n== store init {job.store} --config {config}: {counts.render()}")
        print(f"\n== job {NIGHTLY_JOB}: {', '.join(job.inputs)}")
        result = run_job(job)
        print(result.render())
        # a fresh store, so that each national-number row meets the snapshot as its name says
        national_store = DEMO / "store-national.duckdb"
        counts = init_store(national_store, SAMPLE / "snapshot", force=True, countries=countries)
        print(f"\n== store init {national_store} --config {config}: {counts.render()}")
        print(f"\n== run {NATIONAL_REQUESTS} ([mobile] CN, HK): national numbers meet the stored international ones")
        national = run_batch(national_store, config, [NATIONAL_REQUESTS], DEMO / "national", allow_reapply=True)
        print(national.render())
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
