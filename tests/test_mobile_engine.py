"""`[mobile]` end to end: config keys, the engine against the model, store init, the store/config boundary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ORG, ROOT
from engine_harness import run_engine
from model import ModelStore, model_store_to_frames, run_model
from pipeline.cli import main
from pipeline.config import MobileCountries, load_config, parse_config
from pipeline.values.mobile import read_mobile
from test_engine_properties import BASE_CONFIG

ORG_MOBILE = ROOT / "sample_data" / "org.toml"
SNAPSHOT = ROOT / "sample_data" / "snapshot"
CONFIG = dataclasses.replace(parse_config(BASE_CONFIG), mobile=MobileCountries("IN", ("SG",)))


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_unknown_region_is_refused_naming_the_key(tmp_path):
    for table, key in [
        ('[mobile]\ndefault_country = "XX"\n', "mobile.default_country"),
        ('[mobile]\ndefault_country = "IN"\nother_countries = ["SG", "ZZ"]\n', "mobile.other_countries[1]"),
        ('[mobile]\ndefault_country = "in"\n', "mobile.default_country"),
        ('[mobile]\ndefault_country = "IN"\ncountry = "SG"\n', "mobile.country"),
    ]:
        path = tmp_path / "org.toml"
        path.write_text(ORG.read_text() + "\n" + table)
        result = invoke(
            "validate", "--config", path, "--reports", tmp_path / "r", ROOT / "sample_data/requests/01_identifiers.csv"
        )
        assert result.exit_code == 2, result.output
        assert f"key '{key}'" in result.output


def store_of(*identifiers: tuple[int, str, str, str, str], types: dict[int, str] | None = None) -> ModelStore:
    ids = {i[0] for i in identifiers} | {9}
    customers: dict[int, tuple[str, int | None, str]] = {
        c: ("ACTIVE", None, (types or {}).get(c, "LOYALTY")) for c in ids
    }
    return ModelStore(customers, set(identifiers) | {(9, "LINE", "", "line", "L9")}, {})


def row(customer: int, source: str, account: str, action: str, value: str) -> dict[str, str | None]:
    return {
        "customer_id": str(customer),
        "source": source,
        "account_id": account,
        "action": action,
        "id_type": "mobile",
        "id_value": value,
    }


def both(store: ModelStore, rows: list[dict[str, str | None]]):
    model_store = store.copy()
    expected = run_model(model_store, rows, CONFIG)
    run = run_engine(store, rows, CONFIG)
    assert run.results == expected
    for name, frame in model_store_to_frames(model_store).items():
        assert run.frames[name].rows() == frame.rows(), name
    return expected


def test_national_number_meets_stored_international_one_unchanged():
    results = both(
        store_of((1, "INSTORE", "", "mobile", "919876543210")), [row(1, "INSTORE", "", "add", "98765 43210")]
    )
    assert (results[0].outcome, results[0].warnings, results[0].id_value) == ("unchanged", (8071,), "919876543210")


def test_national_number_taken_in_scope():
    store = store_of((1, "INSTORE", "", "mobile", "919876543210"), (2, "INSTORE", "", "email", "b@x.co"))
    results = both(store, [row(2, "INSTORE", "", "add", "098765-43210")])
    assert (results[0].error_code, results[0].error_field) == (8008, "id_value")


def test_national_number_merges_across_scopes():
    store = store_of((1, "INSTORE", "", "mobile", "6581234567"), (2, "LINE", "", "line", "L2"))
    results = both(store, [row(2, "WECHAT", "WX-MAIN", "add", "8123 4567")])
    assert (results[0].outcome, results[0].survivor_id, results[0].victim_id) == ("merged", 1, 2)


def test_remove_and_lookup_by_national_number():
    store = store_of((1, "INSTORE", "", "mobile", "919876543210"), (1, "INSTORE", "", "email", "a@x.co"))
    rows: list[dict[str, str | None]] = [
        {
            "lookup_type": "mobile",
            "lookup_value": "+91 98765 43210",
            "source": "INSTORE",
            "action": "add",
            "id_type": "externalId",
            "id_value": "E1",
        },
        row(1, "INSTORE", "", "remove", "9876543210"),
        row(1, "INSTORE", "", "add", "12345"),
    ]
    results = both(store, rows)
    assert [r.ok for r in results] == [True, True, False] and results[2].error_code == 8056


def engine_only(store: ModelStore, rows: list[dict[str, str | None]], config=CONFIG):
    """The engine's results and identifiers (values the reference model does not read yet, see
    tests/mobile_reference.py: the package's reading of a value as written)."""
    run = run_engine(store, rows, config)
    held = {(i[0], i[1], i[2], i[4]) for i in run.frames["identifiers"].rows() if i[3] == "mobile"}
    return run.results, held


