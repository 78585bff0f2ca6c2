"""`make demo`: validate the sample requests, build a fresh store from sample_data with the sample org
(`store init --config`: its `[mobile]` CN, HK reads the snapshot's mobiles), run the nightly job, then
show national numbers meeting the stored international ones on a second fresh store; then deliver the nightly run:
an emulated platform on a copy of the pre-run store, a push with injected faults, and the check that the
emulated platform ends equal to the store; and explain a merged customer, its survivor, a value and a
card, writing the explanation pages the run's summary.html links its merges to; and, the next night, refresh
the store to the platform's next snapshot (sample_data/next_night); then run a wide customer import (one line per
customer, a column per identifier: jobs/wide_customers.toml), fix one value of its errors.csv and run that back.

Run from the repository root (the Makefile does): the job file's paths are relative to jobs/, its
reports go to reports/nightly_migration/<run id>/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.config import load_config
from pipeline.errors import LoyaltyBulkError
from pipeline.job import JobOverrides, load_job, run_job
from pipeline.lineage.explain import Explainer, Target
from pipeline.lineage.explain_html import write_explanation_html
from pipeline.refresh import refresh_store
from pipeline.reports.html import explanation_href
from pipeline.run import new_run_id, run_batch
from pipeline.store.snapshot import export_store, init_store
from pipeline.validate import validate_files

SAMPLE = Path("sample_data")
NATIONAL_REQUESTS = SAMPLE / "mobile" / "national_numbers.csv"
NEXT_NIGHT = SAMPLE / "next_night"
"""The platform's snapshot of the next night: the demo's pushed run, less one change, plus the platform's own."""
DEMO = Path("reports/demo")
NIGHTLY_JOB = Path("jobs/nightly_migration.toml")
WIDE_JOB = Path("jobs/wide_customers.toml")
WIDE_FIX = ("hana.sato@example", "hana.sato@example.com")
"""The value the demo fixes in the wide import's errors.csv before running it back (an email missing its domain)."""
CLI = str(Path(sys.executable).parent / "loyalty-bulk")
FAULTS = "429:0.05,500:0.05,timeout:0.05,drop-after-apply:0.05"
DEMO_CREDENTIALS = {"LOYALTY_BULK_API_USER": "demo-till", "LOYALTY_BULK_API_PASSWORD": "demo-only-password"}
"""Made up for the demo and given to its two child processes through their environment only."""
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
        # as `store init --config`: the snapshot's mobiles are read with the org's [mobile] countries
        countries = load_config(config).mobile
        counts = init_store(job.store, SAMPLE / "snapshot", force=True, countries=countries)
        print(f"\n== store init {job.store} --config {config}: {counts.render()}")
        platform = DEMO / "platform.duckdb"
        shutil.copyfile(job.store, platform)  # the platform as the snapshot saw it: the pre-run store
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
    delivered = deliver(Path(result.reports_dir), config, Path(job.store), platform)
    return refresh(Path(job.store), config) or wide_import() or delivered


def refresh(store: Path, config: Path) -> int:
    """The next night: refresh the store to the platform's next snapshot (new registrations, a merge made at a
    till, a card issued in a store, and one change of the demo's run that the platform did not keep)."""
    print(f"\n== store refresh {store} --snapshot {NEXT_NIGHT} --config {config}")
    try:
        result = refresh_store(store, NEXT_NIGHT, new_run_id(), config_path=config, reports_dir=DEMO / "refresh")
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    print(result.render())
    return result.exit_code


def wide_import() -> int:
    """A wide file run with its job, then its errors.csv, one value fixed, run back with the same job."""
    try:
        job = load_job(WIDE_JOB)
        print(f"\n== job {WIDE_JOB}: {', '.join(job.inputs)} (one line per customer, [wide] maps the columns)")
        result = run_job(job, JobOverrides(reports=str(DEMO / "wide")))
        print(result.render())
        errors = Path(result.reports_dir) / "errors.csv"
        fixed = DEMO / "wide-fixed" / "errors.csv"
        fixed.parent.mkdir(parents=True, exist_ok=True)
        wrong, right = WIDE_FIX
        text = errors.read_text(encoding="utf-8")
        fixed.write_text(text.replace(f",{wrong},", f",{right},"), encoding="utf-8")
        print(f"\n== run {job.store} {fixed}: its errors.csv, '{wrong}' fixed to '{right}', run back")
        again = run_batch(job.store, job.config, [fixed], DEMO / "wide-again")
        print(again.render())
    except LoyaltyBulkError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def deliver(reports: Path, config: Path, store: Path, platform: Path) -> int:
    """Emulate the platform on the pre-run copy, push the run to it with faults, compare platform and store."""
    env = {**os.environ, **DEMO_CREDENTIALS}
    log = DEMO / "platform.log.ndjson"
    log.unlink(missing_ok=True)
    print(f"\n== emulate --store {platform} --port 0 --faults {FAULTS}")
    emulator = subprocess.Popen(
        [CLI, "emulate", "--store", str(platform), "--config", str(config), "--port", "0", "--faults", FAULTS,
         "--stall", "2", "--seed", "7", "--latency", "10", "--log", str(log)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = emulator.stdout.readline().strip() if emulator.stdout else ""
        print(line)
        url = line.removeprefix("listening on ")
        # one call at a time: the seeded faults then meet the same calls on every run of the demo
        print(f"\n== push {reports} --api {url} --rate 6000 --timeout 1 --max-in-flight 1")
        pushed = subprocess.run(
            [CLI, "push", str(reports), "--config", str(config), "--api", url, "--rate", "6000", "--timeout", "1",
             "--max-in-flight", "1"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        print(pushed.stdout.rstrip())
        if pushed.stderr:
            print(pushed.stderr.rstrip(), file=sys.stderr)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=60)
    print(f"\n== stopped the emulator (exit {emulator.returncode}); it wrote its state to {platform}")
    with tempfile.TemporaryDirectory() as folder:
        export_store(store, Path(folder) / "store", "csv")
        export_store(platform, Path(folder) / "platform", "csv")
        same = all(
            (Path(folder) / "store" / name).read_bytes() == (Path(folder) / "platform" / name).read_bytes()
            for name in sorted(p.name for p in (Path(folder) / "store").iterdir())
        )
    print(f"emulated platform equals the store {store}: {'yes' if same else 'NO'}")
    return 0 if same and pushed.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
