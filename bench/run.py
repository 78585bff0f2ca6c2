"""The loyalty-bulk benchmark: one command that builds a large synthetic store once and times the CLI on it.

    .venv/bin/python bench/run.py [--customers 10000000] [--rows 1000000] [--repeat 3] [--cache DIR]
                                  [--only a,b,c,d,e] [--memory-limit 2GB] [--threads N] [--workers N]
                                  [--out bench/RESULTS.md]

Scenarios (each run is a subprocess of the installed CLI on a fresh copy of the cached store; the
copy is not timed; wall time and the child's own peak RSS come from os.wait4; the scenarios run
round-robin, one run each per round, so the runs compared with each other share the same minutes):
  a  the sample generator's mixed batch of --rows rows on the --customers store
  b  a --small-rows batch generated for the same store
  c  `store init` from the cached Parquet snapshot
  d  dense: --dense-rows rows over --dense-customers customers (bench/dense.py)
  e  the floor: bare DuckDB doing only the unavoidable work of (a) (bench/floor.py)
  eb the same floor on (b)'s --small-rows batch: what (b) is compared with
  p  (a) again with provenance off (LOYALTY_BULK_BENCH_SKIP_PROVENANCE=1): what provenance costs (a)
  am (a) with `[mobile]` (CN, GB, IN) in the org config, on a store made with `store init --config`
  cm (c) with `--config` of that org: the snapshot's mobiles read with its countries
  big  a --big-customers store (about 100M identifiers) must finish a --big-rows run under the memory limit
The results go to --out (Markdown) and a JSON sidecar beside it, merged with earlier scenarios so
that `--only big` adds to the table instead of replacing it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from pipeline.store.duck import scalar
from pipeline.store.schema import SCHEMA_VERSION

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BIN = Path(sys.executable).parent
CLI = str(BIN / "loyalty-bulk")
SCENARIOS = ("a", "b", "c", "d", "e", "eb", "p", "am", "cm", "big")
DEFAULT_SCENARIOS = "a,b,c,d,e,eb,p,am,cm"
MOBILE_TABLE = '\n[mobile]\ndefault_country = "CN"\nother_countries = ["GB", "IN"]\n'
"""The `[mobile]` of scenarios am and cm: the countries of the sample's mobiles (pipeline.tools.sample)."""
SKIP_PROVENANCE = {"LOYALTY_BULK_BENCH_SKIP_PROVENANCE": "1"}
"""pipeline/provenance.py's measurement switch, for scenario (p) only."""
GIB = 1024**3
INTERPRETATION = "## Interpretation"

TITLES = {
    "a": "mixed batch on the large store",
    "b": "small batch on the same store",
    "c": "`store init` from the Parquet snapshot",
    "d": "dense batch over few customers",
    "e": "floor: bare DuckDB, unavoidable work of (a)",
    "eb": "floor of (b): the same script on (b)'s rows",
    "p": "(a) without provenance (bench switch)",
    "am": "(a) with `[mobile]` CN, GB, IN",
    "cm": "(c) with `--config` and `[mobile]` CN, GB, IN",
    "big": "run on a ~100M-identifier store under a memory limit",
}
TARGETS = {
    "a": "≤ 2.5× floor (e), peak RSS ≤ 2.5 GiB",
    "b": "≤ 2× floor (eb)",
    "c": "≤ 60 s",
    "d": "per-row cost ≤ 2× that of (a)",
    "e": "(reference for (a))",
    "eb": "(reference for (b))",
    "p": "(a) ≤ 1.10× (p): provenance costs < 10 %",
    "am": "check stage ≤ 1.3× (a)'s",
    "cm": "≤ 1.1× (c)",
    "big": "completes (exit 0 or 1), no crash",
}