def test_repeated_plus_and_00_after_plus_add_as_the_package_reads_them():
    """`++6591000000` and `+006591000296` are valid SG numbers to the package (with IN first, the `00`
    after the `+` is IN's international prefix): an add stores their E.164 digits, no 8056."""
    store = store_of((2, "INSTORE", "", "email", "b@x.co"))
    rows = [row(2, "INSTORE", "", "add", "++6591000000"), row(2, "LINE", "", "add", "+006591000296")]
    results, held = engine_only(store, rows)
    assert [(r.ok, r.outcome, r.error_code, r.id_value) for r in results] == [
        (True, "applied", None, "6591000000"),
        (True, "applied", None, "6591000296"),
    ]
    assert held == {(2, "INSTORE", "", "6591000000"), (2, "LINE", "", "6591000296")}
    # the same values again meet what is stored: unchanged (8071)
    results, _ = engine_only(store_of(*[(c, src, acc, "mobile", v) for c, src, acc, v in held]), rows)
    assert [(r.outcome, r.warnings) for r in results] == [("unchanged", (8071,)), ("unchanged", (8071,))]


def test_repeated_plus_and_00_after_plus_remove_the_stored_number():
    store = store_of(
        (1, "INSTORE", "", "mobile", "6591000296"),
        (1, "LINE", "", "mobile", "6591000000"),
        (1, "INSTORE", "", "email", "a@x.co"),
    )
    rows = [row(1, "INSTORE", "", "remove", "+006591000296"), row(1, "LINE", "", "remove", "++6591000000")]
    results, held = engine_only(store, rows)
    assert [(r.ok, r.error_code, r.id_value) for r in results] == [
        (True, None, "6591000296"),
        (True, None, "6591000000"),
    ]
    assert held == set()


def test_00_after_plus_is_read_with_the_default_country_only():
    """Written with `+`, a value is read once, with the default country: with SG alone, `006` is SG's
    international prefix and `+591000296` is no valid number (8056); `++65...` needs no prefix."""
    sg = dataclasses.replace(CONFIG, mobile=MobileCountries("SG"))
    store = store_of((2, "INSTORE", "", "email", "b@x.co"))
    rows = [row(2, "INSTORE", "", "add", "+006591000296"), row(2, "INSTORE", "", "add", "++6591000000")]
    results, held = engine_only(store, rows, sg)
    assert [(r.ok, r.error_code) for r in results] == [(False, 8056), (True, None)]
    assert held == {(2, "INSTORE", "", "6591000000")}


NUMBERS = ["919876543210", "6581234567", "919812345678"]
WRITTEN = {
    "919876543210": ["98765 43210", "+91 98765-43210", "0091 9876543210", "09876543210", "919876543210"],
    "6581234567": ["8123 4567", "+65 8123 4567", "006581234567", "6581234567"],
    "919812345678": ["9812345678", "+919812345678"],
}
SCOPES = [("INSTORE", ""), ("WECHAT", "WX-MAIN"), ("WECHAT", "WX-CN2"), ("LINE", "")]


