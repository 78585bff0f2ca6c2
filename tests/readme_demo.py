"""The demo output in the docs: docs/demo.md shows all of it, README.md a short excerpt of it.

`make readme` runs this file: it runs the demo once, rewrites the whole block of docs/demo.md and refreshes
the README's excerpt (each excerpt line is replaced by the line of the new output it stands for, so run ids
stay those of docs/demo.md; a line the demo no longer prints stops `make readme` before anything is written).
tests/test_docs.py runs the demo the same way and compares it with docs/demo.md, ignoring what changes from
run to run (run ids, clock times, seconds and rates, the emulator's free port), and checks that every line
of the README's excerpt is a line of that output, in the same order.
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
DEMO_DOC = ROOT / "docs" / "demo.md"
COMMAND = ".venv/bin/python -m pipeline.tools.demo"
"""The line make echoes before the demo's own output (the docs show the make output)."""
DEMO_BLOCK = re.compile(r"(## What `make demo` prints\n.*?```text\n)(.*?)(```\n)", re.S)
"""docs/demo.md's block: the whole output."""
EXCERPT_BLOCK = re.compile(r"(## What `make demo` shows\n.*?```text\n)(.*?)(```\n)", re.S)
"""README.md's block: some lines of the output, in its order."""

_VOLATILE = (
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<run id>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?"), "<time>"),
    (re.compile(r"\b\d+\.\d+(?= s\b|,|\)| \(total| requests/min)"), "<s>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    # a stalled call holds its customer on the emulator for a while: how often a retry meets it busy,
    # how many requests the push sent, and whether an applied call is settled by a read (confirmed) or
    # by a retry's "already present" (already_applied) depend on timing, in the counts and in the summary's
    # lines in words (the "already in place" line is there only when one was); drift, blocked and failed do not
    (re.compile(r"^  retries: .*$", re.M), "  retries: <timing>"),
    (re.compile(r"confirmed \d+, already_applied \d+"), "confirmed <n>, already_applied <n>"),
    (re.compile(r"^  \d+ changes? reached the platform as expected$", re.M), "  <n> reached the platform as expected"),
    (re.compile(r"^  \d+ (?:was|were) already in place \(an earlier attempt had reached the platform\)\n", re.M), ""),
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


def _block(pattern: re.Pattern[str], text: str, where: str, heading: str) -> str:
    found = pattern.search(text)
    if found is None:
        raise ValueError(f"{where} has no ```text block under '{heading}'")
    return found.group(2)


def demo_block(text: str) -> str:
    """The whole demo output docs/demo.md shows."""
    return _block(DEMO_BLOCK, text, "docs/demo.md", "## What `make demo` prints")


def excerpt_block(text: str) -> str:
    """The excerpt of the demo output README.md shows."""
    return _block(EXCERPT_BLOCK, text, "README.md", "## What `make demo` shows")


def comparable(output: str) -> str:
    """Output with what differs from run to run (run ids, times, seconds) replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        output = pattern.sub(placeholder, output)
    return output


def _matched(excerpt: str, output: str) -> tuple[list[str | None], list[str]]:
    """For each excerpt line, the output line it stands for (None when none is left), taken in order."""
    lines = output.splitlines()
    keys = [comparable(line) for line in lines]
    found: list[str | None] = []
    missing: list[str] = []
    at = 0
    for line in excerpt.splitlines():
        key = comparable(line)
        index = next((i for i in range(at, len(lines)) if keys[i] == key), None)
        if index is None:
            found.append(None)
            missing.append(line)
        else:
            found.append(lines[index])
            at = index + 1
    return found, missing


def missing_lines(excerpt: str, output: str) -> list[str]:
    """The excerpt's lines that are not lines of the output in the excerpt's order (run ids, times aside)."""
    return _matched(excerpt, output)[1]


def refreshed_excerpt(excerpt: str, output: str) -> str:
    """The excerpt with each line replaced by the output line it stands for (new run ids, times, seconds)."""
    found, missing = _matched(excerpt, output)
    if missing:
        raise ValueError(
            "README.md's demo excerpt has lines the demo no longer prints; edit the excerpt:\n" + "\n".join(missing)
        )
    return "".join(f"{line}\n" for line in found)


def update_docs() -> None:
    """Rewrite docs/demo.md's output block and refresh README.md's excerpt from one real demo run."""
    doc, readme = DEMO_DOC.read_text(encoding="utf-8"), README.read_text(encoding="utf-8")
    demo_block(doc)  # both blocks must exist before anything runs
    excerpt = excerpt_block(readme)
    output = demo_output()
    fresh = refreshed_excerpt(excerpt, output)  # refuses before anything is written
    DEMO_DOC.write_text(DEMO_BLOCK.sub(lambda m: m.group(1) + output + m.group(3), doc, count=1), encoding="utf-8")
    README.write_text(EXCERPT_BLOCK.sub(lambda m: m.group(1) + fresh + m.group(3), readme, count=1), encoding="utf-8")


if __name__ == "__main__":
    update_docs()
    print(f"updated the demo output in {DEMO_DOC} and its excerpt in {README}")