@dataclass(frozen=True)
class Measurement:
    """One timed child process: wall seconds, its own peak RSS, exit code and output."""

    seconds: float
    max_rss: int
    exit_code: int
    stdout: str
    stderr: str
    load_before: float

    def record(self, success_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """The run's entry in RESULTS.json; a failure keeps the end of stderr (exit 1 of a non-run counts as 4)."""
        run: dict[str, Any] = {
            "seconds": self.seconds,
            "max_rss": self.max_rss,
            "exit_code": self.exit_code,
            "load_before": self.load_before,
        }
        if self.exit_code not in success_codes:
            run["exit_code"] = self.exit_code if self.exit_code != 1 else 4
            run["stderr"] = self.stderr[-4000:]
        return run


def measure(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Measurement:
    """Run cmd and time it; the peak RSS is the child's own (os.wait4), not the cumulative RUSAGE_CHILDREN."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=os.environ | (env or {}))
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measurement(
            seconds=seconds,
            max_rss=usage.ru_maxrss * 1024,
            exit_code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            load_before=load_before,
        )


@dataclass
class ScenarioResult:
    """Every run of one scenario, with what it ran on and the medians RESULTS.md shows."""

    name: str
    rows: int | None
    params: dict[str, Any]
    session: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    mix: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def completed(self) -> bool:
        return bool(self.runs) and all(r["exit_code"] in (0, 1) for r in self.runs)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r["seconds"] for r in self.runs)

    @property
    def peak_rss(self) -> int:
        return max(r["max_rss"] for r in self.runs)

    def stage_medians(self) -> dict[str, float]:
        stages: dict[str, list[float]] = {}
        for run in self.runs:
            for stage, seconds in run.get("stages", {}).items():
                stages.setdefault(stage, []).append(seconds)
        return {stage: statistics.median(values) for stage, values in stages.items()}


class Bench:
    """Builds the cached data once, then runs and times the scenarios."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session = datetime.now(UTC).isoformat(timespec="seconds")
        self.cache_root = Path(args.cache).expanduser()
        self.dataset = self.cache_root / f"{args.customers}-{args.seed}"
        self.build: dict[str, Any] = {}
        self.planned: list[tuple[ScenarioResult, Callable[[int], dict[str, Any]], Callable[[], None] | None]] = []

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def engine_options(self, memory_limit: str | None = None) -> list[str]:
        options: list[str] = []
        limit = memory_limit or self.args.memory_limit
        if limit:
            options += ["--memory-limit", limit]
        if self.args.threads:
            options += ["--threads", str(self.args.threads)]
        if self.args.workers:
            options += ["--workers", str(self.args.workers)]
        return options

    def ensure_batch(self, dataset: Path, customers: int, rows: int) -> Path:
        """The sample's request file of `rows` rows; the first sample made keeps its snapshot for all."""
        batch, marker = dataset / f"batch-{rows}", dataset / f"batch-{rows}.log"
        if not marker.exists():
            shutil.rmtree(batch, ignore_errors=True)
            self.log(f"generating {customers:,} customers / {rows:,} rows with `loyalty-bulk sample` in {batch}")
            m = measure(
                [
                    CLI,
                    "sample",
                    "--out",
                    str(batch),
                    "--customers",
                    str(customers),
                    "--rows",
                    str(rows),
                    "--seed",
                    str(self.args.seed),
                ],
                self.args.timeout,
            )
            if m.exit_code != 0:
                raise SystemExit(f"loyalty-bulk sample failed ({m.exit_code}): {m.stderr}")
            marker.write_text(m.stdout)
            self.build[f"sample {customers}/{rows}"] = {"seconds": round(m.seconds, 1), "max_rss": m.max_rss}
        if (batch / "snapshot").exists():
            if not (dataset / "snapshot").exists():
                os.replace(batch / "snapshot", dataset / "snapshot")
                shutil.copyfile(batch / "org.toml", dataset / "org.toml")
            else:
                shutil.rmtree(batch / "snapshot")
        return batch / "requests.csv"

    def mobile_org(self, dataset: Path) -> Path:
        """The sample's org config with MOBILE_TABLE appended (scenarios am and cm)."""
        org = dataset / "org-mobile.toml"
        org.write_text((dataset / "org.toml").read_text() + MOBILE_TABLE)
        return org

    def ensure_store(self, dataset: Path, config: Path | None = None) -> Path:
        """The store built once from the cached snapshot (the copy source of every run); with a
        config, `store init --config` makes a second one whose mobiles are read with its countries."""
        store = dataset / ("store.duckdb" if config is None else "store-mobile.duckdb")
        if store.exists() and not made_by_current_init(store):
            self.log(f"{store} was made by an older `store init` (schema or ledger tables); rebuilding it")
            store.unlink()
        if not store.exists():
            self.log(f"building {store} with `loyalty-bulk store init`")
            extra = [] if config is None else ["--config", str(config)]
            m = measure(
                [CLI, "store", "init", str(store), "--snapshot", str(dataset / "snapshot"), *extra], self.args.timeout
            )
            if m.exit_code != 0:
                raise SystemExit(f"store init failed ({m.exit_code}): {m.stderr}")
            self.build[f"store init {dataset.name}"] = {"seconds": round(m.seconds, 1), "max_rss": m.max_rss}
        return store

    def fresh_work(self, dataset: Path, store: Path | None) -> Path:
        """An empty work folder, holding a fresh copy of the store when one is given.

        The copy is flushed to disk before the timed run: otherwise the first fsync of the run's
        checkpoint writes back the whole copy (0.5 GB here; 0.6-0.8 s of the 10k run and of its floor).
        """
        work = dataset / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        if store is not None:
            copy = work / "store.duckdb"
            shutil.copyfile(store, copy)
            with copy.open("rb+") as f:
                os.fsync(f.fileno())
        return work

    def schedule(
        self,
        result: ScenarioResult,
        run_once: Callable[[int], dict[str, Any]],
        finish: Callable[[], None] | None = None,
    ) -> ScenarioResult:
        """Plan a scenario's runs; `run_rounds` runs them, `finish` then completes its result."""
        self.planned.append((result, run_once, finish))
        return result

    def run_rounds(self, times: int) -> None:
        """Run the planned scenarios round-robin, one run each per round.

        Runs of different scenarios that are compared with each other ((a) with the floor (e), (d)
        with (a)) then share the same minutes of the machine, which other processes also use.
        """
        planned, self.planned = self.planned, []
        for i in range(times):
            for result, run_once, _ in planned:
                if result.runs and result.runs[-1]["exit_code"] not in (0, 1):
                    continue
                run = run_once(i)
                result.runs.append(run)
                rss = run["max_rss"] / GIB
                self.log(
                    f"  ({result.name}) run {i + 1}/{times}: {run['seconds']:.2f} s, peak RSS {rss:.2f} GiB, "
                    f"exit {run['exit_code']}"
                )
                if run["exit_code"] not in (0, 1):
                    self.log(f"  ({result.name}) failed: {run.get('stderr', '')[-2000:]}")
        for _, _, finish in planned:
            if finish is not None:
                finish()

    def cli_run(
        self,
        dataset: Path,
        store: Path,
        requests: Path,
        memory_limit: str | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        inspect: Callable[[Path], None] | None = None,
    ) -> dict[str, Any]:
        """One `loyalty-bulk run` on a fresh store copy; adds the stage seconds and counts of summary.json,
        and how much the store file grew. `inspect` sees the reports folder before the work is removed."""
        work = self.fresh_work(dataset, store)
        size_before = (work / "store.duckdb").stat().st_size
        reports = work / "reports"
        cmd = [
            CLI,
            "run",
            "--store",
            str(work / "store.duckdb"),
            "--config",
            str(config or dataset / "org.toml"),
            "--reports",
            str(reports),
            *self.engine_options(memory_limit),
            str(requests),
        ]
        m = measure(cmd, self.args.timeout, env)
        run: dict[str, Any] = {
            "seconds": m.seconds,
            "max_rss": m.max_rss,
            "exit_code": m.exit_code,
            "load_before": m.load_before,
            "store_growth": sum(p.stat().st_size for p in work.glob("store.duckdb*") if p.is_file()) - size_before,
        }
        if m.exit_code in (0, 1):
            with quiet(duckdb.connect(str(work / "store.duckdb"), read_only=True)) as con:
                run["provenance_rows"] = scalar(con, "SELECT count(*) FROM provenance")
        summary_path = reports / "summary.json"
        if m.exit_code in (0, 1) and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            run["stages"] = summary["stage_seconds"]
            run["outcomes"] = summary["outcomes"]
            run["errors_by_code"] = {code: e["count"] for code, e in summary["errors_by_code"].items()}
            run["merges"] = summary["merges"]
            run["rows"] = summary["rows"]
        else:
            run["stderr"] = m.stderr[-4000:]
        if inspect is not None:
            inspect(reports)
        shutil.rmtree(work, ignore_errors=True)
        return run

    def batch_scenario(
        self,
        name: str,
        dataset: Path,
        store: Path,
        requests: Path,
        rows: int,
        memory_limit: str | None = None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> ScenarioResult:
        result = ScenarioResult(
            name,
            rows,
            {
                "requests": str(requests),
                "store": str(store),
                "options": self.engine_options(memory_limit),
                **({"environment": " ".join(f"{k}={v}" for k, v in env.items())} if env else {}),
            },
            self.session,
        )
        self.log(f"scenario ({name}): {TITLES[name]}, {rows:,} rows")

        def finish() -> None:
            result.mix = mix_of(requests, result.runs) | result.mix

        return self.schedule(
            result, lambda i: self.cli_run(dataset, store, requests, memory_limit, config, env), finish
        )

    def scenario_c(self, dataset: Path, name: str = "c", config: Path | None = None) -> ScenarioResult:
        result = ScenarioResult(
            name,
            None,
            {"snapshot": str(dataset / "snapshot"), "options": ["(store init has no --memory-limit; default limit)"]},
            self.session,
        )
        if config is not None:
            result.params["config"] = str(config)
        self.log(f"scenario ({name}): store init")
        extra = [] if config is None else ["--config", str(config)]

        def once(_: int) -> dict[str, Any]:
            work = self.fresh_work(dataset, None)
            m = measure(
                [CLI, "store", "init", str(work / "init.duckdb"), "--snapshot", str(dataset / "snapshot"), *extra],
                self.args.timeout,
            )
            shutil.rmtree(work, ignore_errors=True)
            return m.record()

        return self.schedule(result, once)

    def scenario_d(self, dataset: Path, store: Path) -> ScenarioResult:
        from dense import write_dense_requests

        args = self.args
        requests = dataset / f"dense-{args.dense_customers}-{args.dense_rows}.csv"
        kinds_path = requests.with_suffix(".kinds.json")
        if not (requests.exists() and kinds_path.exists()):
            self.log(f"writing the dense batch {requests}")
            kinds = write_dense_requests(
                dataset / "snapshot", requests, args.dense_customers, args.dense_rows, args.seed
            )
            kinds_path.write_text(json.dumps(kinds))
        result = self.batch_scenario("d", dataset, store, requests, args.dense_rows)
        result.params["dense_customers"] = args.dense_customers
        result.mix["generated operations"] = json.loads(kinds_path.read_text())
        return result

    def scenario_e(self, dataset: Path, store: Path, requests: Path, name: str = "e") -> ScenarioResult:
        rows = self.args.rows if name == "e" else self.args.small_rows
        result = ScenarioResult(name, rows, {"requests": str(requests), "store": str(store)}, self.session)
        self.log(f"scenario ({name}): floor, {rows:,} rows")
        limit = self.args.memory_limit or "2GB"

        def once(_: int) -> dict[str, Any]:
            work = self.fresh_work(dataset, store)
            cmd = [
                sys.executable,
                str(BENCH_DIR / "floor.py"),
                "--store",
                str(work / "store.duckdb"),
                "--requests",
                str(requests),
                "--out",
                str(work / "floor.csv"),
                "--memory-limit",
                limit,
            ]
            if self.args.threads:
                cmd += ["--threads", str(self.args.threads)]
            m = measure(cmd, self.args.timeout)
            shutil.rmtree(work, ignore_errors=True)
            return m.record() | {"output": m.stdout.strip()}

        return self.schedule(result, once)

    def scenario_big(self) -> ScenarioResult:
        args = self.args
        dataset = self.cache_root / f"{args.big_customers}-{args.seed}"
        dataset.mkdir(parents=True, exist_ok=True)
        requests = self.ensure_batch(dataset, args.big_customers, args.big_rows)
        store = self.ensure_store(dataset)
        limit = args.memory_limit or "2GB"
        result = self.batch_scenario("big", dataset, store, requests, args.big_rows, memory_limit=limit)
        self.run_rounds(1)
        result.params["customers"] = args.big_customers
        result.params["identifiers"] = store_identifiers(store)
        result.note = f"memory limit {limit}"
        return result

    def run(self, only: list[str]) -> dict[str, ScenarioResult]:
        """Run the scenarios in order; a second bench on the same cache is refused (shared work folder)."""
        self.cache_root.mkdir(parents=True, exist_ok=True)
        with open(self.cache_root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SystemExit(f"another bench is running on {self.cache_root}") from None
            compile_package()
            return self._run(only)

    def _run(self, only: list[str]) -> dict[str, ScenarioResult]:
        args = self.args
        results: dict[str, ScenarioResult] = {}
        main_scenarios = [s for s in only if s != "big"]
        if main_scenarios:
            self.dataset.mkdir(parents=True, exist_ok=True)
            requests = self.ensure_batch(self.dataset, args.customers, args.rows)
            wants_small = "b" in only or "eb" in only
            small = self.ensure_batch(self.dataset, args.customers, args.small_rows) if wants_small else None
            store = self.ensure_store(self.dataset)
            params = {"customers": args.customers, "identifiers": store_identifiers(store)}
            for name in main_scenarios:
                if name == "a":
                    results["a"] = self.batch_scenario("a", self.dataset, store, requests, args.rows)
                elif name == "b" and small is not None:
                    results["b"] = self.batch_scenario("b", self.dataset, store, small, args.small_rows)
                elif name == "c":
                    results["c"] = self.scenario_c(self.dataset)
                elif name == "d":
                    results["d"] = self.scenario_d(self.dataset, store)
                elif name == "e":
                    results["e"] = self.scenario_e(self.dataset, store, requests)
                elif name == "eb" and small is not None:
                    results["eb"] = self.scenario_e(self.dataset, store, small, "eb")
                elif name == "p":
                    results["p"] = self.batch_scenario(
                        "p", self.dataset, store, requests, args.rows, env=SKIP_PROVENANCE
                    )
                elif name == "am":
                    org = self.mobile_org(self.dataset)
                    mobile_store = self.ensure_store(self.dataset, org)
                    results["am"] = self.batch_scenario(
                        "am", self.dataset, mobile_store, requests, args.rows, config=org
                    )
                elif name == "cm":
                    results["cm"] = self.scenario_c(self.dataset, "cm", self.mobile_org(self.dataset))
                results[name].params.update(params)
            self.run_rounds(args.repeat)
        if "big" in only:
            results["big"] = self.scenario_big()
        return results


def replace_section(out: Path, mark: str, lines: list[str]) -> None:
    """Write `lines` as the section headed `mark` of RESULTS.md: in its place, or appended; the other sections
    (from the next "## " heading on) stay as they are. The side benches (push, scale, workers) write this way."""
    text = out.read_text() if out.exists() else "# Benchmark results\n"
    rest = ""
    if mark in text:
        start = text.index(mark)
        following = text.find("\n## ", start + len(mark))
        rest = "" if following < 0 else text[following:]
        text = text[:start].rstrip() + "\n"
    out.write_text(text + "\n".join(["", mark, "", *lines]) + "\n" + rest)


def quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No progress bar: it would garble the bench's log."""
    con.execute("SET enable_progress_bar = false")
    return con


def made_by_current_init(store: Path) -> bool:
    """Whether the current `store init` made this store: its schema version (a run would first migrate an
    older one, on every fresh copy) and the ledger tables (made, and the row groups compacted, by init)."""
    with quiet(duckdb.connect(str(store), read_only=True)) as con:
        version = scalar(con, "SELECT max(value) FROM store_meta WHERE key = 'schema_version'")
        ledger = scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'runs'")
        return version == SCHEMA_VERSION and bool(ledger)


def store_identifiers(store: Path) -> int:
    """How many identifiers the cached store holds (read-only)."""
    con = quiet(duckdb.connect(str(store), read_only=True))
    try:
        return scalar(con, "SELECT count(*) FROM identifiers")
    finally:
        con.close()


REQUEST_MIX_SQL = """
SELECT lower(trim(action)) AS action, id_type = 'cardnumber' AS card, count(*)
FROM read_csv($path, header = true, all_varchar = true) GROUP BY ALL ORDER BY ALL
"""


def mix_of(requests: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The request file's composition, and the outcome shares its first completed run reported."""
    con = quiet(duckdb.connect())
    try:
        composition = {
            f"{action or '(empty)'} {'card' if card else 'identifier'}": n
            for action, card, n in con.execute(REQUEST_MIX_SQL, {"path": str(requests)}).fetchall()
        }
    finally:
        con.close()
    mix: dict[str, Any] = {"request rows by action": composition}
    done = next((r for r in runs if "outcomes" in r), None)
    if done:
        rows = done["rows"] or 1
        mix["outcomes"] = {k: f"{v:,} ({v / rows:.1%})" for k, v in done["outcomes"].items()}
        mix["merges"] = f"{done['merges']:,} ({done['merges'] / rows:.2%})"
        mix["errors by code"] = done["errors_by_code"]
    return mix


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, versions and the git commit of the tree measured."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024**2:.1f} GiB (MemTotal)",
        "cpu": cpu,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "git commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def evaluate(results: dict[str, ScenarioResult]) -> dict[str, tuple[str, bool | None]]:
    """Per scenario: a line saying how it compares with its target, and pass (True), fail (False) or None."""
    verdicts: dict[str, tuple[str, bool | None]] = {}
    a, d, e = results.get("a"), results.get("d"), results.get("e")
    for name, r in results.items():
        if not r.completed:
            verdicts[name] = ("did not complete", False)
    if a and a.completed:
        checks: list[tuple[str, bool | None]] = [
            (f"{a.median_seconds:.1f} s", None),
            (f"RSS {a.peak_rss / GIB:.2f} GiB (≤ 2.5)", a.peak_rss <= 2.5 * GIB),
        ]
        if e and e.completed and e.session == a.session:
            ratio = a.median_seconds / e.median_seconds
            checks.append((f"{ratio:.2f}× floor (≤ 2.5×; per round: {_round_ratios(a, e)})", ratio <= 2.5))
        else:
            checks.append(("floor ratio n/a (no floor from the same session)", None))
        verdicts["a"] = ("; ".join(c for c, _ in checks), _all(ok for _, ok in checks))
    if "b" in results and results["b"].completed:
        b, eb = results["b"], results.get("eb")
        if eb and eb.completed and eb.session == b.session:
            ratio = b.median_seconds / eb.median_seconds
            verdicts["b"] = (
                f"{b.median_seconds:.2f} s = {ratio:.2f}× floor (eb) {eb.median_seconds:.2f} s (≤ 2×;"
                f" per round: {_round_ratios(b, eb)})",
                ratio <= 2,
            )
        else:
            verdicts["b"] = (f"{b.median_seconds:.2f} s; no floor (eb) from the same session", None)
    if "c" in results and results["c"].completed:
        c = results["c"]
        verdicts["c"] = (f"{c.median_seconds:.1f} s (≤ 60)", c.median_seconds <= 60)
    if d and d.completed:
        if a and a.completed and a.session == d.session:
            ratio = per_row(d) / per_row(a)
            assert d.rows and a.rows  # a completed batch scenario knows its row count
            verdicts["d"] = (
                f"{per_row(d) * 1e6:.1f} µs/row = {ratio:.2f}× (a)'s {per_row(a) * 1e6:.1f} µs/row (≤ 2×;"
                f" per round: {_round_ratios(d, a, d.rows / a.rows)})",
                ratio <= 2,
            )
        else:
            verdicts["d"] = (f"{per_row(d) * 1e6:.0f} µs/row; no (a) from the same session", None)
    if e and e.completed:
        verdicts["e"] = (
            f"(a) / floor = {a.median_seconds / e.median_seconds:.2f}× (per round: {_round_ratios(a, e)})"
            if a and a.completed and a.session == e.session
            else "reference only (no (a) from the same session)",
            None,
        )
    if "eb" in results and results["eb"].completed:
        verdicts["eb"] = ("reference for (b)", None)
    p = results.get("p")
    if p and p.completed and a and a.completed and p.session == a.session:
        ratio = a.median_seconds / p.median_seconds
        verdicts["p"] = (
            f"(a) / (p) = {ratio:.3f} (per round: {_round_ratios(a, p)}); store growth median "
            f"{_median_growth(a) / 2**20:.1f} MiB with provenance, {_median_growth(p) / 2**20:.1f} MiB without; "
            f"{_median_rows(a):,} provenance rows",
            ratio <= 1.10,
        )
    elif p and p.completed:
        verdicts["p"] = ("no (a) from the same session", None)
    am, init, cm = results.get("am"), results.get("c"), results.get("cm")
    # the [mobile] bars compare runs of one session (round-robin), never figures of two sessions
    if am and am.completed and a and a.completed and a.session == am.session:
        check, check_mobile = a.stage_medians().get("check", 0.0), am.stage_medians().get("check", 0.0)
        ratio = check_mobile / check if check else float("inf")
        verdicts["am"] = (
            f"check {check_mobile:.2f} s = {ratio:.2f}× (a)'s {check:.2f} s (≤ 1.3×); wall {am.median_seconds:.1f} s",
            ratio <= 1.3,
        )
    if cm and cm.completed and init and init.completed and init.session == cm.session:
        ratio = cm.median_seconds / init.median_seconds
        verdicts["cm"] = (
            f"{cm.median_seconds:.1f} s = {ratio:.2f}× (c)'s {init.median_seconds:.1f} s (≤ 1.1×;"
            f" per round: {_round_ratios(cm, init)})",
            ratio <= 1.1,
        )
    if "big" in results and results["big"].completed:
        big = results["big"]
        verdicts["big"] = (f"completed in {big.median_seconds:.0f} s, RSS {big.peak_rss / GIB:.2f} GiB", True)
    return verdicts


def _round_ratios(x: ScenarioResult, y: ScenarioResult, scale: float = 1.0) -> str:
    """x / y run by run: the scenarios run round-robin, so run i of each shared the same minutes."""
    return ", ".join(f"{xr['seconds'] / scale / yr['seconds']:.2f}" for xr, yr in zip(x.runs, y.runs, strict=True))


def _median_growth(r: ScenarioResult) -> float:
    return statistics.median(run.get("store_growth", 0) for run in r.runs)


def _median_rows(r: ScenarioResult) -> int:
    return int(statistics.median(run.get("provenance_rows", 0) for run in r.runs))


def _all(oks) -> bool:
    return all(ok is not False for ok in oks)


def per_row(r: ScenarioResult) -> float:
    return r.median_seconds / (r.rows or 1)


def render(results: dict[str, ScenarioResult], header: dict[str, Any], interpretation: str) -> str:
    """RESULTS.md: machine and command, the summary table, then a section per scenario."""
    verdicts = evaluate(results)
    lines = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py`; rerun it to refresh everything above the Interpretation section.",
        "",
    ]
    lines += [f"- date: {header['date']}", f"- command: `{header['command']}`"]
    lines += [f"- {k}: {v}" for k, v in header["machine"].items()]
    lines += [
        "",
        "## Summary",
        "",
        "| scenario | what | rows | median s | runs (s) | peak RSS GiB | target | measured | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        r = results.get(name)
        if r is None:
            lines.append(f"| {name} | {TITLES[name]} | | | | | {TARGETS[name]} | not run | |")
            continue
        text, ok = verdicts.get(name, ("", None))
        runs = ", ".join(f"{x['seconds']:.2f}" for x in r.runs)
        median = f"{r.median_seconds:.2f}" if r.runs else ""
        rss = f"{r.peak_rss / GIB:.2f}" if r.runs else ""
        result = "pass" if ok else "FAIL" if ok is False else "–"
        rows = f"{r.rows:,}" if r.rows else ""
        lines.append(
            f"| {name} | {TITLES[name]} | {rows} | {median} | {runs} | {rss} | {TARGETS[name]} | {text} | {result} |"
        )
    if header.get("build"):
        lines += [
            "",
            "One-off builds of this session (not measured scenarios): "
            + "; ".join(f"{k} {v['seconds']} s, RSS {v['max_rss'] / GIB:.2f} GiB" for k, v in header["build"].items())
            + ".",
        ]
    for name in SCENARIOS:
        if name in results:
            lines += ["", *scenario_section(results[name])]
    lines += ["", INTERPRETATION, "", interpretation.strip() or "(to be written after a full run)", ""]
    return "\n".join(lines)


def scenario_section(r: ScenarioResult) -> list[str]:
    lines = [f"## ({r.name}) {TITLES[r.name]}", "", f"- session: {r.session}"]
    lines += [f"- {k}: {(' '.join(v) or '(defaults)') if isinstance(v, list) else v}" for k, v in r.params.items()]
    if r.note:
        lines.append(f"- note: {r.note}")
    loads = [f"{run['load_before']:.1f}" for run in r.runs if "load_before" in run]
    if loads:
        lines.append(
            f"- 1-min load average before each run (other processes share the {os.cpu_count()} cores): "
            f"{', '.join(loads)}"
        )
    if r.rows and r.runs:
        lines.append(f"- per row: {per_row(r) * 1e6:.1f} µs (median wall / rows)")
    stages = r.stage_medians()
    if stages:
        total = sum(stages.values())
        other = r.median_seconds - total
        lines += ["", "| stage | median s | share of wall |", "|---|---|---|"]
        for stage, seconds in stages.items():
            lines.append(f"| {stage} | {seconds:.2f} | {seconds / r.median_seconds:.0%} |")
        lines.append(
            f"| (outside stages: start-up, imports, open, checkpoint) | {other:.2f} | {other / r.median_seconds:.0%} |"
        )
    for key, value in r.mix.items():
        text = (
            ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in value.items())
            if isinstance(value, dict)
            else str(value)
        )
        lines.append(f"- {key}: {text}")
    for i, run in enumerate(r.runs, 1):
        if run.get("stderr"):
            lines.append(f"- run {i} failed (exit {run['exit_code']}): `{run['stderr'].strip().splitlines()[-1]}`")
        elif run.get("output"):
            lines.append(f"- run {i}: {run['output']}")
    return lines


def load_previous(sidecar: Path) -> tuple[dict[str, ScenarioResult], dict[str, Any]]:
    if not sidecar.exists():
        return {}, {}
    data = json.loads(sidecar.read_text())
    return {name: ScenarioResult(**r) for name, r in data.get("scenarios", {}).items()}, data.get("header", {})


def write_results(out: Path, results: dict[str, ScenarioResult], header: dict[str, Any]) -> None:
    """Merge with the scenarios the sidecar JSON already holds, then write it and the Markdown."""
    sidecar = out.with_suffix(".json")
    previous, _ = load_previous(sidecar)
    merged = {name: (results.get(name) or previous[name]) for name in SCENARIOS if name in results or name in previous}
    interpretation = ""
    if out.exists() and INTERPRETATION in out.read_text():
        interpretation = out.read_text().split(INTERPRETATION, 1)[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(
        json.dumps({"header": header, "scenarios": {k: asdict(v) for k, v in merged.items()}}, indent=1) + "\n"
    )
    out.write_text(render(merged, header, interpretation))


def compile_package() -> None:
    """Write the package's bytecode before anything is timed, as a regular install does.

    An editable install leaves the compiling to the first import, and with PYTHONDONTWRITEBYTECODE set
    (as on these machines) every timed run would compile the whole package again (~0.05 s a run).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "pipeline")], check=True, env=env)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark loyalty-bulk on a large synthetic store.")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of scenario (a)'s batch")
    parser.add_argument("--small-rows", type=int, default=10_000, help="rows of scenario (b)'s batch")
    parser.add_argument("--dense-customers", type=int, default=1000)
    parser.add_argument("--dense-rows", type=int, default=100_000)
    parser.add_argument("--big-customers", type=int, default=40_000_000)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cache", default="~/.cache/loyalty-bulk-bench", help="cache root; the data lives in CACHE/<customers>-<seed>/"
    )
    parser.add_argument("--only", default=DEFAULT_SCENARIOS, help=f"comma-separated among {','.join(SCENARIOS)}")
    parser.add_argument("--memory-limit", default=None, help="passed to `run` (big: default 2GB)")
    parser.add_argument("--threads", type=int, default=None, help="passed to `run` and the floor")
    parser.add_argument("--workers", type=int, default=None, help="passed to `run` (replay processes)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a child is killed")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose among {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and write RESULTS.md; exit 1 when a scenario did not complete."""
    args = parse_args(argv)
    only = [s for s in SCENARIOS if s in args.only.split(",")]
    bench = Bench(args)
    results = bench.run(only)
    header = {
        "date": bench.session,
        "machine": machine(),
        "build": bench.build,
        "command": shlex.join([Path(sys.executable).name, "bench/run.py", *(argv or sys.argv[1:])]),
    }
    write_results(args.out, results, header)
    for name, (text, ok) in evaluate(results).items():
        bench.log(f"({name}) {text} -> {'pass' if ok else 'FAIL' if ok is False else '-'}")
    bench.log(f"results written to {args.out}")
    return 0 if all(r.completed for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
