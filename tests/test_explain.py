"""explain: every customer's, value's and card's explanation equals what the sequence of runs says.

Generated stores and batches dense with merges, chains, moves, campaign drops and card relinks go
through several real runs and a revert; the same runs go through the sequential model with an event
recorder (explain_model.py), and every explanation is compared with it: status, merge, chain, merged
customers, each identifier's origin, card histories, value holders over time, the runs that touched
each, with their number of changes. Masked output, a store with no runs, a busy store and the CLI forms
are tested after.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ORG, ROOT
from explain_model import History
from model import ModelStore, model_store_to_frames, store_from_snapshot_dir
from pipeline.cli import main
from pipeline.config import load_config, parse_config
from pipeline.faults import ENV_HOLD_AT, ENV_HOLD_UNTIL
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.lineage.explain import Explainer, Target
from pipeline.lineage.revert import revert_run
from pipeline.reports.pii import mask_value
from pipeline.run import run_batch
from pipeline.store.snapshot import init_store
from pipeline.tools.sample import generate_sample
from test_engine_properties import BASE_CONFIG, CARDS, SCOPES, TYPES_BY_SOURCE, VALUES, request_rows, stores

EXE = Path(sys.executable).parent / "loyalty-bulk"
RUNS = 4
"""Runs per scenario; the third is reverted before the fourth runs, so reverted changes and the revert
sit in the middle of the history."""


def toml_text(raw: dict[str, Any]) -> str:
    """The org config as TOML (only the shapes BASE_CONFIG uses)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    def table(name: str, body: dict[str, Any]) -> list[str]:
        lines = [f"[{name}]"] + [f"{json.dumps(k)} = {value(v)}" for k, v in body.items() if not isinstance(v, dict)]
        for k, v in body.items():
            if isinstance(v, dict):
                lines += table(f"{name}.{k}", v)
        return lines

    lines: list[str] = []
    for name, body in raw.items():
        if name == "card_series":
            for series in body:
                lines += ["[[card_series]]"] + [f"{k} = {value(v)}" for k, v in series.items()]
        else:
            lines += table(name, body)
    return "\n".join(lines) + "\n"


