"""Hand-written cases for the reference model (tests/model.py): one per code, plus in-run dependencies.

Results are asserted as flat tuples: (row, False, error_code, error_field) for a failed row and
(row, True, outcome, warnings) for a succeeded one, rows numbered from 1.
"""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from model import ModelStore, model_store_to_frames, normalise, run_model, store_from_snapshot_dir
from pipeline.config import parse_config

ORG = parse_config(
    tomllib.loads((ROOT / "tests" / "cases" / "org-plain.toml").read_text()), path="tests/cases/org-plain.toml"
)
REUSE = dataclasses.replace(ORG, campaign_identifier_reuse=True)
NO_MERGE = dataclasses.replace(ORG, merge_enabled=False)
ONE_MERGE = dataclasses.replace(ORG, max_merges_per_survivor_per_run=1)


def base_store() -> ModelStore:
    return ModelStore(
        customers={
            1: ("ACTIVE", None, "LOYALTY"),
            2: ("ACTIVE", None, "LOYALTY"),
            3: ("ACTIVE", None, "LOYALTY"),
            4: ("MERGED", 1, "LOYALTY"),
            5: ("ACTIVE", None, "CAMPAIGN"),
            6: ("ACTIVE", None, "LOYALTY"),
            7: ("ACTIVE", None, "LOYALTY"),
            8: ("ACTIVE", None, "LOYALTY"),
            9: ("ACTIVE", None, "LOYALTY"),
        },
        identifiers={
            (1, "INSTORE", "", "mobile", "13800000001"),
            (1, "INSTORE", "", "email", "a@x.com"),
            (2, "WECHAT", "WX-MAIN", "wechat", "wx2"),
            (2, "WECHAT", "WX-MAIN", "mobile", "13800000002"),
            (2, "INSTORE", "", "email", "two@x.com"),
            (3, "MOBILE_APP", "", "mobile", "13800000003"),
            (5, "LINE", "", "line", "ln5"),
            (5, "FACEBOOK", "", "email", "camp@x.com"),
            (6, "FACEBOOK", "", "fbId", "fb6"),
            (6, "LINE", "", "mobile", "13800000003"),
            (7, "INSTORE", "", "externalId", "ext7"),
            (8, "LINE", "", "line", "ln8"),
            (9, "FACEBOOK", "", "email", "nine@x.com"),
        },
        cards={
            "GLD0000000001": (101, None, "Not Issued"),
            "GLD0000000002": (101, 1, "Active"),
            "SLV00000001X": (102, None, "Not Issued"),
            "SLV00000002X": (102, 7, "Active"),
            "SLV00000003X": (102, None, "Not Issued"),
            "P-1": (103, None, "Not Issued"),
            "P-2": (103, None, "Not Issued"),
            "P-EXP": (103, None, "Expired"),
            "P-GOLD": (101, None, "Not Issued"),
            "SLV00000004X": (102, 6, "Active"),
        },
    )


def row(
    customer_id: str | None = "1",
    action: str = "add",
    source: str = "INSTORE",
    id_type: str = "mobile",
    id_value: str | None = "13900000000",
    **more: str | None,
) -> dict[str, str | None]:
    return {
        "customer_id": customer_id,
        "action": action,
        "source": source,
        "id_type": id_type,
        "id_value": id_value,
        **more,
    }


def card(
    customer_id: str = "1",
    action: str = "add",
    number: str = "GLD0000000001",
    series: str | None = "101",
    label: str | None = "Active",
    **more: str | None,
) -> dict[str, str | None]:
    return row(customer_id, action, "INSTORE", "cardnumber", number, series_id=series, status_label=label, **more)


def flat(results) -> list[tuple]:
    return [
        (i, True, r.outcome, r.warnings) if r.ok else (i, False, r.error_code, r.error_field)
        for i, r in enumerate(results, 1)
    ]


def run(rows, config=ORG, store: ModelStore | None = None):
    """Run rows on a store (the base one by default); invariants must hold, failed-only runs change nothing."""
    store = base_store() if store is None else store
    before = store.copy()
    results = run_model(store, rows, config)
    assert store.invariant_violations(config) == []
    if not any(r.ok for r in results):
        assert store == before
    return store, results


def one(r, config=ORG, store=None) -> tuple:
    """The flat result of a single row, with the row number dropped."""
    return flat(run([r], config, store)[1])[0][1:]


