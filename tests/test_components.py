"""Replaying the interacting rows per connected component, in shards and in worker processes, equals one
sequential pass over all of them: the same outcomes, net changes and provenance events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_harness import load_store, raw_frame, run_engine
from model import ModelStore, run_model
from pipeline.cli import main
from pipeline.config import OrgConfig
from pipeline.engine import components
from pipeline.engine.check import check_requests
from pipeline.engine.components import ReplayPool, replay_components, split_working_set
from pipeline.engine.decide import OUTCOME_SCHEMA
from pipeline.engine.replay import pull_working_set, replay_working_set, rows_frame
from pipeline.engine.resolve import resolve_targets
from pipeline.engine.workspace import Workspace
from pipeline.errors import InternalError
from test_engine_properties import configs, scenarios

PART_OFFSET = 100
"""Customer ids of part p of a union start at p * PART_OFFSET (a part's store has at most 7 customers)."""


def _part_value(value: str | None, part: int) -> str | None:
    """A value of the property tests' pools made distinct for part `part`, raw spellings kept (so the
    check stage reads the part's values exactly as it reads the originals)."""
    if value is None:
        return None
    value = value.replace("6123", f"6{part}23")  # mobiles, raw variants included
    value = re.sub(r"@(x|X)\.", lambda m: f"@{m.group(1)}{part}.", value)
    value = re.sub(r"^(E|w|L)([12])$", lambda m: f"{m.group(1)}{part}{m.group(2)}", value)
    value = re.sub(r"^GLD000([123])$", lambda m: f"GLD{part}00{m.group(1)}", value)
    return re.sub(r"^SLV([123])X$", lambda m: f"SLV{part}{m.group(1)}X", value)


def _part_customer(text: str | None, part: int) -> str | None:
    return str(int(text) + part * PART_OFFSET) if text and text.isdigit() and text != "0" else text


def _part(store: ModelStore, rows: list[dict], part: int) -> tuple[ModelStore, list[dict]]:
    """One scenario moved to its own customers, values and cards, so parts of a union touch nothing shared."""
    shift = part * PART_OFFSET
    customers = {
        cid + shift: (status, None if into is None else into + shift, ctype)
        for cid, (status, into, ctype) in store.customers.items()
    }
    identifiers = {(cid + shift, s, a, t, _part_value(v, part)) for cid, s, a, t, v in store.identifiers}
    cards = {
        _part_value(number, part): (series, None if holder is None else holder + shift, label)
        for number, (series, holder, label) in store.cards.items()
    }
    moved = [
        dict(
            row,
            customer_id=_part_customer(row.get("customer_id"), part),
            lookup_value=_part_value(row.get("lookup_value"), part),
            id_value=_part_value(row.get("id_value"), part),
            replaces=_part_value(row.get("replaces"), part),
        )
        for row in rows
    ]
    return ModelStore(customers, identifiers, cards), moved  # type: ignore[arg-type]


@st.composite
def unions(draw):
    """Two to four dense scenarios side by side in one store and one batch, their rows interleaved: a batch
    of several components, each dense with collisions (a part may link up with another through a value
    the renaming leaves alone, e.g. a malformed one: the components are whatever resolve finds)."""
    parts = []
    for part in range(1, draw(st.integers(2, 4)) + 1):
        _, store, rows = draw(scenarios())
        parts.append(_part(store, rows, part))
    store = ModelStore(
        {c: v for s, _ in parts for c, v in s.customers.items()},
        {i for s, _ in parts for i in s.identifiers},
        {n: v for s, _ in parts for n, v in s.cards.items()},
    )
    rows = [row for _, part_rows in parts for row in part_rows]
    return draw(configs()), store, draw(st.permutations(rows))


def _pulled(store: ModelStore, rows: list[dict], config: OrgConfig) -> tuple[dict, pl.DataFrame]:
    """The working set decide would replay, and resolve's components of its rows."""
    con = duckdb.connect()
    load_store(con, store)
    checked = check_requests(raw_frame(rows), config)
    with Workspace(con) as ws:
        resolved = resolve_targets(ws, checked.checked, config)
        pulled = pull_working_set(resolved)
    con.close()
    return pulled, resolved.groups


def _comparable(replayed: tuple[pl.DataFrame, dict[str, pl.DataFrame]]) -> tuple[list, dict[str, list]]:
    """Outcomes in row order, net changes as sorted rows (they are sets), events as made, in row order."""
    outcomes, changes = replayed
    return outcomes.rows(), {
        name: frame.rows() if name == "chg_events" else sorted(frame.rows(), key=repr)
        for name, frame in changes.items()
    }


def _events_by_row(events: list[tuple]) -> list[tuple]:
    """Events with each row's own ones sorted: a worker process iterates sets in its own hash order, so a
    row's merge moves may come in another order (explain orders them by value anyway)."""
    return sorted(events, key=lambda e: (e[0], repr(e)))


@pytest.fixture(scope="module")
def pool() -> Iterator[ReplayPool]:
    started = ReplayPool(2)
    yield started
    started.close()


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unions() | scenarios())
def test_replay_per_component_equals_one_sequential_pass(scenario):
    config, store, rows = scenario
    pulled, groups = _pulled(store, rows, config)
    sequential = _comparable(replay_working_set(pulled, config, True))
    components_found = groups["plan_group"].n_unique()
    # one shard per component at most (a forced small shard size), and the cores' default of two or three
    for shards in sorted({1, 2, 3, components_found + 1}):
        assert _comparable(replay_components(pulled, groups, config, True, shards=shards)) == sequential, shards
    parts = split_working_set(pulled, groups, components_found + 1)
    assert len(parts) == (components_found if pulled["rows"].height else 0)
    assert sum(part["rows"].height for part in parts) == pulled["rows"].height
    for name in ("customers", "idents", "cards", "holdings"):
        assert sorted(r for part in parts for r in part[name].rows()) == sorted(pulled[name].rows()), name


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unions())
def test_replay_in_worker_processes_equals_one_sequential_pass(pool, scenario):
    config, store, rows = scenario
    pulled, groups = _pulled(store, rows, config)
    want_outcomes, want_changes = _comparable(replay_working_set(pulled, config, True))
    for shards in (None, 5):  # one shard per core, and more shards than cores
        got_outcomes, got_changes = _comparable(replay_components(pulled, groups, config, True, pool, shards))
        assert got_outcomes == want_outcomes
        assert got_changes.keys() == want_changes.keys()
        for name, want in want_changes.items():
            got = got_changes[name]
            assert (_events_by_row(got) == _events_by_row(want)) if name == "chg_events" else got == want, name


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unions())
def test_engine_equals_sequential_model_on_batches_of_several_components(scenario):
    """The whole engine (default shards: one) on unions, against the model: the unions are valid batches."""
    config, store, rows = scenario
    model_store = store.copy()
    expected = run_model(model_store, rows, config)
    assert run_engine(store, rows, config).results == expected


