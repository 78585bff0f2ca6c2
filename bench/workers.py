"""`--workers 2` against `--workers 1` (not in the test suite): the decide stage's speed-up, reports compared.

Runs the same batch on fresh copies of the same store, alternating `--workers 1` and `--workers 2` (one of
each per round, so the pair shares the same minutes of this shared machine), and reports the decide stage's
median of each, their ratio, the ratio round by round, the wall times, and whether the two settings wrote
byte-identical reports (run ids and times aside). Two batches by default, as issue 14 names them: (a)'s 1M
rows on the 10M-customer store (bench/run.py's cache), and a `loyalty-bulk sample` of 300k rows over 200k
customers. Writes the "Workers" section of bench/RESULTS.md.

    .venv/bin/python bench/workers.py [--repeat 5] [--cache DIR] [--only a,s]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from run import BENCH_DIR, Bench, compile_package, parse_args, replace_section

MARK = "## Workers (`bench/workers.py`)"
COMPARED = ("success.csv", "errors.csv", "merges.csv", "calls.ndjson")


def digest(reports: Path, run_id: str) -> str:
    """The reports' content with the run id blanked: equal digests mean byte-identical reports otherwise."""
    h = hashlib.sha256()
    for name in COMPARED:
        path = reports / name
        if not path.exists():
            raise SystemExit(f"the run wrote no {path}")
        h.update(name.encode() + b"\0" + path.read_bytes().replace(run_id.encode(), b"RUN") + b"\0")
    return h.hexdigest()


def compare(bench1: Bench, bench2: Bench, dataset: Path, store: Path, requests: Path, repeat: int) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    digests: dict[int, set[str]] = {1: set(), 2: set()}
    for round_ in range(repeat):
        for workers, bench in ((1, bench1), (2, bench2)):
            bench.log(f"round {round_ + 1}/{repeat}: --workers {workers} on {requests}")

            def seen(reports: Path, workers: int = workers) -> None:
                run_id = re.search(r'"run_id": "([^"]+)"', (reports / "summary.json").read_text())
                digests[workers].add(digest(reports, run_id.group(1) if run_id else "\0"))

            runs[workers].append(bench.cli_run(dataset, store, requests, inspect=seen))
    decide = {w: [r["stages"]["decide"] for r in runs[w]] for w in runs}
    return {
        "requests": str(requests),
        "rows": runs[1][0]["rows"],  # the run's own count (summary.json), not a second read of the file
        "decide_1": decide[1],
        "decide_2": decide[2],
        "wall_1": [r["seconds"] for r in runs[1]],
        "wall_2": [r["seconds"] for r in runs[2]],
        "load_before": [r["load_before"] for r in runs[1] + runs[2]],
        "ratio": statistics.median(decide[1]) / statistics.median(decide[2]),
        "per_round": [a / b for a, b in zip(decide[1], decide[2], strict=True)],
        "identical": len(digests[1] | digests[2]) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--only", default="a,s", help="a: (a)'s batch; s: the 300k-row sample over 200k customers")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-customers", type=int, default=200_000)
    parser.add_argument("--sample-rows", type=int, default=300_000)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    compile_package()
    common = ["--cache", args.cache, "--customers", str(args.customers), "--rows", str(args.rows)]
    bench1, bench2 = Bench(parse_args([*common, "--workers", "1"])), Bench(parse_args([*common, "--workers", "2"]))
    results: dict[str, dict[str, Any]] = {}
    for name in args.only.split(","):
        customers, rows = (args.customers, args.rows) if name == "a" else (args.sample_customers, args.sample_rows)
        dataset = bench1.cache_root / f"{customers}-1"
        dataset.mkdir(parents=True, exist_ok=True)
        requests = bench1.ensure_batch(dataset, customers, rows)
        store = bench1.ensure_store(dataset)
        results[name] = compare(bench1, bench2, dataset, store, requests, args.repeat)
    command = " ".join(["python bench/workers.py", *(argv if argv is not None else sys.argv[1:])])
    write_section(args.out, results, command)
    for name, r in results.items():
        print(name, f"decide ratio {r['ratio']:.2f}", "identical" if r["identical"] else "REPORTS DIFFER")
    return 0


def write_section(out: Path, results: dict[str, dict[str, Any]], command: str) -> None:

    def seconds(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    lines = [
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, command: `{command}`",
        "- target (issue 14): decide at least 1.5× faster with `--workers 2` than with `--workers 1`, same reports",
        "",
        "| batch | rows | decide, --workers 1 (s) | decide, --workers 2 (s) | ratio of medians | per round | "
        "wall 1 (s) | wall 2 (s) | reports identical | load before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rows']:,} | {seconds(r['decide_1'])} | {seconds(r['decide_2'])} | {r['ratio']:.2f}× "
            f"| {seconds(r['per_round'])} | {seconds(r['wall_1'])} | {seconds(r['wall_2'])} | {r['identical']} "
            f"| {', '.join(f'{x:.1f}' for x in r['load_before'])} |"
        )
    replace_section(out, MARK, lines)


if __name__ == "__main__":
    raise SystemExit(main())
