"""Property tests: the engine equals the one-row-at-a-time model on random batches dense with collisions."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_harness import run_engine
from model import ModelStore, model_store_to_frames, run_model
from pipeline.config import parse_config

BASE_CONFIG: dict[str, Any] = {
    "org": {"max_active_cards_per_customer": 2, "delink_label": "Not Issued", "campaign_identifier_reuse": False},
    "merge": {"enabled": True, "max_merges_per_survivor_per_run": 2},
    "sources": {
        "INSTORE": {"kind": "single", "id_types": ["mobile", "email", "externalId"]},
        "WECHAT": {"kind": "multi", "accounts": ["WX-MAIN", "WX-CN2"], "id_types": ["mobile", "email", "wechat"]},
        "LINE": {"kind": "single", "id_types": ["mobile", "line"]},
    },
    "card_series": [
        {"id": 101, "code": "GOLD", "prefix": "GLD", "digits": 4, "max_active_per_customer": 1},
        {"id": 102, "code": "SILVER", "prefix": "SLV", "suffix": "X", "max_active_per_customer": 2},
    ],
    "card_labels": {
        "Active": "ACTIVE",
        "Issued": "ISSUED",
        "Not Issued": "NOT_ISSUED",
        "Blocked": "SUSPENDED",
        "Expired": "EXPIRED",
        "Deleted": "DELETED",
    },
    "blocked_values": {"mobile": {"exact": ["99999999"], "patterns": ["^0+$"]}},
}
SCOPES = [("INSTORE", ""), ("WECHAT", "WX-MAIN"), ("WECHAT", "WX-CN2"), ("LINE", "")]
TYPES_BY_SOURCE = {
    "INSTORE": ["mobile", "email", "externalId"],
    "WECHAT": ["mobile", "email", "wechat"],
    "LINE": ["mobile", "line"],
}
VALUES = {
    "mobile": ["61234567", "61234568", "61234569"],
    "email": ["a@x.co", "b@x.co"],
    "externalId": ["E1", "E2"],
    "wechat": ["w1", "w2"],
    "line": ["L1", "L2"],
}
RAW_VARIANTS = {"mobile": ["+61234567", "6123-4568", "0061234569", " 61234567 "], "email": ["A@X.CO", " b@x.co"]}
CARDS = {"GLD0001": 101, "GLD0002": 101, "GLD0003": 101, "SLV1X": 102, "SLV2X": 102, "SLV3X": 102}
LABELS = list(BASE_CONFIG["card_labels"])


@st.composite
def configs(draw):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    raw["org"] = dict(
        raw["org"], campaign_identifier_reuse=draw(st.booleans()), max_active_cards_per_customer=draw(st.integers(1, 3))
    )
    raw["merge"] = {
        "enabled": draw(st.booleans() | st.just(True)),
        "max_merges_per_survivor_per_run": draw(st.integers(0, 2)),
    }
    return parse_config(raw)


@st.composite
def stores(draw):
    n = draw(st.integers(2, 7))
    customers: dict[int, tuple[str, int | None, str]] = {
        1: ("ACTIVE", None, draw(st.sampled_from(["LOYALTY", "LOYALTY", "CAMPAIGN"])))
    }
    for cid in range(2, n + 1):
        ctype = draw(st.sampled_from(["LOYALTY", "LOYALTY", "LOYALTY", "CAMPAIGN"]))
        if draw(st.integers(0, 4)) == 0:
            customers[cid] = ("MERGED", draw(st.integers(1, cid - 1)), ctype)
        else:
            customers[cid] = ("ACTIVE", None, ctype)
    active = [c for c, v in customers.items() if v[0] == "ACTIVE"]
    identifiers: set = set()
    taken_keys, slots = set(), set()
    for _ in range(draw(st.integers(0, 12))):
        cid = draw(st.sampled_from(active))
        source, account = draw(st.sampled_from(SCOPES))
        id_type = draw(st.sampled_from(TYPES_BY_SOURCE[source]))
        value = draw(st.sampled_from(VALUES[id_type]))
        if (source, account, id_type, value) in taken_keys or (cid, source, account, id_type) in slots:
            continue
        taken_keys.add((source, account, id_type, value))
        slots.add((cid, source, account, id_type))
        identifiers.add((cid, source, account, id_type, value))
    cards: dict[str, tuple[int, int | None, str]] = {}
    for number, series in CARDS.items():
        holder = draw(st.none() | st.sampled_from(active))
        cards[number] = (series, holder, draw(st.sampled_from(LABELS)))
    return ModelStore(customers, identifiers, cards)


def _mostly(draw, good, bad, bad_chance=10):
    """A valid choice most of the time, a malformed one about once in `bad_chance` draws."""
    return draw(st.sampled_from(bad)) if draw(st.integers(1, bad_chance)) == 1 else draw(st.sampled_from(good))


@st.composite
def request_rows(draw, n_customers=8, scoped_lookups=False):
    """A request row; with `scoped_lookups`, now and then a lookup in a scope of its own (lookup_source and
    lookup_account_id, as a wide file's job gives them), which only a frame carries (no request file has them)."""
    source, account = _mostly(draw, SCOPES, [("NOPE", ""), ("WECHAT", ""), ("WECHAT", "WX-OLD"), ("INSTORE", "X")])
    row = {
        "action": _mostly(
            draw,
            ["add", "add", "add", "remove", "remove", "ADD", " Remove ", "replace", "replace", " Replace"],
            ["drop", ""],
        ),
        "source": source,
        "account_id": account,
    }
    ref = draw(st.integers(0, 9))
    if ref <= 5:
        row["customer_id"] = str(draw(st.integers(1, n_customers + 1)))
    elif ref <= 7:
        lookup_type = draw(st.sampled_from(TYPES_BY_SOURCE.get(source, ["mobile"])))
        row["lookup_type"], row["lookup_value"] = lookup_type, draw(st.sampled_from(VALUES[lookup_type]))
        if scoped_lookups and draw(st.integers(0, 3)) == 0:
            # a wide file's lookup in a scope of its own (the job's [wide] lookup), which may differ from the row's
            lookup_source, lookup_account = draw(st.sampled_from(SCOPES))
            row["lookup_source"], row["lookup_account_id"] = lookup_source, lookup_account
            row["lookup_type"] = draw(st.sampled_from(TYPES_BY_SOURCE[lookup_source]))
            row["lookup_value"] = draw(st.sampled_from(VALUES[row["lookup_type"]]))
    elif ref == 8:
        row["lookup_type"], row["lookup_value"] = "cardnumber", draw(st.sampled_from(sorted(CARDS)))
    else:
        row["customer_id"] = draw(st.sampled_from(["", "x1", "0", "2"]))
        row["lookup_type"] = draw(st.sampled_from(["", "mobile", "fbId"]))
        row["lookup_value"] = draw(st.sampled_from(["", "61234567"]))
    if draw(st.integers(0, 3)) == 0:
        number = _mostly(draw, sorted(CARDS), ["GLD9999", "GLD12", "SLVX", ""])
        add = row["action"].strip().lower() == "add"
        labels = ["Active", "Issued"] if add else ["", "", "Not Issued"]
        row.update(
            id_type="cardnumber",
            id_value=number,
            series_id=_mostly(draw, [str(CARDS.get(number, 101))] * 3 + ["101", "102"], ["", "7", "x"]),
            status_label=_mostly(draw, labels, [*LABELS, "Bogus", ""]),
        )
    else:
        id_type = _mostly(draw, TYPES_BY_SOURCE.get(source, ["mobile"]), ["fbId", "", "unknownType"])
        pool = VALUES.get(id_type, ["F1"])
        value = _mostly(draw, pool + RAW_VARIANTS.get(id_type, []), ["", "00000000", "not an email", "99999999"])
        row.update(id_type=id_type, id_value=value)
    if row["action"].strip().lower() == "replace" and draw(st.integers(0, 2)) == 0:
        # a call line's replace names the value it removes (a card line of that shape is never one; here it is
        # only a check-stage 7002, whatever it carries)
        pool = VALUES.get(row["id_type"], ["F1"]) + RAW_VARIANTS.get(row["id_type"], [])
        row["replaces"] = _mostly(draw, pool, ["", " "])
    return row


@st.composite
def scenarios(draw):
    store = draw(stores())
    rows = draw(st.lists(request_rows(n_customers=len(store.customers), scoped_lookups=True), min_size=1, max_size=25))
    return draw(configs()), store, rows


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_equals_sequential_model(scenario):
    config, store, rows = scenario
    model_store = store.copy()
    expected = run_model(model_store, rows, config)
    engine = run_engine(store, rows, config)
    for i, (want, got) in enumerate(zip(expected, engine.results, strict=True)):
        assert dataclasses.asdict(got) == dataclasses.asdict(want), f"row {i}: {rows[i]}"
    want_frames = model_store_to_frames(model_store)
    for name, frame in want_frames.items():
        assert engine.frames[name].rows() == frame.rows(), name
    assert model_store.invariant_violations(config) == []


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_dry_run_changes_nothing_and_decides_the_same(scenario):
    config, store, rows = scenario
    real = run_engine(store, rows, config)
    dry = run_engine(store, rows, config, dry_run=True)
    assert dry.results == real.results
    assert {n: f.rows() for n, f in dry.frames.items()} == {
        n: f.rows() for n, f in model_store_to_frames(store).items()
    }