def test_pack_balances_rows_and_keeps_components_whole():
    sizes = pl.DataFrame({"plan_group": range(203), "len": [900, 500, *([3] * 200), 1]})
    packed = components._pack(sizes, 3)
    assert sorted(packed["plan_group"]) == list(range(203))
    loads = packed.join(sizes, on="plan_group").group_by("shard").agg(pl.col("len").sum())["len"].sort().to_list()
    assert loads[-1] == 900 and max(loads[:2]) - min(loads[:2]) <= 3  # the giant alone; the rest even


def test_a_worker_failure_fails_the_run(pool):
    with pytest.raises(InternalError, match="replay worker failed"):
        pool.replay(0, [{"rows": pl.DataFrame({"nonsense": [1]})}], None, True)


def test_workers_give_the_reports_and_store_of_one_worker(tmp_path, monkeypatch):
    """A sample batch run with --workers 1 and with --workers 2 (processes really used): same reports, same store."""
    monkeypatch.setattr(components, "MIN_ROWS_FOR_WORKERS", 0)
    used = []
    real_replay = ReplayPool.replay

    def counted(self, worker, shards, config, events):
        used.append(len(shards))
        return real_replay(self, worker, shards, config, events)

    monkeypatch.setattr(ReplayPool, "replay", counted)
    runner = CliRunner()
    sample = tmp_path / "sample"
    assert runner.invoke(main, ["sample", "--out", str(sample), "--customers", "3000", "--rows", "4000"]).exit_code == 0
    outputs = {}
    for workers in ("1", "2"):
        store = tmp_path / f"store{workers}.duckdb"
        config = str(sample / "org.toml")
        init = ["store", "init", str(store), "--snapshot", str(sample / "snapshot"), "--config", config]
        assert runner.invoke(main, init).exit_code == 0
        reports = tmp_path / f"reports{workers}"
        run = ["run", "--store", str(store), "--config", config, "--reports", str(reports)]
        result = runner.invoke(main, [*run, "--workers", workers, "--quiet", str(sample / "requests.csv")])
        assert result.exit_code in (0, 1), result.output
        outputs[workers] = _outputs(store, reports)
    assert used, "--workers 2 never used a worker process"
    assert outputs["1"] == outputs["2"]


