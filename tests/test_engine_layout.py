"""The engine package reads in run order: a module imports only modules before it, never the orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "pipeline" / "engine"

ORDER = ("workspace", "rules", "check", "resolve", "decide", "replay", "apply", "result", "batch")
"""The engine's modules in the order of pipeline/engine/__init__.py and the README's "How it works"."""

NOT_THE_ORCHESTRATOR = ("ledger", "binding", "undo", "provenance", "html_summary", "console", "plan")
"""Modules outside the engine that a run calls: they import neither pipeline.run nor a stage's internals."""


def imported(path: Path) -> set[str]:
    """Every pipeline module a module imports, TYPE_CHECKING imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("pipeline")}
    return names


def test_the_package_holds_exactly_the_modules_of_its_order():
    assert {p.stem for p in ENGINE.glob("*.py")} - {"__init__"} == set(ORDER)


def test_no_engine_module_imports_a_later_one_or_the_orchestrator():
    wrong = []
    for i, name in enumerate(ORDER):
        for module in imported(ENGINE / f"{name}.py"):
            later = {f"pipeline.engine.{m}" for m in ORDER[i:]}
            if module in later or module == "pipeline.run" or module.startswith("pipeline.run."):
                wrong.append(f"{name} imports {module}")
    assert not wrong, wrong


def test_the_stores_of_record_do_not_import_the_orchestrator():
    for name in NOT_THE_ORCHESTRATOR:
        modules = imported(ROOT / "pipeline" / f"{name}.py")
        assert not {m for m in modules if m == "pipeline.run" or m.startswith("pipeline.run.")}, name
