"""The benchmark command must keep working: a tiny run of bench/run.py, every scenario, no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIO_ROWS = ("| a |", "| b |", "| c |", "| d |", "| e |", "| p |", "| am |", "| cm |", "| big |")


EXPECTED_EXIT_CODES = {
    "a": [1],
    "b": [1],
    "c": [0],
    "d": [1],
    "e": [0],
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
        "a,b,c,d,e,p,am,cm,big",
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
