"""`make demo`: validate the sample requests, build a fresh store from sample_data, run the nightly job.

Run from the repository root (the Makefile does): the job file's paths are relative to jobs/, its
reports go to reports/nightly_migration/<run id>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.errors import LoyaltyBulkError
from pipeline.job import load_job, run_job
from pipeline.store import init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
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
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    print(result.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