# ---- check stage, one code at a time


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (row(action=""), (False, 7001, "action")),
        (row(action="delete"), (False, 7002, "action")),
        (row(customer_id="3", action="  ADD "), (True, "applied", ())),
        (row(source=""), (False, 7001, "source")),
        (row(source="instore"), (False, 8003, "source")),
        (row(source="WECHAT"), (False, 8045, "account_id")),
        (row(source="WECHAT", account_id="WX-XX"), (False, 8127, "account_id")),
        (row(source="WECHAT", account_id="wx-main"), (False, 8127, "account_id")),
        (row(account_id="WX-MAIN"), (False, 8127, "account_id")),
        (row(customer_id=""), (False, 7003, "customer_id")),
        (row(customer_id=None, lookup_type="mobile"), (False, 7003, "customer_id")),
        (row(customer_id=None, lookup_value="13800000001"), (False, 7003, "customer_id")),
        (row(lookup_type="mobile", lookup_value="13800000001"), (False, 7003, "customer_id")),
        (row(customer_id="abc"), (False, 7001, "customer_id")),
        (row(customer_id="0"), (False, 7001, "customer_id")),
        (row(customer_id="-1"), (False, 7001, "customer_id")),
        (row(customer_id="+1"), (False, 7001, "customer_id")),
        (row(customer_id="1.0"), (False, 7001, "customer_id")),
        (row(customer_id="\u0661"), (False, 7001, "customer_id")),  # ARABIC-INDIC DIGIT ONE is not [0-9]
        (row(customer_id=str(2**63)), (False, 7001, "customer_id")),
        (row(customer_id="9" * 5000), (False, 7001, "customer_id")),
        (row(customer_id="0" * 5000 + "3"), (True, "applied", ())),
        (row(customer_id="-0"), (False, 7001, "customer_id")),
        (row(customer_id=str(2**63 - 1)), (False, 8015, "customer_id")),
        (row(customer_id=" 001 "), (False, 7006, "id_value")),  # customer 1, who has a mobile in INSTORE
        (row(customer_id=None, lookup_type="wechat", lookup_value="x"), (False, 7004, "lookup_type")),
        (row(customer_id=None, lookup_type="Mobile", lookup_value="x"), (False, 7004, "lookup_type")),
        (row(id_type=""), (False, 7001, "id_type")),
        (row(id_type="wechat"), (False, 7004, "id_type")),
        (row(id_type="Mobile"), (False, 7004, "id_type")),
        (row(id_value=" \t "), (False, 7001, "id_value")),
        (row(id_value=None), (False, 7001, "id_value")),
        (row(id_type="email", id_value="not-an-email"), (False, 8055, "id_value")),
        (row(id_type="email", id_value="a b@x.com"), (False, 8055, "id_value")),
        (row(id_type="email", id_value="a@x"), (False, 8055, "id_value")),
        (row(customer_id="3", id_type="email", id_value="b" * 249 + "@x.com"), (False, 8055, "id_value")),  # 255 chars
        (row(customer_id="3", id_type="email", id_value="b" * 248 + "@x.com"), (True, "applied", ())),
        (row(id_type="mobile", id_value="1234567"), (False, 8056, "id_value")),
        (row(id_type="mobile", id_value="1" * 16), (False, 8056, "id_value")),
        (row(id_type="mobile", id_value="139000000ab"), (False, 8056, "id_value")),
        (row(id_type="mobile", id_value="+-"), (False, 8056, "id_value")),  # normalises to ''
        (row(id_type="externalId", id_value="has space"), (False, 8064, "id_value")),
        (row(id_type="externalId", id_value="x" * 65), (False, 8064, "id_value")),
        (row(source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="a\x07b"), (False, 7001, "id_value")),
        (row(source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="w" * 129), (False, 7001, "id_value")),
        (row(id_type="mobile", id_value="000-000-000-000"), (False, 7005, "id_value")),  # 10 zeros once 00 goes
        (row(id_type="mobile", id_value="(123) 456.7890"), (False, 7005, "id_value")),
        (row(id_type="mobile", id_value="0000"), (False, 8056, "id_value")),  # format before blocked
        (row(customer_id="3", id_type="email", id_value="TEST@test.com"), (False, 7005, "id_value")),
        (row(customer_id="3", id_type="email", id_value="NoReply@x.com"), (False, 7005, "id_value")),
        (row(customer_id="3", id_type="externalId", id_value="N/A"), (False, 7005, "id_value")),
        (row(customer_id="3", id_type="externalId", id_value="n/a"), (True, "applied", ())),  # exact is case-sensitive
        (row(series_id="abc"), (False, 3004, "series_id")),
        (row(series_id="999"), (False, 3004, "series_id")),
        (row(series_id="101.0"), (False, 3004, "series_id")),
        (row(series_id="1" * 5000), (False, 3004, "series_id")),
        (row(series_id="+101"), (False, 3004, "series_id")),
        (row(customer_id="3", series_id="101"), (True, "applied", ())),  # a known series on an identifier row
        (row(status_label="Unknown"), (False, 8086, "status_label")),
        (row(status_label="active"), (False, 8086, "status_label")),
        (row(customer_id="3", status_label="Expired"), (True, "applied", ())),  # no 7011 on identifier rows
        (card(series=""), (False, 3004, "series_id")),
        (card(series=None), (False, 3004, "series_id")),
        (card(series="104"), (False, 3004, "series_id")),
        (card(series="0101"), (False, 3036, "id_value")),  # leading zeros: series 101
        (card(series="999", number="nonsense"), (False, 3004, "series_id")),  # no series, no format check
        (card(number="GLD123"), (False, 7001, "id_value")),
        (card(number="GLD000000000A"), (False, 7001, "id_value")),
        (card(number="SLV00000001"), (False, 7001, "id_value")),
        (card(number="SLV00000001X", series="102", label=""), (False, 8086, "status_label")),
        (card(label=None), (False, 8086, "status_label")),
        (card(label="Bogus"), (False, 8086, "status_label")),
        (card(label="Not Issued"), (False, 7011, "status_label")),
        (card(label="Blocked"), (False, 7011, "status_label")),
        (card(label="Expired"), (False, 7011, "status_label")),
        (card(action="remove", number="GLD0000000002", label="Active"), (False, 7011, "status_label")),
        (card(action="remove", number="GLD0000000002", label="Bogus"), (False, 8086, "status_label")),
        (card(action="remove", number="GLD0000000002", series="999"), (False, 3004, "series_id")),
        (
            card(action="remove", number="junk", series=None, label=None),
            (False, 3010, "id_value"),
        ),  # no format on remove
    ],
)
def test_check_codes(r, expected):
    assert one(r) == expected


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (row(action="bad", source="bad", customer_id="bad"), (False, 7002, "action")),
        (row(source="NOPE", account_id="x", customer_id="bad"), (False, 8003, "source")),
        (row(source="WECHAT", customer_id="bad", id_type="bad"), (False, 8045, "account_id")),
        (row(customer_id="abc", lookup_type="mobile"), (False, 7003, "customer_id")),
        (row(customer_id="abc", id_type="bad", id_value=""), (False, 7001, "customer_id")),
        (row(customer_id=None, lookup_type="bad", lookup_value="x", id_type="bad"), (False, 7004, "lookup_type")),
        (row(id_type="bad", id_value="", series_id="bad"), (False, 7004, "id_type")),
        (row(id_type="email", id_value="bad", series_id="bad", status_label="bad"), (False, 8055, "id_value")),
        (row(series_id="bad", status_label="bad"), (False, 3004, "series_id")),
        (card(number="bad", series="bad", label="bad"), (False, 3004, "series_id")),
        (card(number="bad", label="bad"), (False, 7001, "id_value")),
    ],
)
def test_check_precedence(r, expected):
    assert one(r) == expected


