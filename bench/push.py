"""Benchmark of `push` against `emulate` over loopback (not in the test suite).

Generates an org and a batch with `loyalty-bulk sample`, runs it, then pushes its calls.ndjson (about
20k calls) to an emulator on a copy of the pre-run store with `--latency 20`, at `--rate 6000` and once
at `--rate 60000`. Reports the achieved rate (push-summary.json), the CPU seconds of each process per
call (rusage of the children), the critical path, and whether the emulated platform ended equal to the
store. Results go to bench/RESULTS.md under "Push". Everything binds and targets 127.0.0.1; every
push is bounded by a timeout.

    .venv/bin/python bench/push.py [--rows 25000] [--customers 40000] [--rates 6000,60000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import replace_section

BENCH = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).parent / "loyalty-bulk")
CREDS = {"LOYALTY_BULK_API_USER": "bench", "LOYALTY_BULK_API_PASSWORD": "bench-only"}
MARK = "## Push (`bench/push.py`)"


def sh(*args: str, timeout: float = 900) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout).stdout


def cpu_of(process: subprocess.Popen, timeout: float) -> tuple[int, float, float]:
    """Wait (bounded) for a child; its exit code, wall seconds since start is the caller's, and CPU seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"a child did not finish within {timeout} s")


def push_once(work: Path, config: Path, pre: Path, ran: Path, reports: Path, rate: int, latency: int) -> dict:
    folder = work / f"push-{rate}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(reports, folder, ignore=shutil.ignore_patterns("push*"))
    store = work / f"platform-{rate}.duckdb"
    shutil.copyfile(pre, store)
    env = {**os.environ, **CREDS}
    emulator = subprocess.Popen(
        [CLI, "emulate", "--store", str(store), "--config", str(config), "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    url = (emulator.stdout.readline().strip() if emulator.stdout else "").removeprefix("listening on ")
    started = time.monotonic()
    pusher = subprocess.Popen(
        [CLI, "push", str(folder), "--config", str(config), "--api", url, "--rate", str(rate), "--quiet"],
        env=env,
    )  # fmt: skip
    code, push_cpu, push_rss = cpu_of(pusher, 1800)
    wall = time.monotonic() - started
    emulator.send_signal(signal.SIGTERM)
    _, emulator_cpu, emulator_rss = cpu_of(emulator, 120)
    summary = json.loads((folder / "push-summary.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        sh(CLI, "store", "export", str(store), f"{tmp}/p", "--format", "csv")
        sh(CLI, "store", "export", str(ran), f"{tmp}/r", "--format", "csv")
        equal = all(
            Path(f"{tmp}/p/{n}").read_bytes() == Path(f"{tmp}/r/{n}").read_bytes() for n in os.listdir(f"{tmp}/r")
        )
    calls = summary["calls"]
    return {
        "rate": rate,
        "latency_ms": latency,
        "exit_code": code,
        "calls": calls,
        "requests": summary["requests"],
        "outcomes": summary["outcomes"],
        "achieved_rate": summary["achieved_rate_per_minute"],
        "achieved_share": summary["achieved_rate_per_minute"] / rate,
        "elapsed_seconds": summary["elapsed_seconds"],
        "wall_seconds": round(wall, 1),
        "push_cpu_ms_per_call": round(push_cpu / calls * 1000, 3),
        "emulator_cpu_ms_per_call": round(emulator_cpu / calls * 1000, 3),
        "push_rss_mib": round(push_rss),
        "emulator_rss_mib": round(emulator_rss),
        "critical_path": summary["critical_path_length"],
        "platform_equals_store": equal,
        "load_before": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--rates", default="6000,60000")
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "loyalty-bulk-push-bench")
    args = parser.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sh(CLI, "sample", "--out", str(work / "data"), "--customers", str(args.customers), "--rows", str(args.rows),
       "--seed", "3")  # fmt: skip
    config = work / "data" / "org.toml"
    pre, ran = work / "pre.duckdb", work / "ran.duckdb"
    sh(CLI, "store", "init", str(pre), "--snapshot", str(work / "data" / "snapshot"))
    shutil.copyfile(pre, ran)
    reports = work / "reports"
    subprocess.run([CLI, "run", "--store", str(ran), "--config", str(config), "--reports", str(reports),
                    str(work / "data" / "requests.csv")], capture_output=True, timeout=900)  # fmt: skip
    results = [push_once(work, config, pre, ran, reports, int(r), args.latency) for r in args.rates.split(",")]
    for r in results:
        print(json.dumps(r))
    write_results(results, " ".join(sys.argv[1:]))


def write_results(results: list[dict[str, Any]], argv: str) -> None:
    path = BENCH / "RESULTS.md"
    lines = [
        f"- date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, nproc {os.cpu_count()}, python {platform.python_version()}",
        f"- command: `python bench/push.py {argv}`".replace(" `", " `").rstrip(),
        "- the push and the emulator share this 2-core machine with each other and with other developers' work",
        "",
        "| --rate | latency ms | calls | requests | achieved /min | of --rate | push CPU ms/call | emulator CPU "
        "ms/call | push RSS MiB | critical path | outcomes | platform = store | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items() if v)
        lines.append(
            f"| {r['rate']} | {r['latency_ms']} | {r['calls']} | {r['requests']} | {r['achieved_rate']:.0f} | "
            f"{r['achieved_share']:.1%} | {r['push_cpu_ms_per_call']} | {r['emulator_cpu_ms_per_call']} | "
            f"{r['push_rss_mib']} | {r['critical_path']} | {outcomes} | {r['platform_equals_store']} | "
            f"{r['load_before']:.1f} |"
        )
    replace_section(path, MARK, lines)


if __name__ == "__main__":
    main()