@st.composite
def mobile_batches(draw):
    identifiers = set()
    taken = set()
    for cid in range(1, draw(st.integers(2, 5)) + 1):
        for scope in draw(st.lists(st.sampled_from(SCOPES), max_size=2, unique=True)):
            value = draw(st.sampled_from(NUMBERS))
            if (scope, value) not in taken:
                taken.add((scope, value))
                identifiers.add((cid, *scope, "mobile", value))
    customers = sorted({i[0] for i in identifiers} | {1, 2})
    types = {c: draw(st.sampled_from(["LOYALTY", "LOYALTY", "CAMPAIGN"])) for c in customers}
    store = store_of(*identifiers, types=types)
    rows: list[dict[str, str | None]] = []
    for _ in range(draw(st.integers(1, 8))):
        source, account = draw(st.sampled_from(SCOPES))
        number = draw(st.sampled_from(NUMBERS))
        value = draw(st.sampled_from([*WRITTEN[number], "12345", "+44 20"]))
        action = draw(st.sampled_from(["add", "add", "remove"]))
        rows.append(row(draw(st.sampled_from(customers)), source, account, action, value))
    return store, rows


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mobile_batches())
def test_engine_equals_model_with_mobile_countries(batch):
    store, rows = batch
    both(store, rows)


def snapshot_with(tmp_path: Path, extra: list[str]) -> Path:
    folder = tmp_path / "snap"
    folder.mkdir(parents=True)
    for name in ("customers", "cards"):
        (folder / f"{name}.csv").write_text((SNAPSHOT / f"{name}.csv").read_text())
    (folder / "identifiers.csv").write_text((SNAPSHOT / "identifiers.csv").read_text() + "\n".join(extra) + "\n")
    return folder


def stored(store: Path, customer: int) -> list[str]:
    with duckdb.connect(str(store), read_only=True) as con:
        sql = "SELECT id_value FROM identifiers WHERE customer_id = ? AND id_type = 'mobile' ORDER BY 1"
        return [r[0] for r in con.execute(sql, [customer]).fetchall()]


def test_store_init_with_config_reads_snapshot_mobiles_and_refuses_collisions(tmp_path):
    snapshot = snapshot_with(tmp_path, ["1030,LINE,,mobile,138 0000 0130"])
    store = tmp_path / "s.duckdb"
    assert invoke("store", "init", store, "--snapshot", snapshot, "--config", ORG_MOBILE).exit_code == 0
    assert stored(store, 1030) == ["8613800000030", "8613800000130"]
    clash = snapshot_with(tmp_path / "b", ["1031,INSTORE,,mobile,138 0000 0001"])
    (clash / "customers.csv").write_text((SNAPSHOT / "customers.csv").read_text() + "1031,ACTIVE,,LOYALTY\n")
    refused = invoke("store", "init", tmp_path / "t.duckdb", "--snapshot", clash, "--config", ORG_MOBILE)
    assert refused.exit_code == 3 and not (tmp_path / "t.duckdb").exists()
    report = pl.read_csv(tmp_path / "t.duckdb.init-report.csv")
    assert "held by customer_id 1001, 1031" in report["detail"].to_list()[0]


def test_sample_org_reads_the_sample_snapshot_as_stored_and_national_rows_meet_it(tmp_path):
    """The sample org's [mobile] fits the sample: every snapshot mobile is a valid CN number as stored
    (read by the package itself), and each national-number row has the outcome its row_id names."""
    countries = load_config(ORG_MOBILE).mobile
    assert countries == MobileCountries("CN", ("HK",))
    identifiers = pl.read_csv(SNAPSHOT / "identifiers.csv", infer_schema=False).filter(pl.col("id_type") == "mobile")
    mobiles = identifiers.get_column("id_value").to_list()
    assert len(mobiles) == 18 and [read_mobile(v, countries) for v in mobiles] == mobiles
    store = tmp_path / "s.duckdb"
    assert invoke("store", "init", store, "--snapshot", SNAPSHOT, "--config", ORG_MOBILE).exit_code == 0
    with duckdb.connect(str(store), read_only=True) as con:
        held = con.sql("SELECT id_value FROM identifiers WHERE id_type = 'mobile' ORDER BY ALL").fetchall()
    assert [v for (v,) in held] == sorted(mobiles)
    requests = ROOT / "sample_data" / "mobile" / "national_numbers.csv"
    result = invoke("run", "--store", store, "--config", ORG_MOBILE, "--reports", tmp_path / "r", requests)
    assert result.exit_code == 1, result.output
    success = pl.read_csv(tmp_path / "r" / "success.csv", infer_schema=False)
    errors = pl.read_csv(tmp_path / "r" / "errors.csv", infer_schema=False)
    assert success.select("row_id", "outcome", "warning_codes").sort("row_id").rows() == [
        ("M-01-national-meets-stored-unchanged", "unchanged", "8071"),
        ("M-03-lookup-by-national-number", "applied", ""),
        ("M-04-national-merges-across-scopes", "merged", "8051"),
        ("M-05-trunk-prefix-and-spaces", "applied", ""),
    ]
    assert success.filter(pl.col("row_id").str.starts_with("M-05")).get_column("id_value").to_list() == [
        "8613800000130"
    ]
    assert errors.select("row_id", "error_code").sort("row_id").rows() == [
        ("M-02-national-taken-in-scope", "8008"),
        ("M-06-not-a-number-of-CN-or-HK", "8056"),
    ]
    assert "not a valid number of CN or HK" in errors.filter(pl.col("error_code") == "8056")["error_message"][0]


