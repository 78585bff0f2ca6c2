"""Benchmark of the Spark engine's dry run against the DuckDB engine's, in one session (not in the test suite).

Takes the bench cache of bench/run.py (its 10M-customer snapshot, store and 1M-row batch; run that first),
starts a local Sail server (`loyalty-bulk spark-server --port 0`), makes the Delta store once with
`store init --engine spark` from the cached snapshot (kept in the cache), and times, round-robin:
  duckdb  `run --dry-run` of the 1M-row batch on a copy of the DuckDB store
  spark   `run --dry-run --engine spark` of the same batch on the Delta store
then the scale curve of the Spark dry run (and the DuckDB one beside it) over the batch's first 10k, 100k and
1M rows, and, in this process, where the Spark run's time goes (the key graph and its components, the whole
store's counts, the rows sent to the server, the buckets decided on the executors, the answers brought back).
The reports of both engines are compared by digest in every round. Results go to bench/RESULTS.md under
"Spark engine".

    .venv/bin/python bench/spark.py [--cache DIR] [--customers 10000000] [--seed 1] [--repeat 3]
                                    [--scale 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from run import CLI, GIB, measure, replace_section

BENCH = Path(__file__).resolve().parent
MARK = "## Spark engine (`bench/spark.py`)"


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [CLI, "spark-server", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], 60)
    line = server.stdout.readline() if ready else ""
    if not line.startswith("listening on "):
        server.kill()
        raise SystemExit(f"spark-server did not start: {line!r}")
    return server, line.removeprefix("listening on ").strip()


def ensure_delta(dataset: Path, remote: str) -> tuple[Path, float | None]:
    delta = dataset / "delta-store"
    if (delta / "store_meta" / "_delta_log").is_dir():
        return delta, None
    shutil.rmtree(delta, ignore_errors=True)
    m = measure(
        [CLI, "store", "init", "--engine", "spark", str(delta), "--snapshot", str(dataset / "snapshot")],
        7200,
        {"SPARK_REMOTE": remote},
    )
    if m.exit_code != 0:
        raise SystemExit(f"store init --engine spark failed: {m.stderr[-3000:]}")
    return delta, m.seconds


def batches(dataset: Path, sizes: list[int]) -> dict[int, Path]:
    full = dataset / "batch-1000000" / "requests.csv"
    out = dataset / "spark-scale"
    out.mkdir(exist_ok=True)
    paths = {}
    with full.open(encoding="utf-8") as f:
        lines = f.readlines()
    for size in sizes:
        path = full if size >= len(lines) - 1 else out / f"requests-{size}.csv"
        if path != full and not path.exists():
            path.write_text("".join(lines[: size + 1]), encoding="utf-8")
        paths[size] = path
    return paths


def dry_run(engine: str, store: Path, dataset: Path, requests: Path, remote: str) -> dict[str, Any]:
    reports = dataset / f"work-spark-{engine}"
    shutil.rmtree(reports, ignore_errors=True)
    cmd = [
        CLI,
        "run",
        "--dry-run",
        "--store",
        str(store),
        "--config",
        str(dataset / "org.toml"),
        "--reports",
        str(reports),
    ]
    if engine == "spark":
        cmd += ["--engine", "spark"]
    m = measure([*cmd, str(requests)], 3600, {"SPARK_REMOTE": remote})
    run = m.record((0, 1))  # 1: some rows failed, as the batch means them to
    summary = reports / "summary.json"
    if m.exit_code in (0, 1) and summary.exists():
        data = json.loads(summary.read_text())
        run["stages"] = data["stage_seconds"]
        run["outcomes"] = data["outcomes"]
        run["success_bytes"] = (reports / "success.csv").stat().st_size
        run["digests"] = {
            name: hashlib.sha256((reports / name).read_bytes()).hexdigest()
            for name in ("success.csv", "errors.csv", "merges.csv")
        }
    shutil.rmtree(reports, ignore_errors=True)
    return run


def folder_size(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def real_run(engine: str, dataset: Path, delta: Path, requests: Path, remote: str) -> dict[str, Any]:
    """A real run of the batch on a fresh copy of the store (not timed), with the store's growth in files and bytes."""
    work = dataset / "work-spark-real"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if engine == "spark":
        store = work / "delta"
        shutil.copytree(delta, store)
    else:
        store = work / "store.duckdb"
        shutil.copyfile(dataset / "store.duckdb", store)
    files_before, bytes_before = folder_size(work)
    reports = work / "reports"
    cmd = [CLI, "run", "--store", str(store), "--config", str(dataset / "org.toml"), "--reports", str(reports)]
    if engine == "spark":
        cmd += ["--engine", "spark"]
    m = measure([*cmd, str(requests)], 3600, {"SPARK_REMOTE": remote})
    run = m.record((0, 1))
    if (reports / "summary.json").exists():
        run["stages"] = json.loads((reports / "summary.json").read_text())["stage_seconds"]
    shutil.rmtree(reports, ignore_errors=True)
    files_after, bytes_after = folder_size(work)
    run["files_added"], run["bytes_added"] = files_after - files_before, bytes_after - bytes_before
    shutil.rmtree(work, ignore_errors=True)
    return run


