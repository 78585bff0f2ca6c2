"""The Spark engine against the DuckDB engine: the same store from the same snapshot, the same reports.

A local Sail server (conftest's `spark` fixture) serves the Delta stores. Each test makes a Delta store and a
DuckDB store from one snapshot and compares: `store export` byte for byte, the refusal report of a broken
snapshot, the audit, and every report of a dry run (run id, times and the store's name aside), on the sample
data, the sample jobs and Hypothesis batches of the engine-vs-model property test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REQUESTS, ROOT, SAMPLE_SNAPSHOT, exported
from model import model_store_to_frames
from pipeline.config import load_config
from pipeline.engine.batch import decide_batch
from pipeline.engine.workspace import Workspace
from pipeline.errors import LoyaltyBulkError, SnapshotRefused, StoreError
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.input.read import read_requests
from pipeline.job import JobOverrides, job_layout, load_job, run_job
from pipeline.run import RunOptions, run_batch
from pipeline.spark.decide import key_graph
from pipeline.spark.delta import DeltaStore, init_delta_store, local_store
from pipeline.spark.publish import open_store, scratch_folder
from pipeline.spark.run import run_on_spark
from pipeline.store.audit import audit_store
from pipeline.store.snapshot import init_store
from test_engine_properties import BASE_CONFIG, request_rows, stores

ORG = ROOT / "sample_data" / "org.toml"
REPORTS = ("success.csv", "errors.csv", "merges.csv", "calls.ndjson", "summary.json", "summary.html")
_VOLATILE = (
    re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"),
    re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?"),
)


def comparable(folder: Path, name: str, store_names: tuple[str, ...]) -> str:
    """A report with what differs from run to run (run id, times, stage seconds, the store's name) replaced."""
    text = (folder / name).read_text(encoding="utf-8")
    if name == "summary.json":
        summary = json.loads(text)
        summary.pop("stage_seconds")
        text = json.dumps(summary, indent=1, sort_keys=True)
    elif name == "summary.html":
        text = re.sub(r"\d+\.\d+ s\b|(?<=<td class=\"num\">)\d+\.\d+(?=</td>)", "<s>", text)
    for store in store_names:
        text = text.replace(store, "<store>")
    text = text.replace(str(folder), "<reports>")
    for pattern in _VOLATILE:
        text = pattern.sub("<volatile>", text)
    return text


def both_engines(spark, tmp_path: Path, snapshot: Path, config: Path) -> tuple[Path, str]:
    countries = load_config(config).mobile
    duck = tmp_path / "duck.duckdb"
    init_store(duck, snapshot, countries=countries)
    delta = str(tmp_path / "delta")
    init_delta_store(spark, delta, snapshot, countries=countries)
    return duck, delta


def test_a_delta_store_holds_what_the_duckdb_store_holds(spark, tmp_path):
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    with local_store(DeltaStore(spark, delta), record_tables=()) as local:
        assert exported(local, tmp_path / "from-delta") == exported(duck, tmp_path / "from-duck")
    store = DeltaStore(spark, delta)
    assert store.meta()["engine"] == "spark"
    with local_store(store) as local:
        audited = audit_store(local, ORG, tmp_path / "audit.csv")
    assert audited.exit_code == 0
    assert store.counts().to_dict() == {
        "customers": 30,
        "active": 26,
        "merged": 4,
        "identifiers": 45,
        "cards": 16,
        "linked_cards": 9,
    }
    with pytest.raises(StoreError, match="already exists"):
        init_delta_store(spark, delta, SAMPLE_SNAPSHOT)


def test_a_broken_snapshot_is_refused_with_the_same_report_and_no_store(spark, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(SAMPLE_SNAPSHOT, broken)
    customers = broken / "customers.csv"
    customers.write_text(customers.read_text() + "1001,ACTIVE,,LOYALTY\n1999,MERGED,1999,LOYALTY\n")
    with pytest.raises(SnapshotRefused):
        init_store(tmp_path / "duck.duckdb", broken, tmp_path / "duck-report.csv")
    with pytest.raises(SnapshotRefused):
        init_delta_store(spark, str(tmp_path / "delta"), broken, tmp_path / "delta-report.csv")
    assert (tmp_path / "delta-report.csv").read_bytes() == (tmp_path / "duck-report.csv").read_bytes()
    assert not DeltaStore(spark, str(tmp_path / "delta")).exists()


@pytest.mark.parametrize(
    ("name", "snapshot", "inputs", "job"),
    [
        ("sample requests", SAMPLE_SNAPSHOT, REQUESTS, None),
        ("nightly job", SAMPLE_SNAPSHOT, None, ROOT / "jobs" / "nightly_migration.toml"),
        ("card import job", SAMPLE_SNAPSHOT, None, ROOT / "jobs" / "loyalty_import.toml"),
        ("wide job", ROOT / "sample_data" / "next_night", None, ROOT / "jobs" / "wide_customers.toml"),
        ("national mobiles", SAMPLE_SNAPSHOT, [ROOT / "sample_data" / "mobile" / "national_numbers.csv"], None),
    ],
)
def test_a_dry_run_on_spark_writes_the_duckdb_engines_reports(
    spark, tmp_path, monkeypatch, name, snapshot, inputs, job
):
    # what the driver sends to Spark goes through the run's scratch tables past 4 KiB (32 MiB outside the tests)
    monkeypatch.setattr("pipeline.spark.decide.SHIP_BYTES", 4096)
    duck, delta = both_engines(spark, tmp_path, snapshot, ORG)
    options = RunOptions(dry_run=True)
    files = inputs
    if job is not None:
        loaded = load_job(job)
        files = list(loaded.inputs)
        options = RunOptions(dry_run=True, layout=job_layout(loaded, str(ORG)), job=loaded.name)
    on_duck = run_batch(duck, ORG, files, tmp_path / "duck-reports", options)
    # buckets of about 4 rows: the batch's components are dealt to several buckets, each decided on its own
    on_spark = run_on_spark(spark, delta, ORG, files, tmp_path / "spark-reports", options, rows_per_bucket=4)
    assert on_spark.exit_code == on_duck.exit_code
    assert on_spark.store_before == on_duck.store_before and on_spark.store_after == on_duck.store_after
    assert on_spark.store == str((tmp_path / "delta").resolve())
    names = (str(duck.resolve()), on_spark.store)
    for report in REPORTS:
        assert comparable(tmp_path / "spark-reports", report, names) == comparable(
            tmp_path / "duck-reports", report, names
        ), f"{name}: {report}"
    # the dry run's ledger entry is recorded in the Delta ledger, as in the DuckDB store's
    ledger = DeltaStore(spark, delta).arrow("runs").to_pylist()
    assert [(r["run_id"], r["dry_run"]) for r in ledger] == [(on_spark.run_id, True)]
    assert not any((Path(delta) / "_scratch").iterdir()), "the run's scratch tables were removed"


def test_every_component_of_the_batch_is_whole_in_one_bucket(spark, tmp_path):
    """The buckets the executors decide: rows that share a key with the DuckDB engine's resolve (its plan groups) are
    in one bucket, and small buckets spread the sample batch over several."""
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    config = load_config(ORG)
    frame = read_requests(REQUESTS).frame
    buckets = key_graph(DeltaStore(spark, delta), frame, config, 3, scratch_folder("graph"))
    assert buckets.count > 1 and set(buckets.rows.tolist()) == set(range(buckets.count))
    with duckdb.connect(str(duck)) as con:
        groups = decide_batch(Workspace(con), frame, config).outcomes.select("seq", "plan_group").drop_nulls()
    bucket_of = dict(zip(frame["seq"].to_list(), buckets.rows.tolist(), strict=True))
    assert groups.height > 0
    for group in groups.partition_by("plan_group"):
        assert len({bucket_of[seq] for seq in group["seq"]}) == 1, group


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("aborted at a threshold", RunOptions(dry_run=True, max_error_rate=0.05)),
        ("masked values", RunOptions(dry_run=True, mask_pii=True)),
    ],
)
def test_thresholds_and_masking_give_the_same_reports(spark, tmp_path, name, options):
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    on_duck = run_batch(duck, ORG, REQUESTS, tmp_path / "duck-reports", options)
    on_spark = run_on_spark(spark, delta, ORG, REQUESTS, tmp_path / "spark-reports", options)
    assert (on_spark.exit_code, on_spark.aborted) == (on_duck.exit_code, on_duck.aborted)
    names = (str(duck.resolve()), on_spark.store)
    for report in REPORTS:
        assert comparable(tmp_path / "spark-reports", report, names) == comparable(
            tmp_path / "duck-reports", report, names
        ), f"{name}: {report}"