def write_snapshot(store: ModelStore, folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, frame in model_store_to_frames(store).items():
        frame.write_csv(folder / f"{name}.csv")


def write_requests(rows: list[dict[str, str | None]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(REQUEST_COLUMNS))
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({c: row.get(c) or "" for c in REQUEST_COLUMNS} | {"row_id": f"r{i + 1}"})


@st.composite
def changing_rows(draw, n_customers: int) -> dict[str, str]:
    """A valid row most of the time, on few values and cards, so that merges, chains, moves, campaign
    drops and card relinks are frequent (test_engine_properties' rows mostly fail checks)."""
    if draw(st.integers(0, 9)) < 3:
        number = draw(st.sampled_from(sorted(CARDS)))
        add = draw(st.integers(0, 2)) > 0
        return {
            "customer_id": str(draw(st.integers(1, n_customers))),
            "source": "INSTORE",
            "action": "add" if add else "remove",
            "id_type": "cardnumber",
            "id_value": number,
            "series_id": str(CARDS[number]),
            "status_label": draw(st.sampled_from(["Active", "Issued"])) if add else "",
        }
    source, account = draw(st.sampled_from(SCOPES))
    id_type = draw(st.sampled_from(TYPES_BY_SOURCE[source]))
    row = {
        "source": source,
        "account_id": account,
        "action": draw(st.sampled_from(["add"] * 5 + ["remove"] * 3 + ["replace"] * 2)),
        "id_type": id_type,
        "id_value": draw(st.sampled_from(VALUES[id_type])),
    }
    if draw(st.integers(0, 5)) == 0:
        lookup_type = draw(st.sampled_from(TYPES_BY_SOURCE[source]))
        return row | {"lookup_type": lookup_type, "lookup_value": draw(st.sampled_from(VALUES[lookup_type]))}
    return row | {"customer_id": str(draw(st.integers(1, n_customers)))}


@st.composite
def sparse_stores(draw) -> ModelStore:
    """Customers with one or two identifiers each, in one or two scopes: adds of a value another customer
    holds then merge more often than they clash (8066)."""
    n = draw(st.integers(3, 8))
    customers: dict[int, tuple[str, int | None, str]] = {}
    identifiers: set = set()
    taken: set = set()
    for cid in range(1, n + 1):
        ctype = draw(st.sampled_from(["LOYALTY", "LOYALTY", "LOYALTY", "CAMPAIGN"]))
        if cid > 1 and draw(st.integers(0, 5)) == 0:
            customers[cid] = ("MERGED", draw(st.integers(1, cid - 1)), ctype)
            continue
        customers[cid] = ("ACTIVE", None, ctype)
        source, account = draw(st.sampled_from(SCOPES))
        for id_type in draw(st.lists(st.sampled_from(TYPES_BY_SOURCE[source]), min_size=1, max_size=2, unique=True)):
            value = draw(st.sampled_from(VALUES[id_type]))
            if (source, account, id_type, value) not in taken:
                taken.add((source, account, id_type, value))
                identifiers.add((cid, source, account, id_type, value))
    # customer 1 is active and merged customers point at lower ids, so every chain ends at an active one
    active = [c for c, v in customers.items() if v[0] == "ACTIVE"]
    labels = st.sampled_from(["Active", "Issued", "Not Issued", "Expired"])
    cards = {
        number: (series, draw(st.none() | st.sampled_from(active)), draw(labels)) for number, series in CARDS.items()
    }
    return ModelStore(customers, identifiers, cards)


@st.composite
def scenarios(draw):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    raw["org"] = dict(raw["org"], campaign_identifier_reuse=draw(st.booleans()))
    raw["merge"] = {"enabled": True, "max_merges_per_survivor_per_run": draw(st.integers(1, 3))}
    store = draw(sparse_stores() | stores())
    batches = [
        draw(
            st.lists(
                st.one_of(
                    *[changing_rows(len(store.customers))] * 4,
                    # a CSV cannot carry a call line's removed value: the rows are written as request files
                    request_rows(n_customers=len(store.customers)).map(lambda r: r | {"replaces": None}),
                ),
                min_size=6,
                max_size=16,
            )
        )
        for _ in range(RUNS)
    ]
    return raw, store, batches


def cause_key(cause: dict[str, Any]) -> tuple:
    if cause["kind"] == "snapshot":
        return ("snapshot",)
    if cause["kind"] == "revert":
        return ("revert", cause["run_id"])
    return ("run", cause["run_id"], cause["file"], cause["row_number"])


def runs_newest_first(run_ids: list[str], order: list[str]) -> list[tuple[str, int]]:
    counts = Counter(run_ids)
    return [(r, counts[r]) for r in reversed(order) if r in counts]


def check_customer(store: Explainer, history: History, customer_id: int, order: list[str]) -> None:
    got = store.explain(("customer", customer_id)).to_dict()
    model = history.store
    status, _, ctype = model.customers[customer_id]
    assert (got["status"], got["customer_type"]) == (status, ctype)
    merges = history.standing.merges
    chain, current = [], customer_id
    while current in merges and model.customers[current][0] == "MERGED":
        survivor, key = merges[current]
        assert survivor is not None  # a MERGED customer always names its survivor
        chain.append((current, survivor, key))
        current = survivor
    assert [(s["victim_id"], s["survivor_id"], cause_key(s["cause"])) for s in got["chain"]] == chain
    assert got["active_end"] == current
    victims = sorted(v for v, (s, _) in merges.items() if s == customer_id and model.customers[v][1] == customer_id)
    assert [(s["victim_id"], cause_key(s["cause"])) for s in got["merged_in"]] == [(v, merges[v][1]) for v in victims]
    held = sorted(h for h in model.identifiers if h[0] == customer_id)
    assert [(h["source"], h["account_id"], h["id_type"], h["id_value"]) for h in got["identifiers"]] == [
        h[1:] for h in held
    ]
    for h, want in zip(got["identifiers"], held, strict=True):
        steps = [(s["customer_id"], s["how"], cause_key(s["cause"]), s.get("moved_from")) for s in h["origin"]]
        assert steps == list(history.standing.origin[want]), want
    cards = {n for n, (_, holder, _) in model.cards.items() if holder == customer_id}
    cards |= {
        n
        for n, states in history.card_states.items()
        if any(customer_id in (before[0], after[0]) for before, after in itertools.pairwise(states))
    }
    assert sorted(c["card_number"] for c in got["cards"]) == sorted(cards)
    assert [(r["run_id"], r["changes"]) for r in got["runs"]] == runs_newest_first(
        history.customer_runs[customer_id], order
    )


def check_value(store: Explainer, history: History, value: tuple[str, str], order: list[str]) -> None:
    got = store.explain(("value", *value, None, None)).to_dict()
    intervals = [
        (c, s, a, since, since_key, until, until_key)
        for c, s, a, since, since_key, until, until_key in history.intervals[value]
    ]
    seen = [
        (
            h["customer_id"],
            h["source"],
            h["account_id"],
            h["since"]["action"],
            cause_key(h["since"]["cause"]),
            h["until"]["action"] if h["until"] else None,
            cause_key(h["until"]["cause"]) if h["until"] else None,
        )
        for h in got["holdings"]
    ]
    assert sorted(seen, key=repr) == sorted(intervals, key=repr), value
    assert [(r["run_id"], r["changes"]) for r in got["runs"]] == runs_newest_first(history.value_runs[value], order)
    for source, account in {(s, a) for _, s, a, *_ in intervals}:
        scoped = store.explain(("value", *value, source, account)).to_dict()
        assert sorted(h["customer_id"] for h in scoped["holdings"]) == sorted(
            c for c, s, a, *_ in intervals if (s, a) == (source, account)
        )


def check_card(store: Explainer, history: History, number: str, order: list[str]) -> None:
    got = store.explain(("card", number)).to_dict()
    _, holder, label = history.store.cards[number]
    assert (got["customer_id"], got["status_label"]) == (holder, label)
    states = [(s["customer_id"], s["status_label"], s["action"], cause_key(s["cause"])) for s in got["history"]]
    assert states == history.card_states[number], number
    assert [(r["run_id"], r["changes"]) for r in got["runs"]] == runs_newest_first(history.card_runs[number], order)


def run_scenario(tmp: Path, raw: dict, store: ModelStore, batches: list) -> tuple[Path, History, list[str]]:
    """The runs on a real store and on the model: all batches, the last but one reverted before the last."""
    config = parse_config(raw)
    (tmp / "org.toml").write_text(toml_text(raw))
    write_snapshot(store, tmp / "snapshot")
    path = tmp / "store.duckdb"
    init_store(path, tmp / "snapshot")
    history = History.from_snapshot(store)
    order: list[str] = []
    for i, rows in enumerate(batches):
        if i == len(batches) - 1:
            revert_id = f"revert-{i}"
            revert_run(path, order[-1], revert_id)
            history.revert(order[-1], revert_id)
            order.append(revert_id)
        requests = tmp / f"batch{i}.csv"
        write_requests(rows, requests)
        result = run_batch(path, tmp / "org.toml", [requests], tmp / f"r{i}", run_id=f"run-{i}", allow_reapply=True)
        history.run(result.run_id, result.files[0]["path"], rows, config)
        order.append(result.run_id)
    return path, history, order


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(scenario=scenarios())
def test_every_explanation_matches_the_sequence_of_runs(scenario, tmp_path_factory):
    raw, store, batches = scenario
    path, history, order = run_scenario(tmp_path_factory.mktemp("explain"), raw, store, batches)
    with Explainer(path) as explainer:
        for customer_id in sorted(history.store.customers):
            check_customer(explainer, history, customer_id, order)
        for value in sorted(history.intervals):
            check_value(explainer, history, value, order)
        for number in sorted(history.store.cards):
            check_card(explainer, history, number, order)


@pytest.mark.slow
def test_explanations_of_a_generated_sample_match_the_sequence_of_runs(tmp_path):
    """A realistic batch (pipeline/tools/sample.py) cut into three runs, the second reverted before the third.

    On this many customers most rows share nothing, so their merges, moves and card changes are the
    set-based path's (engine/decide.py), where the scenarios above mostly replay."""
    generate_sample(tmp_path / "s", customers=1000, rows=450, seed=11)
    import polars as pl

    snapshot = tmp_path / "s" / "snapshot"
    csv_snapshot = tmp_path / "snapshot"
    csv_snapshot.mkdir()
    for name in ("customers", "identifiers", "cards"):
        pl.read_parquet(snapshot / f"{name}.parquet").write_csv(csv_snapshot / f"{name}.csv")
    model = store_from_snapshot_dir(csv_snapshot)
    config = load_config(tmp_path / "s" / "org.toml")
    with open(tmp_path / "s" / "requests.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    path = tmp_path / "store.duckdb"
    init_store(path, csv_snapshot)
    history = History.from_snapshot(model)
    order: list[str] = []
    for i in range(3):
        if i == 2:
            revert_run(path, order[-1], "revert-b")
            history.revert(order[-1], "revert-b")
            order.append("revert-b")
        part = rows[i * 150 : (i + 1) * 150]
        requests = tmp_path / f"part{i}.csv"
        with open(requests, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
        result = run_batch(path, tmp_path / "s" / "org.toml", [requests], tmp_path / f"r{i}", run_id=f"part-{i}")
        history.run(result.run_id, result.files[0]["path"], part, config)
        order.append(result.run_id)
    merges = sum(1 for v, (_, key) in history.standing.merges.items() if key[0] == "run")
    assert merges > 0 and any(len(o) > 1 for o in history.standing.origin.values()), "the sample must merge and move"
    untouched = [c for c in sorted(history.store.customers) if c not in history.customer_runs][:40]
    with Explainer(path) as explainer:
        for customer_id in sorted(history.customer_runs) + untouched:
            check_customer(explainer, history, customer_id, order)
        for value in sorted(history.value_runs):
            check_value(explainer, history, value, order)
        for number in sorted(history.card_runs) + sorted(history.store.cards)[:20]:
            check_card(explainer, history, number, order)


SAMPLE = ROOT / "sample_data"
JOB_FILES = [
    SAMPLE / "requests" / "01_identifiers.csv",
    SAMPLE / "requests" / "02_cards.csv",
    ROOT / "tests" / "cases" / "replace_requests.csv",
]


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> tuple[Path, str]:
    """The sample snapshot after two sample request files and replaces: merges, moves, card links and relabels."""
    path = tmp_path_factory.mktemp("sample") / "store.duckdb"
    init_store(path, SAMPLE / "snapshot")
    result = run_batch(path, ORG, JOB_FILES, path.parent / "reports")
    assert result.merges >= 1
    return path, result.run_id


def masked_like(unmasked: Any) -> Any:
    """What --mask-pii must turn an explanation's data into: every value and card number masked, nothing else."""
    if isinstance(unmasked, list):
        return [masked_like(x) for x in unmasked]
    if not isinstance(unmasked, dict):
        return unmasked
    out = {k: masked_like(v) for k, v in unmasked.items()}
    if unmasked.get("id_value") and unmasked.get("id_type") is not None:
        out["id_value"] = mask_value(unmasked["id_type"], unmasked["id_value"])
    if unmasked.get("replaced_by"):
        out["replaced_by"] = mask_value(unmasked["id_type"], unmasked["replaced_by"])
    if "card_number" in unmasked:
        out["card_number"] = mask_value("cardnumber", unmasked["card_number"])
    if "masked" in unmasked:
        out["masked"] = True
    return out


def test_masked_explanations_hide_every_value_and_keep_every_other_fact(sample_store):
    path, _ = sample_store
    with Explainer(path) as plain, Explainer(path, mask_pii=True) as masked:
        values = plain.con.execute("SELECT DISTINCT id_type, id_value FROM identifiers").fetchall()
        cards = [r[0] for r in plain.con.execute("SELECT card_number FROM cards").fetchall()]
        customers = [r[0] for r in plain.con.execute("SELECT customer_id FROM customers").fetchall()]
        targets: list[Target] = [("customer", c) for c in customers]
        targets += [("value", t, v, None, None) for t, v in values]
        targets += [("card", n) for n in cards]
        for target in targets:
            want, got = plain.explain(target), masked.explain(target)
            assert got.to_dict() == masked_like(want.to_dict()), target
            text = got.render() + got.to_json()
            leaked = [v for _, v in values if v in text] + [n for n in cards if n in text]
            assert leaked == [], (target, leaked)


def test_a_replace_is_explained_as_the_old_value_replaced_by_the_new(tmp_path):
    path = tmp_path / "store.duckdb"
    init_store(path, SAMPLE / "snapshot")
    run_batch(path, ORG, [ROOT / "tests" / "cases" / "replace_requests.csv"], tmp_path / "r")
    with Explainer(path) as explainer:
        alice = explainer.explain(("customer", 1001))
        assert "replaced INSTORE email=alice@example.com by alice.new@example.com on 1001; run " in alice.render()
        (event,) = [e for e in alice.to_dict()["timeline"] if e["action"] == "replace"]
        assert (event["id_value"], event["replaced_by"], event["from_customer_id"], event["to_customer_id"]) == (
            "alice@example.com",
            "alice.new@example.com",
            1001,
            1001,
        )
        assert event["cause"]["row_id"] == "R-1-replaced" and event["new_label"] is None
        value = explainer.explain(("value", "email", "alice@example.com", None, None)).to_dict()
        assert [
            (h["customer_id"], h["since"]["action"], (h["until"] or {}).get("action")) for h in value["holdings"]
        ] == [
            (1001, "snapshot", "replace"),
            (1002, "add", None),
        ]
        victim = explainer.explain(("customer", 1017)).render()
        assert (
            "replaced FACEBOOK email=dana@example.com by chain.survivor@example.com on 1017 (merged into 1006)"
            in victim
        )
        chain = [
            e["id_value"]
            for e in explainer.explain(("customer", 1016)).to_dict()["timeline"]
            if e["action"] == "replace"
        ]
        assert chain == ["EXT-1016", "EXT-1016b"]
    with Explainer(path, mask_pii=True) as masked:
        text = masked.explain(("customer", 1001)).render()
        assert "alice.new@example.com" not in text and "alice@example.com" not in text and "replaced INSTORE" in text


def test_a_store_with_no_runs_explains_everything_as_the_snapshot(tmp_path):
    path = tmp_path / "store.duckdb"
    init_store(path, SAMPLE / "snapshot")
    with Explainer(path) as explainer:
        rows = explainer.con.execute("SELECT customer_id, status, merged_into FROM customers").fetchall()
        for customer_id, status, merged_into in rows:
            got = explainer.explain(("customer", customer_id)).to_dict()
            assert got["status"] == status and got["runs"] == [] and got["timeline"] == []
            assert all([s["how"] for s in h["origin"]] == ["snapshot"] for h in got["identifiers"])
            assert [s["survivor_id"] for s in got["chain"][:1]] == ([merged_into] if merged_into else [])
            assert all(s["cause"]["kind"] == "snapshot" for s in got["chain"] + got["merged_in"])
        snapshot = explainer.explain(("card", "GLD0000000001")).to_dict()
    assert [s["action"] for s in snapshot["history"]] == ["snapshot"]
    assert snapshot["snapshot"]["snapshot"] == str((SAMPLE / "snapshot").resolve())


def test_explain_refuses_clearly_while_a_run_holds_the_store(tmp_path):
    path = tmp_path / "store.duckdb"
    init_store(path, SAMPLE / "snapshot")
    release = tmp_path / "release"
    env = os.environ | {ENV_HOLD_AT: "in-transaction", ENV_HOLD_UNTIL: str(release)}
    cmd = [
        str(EXE),
        "run",
        "--store",
        str(path),
        "--config",
        str(ORG),
        "--reports",
        str(tmp_path / "r"),
        *map(str, JOB_FILES),
    ]
    run = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        assert "holding at in-transaction" in line, line
        held = CliRunner().invoke(main, ["explain", "--store", str(path), "1001"])
        assert held.exit_code == 3, held.output
        assert "held by a run" in held.output and "nothing was read" in held.output
    finally:
        release.touch()
        run.communicate(timeout=60)
    assert run.returncode == 1
    after = CliRunner().invoke(main, ["explain", "--store", str(path), "1009"])
    assert after.exit_code == 0 and "merged: 1009 -> 1023" in after.output


def test_cli_forms_text_json_html_and_misuse(sample_store, tmp_path):
    path, run_id = sample_store
    runner = CliRunner()
    text = runner.invoke(main, ["explain", "--store", str(path), "1023"])
    as_json = runner.invoke(main, ["explain", "--store", str(path), "1023", "--json"])
    assert text.exit_code == 0 and as_json.exit_code == 0
    data = json.loads(as_json.output)
    assert data["kind"] == "customer" and [m["victim_id"] for m in data["merged_in"]] == [1009]
    assert f"1009 -> 1023 on INSTORE email=erin@example.com: run {run_id}" in text.output
    changes = text.output.split("changes, newest first: ", 1)[1].splitlines()
    assert changes[0] == str(len(data["timeline"])) and len(changes) == 1 + len(data["timeline"])
    merged_at = next(i for i, line in enumerate(changes) if line.startswith("    merged 1009 into 1023"))
    moved_at = [i for i, line in enumerate(changes) if "from 1009 to 1023 (merge)" in line]
    added_at = next(i for i, line in enumerate(changes) if line.startswith("    added INSTORE email=erin@example.com"))
    assert added_at < min(moved_at) and max(moved_at) < merged_at, "newest first: the add, the moves, the merge"
    value = runner.invoke(
        main, ["explain", "--store", str(path), "--value", "email= ERIN@Example.com", "--source", "INSTORE"]
    )
    assert value.exit_code == 0 and value.output.startswith("value email=erin@example.com in INSTORE: held 1 time(s)")
    card = runner.invoke(main, ["explain", "--store", str(path), "--card", "GLD0000000001", "--json"])
    assert [s["status_label"] for s in json.loads(card.output)["history"]] == ["Active", "Issued"]
    missing = runner.invoke(main, ["explain", "--store", str(path), "999999"])
    assert missing.exit_code == 1 and "not in the store" in missing.output
    for bad in (["1001", "--card", "X"], ["--value", "email"], ["--source", "INSTORE", "1001"], []):
        misuse = runner.invoke(main, ["explain", "--store", str(path), *bad])
        assert misuse.exit_code == 2, (bad, misuse.output)
    page = tmp_path / "explain" / "customer-1023.html"
    html = runner.invoke(main, ["explain", "--store", str(path), "1023", "--html", str(page)])
    assert html.exit_code == 0 and page.is_file()
    body = page.read_text()
    assert "<script" not in body and 'href="customer-1009.html"' in body and "erin@example.com" in body


def test_the_html_page_escapes_hostile_values(tmp_path):
    path = tmp_path / "store.duckdb"
    init_store(path, SAMPLE / "snapshot")
    hostile = "<script>alert(1)</script>&\"'"
    requests = tmp_path / "hostile.csv"
    with open(requests, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row_id", "customer_id", "source", "account_id", "action", "id_type", "id_value"])
        writer.writerow([hostile, "1002", "WECHAT", "WX-MAIN", "add", "wechat", hostile])
    assert run_batch(path, ORG, [requests], tmp_path / "r").exit_code == 0
    page = tmp_path / "page.html"
    assert CliRunner().invoke(main, ["explain", "--store", str(path), "1002", "--html", str(page)]).exit_code == 0
    body = page.read_text()
    assert "<script" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in body


def test_summary_html_links_each_merge_to_its_explanation_page(sample_store):
    path, _ = sample_store
    summary = (path.parent / "reports" / "summary.html").read_text()
    with open(path.parent / "reports" / "merges.csv", newline="") as f:
        merges = list(csv.DictReader(f))
    for merge in merges:
        assert f'href="explain/customer-{merge["victim_id"]}.html"' in summary
        assert f'href="explain/customer-{merge["survivor_id"]}.html"' in summary
