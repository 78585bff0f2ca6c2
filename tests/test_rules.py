"""One rule order: the set-based SQL, the replay and the model all check each operation in rules.py's order.

The three forms are read, not run: the SQL CASE of decide.py branch by branch, the replay's and the
model's Python in source order (a `return {"error_code": ...}` or `raise RowFailed(...)` is a check,
an `unchanged` success ends the list where it stands). That each form also gives the model's results
is test_engine_properties' and test_routes' business; this one catches a reordering of one of them.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import model
from pipeline.catalog import CATALOG, error_codes
from pipeline.config import ACTIVE_STATUSES, CLOSED_STATUSES, STANDARD_STATUSES
from pipeline.engine import decide, replay, rules

Token = int | str
"""An error code, or "unchanged" for a success that skips every later check."""


def expected(checks: tuple[rules.Check, ...]) -> list[Token]:
    return [c.code if c.ends == "error" else "unchanged" for c in checks]


def case_branches(sql: str, start: str) -> list[tuple[str, Token]]:
    """(condition, result) of each WHEN of the CASE that begins at `start` and ends at `END AS error_code`."""
    text = " ".join(sql[sql.index(start) : sql.index("END AS error_code")].split())  # a WHEN may span lines
    found = re.findall(r"WHEN (.+?) THEN (?:CASE WHEN .+? THEN )?(NULL|\d+)", text)
    return [(cond, "unchanged" if result == "NULL" else int(result)) for cond, result in found]


IDENT_CASE = "CASE WHEN b.action IN ('add', 'replace') THEN "


def identifier_branches(sql: str) -> list[tuple[str, Token]]:
    """The identifier CASE's branches after its outer WHEN: add and replace share one inner CASE, remove has its own."""
    return case_branches(sql[sql.index(IDENT_CASE) + len(IDENT_CASE) :], "CASE")


def test_the_sql_case_follows_the_rule_order():
    ident = identifier_branches(decide._IDENT_DECISIONS)
    split = next(i for i, (cond, _) in enumerate(ident) if cond.startswith("NOT t.has_exact"))
    add_or_replace, remove = ident[:split], ident[split:]
    assert [r for cond, r in add_or_replace if "b.action = 'replace'" not in cond] == expected(rules.ADD_IDENTIFIER)
    assert [r for cond, r in add_or_replace if "b.action = 'add'" not in cond] == expected(rules.REPLACE_IDENTIFIER)
    assert [r for _, r in remove] == expected(rules.REMOVE_IDENTIFIER)
    card = case_branches(decide._CARD_DECISIONS, "WHEN cs.card_number IS NULL")
    assert [r for cond, r in card if "b.action = 'remove'" not in cond] == expected(rules.CARD_LINK)
    upto_delink = card[: next(i for i, (cond, _) in enumerate(card) if "b.action = 'remove'" in cond) + 1]
    assert [r for cond, r in upto_delink if "b.action = 'add'" not in cond] == expected(rules.CARD_DELINK)


def branch_tokens(func: Callable, skip: Callable[[str], bool] = lambda test: False) -> list[Token]:
    """The checks of a function in source order; calls of sibling methods or functions are read in place."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    owner = inspect.getmodule(func)
    cls = getattr(owner, func.__qualname__.split(".")[0]) if "." in func.__qualname__ else None

    def sibling(name: str) -> Callable | None:
        found = getattr(cls, name, None) if cls is not None else getattr(owner, name, None)
        return found if callable(found) and not isinstance(found, type) else None

    def walk(node: ast.AST) -> list[Token]:
        if isinstance(node, ast.If) and skip(ast.unparse(node.test)):
            return [t for child in node.orelse for t in walk(child)]
        out: list[Token] = []
        if isinstance(node, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
            values = dict(zip(keys, node.values, strict=True))
            code, outcome = values.get("error_code"), values.get("outcome")
            if isinstance(code, ast.Constant) and isinstance(code.value, int):
                out.append(code.value)
            elif isinstance(outcome, ast.Constant) and outcome.value == "unchanged":
                out.append("unchanged")
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            first = node.args[0] if node.args else None
            if name == "RowFailed" and isinstance(first, ast.Constant) and isinstance(first.value, int):
                out.append(first.value)
            elif name == "Applied" and isinstance(first, ast.Constant) and first.value == "unchanged":
                out.append("unchanged")
            elif (inner := sibling(name)) is not None and name.startswith("_"):
                out += branch_tokens(inner, skip)
        for child in ast.iter_child_nodes(node):
            out += walk(child)
        return out

    return walk(tree)


def only_adds(test: str) -> bool:
    return test == "row.action == 'add' and card[0] != row.series_id"


def test_the_replay_follows_the_rule_order():
    assert branch_tokens(replay.Replayer._add) == expected(rules.ADD_IDENTIFIER)
    assert branch_tokens(replay.Replayer._replace) == expected(rules.REPLACE_IDENTIFIER)
    assert branch_tokens(replay.Replayer._remove) == expected(rules.REMOVE_IDENTIFIER)
    assert branch_tokens(replay.Replayer._card_add) == expected(rules.CARD_LINK)
    assert branch_tokens(replay.Replayer._card_remove, skip=only_adds) == expected(rules.CARD_DELINK)


def test_the_model_follows_the_rule_order():
    assert branch_tokens(model.add_identifier) == expected(rules.ADD_IDENTIFIER)
    assert branch_tokens(model.replace_identifier) == expected(rules.REPLACE_IDENTIFIER)
    assert branch_tokens(model.remove_identifier) == expected(rules.REMOVE_IDENTIFIER)
    assert branch_tokens(model.add_card) == expected(rules.CARD_LINK)
    assert branch_tokens(model.remove_card) == expected(rules.CARD_DELINK)


def test_the_reader_sees_a_reordering():
    swapped = decide._IDENT_DECISIONS.replace("THEN 8008", "THEN 9999").replace("THEN 8074", "THEN 8008")
    ident = identifier_branches(swapped)
    assert [r for cond, r in ident if "b.action = 'replace'" not in cond][:8] != expected(rules.ADD_IDENTIFIER)
    assert [r for cond, r in ident if "b.action = 'add'" not in cond][:8] != expected(rules.REPLACE_IDENTIFIER)


def test_every_apply_error_has_its_place_and_each_unchanged_is_a_warning():
    listed = [c.code for checks in rules.OPERATIONS.values() for c in checks if c.ends == "error"]
    assert set(listed) == set(error_codes("apply"))
    for checks in rules.OPERATIONS.values():
        assert all(c.step.startswith("3 ") for c in checks)
        assert all(CATALOG[c.code].kind == ("error" if c.ends == "error" else "warning") for c in checks)
    assert {CATALOG[code].kind for code in rules.WARNING_PARAMS.values()} <= {"warning", "error"}
    assert rules.WARNING_PARAMS["w_followed_merge"] == 91009 and rules.WARNING_PARAMS["w_merged"] == 8051


def test_no_status_list_or_warning_code_is_written_into_the_sql():
    path = Path(decide.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    sql = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    sql = [s for s in sql if re.search(r"\b(SELECT|CREATE)\b", s)]
    assert sql, "decide.py's SQL was found"
    statuses = [s for s in STANDARD_STATUSES if any(f"'{s}'" in text for text in sql)]
    warnings = [c for c, e in CATALOG.items() if e.kind == "warning" and any(str(c) in text for text in sql)]
    assert statuses == [] and warnings == [], (statuses, warnings)
    assert ACTIVE_STATUSES and CLOSED_STATUSES  # reached through cfg_labels' active and closed flags