def test_a_file_refused_as_a_whole_is_refused_alike_before_spark_reads_the_store(spark, tmp_path):
    duck, delta = both_engines(spark, tmp_path, SAMPLE_SNAPSHOT, ORG)
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,action,colour\n1001,add,blue\n")
    with pytest.raises(LoyaltyBulkError) as on_duck:
        run_batch(duck, ORG, [bad], tmp_path / "duck-reports", dry_run=True)
    with pytest.raises(LoyaltyBulkError) as on_spark:
        run_on_spark(spark, delta, ORG, [bad], tmp_path / "spark-reports", RunOptions(dry_run=True))
    assert str(on_spark.value) == str(on_duck.value) and on_spark.value.exit_code == on_duck.value.exit_code == 3
    assert DeltaStore(spark, delta).arrow("runs").num_rows == 0


def _delta_export(spark, delta: str, out: Path) -> dict[str, bytes]:
    with local_store(open_store(DeltaStore(spark, delta)), record_tables=()) as local:
        return exported(local, out)


def _snapshot(store, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for table, frame in model_store_to_frames(store).items():
        frame.write_csv(folder / f"{table}.csv")
    return folder


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hypothesis_batches_give_the_same_reports_on_both_engines(spark, tmp_path_factory, data):
    store = data.draw(stores())
    rows = data.draw(st.lists(request_rows(n_customers=len(store.customers)), min_size=1, max_size=25))
    tmp = tmp_path_factory.mktemp("spark-differential")
    raw = dict(BASE_CONFIG)
    raw["org"] = dict(raw["org"], campaign_identifier_reuse=data.draw(st.booleans()))
    raw["merge"] = {
        "enabled": data.draw(st.booleans()),
        "max_merges_per_survivor_per_run": data.draw(st.integers(0, 2)),
    }
    config = tmp / "org.toml"
    config.write_text(_toml(raw))
    snapshot = _snapshot(store, tmp / "snapshot")
    requests = tmp / "requests.csv"
    columns = [c for c in REQUEST_COLUMNS if any(c in row for row in rows)]  # a request file's own columns
    requests.write_text(
        ",".join(columns) + "\n" + "".join(",".join(_cell(row.get(c)) for c in columns) + "\n" for row in rows)
    )
    duck, delta = both_engines(spark, tmp, snapshot, config)
    on_duck = run_batch(duck, config, [requests], tmp / "duck-reports", dry_run=True)
    per_bucket = data.draw(st.integers(1, 8), label="rows per bucket")
    on_spark = run_on_spark(
        spark, delta, config, [requests], tmp / "spark-reports", RunOptions(dry_run=True), rows_per_bucket=per_bucket
    )
    assert on_spark.store_after == on_duck.store_after
    names = (str(duck.resolve()), on_spark.store)
    for report in REPORTS:
        assert comparable(tmp / "spark-reports", report, names) == comparable(tmp / "duck-reports", report, names)


def _cell(value: str | None) -> str:
    text = value or ""
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


def _toml(raw: dict) -> str:
    """BASE_CONFIG as an org config file."""
    lines = []
    for table in ("org", "merge"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in raw[table].items()]
    for name, source in raw["sources"].items():
        lines.append(f"[sources.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in source.items()]
    for series in raw["card_series"]:
        lines.append("[[card_series]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in series.items()]
    lines.append("[card_labels]")
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in raw["card_labels"].items()]
    for id_type, blocked in raw["blocked_values"].items():
        lines.append(f"[blocked_values.{id_type}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in blocked.items()]
    return "\n".join(lines) + "\n"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "loyalty-bulk"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.mark.slow
def test_the_commands_on_spark(spark_remote, tmp_path):
    """store init, export and audit, run and job, each with --engine spark (or LOYALTY_BULK_ENGINE=spark)."""
    remote = {"SPARK_REMOTE": spark_remote}
    delta, duck = str(tmp_path / "delta"), tmp_path / "duck.duckdb"
    made = _cli(
        "store",
        "init",
        "--engine",
        "spark",
        delta,
        "--snapshot",
        str(SAMPLE_SNAPSHOT),
        "--config",
        str(ORG),
        env=remote,
    )
    assert made.returncode == 0, made.stderr
    assert "(Delta tables): 30 customers (26 active, 4 merged)" in made.stdout
    assert f"{Path(delta).resolve()}" in made.stdout  # the binding names the Delta store, not a scratch file
    init_store(duck, SAMPLE_SNAPSHOT, countries=load_config(ORG).mobile)

    exported_csv = _cli(
        "store", "export", "--engine", "spark", delta, str(tmp_path / "out"), "--format", "csv", env=remote
    )
    assert exported_csv.returncode == 0, exported_csv.stderr
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "out").iterdir())} == exported(
        duck, tmp_path / "duck-out"
    )

    audited = _cli("store", "audit", delta, env=remote | {"LOYALTY_BULK_ENGINE": "spark"})
    assert audited.returncode == 0 and "clean" in audited.stdout, audited.stdout + audited.stderr
    assert str(Path(delta).resolve()) in audited.stdout

    args = ["run", "--engine", "spark", "--store", delta, "--config", str(ORG), "--reports"]
    dry = _cli(*args, str(tmp_path / "dry"), "--dry-run", *map(str, REQUESTS), env=remote)
    assert dry.returncode == 1 and dry.stdout.startswith("dry run, nothing applied"), dry.stdout + dry.stderr
    real = _cli(*args, str(tmp_path / "real"), *map(str, REQUESTS), env=remote)
    assert real.returncode == 1 and real.stdout.startswith("applied with failures"), real.stdout + real.stderr
    twice = _cli(*args, str(tmp_path / "twice"), *map(str, REQUESTS), env=remote)
    assert twice.returncode == 3 and "already applied" in twice.stderr, twice.stderr
    run_batch(duck, ORG, REQUESTS, tmp_path / "duck-real")  # the DuckDB store in the same state
    compacted = _cli("store", "compact", "--engine", "spark", delta, "--retain-hours", "0", "--json", env=remote)
    assert compacted.returncode == 0, compacted.stderr
    upkeep = json.loads(compacted.stdout)
    assert upkeep["by"] == "delta-rs" and {t["table"] for t in upkeep["tables"]} >= {"customers", "identifiers", "runs"}
    on_duckdb = _cli("store", "compact", str(duck))
    assert on_duckdb.returncode == 2 and "Delta tables (--engine spark)" in on_duckdb.stderr
    bounded = _cli(
        *args, str(tmp_path / "bounded"), "--dry-run", "--max-component", "2", *map(str, REQUESTS), env=remote
    )
    assert bounded.returncode == 3 and "connected component of" in bounded.stderr, bounded.stderr
    assert not (tmp_path / "bounded").exists()

    nightly = ROOT / "jobs" / "nightly_migration.toml"
    job_args = ["job", str(nightly), "--store", delta, "--dry-run", "--reports", str(tmp_path / "job")]
    job = _cli(*job_args, env=remote | {"LOYALTY_BULK_ENGINE": "spark"})
    assert job.returncode in (1, 3) and (tmp_path / "job" / "success.csv").exists(), job.stdout + job.stderr
    loaded = dataclasses.replace(load_job(nightly), store=str(duck))  # its thresholds too
    on_duck = run_job(loaded, JobOverrides(dry_run=True, reports=tmp_path / "duck-job"))
    names = (str(duck.resolve()), str(Path(delta).resolve()))
    for report in ("success.csv", "errors.csv", "merges.csv", "calls.ndjson"):
        assert comparable(tmp_path / "job", report, names) == comparable(tmp_path / "duck-job", report, names)
    assert on_duck.exit_code == job.returncode

    nowhere = _cli(
        "run",
        "--engine",
        "spark",
        "--store",
        delta,
        "--config",
        str(ORG),
        "--reports",
        str(tmp_path / "x"),
        "--dry-run",
        str(REQUESTS[0]),
        env={"SPARK_REMOTE": ""},
    )
    assert nowhere.returncode == 2 and "--spark-remote" in nowhere.stderr
