"""Benchmark of real runs on the Spark engine against the DuckDB engine, and of the Delta store's growth (not in the
test suite).

Uses bench/spark.py's cache (the 10M-customer Delta store made by `store init --engine spark`; run bench/spark.py
first) and a local Sail server it starts, and times, round-robin, a real `run` of the bench's 1M-row batch on a
fresh copy of each store (the copy is not timed): DuckDB, then Spark. It quotes the medians, where the Spark run's
time goes (its stage seconds and what the roll-forward adds), and how much the Delta store grows per run in files
and bytes. Results go to bench/RESULTS.md under "Spark engine, real runs".

    .venv/bin/python bench/spark_real.py [--cache DIR] [--customers 10000000] [--seed 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from run import replace_section
from spark import ensure_delta, real_run, start_server

BENCH = Path(__file__).resolve().parent
MARK = "## Spark engine, real runs (`bench/spark_real.py`)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    dataset = Path(args.cache).expanduser() / f"{args.customers}-{args.seed}"
    started = time.strftime("%Y-%m-%d %H:%M")
    server, remote = start_server()
    real: dict[str, list[dict[str, Any]]] = {"duckdb": [], "spark": []}
    try:
        delta, _ = ensure_delta(dataset, remote)
        batch = dataset / "batch-1000000" / "requests.csv"
        for i in range(args.repeat):
            for engine in ("duckdb", "spark") if i % 2 == 0 else ("spark", "duckdb"):
                real[engine].append(real_run(engine, dataset, delta, batch, remote))
            print(
                f"round {i + 1}: "
                + ", ".join(f"{e} {real[e][-1]['seconds']:.1f} s (exit {real[e][-1]['exit_code']})" for e in real),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=60)
    duck_s = statistics.median(r["seconds"] for r in real["duckdb"])
    spark_s = statistics.median(r["seconds"] for r in real["spark"])
    lines = [
        f"- command: `python bench/spark_real.py --cache {args.cache} --repeat {args.repeat}` (local Sail started by "
        "the bench on the same 2 cores; each run on a fresh copy of its store)",
        f"- real run of the 1M-row batch: DuckDB engine median {duck_s:.1f} s, Spark engine median {spark_s:.1f} s "
        f"({spark_s / duck_s:.2f}×); exit codes {sorted({r['exit_code'] for rs in real.values() for r in rs})}",
        f"- the Delta store grows per run by {statistics.median(r['files_added'] for r in real['spark']):.0f} files "
        f"and {statistics.median(r['bytes_added'] for r in real['spark']) / 2**20:.0f} MiB (the staged tables are "
        "removed; Delta keeps the files its MERGEs rewrote until a VACUUM); the DuckDB file grows by "
        f"{statistics.median(r['bytes_added'] for r in real['duckdb']) / 2**20:.0f} MiB",
        "- where the Spark run's time goes (its last round; stage seconds of its summary, then the rest of the "
        f"command: publishing its changes at the commit point and rolling them forward, and starting up): "
        f"{json.dumps(real['spark'][-1].get('stages'))}, rest "
        f"{real['spark'][-1]['seconds'] - sum((real['spark'][-1].get('stages') or {}).values()):.1f} s; DuckDB's: "
        f"{json.dumps(real['duckdb'][-1].get('stages'))}",
        f"- run {started}–{time.strftime('%H:%M')}",
    ]
    print("\n".join(lines))
    replace_section(args.out, MARK, lines)


if __name__ == "__main__":
    main()
