"""Docs that cannot drift: the error-code table in docs/errors.md is the catalog's, the README's command table
shows every command and option of the CLI, the job-key table in docs/jobs.md is the job parser's, docs/demo.md
shows what `make demo` prints now and the README's excerpt is lines of it, docs/how-it-works.md names the
package's rooms and the engine's modules in their order, the docs stand alone (no reference to a document users
do not have) and every relative link points at a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

import readme_demo
from pipeline.catalog import CATALOG, markdown_table
from pipeline.cli import main
from pipeline.job import JOB_KEYS, TABLES
from test_layout import ENGINE_ORDER, FLOORS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
ERRORS_DOC = (DOCS / "errors.md").read_text(encoding="utf-8")
JOBS_DOC = (DOCS / "jobs.md").read_text(encoding="utf-8")
DEMO_DOC = (DOCS / "demo.md").read_text(encoding="utf-8")
HOW_DOC = (DOCS / "how-it-works.md").read_text(encoding="utf-8")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_the_error_table_equals_the_catalog():
    assert markdown_table() in ERRORS_DOC


def test_every_code_has_a_row_in_the_error_table():
    for code, entry in CATALOG.items():
        assert f"| {code} | {entry.name} |" in ERRORS_DOC


def test_readme_starts_with_the_two_commands():
    head = README.split("## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_every_check_code_has_a_case_row():
    import csv

    cases = Path(__file__).resolve().parent / "cases" / "check_codes_expected.csv"
    with open(cases, newline="", encoding="utf-8") as f:
        covered = {int(r["error_code"]) for r in csv.DictReader(f)}
    check_codes = {code for code, e in CATALOG.items() if e.stage == "check" and e.kind == "error"}
    assert check_codes <= covered, sorted(check_codes - covered)


def cli_commands() -> list[tuple[str, list[str]]]:
    """Every leaf command of the CLI as 'store init', with the long option names its --help shows."""
    found: list[tuple[str, list[str]]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                walk(sub, [*path, name])
            return
        options = [
            name
            for param in command.params
            if isinstance(param, click.Option) and not param.hidden
            for name in (*param.opts, *param.secondary_opts)
            if name.startswith("--")
        ]
        found.append((" ".join(path), options))

    walk(main, [])
    return found


def commands_table_row(command: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| `loyalty-bulk {command} ")]
    assert len(rows) == 1, f"the README's Commands table has one row for `loyalty-bulk {command}`"
    return rows[0]


def test_every_command_and_option_of_the_help_is_in_the_readme():
    commands = cli_commands()
    assert {"run", "job", "validate", "store init"} <= {path for path, _ in commands}
    for command, options in commands:
        row = commands_table_row(command)
        missing = [option for option in options if option not in row]
        assert not missing, f"`loyalty-bulk {command}`: options missing from its README row: {missing}"


def test_the_job_key_table_equals_the_job_parser_keys():
    table = JOBS_DOC.split("\n| key | default | command line | meaning |\n", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    parsed = {f"job.{key}" for key in JOB_KEYS} | {f"[{table}]" for table in TABLES if table != "job"}
    assert documented == parsed


@pytest.mark.slow
def test_the_demo_output_in_docs_demo_is_current():
    """`make readme` regenerates the block; run ids, times and seconds may differ, nothing else."""
    assert readme_demo.comparable(readme_demo.demo_block(DEMO_DOC)) == readme_demo.comparable(
        readme_demo.demo_output()
    ), "docs/demo.md's demo output is stale: run `make readme`"


def test_the_readme_demo_excerpt_is_lines_of_the_demo_output():
    """Each excerpt line is a line docs/demo.md shows (itself checked current), in the same order."""
    excerpt = readme_demo.excerpt_block(README)
    assert 10 <= len(excerpt.splitlines()) <= 30, (
        "the README shows a short excerpt; the whole output is in docs/demo.md"
    )
    missing = readme_demo.missing_lines(excerpt, readme_demo.demo_block(DEMO_DOC))
    assert not missing, "README lines the demo does not print (in this order):\n" + "\n".join(missing)


def test_no_doc_refers_to_a_spec():
    """Users have the README and docs/ only: the docs say what they rely on in their own words (the generated
    error table included: its text is the catalog's)."""
    said = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in doc_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"\bspec\b", line, re.I)
    ]
    assert not said, "\n".join(said)


def slug(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's rule: lower case, punctuation dropped, spaces to '-')."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2... as on GitHub."""
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            base = slug(heading.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def links(text: str) -> list[str]:
    """The targets of the Markdown links of a file, code blocks left out."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


def test_every_readme_link_to_docs_points_at_a_file():
    targets = [t.split("#", 1)[0] for t in links(README) if t.startswith("docs/")]
    assert {f"docs/{p.name}" for p in DOCS.glob("*.md")} <= set(targets), "the README links every docs page"
    missing = [t for t in targets if not (ROOT / t).is_file()]
    assert not missing, missing


def test_every_relative_link_of_the_docs_resolves():
    broken = []
    for path in doc_files():
        for target in links(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_how_it_works_draws_the_package_map():
    """docs/how-it-works.md's table names every room of tests/test_layout.py's map, floor by floor, from the
    ground up; its engine section lists the engine's modules in their order."""
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", HOW_DOC, re.M)
    assert [int(floor) for floor, _ in rows] == list(range(len(FLOORS)))
    for (_, room), rooms in zip(rows, FLOORS, strict=True):
        named = {name.rstrip("/") for name in re.findall(r"`([^`]+)`", room)}
        assert named == set(rooms) - {"pipeline"}, room
    engine = HOW_DOC.split("\n## The engine\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^- \*\*(\w+)\*\* \(`engine/\1\.py`\)", engine, re.M) == list(ENGINE_ORDER)
