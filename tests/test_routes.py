"""The route switch: deciding every row by replay gives the same reports and store as the set-based route.

The batches are made of blocks: each block is a small store and a few rows from test_engine_properties'
strategies, moved to customers, values and cards of its own. Rows of different blocks share nothing,
so a block of one row is decided set-based however dense the rows inside other blocks are; the test
counts those rows and asserts the set-based route took at least them (and the replay route none).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import ORG, REQUESTS, ROOT
from engine_harness import run_engine
from model import ModelStore, model_store_to_frames, run_model
from pipeline.config import parse_config
from pipeline.engine.batch import ROUTE_ENV, route_from_env
from pipeline.errors import InternalError
from pipeline.run import run_batch
from pipeline.store.snapshot import export_store, init_store
from test_engine_properties import BASE_CONFIG, CARDS, configs, request_rows, stores

Row = dict[str, str | None]


def block_value(block: int, text: str) -> str:
    """A value of the strategies' pools (or a raw variant of one) as block `block` writes it."""
    if "6123" in text:  # a mobile: the same digits after normalisation in every variant
        return text.replace("6123", f"7{block:03d}")
    if "@x.co" in text.lower():
        return text.replace("@x.co", f"{block}@x.co").replace("@X.CO", f"{block}@X.CO")
    return f"{text}b{block}" if text.strip() else text


def block_card(block: int, number: str) -> str:
    if number not in CARDS:
        return number  # a number that no series or store knows stays as it is
    k = int(number[3]) if number.startswith("GLD") else int(number[3:-1])
    return f"GLD{3 * block + k:04d}" if number.startswith("GLD") else f"SLV{3 * block + k}X"


def moved_store(store: ModelStore, block: int) -> ModelStore:
    off = 10 * (block + 1)
    return ModelStore(
        customers={c + off: (s, m + off if m is not None else None, t) for c, (s, m, t) in store.customers.items()},
        identifiers={(c + off, s, a, t, block_value(block, v)) for c, s, a, t, v in store.identifiers},
        cards={
            block_card(block, n): (ser, h + off if h is not None else None, lab)
            for n, (ser, h, lab) in store.cards.items()
        },
    )


def moved_row(row: Row, block: int) -> tuple[Row, bool]:
    """The row in block `block`, and whether every reference and value it carries is the block's own."""
    moved, own = dict(row), True
    customer = (row.get("customer_id") or "").strip()
    if customer:
        if customer.isdigit() and customer == row.get("customer_id") and 1 <= int(customer) <= 9:
            moved["customer_id"] = str(int(customer) + 10 * (block + 1))
        else:
            own = False
    for name in ("lookup_value", "id_value", "replaces"):
        text = row.get(name) or ""
        if not text.strip():
            continue
        card = row.get("lookup_type" if name == "lookup_value" else "id_type") == "cardnumber"
        moved[name] = block_card(block, text) if card else block_value(block, text)
        own = own and moved[name] != text
    return moved, own


@st.composite
def blocked_scenarios(draw):
    """(config, store, rows, independent seqs): most blocks hold one row, a few hold several."""
    config = draw(configs())
    store = ModelStore({}, set(), {})
    rows: list[Row] = []
    private: list[int] = []
    for block in range(draw(st.integers(10, 30))):
        small = draw(stores())
        part = moved_store(small, block)
        store.customers |= part.customers
        store.identifiers |= part.identifiers
        store.cards |= part.cards
        size = draw(st.sampled_from([1, 1, 1, 1, 2, 3]))
        rows_of = request_rows(n_customers=len(small.customers), scoped_lookups=True)
        for raw in draw(st.lists(rows_of, min_size=size, max_size=size)):
            row, own = moved_row(raw, block)
            if own and size == 1:
                private.append(len(rows))
            rows.append(row)
    return config, store, rows, private


MESSAGE_INPUTS = ("holder_id", "limit", "card_series", "card_status")
"""Outcome columns that reach a report only through error_message (the set-based route fills holder_id on
codes whose message names no holder): they are compared through the message."""


def frame_rows(frame: pl.DataFrame) -> list[tuple]:
    return frame.drop(MESSAGE_INPUTS).sort("seq").rows()


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blocked_scenarios())
def test_both_routes_give_the_same_reports_and_store(scenario):
    config, store, rows, private = scenario
    auto = run_engine(store, rows, config, route="auto")
    replayed = run_engine(store, rows, config, route="replay")
    checked = set(auto.outcomes["seq"].to_list())
    independent = len(checked & set(private))
    event(f"set-based rows: {min(auto.routes['set_based'] // 10 * 10, 30)}+")
    assert auto.routes["set_based"] >= independent, "every one-row block of its own values is decided set-based"
    assert auto.routes["set_based"] + auto.routes["replay"] == len(checked)
    assert replayed.routes == {"set_based": 0, "replay": len(checked)}
    assert frame_rows(replayed.outcomes) == frame_rows(auto.outcomes)
    assert replayed.results == auto.results and replayed.calls == auto.calls
    assert {n: f.rows() for n, f in replayed.frames.items()} == {n: f.rows() for n, f in auto.frames.items()}
    model_store = store.copy()
    expected = run_model(model_store, rows, config)
    assert [dataclasses.asdict(r) for r in auto.results] == [dataclasses.asdict(r) for r in expected]
    assert {n: f.rows() for n, f in auto.frames.items()} == {
        n: f.rows() for n, f in model_store_to_frames(model_store).items()
    }


