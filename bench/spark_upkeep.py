"""Twenty runs on one Delta store (not in the test suite): does a store made by `store init --engine spark` keep
working, how does it grow, and does it stay equal to the DuckDB store given the same runs?

Writes a sample org (`loyalty-bulk sample`, --customers customers, --rows request rows, seed 1) once in --work,
splits its request file into --runs files of equal rows, makes a Delta store and a DuckDB store from its
snapshot, then applies the files one run each, in order, on both engines (each run a CLI subprocess against a
local Sail server the bench starts), noting each run's seconds and the Delta store's files and bytes. At the end
it compares `store export` of both stores byte for byte, audits the Delta store, compacts it (`store compact
--retain-hours 0`) and compares the exports again. Results go to
bench/RESULTS.md under "Spark engine, upkeep".

    .venv/bin/python bench/spark_upkeep.py [--work DIR] [--customers 200000] [--rows 200000] [--runs 20]
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from run import CLI, measure, replace_section
from spark import folder_size, start_server

BENCH = Path(__file__).resolve().parent
MARK = "## Spark engine, upkeep (`bench/spark_upkeep.py`)"


def split(requests: Path, parts: int, out: Path) -> list[Path]:
    lines = requests.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    size = -(-len(rows) // parts)
    out.mkdir(exist_ok=True)
    files = []
    for index in range(parts):
        path = out / f"part-{index + 1:02d}.csv"
        path.write_text(header + "".join(rows[index * size : (index + 1) * size]), encoding="utf-8")
        files.append(path)
    return files


def equal_exports(work: Path, delta: Path, duck: Path, env: dict[str, str]) -> bool:
    """`store export` of both stores as CSV, compared byte for byte."""
    exports = {}
    for name, store, engine in (("duckdb", duck, []), ("spark", delta, ["--engine", "spark"])):
        out = work / f"export-{name}"
        shutil.rmtree(out, ignore_errors=True)
        m = measure([CLI, "store", "export", str(store), str(out), "--format", "csv", *engine], 3600, env)
        exports[name] = out
        if m.exit_code != 0:
            raise SystemExit(f"export of {name} failed: {m.stderr[-2000:]}")
    return all(filecmp.cmp(exports["duckdb"] / f.name, f, shallow=False) for f in sorted(exports["spark"].iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/loyalty-bulk-upkeep"))
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    sample = args.work / f"sample-{args.customers}-{args.rows}"
    if not (sample / "requests.csv").exists():
        made = measure(
            [CLI, "sample", "--out", str(sample), "--customers", str(args.customers), "--rows", str(args.rows)], 3600
        )
        if made.exit_code != 0:
            raise SystemExit(f"loyalty-bulk sample failed: {made.stderr[-2000:]}")
    parts = split(sample / "requests.csv", args.runs, args.work / "parts")
    delta, duck = args.work / "delta", args.work / "store.duckdb"
    shutil.rmtree(delta, ignore_errors=True)
    duck.unlink(missing_ok=True)
    config = sample / "org.toml"
    server, remote = start_server()
    env = {"SPARK_REMOTE": remote}
    runs: list[dict[str, Any]] = []
    try:
        for store, engine in ((delta, ["--engine", "spark"]), (duck, [])):
            made = measure(
                [CLI, "store", "init", str(store), "--snapshot", str(sample / "snapshot"), *engine], 3600, env
            )
            if made.exit_code != 0:
                raise SystemExit(f"store init failed: {made.stderr[-2000:]}")
        files0, bytes0 = folder_size(delta)
        for index, part in enumerate(parts, 1):
            record: dict[str, Any] = {"run": index}
            for name, store, engine in (("duckdb", duck, []), ("spark", delta, ["--engine", "spark"])):
                reports = args.work / "reports" / f"{name}-{index:02d}"
                cmd = [CLI, "run", "--store", str(store), "--config", str(config), "--reports", str(reports), *engine]
                m = measure([*cmd, str(part)], 3600, env)
                record[name] = m.seconds
                record[f"{name}_exit"] = m.exit_code
                if m.exit_code not in (0, 1):
                    raise SystemExit(f"run {index} on {name} failed: {m.stderr[-3000:]}")
            record["files"], record["bytes"] = folder_size(delta)
            runs.append(record)
            print(
                f"run {index}: duckdb {record['duckdb']:.1f} s, spark {record['spark']:.1f} s, Delta store "
                f"{record['files']} files, {record['bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
        same = equal_exports(args.work, delta, duck, env)
        audit = measure([CLI, "store", "audit", str(delta), "--engine", "spark"], 3600, env)
        compact = measure([CLI, "store", "compact", str(delta), "--engine", "spark", "--retain-hours", "0"], 3600, env)
        if compact.exit_code != 0:
            raise SystemExit(f"store compact failed: {compact.stderr[-2000:]}")
        compacted = folder_size(delta)
        same_compacted = equal_exports(args.work, delta, duck, env)
    finally:
        server.terminate()
        server.wait(timeout=60)
    growth = [(b["bytes"] - a["bytes"]) / 2**20 for a, b in itertools.pairwise(runs)]
    spark_s, duck_s = (statistics.median(r[name] for r in runs) for name in ("spark", "duckdb"))
    lines = [
        f"- command: `python bench/spark_upkeep.py --customers {args.customers} --rows {args.rows} --runs {args.runs}` "
        "(local Sail on the same 2 cores; each run a CLI subprocess)",
        f"- {args.runs} runs of {args.rows // args.runs:,} rows each on a {args.customers:,}-customer store: "
        f"median run seconds duckdb {duck_s:.1f}, spark {spark_s:.1f}; spark's first run {runs[0]['spark']:.1f} s, "
        f"its last {runs[-1]['spark']:.1f} s",
        f"- the Delta store: {files0} files, {bytes0 / 2**20:.0f} MiB after init; {runs[-1]['files']} files, "
        f"{runs[-1]['bytes'] / 2**20:.0f} MiB after {args.runs} runs "
        f"(median growth {statistics.median(growth):.1f} MiB a run: nothing is vacuumed between runs)",
        f"- after the {args.runs} runs, `store export` of both stores byte for byte equal: {'yes' if same else 'NO'}; "
        f"`store audit --engine spark`: exit {audit.exit_code}",
        f"- `store compact --engine spark --retain-hours 0` then: {compact.seconds:.1f} s, the Delta store "
        f"{compacted[0]} files (log entries included), {compacted[1] / 2**20:.0f} MiB; its export still equal to "
        f"the DuckDB store's: {'yes' if same_compacted else 'NO'}",
        f"- run {started}–{time.strftime('%H:%M')}",
    ]
    print("\n".join(lines))
    replace_section(args.out, MARK, lines)


if __name__ == "__main__":
    main()