def test_plain_store_is_refused_until_set_config_rereads_its_mobiles(tmp_path):
    snapshot = snapshot_with(tmp_path, ["1030,LINE,,mobile,138 0000 0130"])
    store = tmp_path / "s.duckdb"
    assert invoke("store", "init", store, "--snapshot", snapshot).exit_code == 0
    assert stored(store, 1030) == ["13800000130", "8613800000030"]
    requests = ROOT / "sample_data" / "mobile" / "national_numbers.csv"
    for extra in (["--dry-run"], []):
        refused = invoke("run", "--store", store, "--config", ORG_MOBILE, "--reports", tmp_path / "r", *extra, requests)
        assert refused.exit_code == 3 and "plain rule" in refused.output and "set-config" in refused.output
    changed = invoke("store", "set-config", store, "--config", ORG_MOBILE)
    assert changed.exit_code == 0 and "1 distinct value(s) changed" in changed.output
    assert stored(store, 1030) == ["8613800000030", "8613800000130"]
    assert invoke("run", "--store", store, "--config", ORG_MOBILE, "--reports", tmp_path / "r", requests).exit_code == 1
    audit = invoke("store", "audit", store, "--config", ORG_MOBILE, "--report", tmp_path / "a.csv")
    assert audit.exit_code == 0, audit.output


def test_set_config_refuses_collisions_and_changes_nothing(tmp_path):
    snapshot = snapshot_with(tmp_path, ["1031,INSTORE,,mobile,138 0000 0001"])
    (snapshot / "customers.csv").write_text((SNAPSHOT / "customers.csv").read_text() + "1031,ACTIVE,,LOYALTY\n")
    store = tmp_path / "s.duckdb"
    assert invoke("store", "init", store, "--snapshot", snapshot, "--config", ORG).exit_code == 0
    before = stored(store, 1031)
    report = tmp_path / "collisions.csv"
    refused = invoke("store", "set-config", store, "--config", ORG_MOBILE, "--report", report)
    assert refused.exit_code == 3 and "nothing was changed" in refused.output
    assert "1001, 1031" in pl.read_csv(report)["detail"][0]
    assert stored(store, 1031) == before == ["13800000001"]
    # still bound to the plain config: a run with it goes on, one with [mobile] is refused
    requests = ROOT / "sample_data" / "requests" / "01_identifiers.csv"
    assert invoke("run", "--store", store, "--config", ORG_MOBILE, "--reports", tmp_path / "r", requests).exit_code == 3


def test_audit_with_mobile_config_names_stored_mobiles_read_otherwise(tmp_path):
    snapshot = snapshot_with(tmp_path, ["1030,LINE,,mobile,138 0000 0130"])
    store = tmp_path / "s.duckdb"
    assert invoke("store", "init", store, "--snapshot", snapshot).exit_code == 0
    assert invoke("store", "audit", store, "--config", ORG, "--report", tmp_path / "plain.csv").exit_code == 0
    audit = invoke("store", "audit", store, "--config", ORG_MOBILE, "--report", tmp_path / "a.csv")
    assert audit.exit_code == 1 and "mobile_read_with_countries: 1" in audit.output
    assert "reads as 8613800000130" in pl.read_csv(tmp_path / "a.csv")["detail"][0]
