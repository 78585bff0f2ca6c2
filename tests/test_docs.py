"""Docs that cannot drift: the README's error-code table is the catalog's."""

from __future__ import annotations

from pathlib import Path

from pipeline.catalog import CATALOG, markdown_table

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


def test_the_delivery_commands_and_every_option_are_in_the_readme():
    from pipeline.cli import main

    for name in ("push", "emulate"):
        command = main.commands[name]
        assert f"loyalty-bulk {name}" in README, name
        for param in command.params:
            for flag in param.opts:
                if flag.startswith("--"):
                    assert flag in README, f"{name} {flag}"
