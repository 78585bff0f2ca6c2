"""Scale curve (not in the test suite): how a run's cost grows with the store and with the batch.

Two series, each point a `loyalty-bulk run` on a fresh copy of a cached store (bench/run.py's cache and
builders, so the 10M-customer store and its 1M-row batch are shared with scenario (a)):
  store   the --rows batch against stores of --store-customers customers (the sample generator gives about
          2.5 identifiers a customer: 4M, 10M, 20M, 40M customers are about 10M, 25M, 50M, 100M identifiers)
  batch   batches of --batch-rows rows against the --batch-customers store
The runs are round-robin over the points (one run of each point per round, --repeat rounds), so a series'
points share the same minutes of this shared machine. Writes the "Scale curve" section of bench/RESULTS.md,
bench/scale.json and the plot bench/scale.png (seconds per stage, both series).

    .venv/bin/python bench/scale.py [--store-customers 4000000,10000000,20000000,40000000]
        [--rows 1000000] [--batch-customers 10000000] [--batch-rows 10000,100000,1000000] [--repeat 1]
        [--cache DIR] [--build-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from run import BENCH_DIR, GIB, Bench, compile_package, machine, parse_args, replace_section, store_identifiers

MARK = "## Scale curve (`bench/scale.py`)"
STAGES = ("read", "check", "resolve", "decide", "apply")
"""The stages of summary.json; what the wall time holds beyond them (start-up, COMMIT, reports) is "other"."""


def points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The planned runs: series, customers of the store, rows of the batch."""
    planned = [{"series": "store", "customers": int(c), "rows": args.rows} for c in args.store_customers.split(",")]
    planned += [
        {"series": "batch", "customers": args.batch_customers, "rows": int(r)} for r in args.batch_rows.split(",")
    ]
    return planned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-customers", default="4000000,10000000,20000000,40000000")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-customers", type=int, default=10_000_000)
    parser.add_argument("--batch-rows", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--build-only", action="store_true", help="build the samples and stores, time nothing")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--plot", type=Path, default=BENCH_DIR / "scale.png")
    args = parser.parse_args(argv)
    compile_package()
    bench = Bench(
        parse_args(["--cache", args.cache, "--seed", str(args.seed), "--timeout", str(args.timeout), "--repeat", "1"])
    )
    planned = points(args)
    for point in planned:
        dataset = bench.cache_root / f"{point['customers']}-{args.seed}"
        dataset.mkdir(parents=True, exist_ok=True)
        point["requests"] = bench.ensure_batch(dataset, point["customers"], point["rows"])
        point["store"] = bench.ensure_store(dataset)
        point["dataset"] = dataset
        point["identifiers"] = store_identifiers(point["store"])
        point["runs"] = []
    if args.build_only:
        return 0
    for round_ in range(args.repeat):
        for point in planned:
            where = f"{point['rows']:,} rows on {point['identifiers']:,} identifiers"
            bench.log(f"round {round_ + 1}/{args.repeat}: {where}")
            point["runs"].append(bench.cli_run(point["dataset"], point["store"], point["requests"]))
    results = [summarise(p) for p in planned]
    header = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python bench/scale.py", *(argv if argv is not None else sys.argv[1:])]),
        **machine(),
    }
    args.out.with_name("scale.json").write_text(json.dumps({"header": header, "points": results}, indent=1) + "\n")
    plot(results, args.plot)
    write_section(args.out, results, header, args.plot)
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "runs"}))
    return 0


def summarise(point: dict[str, Any]) -> dict[str, Any]:
    runs = point["runs"]
    stages: dict[str, float] = {}
    for stage in STAGES:
        values = [r["stages"][stage] for r in runs if stage in r.get("stages", {})]
        if values:
            stages[stage] = round(statistics.median(values), 3)
    return {
        "series": point["series"],
        "customers": point["customers"],
        "identifiers": point["identifiers"],
        "rows": point["rows"],
        "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "peak_rss_gib": round(max(r["max_rss"] for r in runs) / GIB, 2),
        "exit_codes": sorted({r["exit_code"] for r in runs}),
        "load_before": [round(r["load_before"], 1) for r in runs],
        "stages": stages,
        "runs": [round(r["seconds"], 2) for r in runs],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Seconds per stage (stacked) and the wall time: against identifiers, and against batch rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, series, key in ((axes[0], "store", "identifiers"), (axes[1], "batch", "rows")):
        chosen = sorted((r for r in results if r["series"] == series), key=lambda r: r[key])
        if not chosen:
            continue
        label = (
            f"identifiers in the store ({chosen[0]['rows']:,}-row batch)"
            if series == "store"
            else f"rows in the batch (store of {chosen[0]['identifiers']:,} identifiers)"
        )
        xs = [r[key] for r in chosen]
        bottom = [0.0] * len(chosen)
        for stage in STAGES:
            values = [r["stages"].get(stage, 0.0) for r in chosen]
            ax.fill_between(xs, bottom, [b + v for b, v in zip(bottom, values, strict=True)], alpha=0.5, label=stage)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.fill_between(xs, bottom, [r["median_seconds"] for r in chosen], alpha=0.25, color="grey", label="other")
        ax.plot(xs, [r["median_seconds"] for r in chosen], "k.-", label="wall (all of the run)")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle("loyalty-bulk run: where the time goes as the store and the batch grow (bench/scale.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_section(out: Path, results: list[dict[str, Any]], header: dict[str, Any], plot_path: Path) -> None:
    """Replace the Scale curve section of RESULTS.md (or append it), leaving every other section alone."""
    lines = [
        f"- date: {header['date']}, command: `{header['command']}`",
        f"- nproc {os.cpu_count()}; the points of a series run round-robin, one run each per round",
        f"- plot: [{plot_path.name}]({plot_path.name})",
        "",
        "| series | customers | identifiers | rows | median s | µs/row | "
        + " | ".join(STAGES)
        + " | other | peak RSS GiB | runs (s) | load before |",
        "|---|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|",
    ]
    for r in results:
        stage_cells = " | ".join(f"{r['stages'].get(s, 0.0):.2f}" for s in STAGES)
        stage_cells += f" | {r['median_seconds'] - sum(r['stages'].values()):.2f}"
        lines.append(
            f"| {r['series']} | {r['customers']:,} | {r['identifiers']:,} | {r['rows']:,} | {r['median_seconds']:.2f}"
            f" | {r['median_seconds'] / r['rows'] * 1e6:.1f} | {stage_cells} | {r['peak_rss_gib']:.2f}"
            f" | {', '.join(f'{s:.1f}' for s in r['runs'])} | {', '.join(str(x) for x in r['load_before'])} |"
        )
    replace_section(out, MARK, lines)


if __name__ == "__main__":
    raise SystemExit(main())