def test_blocked_card_number_precedes_unknown_series():
    config = dataclasses.replace(
        ORG,
        blocked_values={
            **ORG.blocked_values,
            "cardnumber": dataclasses.replace(ORG.blocked_values["mobile"], exact=frozenset({"P-BAD"})),
        },
    )
    assert one(card(number="P-BAD", series="999"), config) == (False, 7005, "id_value")
    assert one(card(number="P-BAD", series="103"), config) == (False, 7005, "id_value")


def test_removes_and_lookups_skip_format_and_blocked_rules():
    store = base_store()
    store.identifiers |= {(1, "MOBILE_APP", "", "mobile", "12"), (1, "MOBILE_APP", "", "externalId", "N/A")}
    rows = [
        row(
            customer_id=None,
            lookup_type="externalId",
            lookup_value="N/A",
            source="MOBILE_APP",
            action="remove",
            id_type="mobile",
            id_value="(1-2)",
        ),
        row(action="remove", source="MOBILE_APP", id_type="externalId", id_value=" N/A "),
        row(customer_id=None, lookup_type="mobile", lookup_value="12", source="INSTORE"),
    ]
    store, results = run(rows, store=store)
    assert flat(results) == [(1, True, "applied", ()), (2, True, "applied", ()), (3, False, 8015, "lookup_value")]
    assert results[0].id_value == "12" and results[0].resolved_customer_id == 1
    assert not any(i[:2] == (1, "MOBILE_APP") for i in store.identifiers)


# ---- resolve stage


@pytest.mark.parametrize(
    ("r", "expected", "resolved"),
    [
        (row(customer_id="99"), (False, 8015, "customer_id"), None),
        (row(customer_id=None, lookup_type="mobile", lookup_value="13899999999"), (False, 8015, "lookup_value"), None),
        (
            row(
                customer_id=None,
                lookup_type="mobile",
                lookup_value="+138-0000 (0001)",
                id_type="externalId",
                id_value="e1",
            ),
            (True, "applied", ()),
            1,
        ),
        (
            row(customer_id=None, lookup_type="email", lookup_value="A@X.COM", id_type="externalId", id_value="e1"),
            (True, "applied", ()),
            1,
        ),
        (
            row(customer_id=None, lookup_type="email", lookup_value="a@x.com", source="MOBILE_APP"),
            (False, 8015, "lookup_value"),
            None,
        ),  # another scope
        (
            row(customer_id=None, lookup_type="wechat", lookup_value="wx2", source="WECHAT", account_id="WX-CN2"),
            (False, 8015, "lookup_value"),
            None,
        ),  # another account
        (
            row(
                customer_id=None,
                lookup_type="cardnumber",
                lookup_value="GLD0000000002",
                source="FACEBOOK",
                id_type="fbId",
                id_value="fb1",
            ),
            (True, "applied", ()),
            1,
        ),
        (
            row(customer_id=None, lookup_type="cardnumber", lookup_value="GLD0000000001"),
            (False, 8015, "lookup_value"),
            None,
        ),  # an unheld card
        (row(customer_id="4", source="FACEBOOK", id_type="fbId", id_value="fb1"), (True, "applied", (91009,)), 1),
        (row(customer_id="4"), (False, 7006, "id_value"), 1),  # resolved, then failed at apply: no warning
    ],
)
def test_resolve(r, expected, resolved):
    result = run([r])[1][0]
    assert flat([result])[0][1:] == expected
    assert result.resolved_customer_id == resolved


