"""The README's "What `make demo` prints" block: made by a real demo run, and checked against one.

`make readme` runs this file to rewrite the block; tests/test_docs.py runs the demo the same way
and compares, ignoring what changes from run to run (run ids, clock times, seconds and rates, the
emulator's free port).
The demo runs in a scratch folder holding copies of sample_data/ and jobs/, so neither a test nor
`make readme` touches the repository's own reports/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND = ".venv/bin/python -m pipeline.tools.demo"
"""The line make echoes before the demo's own output (the README shows the make output)."""
BLOCK = re.compile(r"(## What `make demo` prints\n.*?```text\n)(.*?)(```\n)", re.S)

_VOLATILE = (
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<run id>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?"), "<time>"),
    (re.compile(r"\b\d+\.\d+(?= s\b|,|\)| \(total| requests/min)"), "<s>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    # a stalled call holds its customer on the emulator for a while: how often a retry meets it busy,
    # how many requests the push sent, and whether an applied call is settled by a read (confirmed) or
    # by a retry's "already present" (already_applied) depend on timing; drift, blocked and failed do not
    (re.compile(r"^  retries: .*$", re.M), "  retries: <timing>"),
    (re.compile(r"confirmed \d+, already_applied \d+"), "confirmed <n>, already_applied <n>"),
    (re.compile(r"\(\d+ requests in"), "(<n> requests in"),
)


def demo_output() -> str:
    """What `make demo` prints, from a real run of the demo in a scratch copy of the sample data."""
    with tempfile.TemporaryDirectory(prefix="readme-demo-") as scratch:
        for folder in ("sample_data", "jobs"):
            shutil.copytree(ROOT / folder, Path(scratch) / folder)
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.tools.demo"], cwd=scratch, capture_output=True, text=True, timeout=300
        )
    if done.returncode != 0:
        raise RuntimeError(f"the demo failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return f"{COMMAND}\n{done.stdout}"


def readme_block(text: str) -> str:
    """The demo output the README shows."""
    found = BLOCK.search(text)
    if found is None:
        raise ValueError("README.md has no ```text block under 'What `make demo` prints'")
    return found.group(2)


def comparable(output: str) -> str:
    """Output with what differs from run to run (run ids, times, seconds) replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        output = pattern.sub(placeholder, output)
    return output


def update_readme() -> None:
    text = README.read_text(encoding="utf-8")
    readme_block(text)  # refuses a README without the block before running anything
    output = demo_output()
    README.write_text(BLOCK.sub(lambda m: m.group(1) + output + m.group(3), text, count=1), encoding="utf-8")


if __name__ == "__main__":
    update_readme()
    print(f"updated the demo output in {README}")
