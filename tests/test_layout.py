"""The package is a map of the architecture: rooms on floors, imports only downward or within a floor, no
import circle anywhere, and the engine's modules in run order. docs/how-it-works.md draws the same map."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"

FLOORS: tuple[tuple[str, ...], ...] = (
    ("pipeline", "errors", "settings", "faults", "catalog", "config", "files", "results"),
    ("values",),
    ("input",),
    ("store",),
    ("engine",),
    ("reports",),
    ("lineage",),
    ("delivery",),
    ("run", "job", "validate", "refresh"),
    ("spark",),
    ("tools",),
    ("console", "cli", "__main__"),
)
"""From the ground floor up: each name is a module at the top of pipeline/ or a subpackage (a room). A module
may import its own floor and the floors below; pipeline/__init__.py holds the same map in words."""

ENGINE_ORDER = (
    "workspace",
    "rules",
    "check",
    "groups",
    "resolve",
    "decide",
    "replay",
    "components",
    "batch",
    "apply",
    "record",
    "commit",
)
"""The engine's modules in the order of pipeline/engine/__init__.py and docs/how-it-works.md."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """Every pipeline module a module imports, TYPE_CHECKING and function-level imports included."""
    names: set[str] = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            candidates = [base, *(f"{base}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        names |= {c for c in candidates if c in known and c != name}
    return names


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) for name, path in found.items()}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor(module: str) -> int:
    for level, rooms in enumerate(FLOORS):
        if room(module) in rooms:
            return level
    raise AssertionError(f"{module} is in no room of the map (tests/test_layout.py FLOORS)")


def test_every_module_is_in_a_room_of_the_map():
    for module in modules():
        floor(module)
    rooms = {room(m) for m in modules()}
    assert rooms == {r for rooms_ in FLOORS for r in rooms_}, "the map names a room the package does not have"


def test_no_module_imports_a_higher_floor():
    wrong = [
        f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
        for module, targets in graph().items()
        for target in targets
        if floor(target) > floor(module) and module != "pipeline"
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = {module: targets - {"pipeline"} for module, targets in graph().items()}
    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_the_engine_holds_exactly_the_modules_of_its_order():
    assert {p.stem for p in (PIPELINE / "engine").glob("*.py")} - {"__init__"} == set(ENGINE_ORDER)


def test_no_engine_module_imports_a_later_one_or_a_higher_room():
    imports = graph()
    wrong = []
    for i, name in enumerate(ENGINE_ORDER):
        later = {f"pipeline.engine.{m}" for m in ENGINE_ORDER[i + 1 :]}
        wrong += [f"{name} imports {m}" for m in imports[f"pipeline.engine.{name}"] if m in later]
    assert not wrong, wrong


LIGHT = ("pipeline.delivery.push",)
"""Modules whose import must not load a data library (push starts sending within a second)."""
HEAVY = ("duckdb", "pandera", "polars")


def test_push_imports_no_data_library():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in LIGHT)
        + f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"importing {LIGHT} loads {out.stdout.strip()}"