# ---- apply stage: identifiers


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (row(id_value="+138 0000 0001"), (True, "unchanged", (8071,))),
        (row(id_type="email", id_value=" A@X.com "), (True, "unchanged", (8072,))),
        (row(customer_id="7", id_type="externalId", id_value="ext7"), (True, "unchanged", (8073,))),
        (
            row(customer_id="2", source="WECHAT", account_id="WX-MAIN", id_type="wechat", id_value="wx2"),
            (True, "unchanged", (8070,)),
        ),
        (row(customer_id="4", id_type="email", id_value="a@x.com"), (True, "unchanged", (8072, 91009))),
        (row(), (False, 7006, "id_value")),
        (row(customer_id="3", id_type="email", id_value="a@x.com"), (False, 8008, "id_value")),
        (row(source="FACEBOOK", id_type="email", id_value="camp@x.com"), (False, 8068, "id_value")),  # holder in S
        (row(source="MOBILE_APP", id_type="email", id_value="camp@x.com"), (False, 8068, "id_value")),
        (row(source="WECHAT", account_id="WX-MAIN", id_value="13800000003"), (False, 8074, "id_value")),
        (row(customer_id="7", source="MOBILE_APP", id_type="email", id_value="a@x.com"), (False, 8066, "id_value")),
        (
            row(customer_id="3", source="WECHAT", account_id="WX-MAIN", id_type="email", id_value="two@x.com"),
            (False, 8066, "id_value"),
        ),  # the clash comes from S alone
        (row(action="remove", id_value="13899999999"), (False, 7009, "id_value")),
        (row(customer_id="3", action="remove", id_value="13800000003"), (False, 7009, "id_value")),  # other scope
        (row(customer_id="7", action="remove", id_type="externalId", id_value="ext7"), (False, 7010, "id_value")),
        (row(action="remove", id_type="email", id_value="A@x.com"), (True, "applied", ())),
    ],
)
def test_apply_identifier_codes(r, expected):
    assert one(r) == expected


