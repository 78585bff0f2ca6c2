"""The call plan (SPEC section 8): calls.ndjson's shape, and `after` sound and near-minimal.

Soundness is checked the way a push meets it: the calls are sent one at a time, in random orders that
respect `after`, to a platform stand-in (the sequential model of tests/model.py, one call per model
run, so no per-run merge limit) on the pre-run store; every answer must be what `expect` says and the
platform must end as the run left the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_harness import run_engine
from model import ModelStore, model_store_to_frames, run_model, store_from_snapshot_dir
from pipeline.config import load_config
from pipeline.engine.groups import component_roots
from pipeline.input.calls import call_rows
from pipeline.run import run_batch
from pipeline.store.snapshot import export_store, init_store
from test_engine_properties import scenarios

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"  # the sample org without [mobile]: stores made without --config


def call_as_row(call: dict) -> dict[str, str | None]:
    """A call of the plan as the one request row the platform reads it as (a replace's two items are one row)."""
    (row,) = call_rows({k: call[k] for k in ("customer_id", "source", "account_id")} | call["body"])
    return row


def send_in_order(rng, calls: list[dict]) -> list[dict]:
    """A random order of the calls in which each comes after every call of its `after`.

    Half the time the latest ready call goes first (the order furthest from the run's), else a random one.
    """
    pending, order = list(calls), []
    done: set[str] = set()
    latest_first = rng.random() < 0.5
    while pending:
        ready = [c for c in pending if set(c["after"]) <= done]
        assert ready, "`after` has a cycle or names a call that is not in the plan"
        call = ready[-1] if latest_first else rng.choice(ready)
        pending.remove(call)
        done.add(call["call_id"])
        order.append(call)
    return order


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_any_order_respecting_after_leaves_the_platform_as_the_run_left_the_store(scenario, rng):
    config, store, rows = scenario
    platform: ModelStore = store.copy()
    engine = run_engine(store, rows, config)
    changed = [r for r in engine.results if r.outcome in ("applied", "merged")]
    assert len(engine.calls) == len(changed)
    for call in send_in_order(rng, engine.calls):
        (answer,) = run_model(platform, [call_as_row(call)], config)
        expect = call["expect"]
        assert answer.ok, (call, answer)
        assert (answer.outcome, list(answer.warnings)) == (expect["outcome"], expect["warnings"]), call
        assert answer.survivor_id == expect.get("survivor_id"), call
    for name, frame in model_store_to_frames(platform).items():
        assert engine.frames[name].rows() == frame.rows(), name


def test_independent_rows_have_no_after_and_a_chain_is_a_chain(tmp_path):
    """Three rows on customer 1024 in a row form a chain; rows on other customers wait for nothing."""
    requests = tmp_path / "chain.csv"
    requests.write_text(
        "row_id,customer_id,source,action,id_type,id_value\n"
        "a,1024,INSTORE,add,externalId,EXT-A\n"
        "x,1016,INSTORE,remove,externalId,EXT-1016\n"
        "b,1024,INSTORE,remove,externalId,EXT-A\n"
        "y,1030,FACEBOOK,add,fbId,fb-new-1030\n"
        "c,1024,INSTORE,add,externalId,EXT-C\n"
    )
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    result = run_batch(store, ORG, [requests], tmp_path / "r")
    calls = {c["row_id"]: c for c in map(json.loads, (tmp_path / "r" / "calls.ndjson").read_text().splitlines())}
    assert set(calls) == {"a", "x", "b", "y", "c"}
    assert [calls[r]["after"] for r in ("a", "x", "y")] == [[], [], []]
    assert calls["b"]["after"] == [calls["a"]["call_id"]]
    assert calls["c"]["after"] == [calls["b"]["call_id"]]
    assert all(c["call_id"].startswith(f"{result.run_id}:") for c in calls.values())


def test_calls_have_the_platform_shape_and_skip_unchanged_and_failed_rows(tmp_path):
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    requests = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))
    result = run_batch(store, ORG, requests, tmp_path / "r", dry_run=True)
    lines = (tmp_path / "r" / "calls.ndjson").read_text().splitlines()
    calls = [json.loads(line) for line in lines]
    assert len(calls) == result.outcomes["applied"] + result.outcomes["merged"] == result.calls > 0
    config = load_config(ORG)
    ids = [c["call_id"] for c in calls]
    assert len(set(ids)) == len(ids)
    assert [int(i.split(":")[1]) for i in ids] == sorted(int(i.split(":")[1]) for i in ids), "row order"
    for call in calls:
        assert list(call) == [
            "call_id",
            "file",
            "row_number",
            "row_id",
            "customer_id",
            "source",
            "account_id",
            "body",
            "after",
            "expect",
        ]
        ((action, items),) = call["body"].items()
        assert action in ("add", "remove") and len(items) == 1
        item = items[0]
        multi = config.sources[call["source"]].kind == "multi"
        assert (call["account_id"] is not None) == multi
        if item["type"] == "cardnumber" and action == "add":
            assert set(item) == {"type", "value", "seriesId", "statusLabel"}
        elif item["type"] == "cardnumber":
            assert set(item) == {"type", "value", "statusLabel"}
            assert config.card_labels[item["statusLabel"]] == "NOT_ISSUED"
        else:
            assert set(item) == {"type", "value"}
        assert set(call["after"]) <= set(ids[: ids.index(call["call_id"])])
        assert 91009 not in call["expect"]["warnings"]
        assert ("survivor_id" in call["expect"]) == (call["expect"]["outcome"] == "merged")
    merged = [c for c in calls if c["expect"]["outcome"] == "merged"]
    assert merged and all(8051 in c["expect"]["warnings"] for c in merged)