def _outputs(store: Path, reports: Path) -> dict:
    summary = json.loads((reports / "summary.json").read_text())
    run_id = summary["run_id"]
    for key in ("run_id", "started_at", "ended_at", "stage_seconds", "reports_dir", "store"):
        summary.pop(key)
    files = {name: (reports / name).read_text() for name in ("success.csv", "errors.csv", "merges.csv")}
    files["calls.ndjson"] = (reports / "calls.ndjson").read_text().replace(run_id, "RUN")
    con = duckdb.connect(str(store), read_only=True)
    tables = {
        name: sorted(con.execute(f"SELECT {columns} FROM {name}").fetchall(), key=repr)
        for name, columns in (
            ("customers", "*"),
            ("identifiers", "*"),
            ("cards", "*"),
            ("provenance", "* EXCLUDE (run_id)"),
        )
    }
    con.close()
    return {"summary": summary, "files": files, "tables": tables}


_maybe_int = st.none() | st.integers(-(2**40), 2**40)
_maybe_text = st.none() | st.text(max_size=8)
_outcome_rows = st.lists(
    st.tuples(
        st.integers(0, 2**40),
        _maybe_text,
        st.none() | st.integers(0, 99_999),
        _maybe_text,
        _maybe_int,
        _maybe_int,
        _maybe_int,
        st.lists(st.integers(0, 99_999), max_size=4).map(tuple),
        _maybe_int,
        _maybe_int,
        _maybe_int,
        _maybe_text,
        _maybe_text,
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_outcome_rows)
def test_rows_frame_equals_polars_row_construction(rows):
    """replay.rows_frame (column by column, list columns from offsets) is pl.DataFrame(orient='row')."""
    built = rows_frame(rows, OUTCOME_SCHEMA)
    assert built.schema == OUTCOME_SCHEMA
    assert built.equals(pl.DataFrame(rows, schema=OUTCOME_SCHEMA, orient="row"))


def test_worker_processes_start_only_for_rows_that_another_core_can_take():
    """One giant component (the dense benchmark) or few interacting rows: no worker process is started."""
    groups = pl.DataFrame({"seq": [1, 2, 3, 4], "plan_group": [0, 0, 0, 1], "plan_fresh": [True, False, False, True]})
    assert components.largest_component(groups) == 3
    assert components.largest_component(groups.clear()) == 0
    rows = components.MIN_ROWS_FOR_WORKERS + 100
    with components.replay_pool(2, rows, rows - 50) as giant:
        assert giant is None
    with components.replay_pool(1, rows, 1) as one_core:
        assert one_core is None
    with components.replay_pool(2, rows, 1) as shared:
        assert shared is not None and shared.processes == 1