def test_merge_moves_identifiers_and_cards():
    store, results = run([row(customer_id="6", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2")])
    assert flat(results) == [(1, True, "merged", (8051,))]
    assert (results[0].survivor_id, results[0].victim_id, results[0].resolved_customer_id) == (2, 6, 6)
    assert store.customers[6] == ("MERGED", 2, "LOYALTY")
    assert {i for i in store.identifiers if i[0] in (2, 6)} == {
        (2, "WECHAT", "WX-MAIN", "wechat", "wx2"),
        (2, "WECHAT", "WX-MAIN", "mobile", "13800000002"),
        (2, "INSTORE", "", "email", "two@x.com"),
        (2, "WECHAT", "WX-CN2", "wechat", "wx2"),
        (2, "FACEBOOK", "", "fbId", "fb6"),
        (2, "LINE", "", "mobile", "13800000003"),
    }
    assert store.cards["SLV00000004X"] == (102, 2, "Active")


def test_merge_disabled():
    _, results = run(
        [row(customer_id="6", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2")], NO_MERGE
    )
    assert flat(results) == [(1, False, 7007, "id_value")]


def test_merge_ignores_card_limits():
    store = base_store()
    store.cards["GLD0000000001"] = (101, 6, "Active")  # 6 and 2 both hold a GOLD card; GOLD allows 1
    store.cards["GLD0000000003"] = (101, 2, "Blocked")
    store.cards["P-1"] = (103, 2, "Issued")
    store.cards["P-2"] = (103, 2, "Issued")  # 2 is at the org maximum of 3 already
    store, results = run(
        [row(customer_id="6", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2")], store=store
    )
    assert flat(results) == [(1, True, "merged", (8051,))]
    assert sorted(n for n, (_, holder, _) in store.cards.items() if holder == 2) == [
        "GLD0000000001",
        "GLD0000000003",
        "P-1",
        "P-2",
        "SLV00000004X",
    ]


def campaign_store() -> ModelStore:
    return ModelStore(
        customers={
            10: ("ACTIVE", None, "LOYALTY"),
            11: ("ACTIVE", None, "LOYALTY"),
            12: ("ACTIVE", None, "CAMPAIGN"),
            13: ("ACTIVE", None, "CAMPAIGN"),
        },
        identifiers={
            (10, "INSTORE", "", "mobile", "13700000010"),
            (11, "WECHAT", "WX-MAIN", "email", "z@x.com"),
            (12, "FACEBOOK", "", "email", "z@x.com"),
            (12, "LINE", "", "line", "l12"),
            (13, "MOBILE_APP", "", "email", "z@x.com"),
        },
        cards={},
    )


def test_campaign_holders_warning_applied():
    store, results = run(
        [
            row(customer_id="11", source="FACEBOOK", id_type="email", id_value="q@x.com"),
            row(customer_id="12", source="LINE", id_type="line", id_value="l12"),
            row(customer_id="10", source="LINE", id_type="line", id_value="l12"),
        ],
        REUSE,
        campaign_store(),
    )
    assert flat(results) == [(1, True, "applied", ()), (2, True, "unchanged", (8070,)), (3, True, "applied", (8068,))]
    assert (12, "LINE", "", "line", "l12") not in store.identifiers
    assert (10, "LINE", "", "line", "l12") in store.identifiers
    assert store.customers[12] == ("ACTIVE", None, "CAMPAIGN")  # left with its email only


def test_campaign_holder_in_scope_loses_value_on_merge():
    # 12 holds z@x.com in FACEBOOK (the row's scope) and 13 in MOBILE_APP; 11 is the one LOYALTY holder
    store, results = run(
        [row(customer_id="10", source="FACEBOOK", id_type="email", id_value="Z@x.com")], REUSE, campaign_store()
    )
    assert flat(results) == [(1, True, "merged", (8051, 8068))]
    assert (results[0].survivor_id, results[0].victim_id) == (11, 10)
    assert {i for i in store.identifiers if i[3:] == ("email", "z@x.com")} == {
        (11, "WECHAT", "WX-MAIN", "email", "z@x.com"),
        (11, "FACEBOOK", "", "email", "z@x.com"),
    }
    assert (11, "INSTORE", "", "mobile", "13700000010") in store.identifiers
    _, results = run(
        [row(customer_id="10", source="FACEBOOK", id_type="email", id_value="Z@x.com")], ORG, campaign_store()
    )
    assert flat(results) == [(1, False, 8068, "id_value")]


def test_campaign_target_keeps_its_own_holdings():
    store, results = run(
        [row(customer_id="13", source="LINE", id_type="line", id_value="l12")], REUSE, campaign_store()
    )
    assert flat(results) == [(1, True, "applied", (8068,))]
    assert (13, "MOBILE_APP", "", "email", "z@x.com") in store.identifiers


# ---- apply stage: cards


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (card(number="GLD0000009999"), (False, 3010, "id_value")),
        (card(number="P-GOLD", series="103"), (False, 3000, "id_value")),
        (card(number="P-EXP", series="103"), (False, 8087, "id_value")),
        (card(action="remove", number="P-EXP", label=None), (False, 8087, "id_value")),
        (card(number="GLD0000000002"), (True, "unchanged", (3012,))),
        (card(customer_id="4", number="GLD0000000002"), (True, "unchanged", (3012, 91009))),
        (card(number="GLD0000000002", label="Issued"), (True, "applied", ())),
        (card(customer_id="3", number="GLD0000000002"), (False, 3027, "id_value")),
        (card(number="GLD0000000001"), (False, 3036, "id_value")),
        (card(customer_id="3", action="remove", number="GLD0000000002", label=None), (False, 3031, "id_value")),
        (card(action="remove", number="GLD0000000001", label=None), (False, 3031, "id_value")),
        (card(customer_id="3", action="remove", number="GLD0000000009", label=None), (False, 3010, "id_value")),
        (card(customer_id="3", number="P-", series="103"), (False, 3010, "id_value")),  # 'P-' fits series 103
    ],
)
def test_apply_card_codes(r, expected):
    assert one(r) == expected


def test_org_card_limit():
    store, results = run(
        [
            card(number="SLV00000001X", series="102"),
            card(number="SLV00000003X", series="102"),
            card(number="P-1", series="103"),
            card(customer_id="3", number="P-1", series="103", label="Issued"),
            card(customer_id="3", number="P-2", series="103", label="Issued"),
            card(customer_id="3", number="GLD0000000001", series="101", label="Issued"),
        ]
    )
    assert flat(results) == [
        (1, True, "applied", ()),
        (2, True, "applied", ()),
        (3, False, 3039, "id_value"),
        (4, True, "applied", ()),
        (5, True, "applied", ()),
        (6, True, "applied", ()),
    ]
    assert store.cards["P-1"] == (103, 3, "Issued")
    _, results = run(
        [card(customer_id="3", number=n, series="103", label="Issued") for n in ("P-1", "P-2", "P-3")],
        store=dataclasses.replace(base_store(), cards={**base_store().cards, "P-3": (103, None, "x")}),
    )
    assert flat(results)[2] == (3, False, 3036, "id_value")  # series 103 allows 2


def test_suspended_cards_count_and_closed_do_not():
    store = base_store()
    store.cards["GLD0000000002"] = (101, 1, "Blocked")
    assert one(card(number="GLD0000000001"), store=store) == (False, 3036, "id_value")
    store.cards["GLD0000000002"] = (101, 1, "Returned")
    assert one(card(number="GLD0000000001"), store=store) == (True, "applied", ())


def test_delink_then_link_again():
    store, results = run(
        [
            card(action="remove", number="GLD0000000002", label=None),
            card(customer_id="3", number="GLD0000000002"),
            card(customer_id="3", action="remove", number="GLD0000000002", label="Returned", series="101"),
            card(customer_id="6", number="GLD0000000002", label="Issued"),
        ]
    )
    assert flat(results) == [(i, True, "applied", ()) for i in range(1, 5)]
    assert store.cards["GLD0000000002"] == (101, 6, "Issued")
    store, _ = run([card(action="remove", number="GLD0000000002", label=None)])
    assert store.cards["GLD0000000002"] == (101, None, "Not Issued")


# ---- replace: "this customer's value of T in S is now V"


def replace(
    customer_id: str = "1", id_type: str = "email", id_value: str = "new@x.com", source: str = "INSTORE", **more: str
) -> dict[str, str | None]:
    return row(customer_id, "replace", source, id_type, id_value, **more)


@pytest.mark.parametrize(
    ("r", "expected", "replaced"),
    [
        (replace(id_value=" A@X.com "), (True, "unchanged", (8072,)), None),  # C holds V: as add step 1
        (replace(id_type="mobile", id_value="+138 0000 0001"), (True, "unchanged", (8071,)), None),
        (replace("7"), (True, "applied", ()), None),  # no email of 7 in INSTORE: exactly an add
        (replace(), (True, "applied", ()), "a@x.com"),  # W taken away, V added
        (replace(id_type="mobile", id_value="13911112222"), (True, "applied", ()), "13800000001"),
        (replace(id_value="two@x.com"), (False, 8008, "id_value"), None),  # V fails: nothing changes
        (replace(source="FACEBOOK", id_value="camp@x.com"), (False, 8068, "id_value"), None),
        (
            replace(source="WECHAT", account_id="WX-MAIN", id_type="mobile", id_value="13800000003"),
            (False, 8074, "id_value"),
            None,
        ),
        (card(action="replace"), (False, 7002, "action"), None),
        (replace(replaces="other@x.com"), (False, 7009, "id_value"), None),  # a call line's W is not C's
        (replace("7", replaces="a@x.com"), (False, 7009, "id_value"), None),  # C holds no value of T in S at all
        (replace(id_value="a@x.com", replaces="new@x.com"), (False, 7009, "id_value"), None),  # before step 1
        (replace(replaces=" A@x.COM "), (True, "applied", ()), "a@x.com"),  # W normalised as a remove's value
        (replace(id_value="a@x.com", replaces="a@x.com"), (True, "unchanged", (8072,)), None),
        (replace("4"), (True, "applied", (91009,)), "a@x.com"),  # the target followed to 1
    ],
)
def test_replace_branches(r, expected, replaced):
    store, results = run([r])
    assert flat(results)[0][1:] == expected
    assert results[0].replaced_value == replaced
    if replaced is not None:
        value = normalise(r["id_type"], r["id_value"].strip())
        assert (1 if r["customer_id"] == "4" else int(r["customer_id"]), "INSTORE", "", r["id_type"], value) in (
            store.identifiers
        )
        assert not any(i[3:] == (r["id_type"], replaced) for i in store.identifiers)


def test_replace_that_fails_keeps_the_old_value():
    store, results = run([replace(id_value="two@x.com"), replace(id_value="camp@x.com", source="FACEBOOK")])
    assert [r.ok for r in results] == [False, False]
    assert store == base_store()
    _, results = run([replace("6", source="LINE", id_type="mobile", id_value="13800000002")], NO_MERGE)
    assert flat(results) == [(1, False, 7007, "id_value")]  # V needs a merge: W stays where it was


def replace_merge_store() -> ModelStore:
    """1 holds an email in INSTORE (W) and a line id; 2 holds the new email V in FACEBOOK only."""
    return ModelStore(
        customers={1: ("ACTIVE", None, "LOYALTY"), 2: ("ACTIVE", None, "LOYALTY"), 5: ("ACTIVE", None, "CAMPAIGN")},
        identifiers={
            (1, "INSTORE", "", "email", "old@x.com"),
            (1, "LINE", "", "line", "l1"),
            (2, "FACEBOOK", "", "email", "v@x.com"),
            (5, "MOBILE_APP", "", "email", "v@x.com"),
        },
        cards={"P-1": (103, 1, "Issued")},
    )


def test_replace_merges_once_the_old_value_is_gone():
    store, results = run([replace(id_value="v@x.com")], REUSE, replace_merge_store())
    assert flat(results) == [(1, True, "merged", (8051, 8068))]
    assert (results[0].survivor_id, results[0].victim_id, results[0].replaced_value) == (2, 1, "old@x.com")
    assert store.customers[1] == ("MERGED", 2, "LOYALTY")
    assert store.identifiers == {  # W was taken away, not moved; the campaign holder lost V
        (2, "FACEBOOK", "", "email", "v@x.com"),
        (2, "LINE", "", "line", "l1"),
        (2, "INSTORE", "", "email", "v@x.com"),
    }
    assert store.cards["P-1"] == (103, 2, "Issued")
    _, results = run([replace(id_value="v@x.com")], ORG, replace_merge_store())
    assert flat(results) == [(1, False, 8068, "id_value")]  # reuse off: V's code, nothing changed


def test_replace_scope_clash_and_limit_are_v_s():
    store = replace_merge_store()
    store.identifiers.add((2, "LINE", "", "mobile", "13800000009"))
    _, results = run([replace(id_value="v@x.com")], REUSE, store)
    assert flat(results) == [(1, False, 8066, "id_value")]
    zero = dataclasses.replace(REUSE, max_merges_per_survivor_per_run=0)
    _, results = run([replace(id_value="v@x.com")], zero, replace_merge_store())
    assert flat(results) == [(1, False, 7008, "id_value")]


def test_replaced_value_is_free_for_later_rows_and_replace_again():
    rows = [
        row(customer_id="9", id_type="email", id_value="a@x.com"),
        replace(),
        row(customer_id="9", id_type="email", id_value="a@x.com"),
        replace(id_value="third@x.com", replaces="new@x.com"),
        replace(id_value="fourth@x.com", replaces="new@x.com"),
        row(customer_id=None, lookup_type="email", lookup_value="third@x.com", action="replace", id_type="email",
            id_value="fifth@x.com"),
    ]  # fmt: skip
    store, results = run(rows)
    assert flat(results) == [
        (1, False, 8008, "id_value"),
        (2, True, "applied", ()),
        (3, True, "applied", ()),
        (4, True, "applied", ()),
        (5, False, 7009, "id_value"),
        (6, True, "applied", ()),
    ]
    assert [r.replaced_value for r in results] == [None, "a@x.com", None, "new@x.com", None, "third@x.com"]
    assert {i for i in store.identifiers if i[3] == "email" and i[1] == "INSTORE"} == {
        (1, "INSTORE", "", "email", "fifth@x.com"),
        (2, "INSTORE", "", "email", "two@x.com"),
        (9, "INSTORE", "", "email", "a@x.com"),
    }


# ---- dependencies between rows of one run


def test_identifier_moves_between_customers():
    rows = [
        row(customer_id="3", id_type="email", id_value="a@x.com"),
        row(action="remove", id_type="email", id_value="a@x.com"),
        row(customer_id="3", id_type="email", id_value="a@x.com"),
    ]
    store, results = run(rows)
    assert flat(results) == [(1, False, 8008, "id_value"), (2, True, "applied", ()), (3, True, "applied", ())]
    assert (3, "INSTORE", "", "email", "a@x.com") in store.identifiers


def test_row_addresses_customer_merged_earlier():
    rows = [
        row(customer_id="6", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2"),
        row(customer_id="6", source="MOBILE_APP", id_type="cuid", id_value="cu2"),
        row(
            customer_id=None,
            lookup_type="fbId",
            lookup_value="fb6",
            source="FACEBOOK",
            action="remove",
            id_type="fbId",
            id_value="fb6",
        ),
    ]
    store, results = run(rows)
    assert flat(results) == [(1, True, "merged", (8051,)), (2, True, "applied", (91009,)), (3, True, "applied", ())]
    assert [r.resolved_customer_id for r in results] == [6, 2, 2]
    assert (2, "MOBILE_APP", "", "cuid", "cu2") in store.identifiers
    assert not any(i[3] == "fbId" for i in store.identifiers)


def test_chain_of_merges():
    rows = [
        row(customer_id="3", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2"),
        row(customer_id="2", source="MOBILE_APP", id_type="email", id_value="nine@x.com"),
        row(customer_id="3", source="LINE", id_type="line", id_value="ln3"),
    ]
    store, results = run(rows)
    assert flat(results) == [(1, True, "merged", (8051,)), (2, True, "merged", (8051,)), (3, True, "applied", (91009,))]
    assert [(r.survivor_id, r.victim_id) for r in results[:2]] == [(2, 3), (9, 2)]
    assert store.customers[3] == ("MERGED", 2, "LOYALTY")
    assert store.customers[2] == ("MERGED", 9, "LOYALTY")
    assert results[2].resolved_customer_id == 9
    assert {i for i in store.identifiers if i[0] != 9 and i[0] in (2, 3)} == set()
    assert (9, "MOBILE_APP", "", "mobile", "13800000003") in store.identifiers


def test_lookup_by_value_added_in_the_run():
    rows = [
        row(
            customer_id=None,
            lookup_type="externalId",
            lookup_value="ext-1",
            source="MOBILE_APP",
            id_type="email",
            id_value="new@x.com",
        ),
        row(source="MOBILE_APP", id_type="externalId", id_value="ext-1"),
        row(
            customer_id=None,
            lookup_type="externalId",
            lookup_value="ext-1",
            source="MOBILE_APP",
            id_type="email",
            id_value="new@x.com",
        ),
    ]
    _, results = run(rows)
    assert flat(results) == [(1, False, 8015, "lookup_value"), (2, True, "applied", ()), (3, True, "applied", ())]
    assert results[2].resolved_customer_id == 1


def test_merge_limit_across_rows_and_runs():
    rows = [
        row(customer_id="3", source="WECHAT", account_id="WX-CN2", id_type="wechat", id_value="wx2"),
        row(customer_id="8", source="LINE", id_value="13800000002"),
    ]
    store, results = run(rows, ONE_MERGE)
    assert flat(results) == [(1, True, "merged", (8051,)), (2, False, 7008, "id_value")]
    _, results = run(rows[1:], ONE_MERGE, store)  # a new run starts counting again
    assert flat(results) == [(1, True, "merged", (8051,))]
    _, results = run(rows)
    assert flat(results) == [(1, True, "merged", (8051,)), (2, True, "merged", (8051,))]


def test_failed_rows_change_nothing_in_the_middle_of_a_run():
    rows = [
        row(customer_id="3", id_type="email", id_value="q@x.com"),
        row(customer_id="3", id_type="email", id_value="r@x.com"),
        card(customer_id="3", number="GLD0000000002"),
    ]
    store, results = run(rows)
    assert [r.ok for r in results] == [True, False, False]
    expected = base_store()
    expected.identifiers.add((3, "INSTORE", "", "email", "q@x.com"))
    assert store == expected


# ---- the store helpers


def test_invariant_violations_are_reported():
    store = ModelStore(
        customers={
            1: ("MERGED", None, "LOYALTY"),
            2: ("MERGED", 3, "LOYALTY"),
            3: ("MERGED", 2, "LOYALTY"),
            4: ("ACTIVE", None, "LOYALTY"),
            5: ("ACTIVE", 4, "CAMPAIGN"),
            6: ("ACTIVE", None, "OTHER"),
        },
        identifiers={
            (4, "INSTORE", "", "mobile", "1"),
            (5, "INSTORE", "", "mobile", "1"),
            (4, "INSTORE", "", "email", "a"),
            (4, "INSTORE", "", "email", "b"),
            (2, "LINE", "", "line", "x"),
            (4, "WECHAT", "", "wechat", "w"),
        },
        cards={"C1": (101, 3, "Active"), "C2": (101, 99, "Active")},
    )
    assert store.invariant_violations(ORG) == [
        "customer 1: MERGED must go with merged_into",
        "customer 1: merge chain does not end at an ACTIVE customer",
        "customer 2: merge chain does not end at an ACTIVE customer",
        "customer 3: merge chain does not end at an ACTIVE customer",
        "customer 5: MERGED must go with merged_into",
        "customer 6: bad status or type 'ACTIVE'/'OTHER'",
        "identifier ('INSTORE', '', 'mobile', '1') held more than once",
        "customer slot (4, 'INSTORE', '', 'email') holds several values",
        "identifier (2, 'LINE', '', 'line', 'x') not held by an ACTIVE customer",
        "identifier (4, 'WECHAT', '', 'wechat', 'w'): account_id does not fit the source",
        "card C1 held by 3, not an ACTIVE customer",
        "card C2 held by 99, not an ACTIVE customer",
    ]
    assert base_store().invariant_violations(ORG) == []


def test_copy_is_independent():
    store = base_store()
    copy = store.copy()
    copy.identifiers.clear()
    copy.customers[1] = ("MERGED", 2, "LOYALTY")
    copy.cards.clear()
    assert store == base_store()


def test_snapshot_round_trip(tmp_path):
    (tmp_path / "customers.csv").write_text(
        "customer_id,status,merged_into,customer_type\n1,ACTIVE,,LOYALTY\n 2 , MERGED , 1 ,LOYALTY\n"
    )
    (tmp_path / "identifiers.csv").write_text(
        "customer_id,source,account_id,id_type,id_value\n"
        "1,INSTORE,,mobile, +86 (138) 0000-0001 \n1,WECHAT,WX-MAIN,email,A@X.com\n1,LINE,,line, Ab \n"
    )
    (tmp_path / "cards.csv").write_text(
        "card_number,series_id,customer_id,status_label\nGLD0000000001,101,1,Active\n P-1 ,103,, Not Issued \n"
    )
    store = store_from_snapshot_dir(tmp_path)
    assert store == ModelStore(
        customers={1: ("ACTIVE", None, "LOYALTY"), 2: ("MERGED", 1, "LOYALTY")},
        identifiers={
            (1, "INSTORE", "", "mobile", "8613800000001"),
            (1, "WECHAT", "WX-MAIN", "email", "a@x.com"),
            (1, "LINE", "", "line", "Ab"),
        },
        cards={"GLD0000000001": (101, 1, "Active"), "P-1": (103, None, "Not Issued")},
    )
    frames = model_store_to_frames(store)
    assert frames["customers"].rows() == [(1, "ACTIVE", None, "LOYALTY"), (2, "MERGED", 1, "LOYALTY")]
    assert frames["identifiers"]["source"].to_list() == ["INSTORE", "LINE", "WECHAT"]
    assert frames["cards"].rows() == [("GLD0000000001", 101, 1, "Active"), ("P-1", 103, None, "Not Issued")]
    for name, frame in frames.items():
        (tmp_path / "out").mkdir(exist_ok=True)
        frame.write_parquet(tmp_path / "out" / f"{name}.parquet")
    assert store_from_snapshot_dir(tmp_path / "out") == store


def test_snapshot_values_equal_after_normalisation_are_refused(tmp_path):
    (tmp_path / "customers.csv").write_text("customer_id,status,merged_into,customer_type\n1,ACTIVE,,LOYALTY\n")
    (tmp_path / "identifiers.csv").write_text(
        "customer_id,source,account_id,id_type,id_value\n1,INSTORE,,email,a@x.com\n1,INSTORE,,email,A@x.com\n"
    )
    (tmp_path / "cards.csv").write_text("card_number,series_id,customer_id,status_label\n")
    with pytest.raises(ValueError, match="twice"):
        store_from_snapshot_dir(tmp_path)


def test_empty_store_frames():
    frames = model_store_to_frames(ModelStore({}, set(), {}))
    assert {name: frame.height for name, frame in frames.items()} == {"customers": 0, "identifiers": 0, "cards": 0}


FIELD_VALUES: dict[str, list[str | None]] = {
    "customer_id": [None, "", "1", "2", "3", "4", "6", "7", "8", "9", "99", "x"],
    "lookup_type": [None, "", "mobile", "email", "cardnumber", "fbId", "wechat"],
    "lookup_value": [None, "13800000001", "a@x.com", "GLD0000000002", "fb6", "wx2", "nine@x.com"],
    "source": ["INSTORE", "WECHAT", "MOBILE_APP", "FACEBOOK", "LINE", "NOPE"],
    "account_id": [None, "", "WX-MAIN", "WX-CN2"],
    "action": ["add", "remove", "ADD", "x"],
    "id_type": ["mobile", "email", "externalId", "wechat", "fbId", "line", "cardnumber"],
    "id_value": [
        "13800000001",
        "13800000002",
        "13800000003",
        "a@x.com",
        "nine@x.com",
        "two@x.com",
        "wx2",
        "fb6",
        "ext7",
        "ln5",
        "camp@x.com",
        "GLD0000000001",
        "GLD0000000002",
        "SLV00000001X",
        "P-1",
        "P-EXP",
    ],
    "series_id": [None, "", "101", "102", "103"],
    "status_label": [None, "", "Active", "Issued", "Not Issued", "Returned"],
}


@given(
    st.lists(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in FIELD_VALUES.items()}), max_size=25),
    st.sampled_from([ORG, REUSE, NO_MERGE, ONE_MERGE]),
)
@settings(max_examples=300, deadline=None)
def test_model_keeps_invariants_on_random_rows(rows, config):
    store = base_store()
    results = run_model(store, rows, config)
    assert len(results) == len(rows)
    assert store.invariant_violations(config) == []
    for r in results:
        assert r.ok == (r.error_code is None) == (r.outcome is not None)
        assert (r.outcome == "merged") == (r.survivor_id is not None) == (8051 in r.warnings)
        assert list(r.warnings) == sorted(set(r.warnings))