REPLACES = ROOT / "tests" / "cases" / "replace_requests.csv"
"""Replace rows on the sample snapshot: W replaced, unchanged, a plain add, a merge, a chain, a freed value, a card."""


def test_a_replace_is_one_call_removing_the_old_value_and_adding_the_new(tmp_path):
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    platform = store_from_snapshot_dir(ROOT / "sample_data" / "snapshot")
    result = run_batch(store, ORG, [REPLACES], tmp_path / "r")
    assert (result.outcomes["applied"], result.outcomes["merged"], result.outcomes["unchanged"]) == (6, 1, 1)
    lines = (tmp_path / "r" / "calls.ndjson").read_text().splitlines()
    calls = {c["row_id"]: c for c in map(json.loads, lines)}
    assert sorted(calls) == sorted(["R-1-replaced", "R-3-plain-add", "R-4-merged", "R-5-chain", "R-6-chain",
                                    "R-7-freed-value", "R-10-alone"])  # fmt: skip
    email = "email"
    assert list(calls["R-1-replaced"]["body"]) == ["remove", "add"]
    assert calls["R-1-replaced"]["body"] == {
        "remove": [{"type": email, "value": "alice@example.com"}],
        "add": [{"type": email, "value": "alice.new@example.com"}],
    }
    assert calls["R-3-plain-add"]["body"] == {"add": [{"type": email, "value": "eleven@example.com"}]}
    merged = calls["R-4-merged"]
    assert merged["body"]["remove"] == [{"type": email, "value": "dana@example.com"}]
    assert merged["expect"] == {"outcome": "merged", "warnings": [8051], "survivor_id": 1006}
    assert calls["R-6-chain"]["body"]["remove"] == [{"type": "externalId", "value": "EXT-1016b"}]
    assert calls["R-6-chain"]["after"] == [calls["R-5-chain"]["call_id"]]
    assert calls["R-7-freed-value"]["after"] == [calls["R-1-replaced"]["call_id"]]
    assert calls["R-10-alone"]["after"] == []
    for call in map(json.loads, lines):  # the platform, one call at a time, answers as the run expects
        (answer,) = run_model(platform, [call_as_row(call)], load_config(ORG))
        assert (answer.outcome, list(answer.warnings), answer.survivor_id) == (
            call["expect"]["outcome"],
            call["expect"]["warnings"],
            call["expect"].get("survivor_id"),
        ), call
    export = tmp_path / "export"
    export_store(store, export, "csv")
    ran = model_store_to_frames(store_from_snapshot_dir(export))
    assert {n: f.rows() for n, f in model_store_to_frames(platform).items()} == {n: f.rows() for n, f in ran.items()}


def union_find_roots(nodes: int, edges: list[tuple[int, int]]) -> list[int]:
    """The smallest node of each node's component, one edge at a time (the obviously correct reading)."""
    parent = list(range(nodes))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    return [root(x) for x in range(nodes)]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))
    )
)
def test_component_roots_equal_union_find(graph):
    nodes, edges = graph
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    assert component_roots(nodes, a, b).tolist() == union_find_roots(nodes, edges)


def test_component_roots_of_a_long_shuffled_chain():
    order = np.random.default_rng(7).permutation(50_000)
    roots = component_roots(50_000, order[:-1], order[1:])
    assert (roots == 0).all()
