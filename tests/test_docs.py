"""Docs that cannot drift: the README's error-code table is the catalog's, its command table shows
every command and option of the CLI, its job-key table is the job parser's, and its demo output is
what `make demo` prints now."""

from __future__ import annotations

import re
from pathlib import Path

import click

import readme_demo
from pipeline.catalog import CATALOG, markdown_table
from pipeline.cli import main
from pipeline.job import JOB_KEYS, TABLES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_error_table_equals_the_catalog():
    assert markdown_table() in README


def test_every_code_has_a_readme_row():
    for code, entry in CATALOG.items():
        assert f"| {code} | {entry.name} |" in README


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
    assert len(rows) == 1, f"the Commands table has one row for `loyalty-bulk {command}`"
    return rows[0]


def test_every_command_and_option_of_the_help_is_in_the_readme():
    commands = cli_commands()
    assert {"run", "job", "validate", "store init"} <= {path for path, _ in commands}
    for command, options in commands:
        row = commands_table_row(command)
        missing = [option for option in options if option not in row]
        assert not missing, f"`loyalty-bulk {command}`: options missing from its README row: {missing}"


def test_the_job_key_table_equals_the_job_parser_keys():
    table = README.split("\n| key | default | command line | meaning |\n", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    parsed = {f"job.{key}" for key in JOB_KEYS} | {f"[{table}]" for table in TABLES if table != "job"}
    assert documented == parsed


def test_the_demo_output_in_the_readme_is_current():
    """`make readme` regenerates the block; run ids, times and seconds may differ, nothing else."""
    assert readme_demo.comparable(readme_demo.readme_block(README)) == readme_demo.comparable(
        readme_demo.demo_output()
    ), "README's demo output is stale: run `make readme`"
