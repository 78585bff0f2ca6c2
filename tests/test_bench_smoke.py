"""The benchmark command must keep working: a tiny run of bench/run.py, every scenario, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCENARIO_ROWS = ("| a |", "| b |", "| c |", "| d |", "| e |", "| eb |", "| p |", "| am |", "| cm |", "| big |")


EXPECTED_EXIT_CODES = {
    "a": [1],
    "b": [1],
    "c": [0],
    "d": [1],
    "e": [0],
    "eb": [0],
    "p": [1],
    "am": [1],
    "cm": [0],
    "big": [1],
}
"""Generated batches hold failing rows on purpose (exit 1); store init and the floor script exit 0."""


def test_bench_command_runs_every_scenario_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--customers",
        "1500",
        "--rows",
        "1500",
        "--small-rows",
        "200",
        "--dense-customers",
        "30",
        "--dense-rows",
        "600",
        "--repeat",
        "1",
        "--big-customers",
        "1200",
        "--big-rows",
        "300",
        "--only",
        "a,b,c,d,e,eb,p,am,cm,big",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--timeout",
        "120",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    for row in SCENARIO_ROWS:
        line = next(line for line in text.splitlines() if line.startswith(row))
        assert "not run" not in line and "did not complete" not in line, line
    assert "nproc" in text and "MemTotal" in text and "## Interpretation" in text
    results = json.loads(out.with_suffix(".json").read_text())["scenarios"]
    assert set(results) == set(EXPECTED_EXIT_CODES)
    exit_codes = {name: sorted({run["exit_code"] for run in r["runs"]}) for name, r in results.items()}
    assert exit_codes == EXPECTED_EXIT_CODES
    assert results["a"]["runs"][0]["stages"], "the stage seconds of summary.json are recorded"
    with_provenance, without = results["a"]["runs"][0], results["p"]["runs"][0]
    assert with_provenance["provenance_rows"] > 1 and without["provenance_rows"] == 1, "(p) records only its marker"
    assert with_provenance["store_growth"] > 0
    assert "(a) / (p) = " in next(line for line in text.splitlines() if line.startswith("| p |"))


def test_ratios_compare_only_scenarios_of_one_session() -> None:
    """A ratio between two scenarios (d/a, a/floor, am/a, cm/c) uses runs of the same session only:
    RESULTS.md merges sessions, and the shared machine's speed drifts between them."""
    sys.path.insert(0, str(REPO / "bench"))
    import run as bench

    def result(name: str, session: str, seconds: float, stages: dict[str, float] | None = None):
        runs = [{"seconds": seconds, "exit_code": 0, "max_rss": 1, "stages": stages or {}}]
        return bench.ScenarioResult(name=name, rows=100, params={}, session=session, runs=runs)

    one = {
        "a": result("a", "s1", 10.0, {"check": 1.0}),
        "am": result("am", "s1", 10.0, {"check": 1.1}),
        "c": result("c", "s1", 40.0),
        "cm": result("cm", "s1", 42.0),
        "d": result("d", "s1", 2.0),
        "e": result("e", "s1", 4.0),
    }
    verdicts = bench.evaluate(one)
    assert verdicts["am"][1] is True and verdicts["cm"][1] is True and verdicts["d"][1] is True
    assert "(a) / floor" in verdicts["e"][0]
    two = {**one, "a": result("a", "s2", 10.0, {"check": 1.0}), "c": result("c", "s2", 40.0)}
    verdicts = bench.evaluate(two)
    assert "am" not in verdicts and "cm" not in verdicts
    assert verdicts["d"][1] is None and verdicts["e"][1] is None and "same session" in verdicts["d"][0]


def test_scale_curve_command_runs_at_tiny_size(tmp_path: Path) -> None:
    out, plot = tmp_path / "RESULTS.md", tmp_path / "scale.png"
    out.write_text("# Benchmark results\n\n## Push (`bench/push.py`)\n\nkept\n")
    cmd = [
        sys.executable,
        str(REPO / "bench" / "scale.py"),
        "--store-customers", "800,2000",
        "--rows", "300",
        "--batch-customers", "2000",
        "--batch-rows", "100,300",
        "--cache", str(tmp_path / "cache"),
        "--out", str(out),
        "--plot", str(plot),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert "## Scale curve (`bench/scale.py`)" in text and "## Push (`bench/push.py`)\n\nkept" in text
    points = json.loads((tmp_path / "scale.json").read_text())["points"]
    assert [(p["series"], p["customers"], p["rows"]) for p in points] == [
        ("store", 800, 300), ("store", 2000, 300), ("batch", 2000, 100), ("batch", 2000, 300),
    ]  # fmt: skip
    assert all(p["exit_codes"] == [1] and p["stages"]["decide"] > 0 for p in points)
    assert points[0]["identifiers"] < points[1]["identifiers"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_workers_command_runs_at_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "workers.py"),
        "--customers", "1500", "--rows", "800",
        "--sample-customers", "1200", "--sample-rows", "600",
        "--repeat", "1",
        "--cache", str(tmp_path / "cache"),
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=170, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| a |", "| s |"))]
    assert len(rows) == 2 and all("| True |" in row for row in rows), rows
