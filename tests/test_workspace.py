"""The run's workspace: every temp table named once, read only by the stages it names, gone after the run."""

from __future__ import annotations

import ast
import re

import duckdb
import polars as pl
import pytest

from conftest import ORG, ROOT
from engine_harness import load_store, raw_frame, run_engine
from model import ModelStore
from pipeline.config import parse_config
from pipeline.engine.apply import apply_changes
from pipeline.engine.check import check_requests
from pipeline.engine.decide import decide
from pipeline.engine.replay import pull_working_set, replay_working_set, stage_replayed
from pipeline.engine.resolve import resolve_targets
from pipeline.engine.workspace import TEMP_TABLES, Stage, Workspace, temp_tables
from pipeline.errors import InternalError
from pipeline.run import run_batch
from pipeline.store.snapshot import init_store
from test_engine_properties import BASE_CONFIG

PIPELINE = ROOT / "pipeline"

STAGE_MODULES: dict[str, Stage] = {
    "engine/resolve.py": "resolve",
    "engine/rules.py": "resolve",
    "engine/groups.py": "plan",
    "engine/decide.py": "decide",
    "engine/replay.py": "replay",
    "engine/apply.py": "apply",
    "engine/record.py::_RECORD_UNDO": "undo",
    "engine/record.py::_RECORD_PROVENANCE": "provenance",
}
"""The modules whose SQL makes or reads the run's temp tables, with the stage each one is (rules.register
makes the config's tables for resolve); `module::NAME` is the one SQL constant NAME of a module that holds
several stages' SQL (record.py writes the undo log and provenance)."""

ELSEWHERE = {
    ("store/invariants.py", "merge_chain_ends"): "invariants.merge_chain_ends makes it for resolve (and for store "
    "init and audit)",
    ("tools/sample.py", "chain"): "the data generator's own table, on its own connection, in no run",
}
"""Other modules whose SQL names a table of the same name, and why that is no reader of the run's table."""

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|FROM|JOIN)\b")

CONFIG = parse_config(BASE_CONFIG)
STORE = ModelStore(
    customers={
        1: ("ACTIVE", None, "LOYALTY"),
        2: ("ACTIVE", None, "LOYALTY"),
        3: ("MERGED", 2, "LOYALTY"),
        4: ("ACTIVE", None, "LOYALTY"),
        5: ("ACTIVE", None, "CAMPAIGN"),
    },
    identifiers={(1, "INSTORE", "", "mobile", "61234567"), (2, "LINE", "", "line", "L1")},
    cards={"GLD0001": (101, None, "Issued"), "SLV1X": (102, 2, "Active")},
)
ROWS: list[dict[str, str | None]] = [
    # customer 1 twice (replayed); customer 2 through its merged customer 3, customers 4 and 5 once (set-based)
    {"action": "add", "source": "INSTORE", "customer_id": "1", "id_type": "email", "id_value": "a@x.co"},
    {"action": "remove", "source": "INSTORE", "customer_id": "1", "id_type": "email", "id_value": "a@x.co"},
    {"action": "add", "source": "INSTORE", "customer_id": "3", "id_type": "externalId", "id_value": "E1"},
    {"action": "add", "source": "LINE", "customer_id": "4", "id_type": "mobile", "id_value": "61234568"},
    {
        "action": "add",
        "source": "INSTORE",
        "customer_id": "5",
        "id_type": "cardnumber",
        "id_value": "GLD0001",
        "series_id": "101",
        "status_label": "Active",
    },
]


def sql_strings(module: str) -> list[str]:
    """The string constants of a module that are not docstrings (SQL text, table names in dicts); for
    `path::NAME`, those of the module's constant NAME only."""
    path, _, constant = module.partition("::")
    tree: ast.AST = ast.parse((PIPELINE / path).read_text(encoding="utf-8"))
    if constant:
        [tree] = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == constant for t in node.targets)
        ]
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def mentions(texts: list[str], table: str) -> bool:
    word = re.compile(rf"(?<![\w.]){re.escape(table)}(?!\w)")
    return any(word.search(text) for text in texts)