def test_blocks_of_their_own_go_set_based_many_at_once():
    """A fixed batch: twenty one-row blocks and one dense block; each route's count is exact."""
    store, rows = ModelStore({}, set(), {}), []
    for block in range(21):
        part = moved_store(ModelStore({1: ("ACTIVE", None, "LOYALTY")}, {(1, "LINE", "", "line", "L1")}, {}), block)
        store.customers |= part.customers
        store.identifiers |= part.identifiers
        add: Row = {"action": "add", "source": "INSTORE", "customer_id": "1", "id_type": "email", "id_value": "a@x.co"}
        rows += [moved_row(add, block)[0]] if block < 20 else [moved_row(add, block)[0]] * 3
    config = parse_config(BASE_CONFIG)
    auto = run_engine(store, rows, config)
    replayed = run_engine(store, rows, config, route="replay")
    assert auto.routes == {"set_based": 20, "replay": 3}
    assert replayed.routes == {"set_based": 0, "replay": 23}
    assert [r.outcome for r in auto.results] == ["applied"] * 21 + ["unchanged"] * 2
    assert replayed.results == auto.results


def test_replaces_of_their_own_go_set_based():
    """Every branch of a replace, each row in a block of its own: all decided set-based, as the replay and the model
    decide them (W taken away, a merge once W is gone, unchanged, a plain add, a call line's W not held, V failing)."""
    holders = ModelStore(
        {1: ("ACTIVE", None, "LOYALTY"), 2: ("ACTIVE", None, "LOYALTY")},
        {
            (1, "INSTORE", "", "email", "o@x.co"),
            (1, "LINE", "", "line", "L1"),
            (2, "WECHAT", "WX-MAIN", "email", "v@x.co"),
        },
        {},
    )
    clash = ModelStore(holders.customers, holders.identifiers | {(2, "LINE", "", "mobile", "61234569")}, {})

    def replace(id_value: str, **more: str) -> Row:
        return {
            "action": "replace",
            "customer_id": "1",
            "source": "INSTORE",
            "id_type": "email",
            "id_value": id_value,
            **more,
        }

    blocks = [
        (holders, replace("n@x.co"), ("applied", None)),
        (holders, replace("v@x.co"), ("merged", None)),
        (holders, replace(" O@X.CO"), ("unchanged", None)),
        (holders, replace("61234567", id_type="mobile"), ("applied", None)),
        (holders, replace("n@x.co", replaces="z@x.co"), (None, 7009)),
        (holders, replace("n@x.co", replaces="o@x.co"), ("applied", None)),
        (holders, replace("v@x.co", source="WECHAT", account_id="WX-MAIN"), (None, 8008)),
        (holders, replace("v@x.co", source="WECHAT", account_id="WX-CN2"), ("merged", None)),
        (holders, replace("v@x.co", source="WECHAT", account_id="WX-MAIN", customer_id="2"), ("unchanged", None)),
        (clash, replace("v@x.co"), (None, 8066)),
    ]
    store, rows = ModelStore({}, set(), {}), []
    for block, (small, row, _) in enumerate(blocks):
        part = moved_store(small, block)
        store.customers |= part.customers
        store.identifiers |= part.identifiers
        rows.append(moved_row(row, block)[0])
    config = parse_config(BASE_CONFIG)
    auto = run_engine(store, rows, config)
    replayed = run_engine(store, rows, config, route="replay")
    assert auto.routes == {"set_based": len(blocks), "replay": 0}
    assert [(r.outcome, r.error_code) for r in auto.results] == [want for _, _, want in blocks]
    assert [r.replaced_value for r in auto.results][:2] == ["o0@x.co", "o1@x.co"]
    assert replayed.results == auto.results and replayed.calls == auto.calls
    assert frame_rows(replayed.outcomes) == frame_rows(auto.outcomes)
    assert {n: f.rows() for n, f in replayed.frames.items()} == {n: f.rows() for n, f in auto.frames.items()}
    model_store = store.copy()
    assert run_model(model_store, rows, config) == auto.results
    assert {n: f.rows() for n, f in auto.frames.items()} == {
        n: f.rows() for n, f in model_store_to_frames(model_store).items()
    }


def exported(store: Path, folder: Path) -> dict[str, bytes]:
    export_store(store, folder, "csv")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_test_only_environment_switch_replays_a_whole_run(tmp_path, monkeypatch):
    reports: dict[str, dict[str, bytes]] = {}
    stores: dict[str, dict[str, bytes]] = {}
    for route in ("auto", "replay"):
        monkeypatch.setenv(ROUTE_ENV, route)
        store = tmp_path / route / "store.duckdb"
        store.parent.mkdir()
        init_store(store, ROOT / "sample_data" / "snapshot")
        result = run_batch(store, ORG, REQUESTS, tmp_path / route / "r", run_id="run-1")
        assert result.exit_code == 1 and result.merges > 0
        folder = tmp_path / route / "r"
        reports[route] = {
            n: (folder / n).read_bytes() for n in ("success.csv", "errors.csv", "merges.csv", "calls.ndjson")
        }
        stores[route] = exported(store, tmp_path / route / "export")
    assert reports["replay"] == reports["auto"]
    assert stores["replay"] == stores["auto"]


def test_an_unknown_route_is_refused(monkeypatch):
    monkeypatch.setenv(ROUTE_ENV, "everything")
    with pytest.raises(InternalError, match="LOYALTY_BULK_TEST_ROUTE='everything'"):
        route_from_env()
    monkeypatch.setenv(ROUTE_ENV, "")
    assert route_from_env() == "auto"