def breakdown(delta: Path, dataset: Path, requests: Path, remote: str) -> dict[str, Any]:
    """Where a Spark dry run's time goes, measured in this process, step by step as spark/decide.py takes them."""
    from pipeline.config import load_config
    from pipeline.input.read import read_requests
    from pipeline.results import StageClock
    from pipeline.spark.decide import (
        OUT_SCHEMA,
        ROWS_PER_BUCKET,
        Shared,
        _joined,
        bucket_frames,
        decide_bucket,
        key_graph,
        remove_scratch,
    )
    from pipeline.spark.delta import DeltaStore
    from pipeline.spark.publish import scratch_folder
    from pipeline.spark.session import spark_session

    spark = spark_session(remote)
    store = DeltaStore(spark, str(delta))
    config = load_config(dataset / "org.toml")
    shared = Shared((dataset / "org.toml").read_bytes(), str(dataset / "org.toml"), None)
    t = time.perf_counter()
    batch = read_requests([requests])
    read_s = time.perf_counter() - t
    clock = StageClock()
    scratch = scratch_folder("breakdown")
    buckets = key_graph(store, batch.frame, config, ROWS_PER_BUCKET, scratch, clock)
    t = time.perf_counter()
    whole = store.counts()
    counts_s = time.perf_counter() - t

    def on_executor(table: pa.Table) -> pa.Table:
        return decide_bucket(shared, table)

    t = time.perf_counter()
    try:
        frames = bucket_frames(store, batch.frame, buckets, scratch)
        rows_s = time.perf_counter() - t
        t = time.perf_counter()
        answers = store.uri(f"{scratch}/answers")
        frames.groupBy("bucket").applyInArrow(on_executor, schema=OUT_SCHEMA).write.format("delta").save(answers)
        buckets_s = time.perf_counter() - t
        t = time.perf_counter()
        stored = store.read(f"{scratch}/answers")
        parts = [r.asDict() for b in range(buckets.count) for r in stored.where(stored.bucket == b).collect()]
        _joined(parts)
        back_s = time.perf_counter() - t
    finally:
        remove_scratch(store, scratch)
    spark.stop()
    return {
        "read": round(read_s, 2),
        "keys_normalised": clock.seconds["check"],
        "key_graph": clock.seconds["resolve"],
        "chain_steps": buckets.chain_steps,
        "buckets": buckets.count,
        "customers_reached": buckets.customers.num_rows,
        "store_counts": round(counts_s, 2),
        "rows_to_server": round(rows_s, 2),
        "buckets_decided": round(buckets_s, 2),
        "answers_back": round(back_s, 2),
        "whole_store": whole.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    dataset = Path(args.cache).expanduser() / f"{args.customers}-{args.seed}"
    if not (dataset / "store.duckdb").exists():
        raise SystemExit(f"no bench store in {dataset}: run bench/run.py --cache {args.cache} --only e first")
    started = time.strftime("%Y-%m-%d %H:%M")
    server, remote = start_server()
    try:
        delta, init_s = ensure_delta(dataset, remote)
        if init_s is not None:
            print(f"store init --engine spark: {init_s:.1f} s", flush=True)
        duck = dataset / "work-spark-duck.duckdb"
        shutil.copyfile(dataset / "store.duckdb", duck)
        sizes = [int(s) for s in args.scale.split(",")]
        paths = batches(dataset, sizes)
        main_batch = paths[max(sizes)]
        runs: dict[str, list[dict[str, Any]]] = {"duckdb": [], "spark": []}
        for i in range(args.repeat):
            for engine in ("duckdb", "spark") if i % 2 == 0 else ("spark", "duckdb"):
                runs[engine].append(dry_run(engine, duck if engine == "duckdb" else delta, dataset, main_batch, remote))
            duck_run, spark_run = runs["duckdb"][-1], runs["spark"][-1]
            print(
                f"round {i + 1}: duckdb {duck_run['seconds']:.1f} s (exit {duck_run['exit_code']}), "
                f"spark {spark_run['seconds']:.1f} s (exit {spark_run['exit_code']}, "
                f"{spark_run['max_rss'] / GIB:.2f} GiB client)",
                flush=True,
            )
        same = all(
            d.get("outcomes") == s.get("outcomes") and d.get("digests") == s.get("digests")
            for d, s in zip(runs["duckdb"], runs["spark"], strict=True)
        )
        curve = {}
        for size in sizes:
            if size == max(sizes):
                curve[size] = {e: statistics.median(r["seconds"] for r in runs[e]) for e in runs}
                continue
            curve[size] = {
                e: statistics.median(
                    dry_run(e, duck if e == "duckdb" else delta, dataset, paths[size], remote)["seconds"]
                    for _ in range(2)
                )
                for e in ("duckdb", "spark")
            }
            print(f"scale {size:,}: {curve[size]}", flush=True)
        where = breakdown(delta, dataset, main_batch, remote)
        print(json.dumps(where), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
        duck.unlink(missing_ok=True)
    duck_s = statistics.median(r["seconds"] for r in runs["duckdb"])
    spark_s = statistics.median(r["seconds"] for r in runs["spark"])
    ratios = [s["seconds"] / d["seconds"] for s, d in zip(runs["spark"], runs["duckdb"], strict=True)]
    lines = [
        f"- command: `python bench/spark.py --cache {args.cache} --repeat {args.repeat}` (local Sail 0.7 started by "
        "the bench on the same 2 cores, Delta store made once by `store init --engine spark` and cached)",
        *([f"- `store init --engine spark` of the 10M-customer snapshot: {init_s:.1f} s"] if init_s else []),
        f"- dry run of the 1M-row batch: DuckDB engine median {duck_s:.1f} s, Spark engine median {spark_s:.1f} s: "
        f"{spark_s / duck_s:.2f}× (rounds {', '.join(f'{r:.2f}' for r in ratios)}); target within 4×",
        f"- same outcomes and the same success.csv, errors.csv and merges.csv (sha256) on both engines in every "
        f"round: {'yes' if same else 'NO'}",
        "- scale curve (medians, s): "
        + "; ".join(f"{size:,} rows: duckdb {c['duckdb']:.1f}, spark {c['spark']:.1f}" for size, c in curve.items()),
        f"- where the Spark run's time goes (1M rows, one run in-process, s): read {where['read']}, keys "
        f"normalised {where['keys_normalised']}, key graph on Spark and components {where['key_graph']} "
        f"({where['chain_steps']} merge-chain steps, {where['customers_reached']:,} customers reached of "
        f"{where['whole_store']['customers']:,}), whole-store counts {where['store_counts']}, rows to the server "
        f"{where['rows_to_server']}, {where['buckets']} buckets decided on the executors {where['buckets_decided']}, "
        f"answers back and joined {where['answers_back']}; the reports as on DuckDB (the run's stages: "
        f"{json.dumps(runs['spark'][-1].get('stages'))})",
        f"- run {started}–{time.strftime('%H:%M')}",
    ]
    print("\n".join(lines))
    replace_section(args.out, MARK, lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