def test_each_table_is_made_and_read_only_by_the_stages_the_workspace_names():
    texts: dict[str, list[str]] = {}
    for module, stage in STAGE_MODULES.items():
        texts.setdefault(stage, []).extend(sql_strings(module))
    wrong = []
    for table, spec in TEMP_TABLES.items():
        using = {stage for stage, found in texts.items() if mentions(found, table)}
        if using != {spec.made_by, *spec.read_by}:
            wrong.append(f"{table}: named for {sorted({spec.made_by, *spec.read_by})}, used by {sorted(using)}")
    assert not wrong, "\n".join(wrong)


def test_no_other_module_touches_a_run_table():
    staged = {PIPELINE / module.partition("::")[0] for module in STAGE_MODULES} | {PIPELINE / "engine" / "workspace.py"}
    touching = []
    for path in sorted(PIPELINE.rglob("*.py")):
        if path in staged:
            continue
        sql = [text for text in sql_strings(str(path.relative_to(PIPELINE))) if SQL_WORDS.search(text)]
        touching += [
            f"{path.relative_to(PIPELINE)}: {table}"
            for table in TEMP_TABLES
            if mentions(sql, table) and (str(path.relative_to(PIPELINE)), table) not in ELSEWHERE
        ]
    assert not touching, touching


def test_a_run_leaves_no_temp_table_and_each_stage_leaves_what_the_workspace_says():
    con = duckdb.connect()
    load_store(con, STORE)
    seen: dict[str, set[str]] = {}
    with Workspace(con) as ws:
        resolved = resolve_targets(ws, _checked(), CONFIG)
        seen["resolve"] = temp_tables(con)
        pulled = pull_working_set(resolved)
        assert temp_tables(con) == seen["resolve"], "the working set's scratch tables go as soon as it is pulled"
        assert pulled["rows"]["seq"].to_list() == [0, 1]
        decided = decide(resolved, CONFIG)
        seen["decide"] = temp_tables(con)
    assert temp_tables(con) == set()
    kept = {n for n, t in TEMP_TABLES.items() if t.dropped_after != t.made_by}
    assert seen["resolve"] == {n for n in kept if TEMP_TABLES[n].made_by == "resolve"}
    assert seen["decide"] == seen["resolve"] | {n for n in kept if TEMP_TABLES[n].made_by == "decide"}
    assert decided.rows == 3, "rows 2, 3 and 4 share no key with another row"


def _checked() -> pl.DataFrame:
    return check_requests(raw_frame(ROWS), CONFIG).checked


def test_the_engine_entry_drops_everything_and_counts_both_routes():
    run = run_engine(STORE, ROWS, CONFIG)  # the harness asserts that no temp table is left
    assert run.routes == {"set_based": 3, "replay": 2}
    assert [r.outcome for r in run.results] == ["applied", "applied", "applied", "applied", "applied"]


def test_a_handle_refuses_once_its_tables_are_gone():
    con = duckdb.connect()
    load_store(con, STORE)
    ws = Workspace(con)
    resolved = resolve_targets(ws, _checked(), CONFIG)
    outcomes, changes = replay_working_set(pull_working_set(resolved), CONFIG, events=False)
    replayed = stage_replayed(decide(resolved, CONFIG), outcomes, changes)
    with pytest.raises(InternalError, match=r"reads .*req.* of resolve"):
        pull_working_set(resolved)  # req went when the replay finished
    ws.close()
    with pytest.raises(InternalError, match=r"apply stage reads rel_cards, rel_idents, rel_info of resolve"):
        apply_changes(replayed)
    assert temp_tables(con) == set()


def test_an_unnamed_temp_table_stops_the_run():
    con = duckdb.connect()
    load_store(con, STORE)
    ws = Workspace(con)
    resolve_targets(ws, _checked(), CONFIG)
    con.execute("CREATE TEMP TABLE stray AS SELECT 1 AS x")
    with pytest.raises(InternalError, match=r"unnamed or kept \['stray'\]"):
        ws.close()


@pytest.mark.parametrize("dry_run", [False, True])
def test_run_batch_leaves_no_temp_table(tmp_path, monkeypatch, dry_run):
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    left: list[set[str]] = []
    real_close = Workspace.close

    def close(self: Workspace, verify: bool = True) -> None:
        real_close(self, verify)
        left.append(temp_tables(self.con))

    monkeypatch.setattr(Workspace, "close", close)
    requests = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))
    result = run_batch(store, ORG, requests, tmp_path / "r", dry_run=dry_run)
    assert result.exit_code in (0, 1) and result.outcomes["applied"] > 0
    assert left == [set()]
