"""What blocked-value patterns cost the check stage on the bench's 1M-row batch (in process, no store).

    .venv/bin/python bench/patterns.py [--cache DIR] [--repeat 3] [CONFIG...]

Needs the data `bench/run.py` caches: --cache is its dataset folder (default
~/.cache/loyalty-bulk-bench/10000000-1, holding org.toml and batch-1000000/requests.csv). For each
blocked-values config below, times `check_requests` on the whole batch, and the blocked rule alone
on the prepared fields, as medians of --repeat runs after a warm-up (wall and CPU seconds; the CPU
time of all threads is steadier than wall time on a shared machine). Run it with PYTHONPATH set to
another checkout to time that engine instead.

Configs (patterns as in the org TOML; which engine runs each is printed):
  none      no blocked values
  default   the sample's: mobile ^0+$, email ^noreply@.*
  mixed     five patterns polars runs (anchors, classes, \\w) and two that run on Python's re
            (a back-reference, an inline (?i) flag)
  fallback  three patterns only Python's re can run (a back-reference, look-aheads)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import load_config
from pipeline.engine import check
from pipeline.engine.check import build_rules, check_requests, prepare_fields
from pipeline.input.read import read_requests

CONFIGS = {
    "none": "",
    "default": """
[blocked_values.mobile]
exact = ["1234567890"]
patterns = ['^0+$']
[blocked_values.email]
exact = ["test@test.com"]
patterns = ['^noreply@.*']
""",
    "mixed": r"""
[blocked_values.mobile]
exact = ["1234567890"]
patterns = ['^0+$', '^(\d)\1{7,}$']
[blocked_values.email]
exact = ["test@test.com"]
patterns = ['^noreply@.*', '^test[0-9]*@.*$', '^[\w.]+@example\.com$']
[blocked_values.externalId]
exact = ["N/A"]
patterns = ['\w+-0+', '(?i)^n/?a$']
""",
    "fallback": r"""
[blocked_values.mobile]
exact = []
patterns = ['^(\d)\1{7,}$']
[blocked_values.email]
exact = []
patterns = ['(?!.*@example\.com$).*test.*']
[blocked_values.externalId]
exact = []
patterns = ['(?=EXT)\w+-0+']
""",
}


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def engines(blocked: str) -> str:
    """Which engine runs each pattern of a config (only with the engine of issue 10 and later)."""
    if not hasattr(check, "full_match_expr"):
        return "(an engine before issue 10: polars whenever it accepts a pattern)"
    from pipeline.values.patterns import rust_fullmatch

    parsed = tomllib.loads(blocked).get("blocked_values", {})
    return ", ".join(
        f"{t} {p!r}: {'polars' if rust_fullmatch(p) else 're'}" for t, b in parsed.items() for p in b["patterns"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench/10000000-1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("configs", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    data = Path(args.cache).expanduser()
    base = (data / "org.toml").read_text().split("[blocked_values.")[0]
    frame = read_requests([data / "batch-1000000" / "requests.csv"]).frame
    fields = prepare_fields(frame)
    warnings.simplefilter("ignore")  # '[[' and '&&' FutureWarnings of re
    print(f"{frame.height:,} rows; engine {sys.modules['pipeline'].__file__}", flush=True)
    for name in args.configs:
        path = data / f"bench-patterns-{name}.toml"
        path.write_text(base + CONFIGS[name])
        config = load_config(path)
        rule = next(r for r in build_rules(config) if r.key == "id_value.blocked")
        check_requests(frame, config)  # warm-up: compiled patterns, category tables
        stage, alone = [], []
        for _ in range(args.repeat):
            wall, cpu, result = timed(lambda: check_requests(frame, config))  # noqa: B023
            stage.append((wall, cpu))
            wall, cpu, _ = timed(lambda: fields.select(rule.ok.fill_null(False)))  # noqa: B023
            alone.append((wall, cpu))
        blocked = result.errors.filter(pl.col("error_code") == 7005).height
        print(
            f"{name:9s} check stage {statistics.median(w for w, _ in stage):.2f} s wall,"
            f" {statistics.median(c for _, c in stage):.2f} s CPU; blocked rule alone"
            f" {statistics.median(w for w, _ in alone):.2f} s wall, {statistics.median(c for _, c in alone):.2f} s CPU;"
            f" {blocked:,} rows 7005",
            flush=True,
        )
        if CONFIGS[name]:
            print(f"          {engines(CONFIGS[name])}", flush=True)
        path.unlink()


if __name__ == "__main__":
    main()
