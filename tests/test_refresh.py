"""`store refresh`: the store brought to the platform's next snapshot, every changed key classified as a plain
Python diff classifies it, the store's record kept, the refresh revertible, killed only before or after.

The model of the classes is `model_changes`, written from the definitions in docs/refresh.md without the
package's SQL; Hypothesis draws a store and a next snapshot independently, so that every class turns up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import ORG, REQUESTS, ROOT, SAMPLE_SNAPSHOT, exported
from model import FRAME_KEYS, ModelStore, model_store_to_frames
from pipeline.cli import main
from pipeline.errors import ConfigError, SnapshotRefused, StoreError
from pipeline.faults import ENV_HOLD_AT, ENV_HOLD_UNTIL, ENV_KILL_AT, REFRESH_POINTS
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.lineage.explain import Explainer
from pipeline.lineage.revert import revert_run
from pipeline.refresh import refresh_store
from pipeline.run import run_batch
from pipeline.store.connect import open_store
from pipeline.store.duck import scalar
from pipeline.store.snapshot import export_store, init_store, load_snapshot_layout
from test_engine_properties import BASE_CONFIG, CARDS, LABELS, request_rows, stores

EXE = Path(sys.executable).parent / "loyalty-bulk"
Key = tuple[object, ...]


def model_changes(before: ModelStore, after: ModelStore) -> set[tuple[str, str, Key]]:
    """Each changed key once, with its class: the definitions of docs/refresh.md in plain Python."""
    found: set[tuple[str, str, Key]] = set()
    for cid in before.customers.keys() | after.customers.keys():
        old, new = before.customers.get(cid), after.customers.get(cid)
        if old == new:
            continue
        if old is None or new is None:
            change = "new" if old is None else "removed"
        elif (old[0], new[0]) == ("ACTIVE", "MERGED"):
            change = "merged"
        elif (old[0], new[0]) == ("MERGED", "ACTIVE"):
            change = "unmerged"
        else:
            change = "changed"
        found.add(("customer", change, (cid,)))
    held_before = {(s, a, t, v): c for c, s, a, t, v in before.identifiers}
    held_after = {(s, a, t, v): c for c, s, a, t, v in after.identifiers}
    for key in held_before.keys() | held_after.keys():
        old_holder, new_holder = held_before.get(key), held_after.get(key)
        if old_holder != new_holder:
            change = "added" if old_holder is None else "removed" if new_holder is None else "moved"
            found.add(("identifier", change, key))
    for number in before.cards.keys() | after.cards.keys():
        old_card, new_card = before.cards.get(number), after.cards.get(number)
        if old_card == new_card:
            continue
        if old_card is None or new_card is None:
            change = "new" if old_card is None else "removed"
        elif old_card[1] != new_card[1]:
            change = "linked" if old_card[1] is None else "delinked" if new_card[1] is None else "relinked"
        elif old_card[2] != new_card[2]:
            change = "relabelled"
        else:
            change = "changed"
        found.add(("card", change, (number,)))
    return found


def reported_changes(reports: Path) -> set[tuple[str, str, Key]]:
    frame = pl.read_csv(reports / "changes.csv", infer_schema=False)
    keys = {
        "customer": ("customer_id",),
        "identifier": ("source", "account_id", "id_type", "id_value"),
        "card": ("card_number",),
    }
    found = set()
    for row in frame.iter_rows(named=True):
        key = tuple(int(row[c]) if c == "customer_id" else row[c] or "" for c in keys[row["kind"]])
        found.add((row["kind"], row["change"], key))
    return found


@st.composite
def next_snapshots(draw):
    """A store drawn like the engine tests' stores, some cards left out and one card in the other series."""
    store = draw(stores())
    cards = dict(store.cards)
    for number in draw(st.sets(st.sampled_from(sorted(CARDS)), max_size=2)):
        del cards[number]
    if draw(st.booleans()):
        number = draw(st.sampled_from(sorted(cards)))
        series, holder, _ = cards[number]
        cards[number] = (203 - series, holder, draw(st.sampled_from(LABELS)))
    return ModelStore(store.customers, store.identifiers, cards)


def with_cards_kept(after: ModelStore, before: ModelStore, numbers: set[str]) -> ModelStore:
    """`after` with some of `before`'s cards as they were, in the other series or not (a card whose holder is no
    active customer of `after` stays as drawn), so that a series-only change turns up."""
    cards = dict(after.cards)
    for number in sorted(numbers & before.cards.keys()):
        series, holder, label = before.cards[number]
        if holder is None or after.customers.get(holder, ("",))[0] == "ACTIVE":
            cards[number] = (series if len(numbers) % 2 else 203 - series, holder, label)
    return ModelStore(after.customers, after.identifiers, cards)


def write_snapshot(store: ModelStore, folder: Path, raw: bool = False) -> Path:
    """The store as a snapshot folder; with `raw`, mobiles and emails as people write them (`+61234567`,
    `A@X.CO`), which the snapshot's normalisation reads as the stored values."""
    folder.mkdir(parents=True)
    for table, frame in model_store_to_frames(store).items():
        if raw and table == "identifiers":
            frame = frame.with_columns(id_value=pl.col("id_value").replace(WRITTEN))
        frame.write_parquet(folder / f"{table}.parquet")
    return folder


WRITTEN = {"61234567": "+61234567", "61234568": "6123-4568", "61234569": "0061234569", "a@x.co": "A@X.CO"}
"""Stored value -> the same value as a person writes it (test_engine_properties' RAW_VARIANTS)."""


def store_frames(store: Path, out: Path) -> dict[str, pl.DataFrame]:
    export_store(store, out, "parquet")
    return {table: pl.read_parquet(out / f"{table}.parquet").sort(keys) for table, keys in FRAME_KEYS.items()}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    before=next_snapshots(),
    drawn=next_snapshots(),
    kept_cards=st.sets(st.sampled_from(sorted(CARDS))),
    raw=st.booleans(),
)
def test_refresh_classifies_like_the_model_ends_at_the_snapshot_and_reverts_to_the_start(
    tmp_path_factory, before, drawn, kept_cards, raw
):
    after = with_cards_kept(drawn, before, kept_cards)
    tmp = tmp_path_factory.mktemp("refresh")
    store = tmp / "store.duckdb"
    init_store(store, write_snapshot(before, tmp / "s0"))
    start = exported(store, tmp / "start")
    result = refresh_store(
        store, write_snapshot(after, tmp / "s1", raw), "R1", reports_dir=tmp / "rep", allow_removals=True
    )
    expected = model_changes(before, after)
    for kind, change, _ in expected:
        event(f"{kind} {change}")
    assert reported_changes(tmp / "rep") == expected
    assert result.changed == len(expected)
    frames, wanted = store_frames(store, tmp / "after"), model_store_to_frames(after)
    assert all(frames[table].equals(wanted[table]) for table in FRAME_KEYS), "the store is the snapshot"
    with open_store(store, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs WHERE kind = 'refresh'") == 1
    revert_run(store, "R1", "U1")
    assert exported(store, tmp / "reverted") == start, "revert of a refresh restores the store exactly"


@pytest.fixture
def run_store(store: Path, tmp_path: Path) -> tuple[Path, str]:
    """The sample store after the sample's requests ran (20 rows changed something)."""
    result = run_batch(store, ORG, REQUESTS, tmp_path / "run")
    return store, result.run_id


def test_changes_the_platform_did_not_keep_come_back_as_a_request_file_run_takes(run_store, tmp_path):
    store, run_id = run_store
    after_run = exported(store, tmp_path / "after-run")
    result = refresh_store(
        store, SAMPLE_SNAPSHOT, "R1", config_path=ORG, reports_dir=tmp_path / "rep", allow_removals=True
    )
    assert [(r.run_id, r.kept, r.not_kept) for r in result.runs] == [(run_id, 0, 20)]
    lost = pl.read_csv(tmp_path / "rep" / "not_on_platform.csv", infer_schema=False)
    assert lost.height == 20 and lost["row_id"].str.starts_with(f"{run_id}:").all()
    summary = json.loads((tmp_path / "rep" / "refresh-summary.json").read_text())
    assert summary["runs"] == [{"run_id": run_id, "changes_on_platform": 0, "changes_not_on_platform": 20}]

    again = run_batch(store, ORG, [tmp_path / "rep" / "not_on_platform.csv"], tmp_path / "again")
    assert again.exit_code == 0 and again.failed == 0
    assert exported(store, tmp_path / "final") == after_run, "running the lost changes gives the run's store again"


def test_a_snapshot_that_kept_everything_changes_nothing_and_says_so(run_store, tmp_path):
    store, run_id = run_store
    export_store(store, tmp_path / "next", "csv")
    before = exported(store, tmp_path / "before")
    result = refresh_store(store, tmp_path / "next", "R1", reports_dir=tmp_path / "rep")
    assert result.changed == 0 and result.exit_code == 0 and result.status == "nothing to change"
    assert [(r.run_id, r.kept, r.not_kept) for r in result.runs] == [(run_id, 20, 0)]
    assert pl.read_csv(tmp_path / "rep" / "not_on_platform.csv").height == 0
    assert exported(store, tmp_path / "after") == before
    with pytest.raises(StoreError, match="already applied"):
        run_batch(store, ORG, REQUESTS, tmp_path / "again")
    # a second refresh sees no run since the first one
    assert refresh_store(store, tmp_path / "next", "R2", reports_dir=tmp_path / "rep2").runs == ()


def test_refresh_run_refresh_again(run_store, tmp_path):
    store, first_run = run_store
    export_store(store, tmp_path / "night1", "csv")
    assert [r.run_id for r in refresh_store(store, tmp_path / "night1", "R1", reports_dir=tmp_path / "rep1").runs] == [
        first_run
    ]
    requests = tmp_path / "next.csv"
    requests.write_text("row_id,customer_id,source,action,id_type,id_value\nn1,1002,INSTORE,add,externalId,EXT-N2\n")
    second = run_batch(store, ORG, [requests], tmp_path / "run2")
    assert second.outcomes["applied"] == 1
    result = refresh_store(store, tmp_path / "night1", "R2", reports_dir=tmp_path / "rep2")
    assert [(r.run_id, r.kept, r.not_kept) for r in result.runs] == [(second.run_id, 0, 1)], "only runs since R1"
    assert result.counts["identifier"]["removed"] == 1
    assert exported(store, tmp_path / "end") == exported_folder(tmp_path / "night1")


def exported_folder(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def shrink(source: Path, folder: Path, table: str, keep: float) -> Path:
    shutil.copytree(source, folder)
    frame = pl.read_csv(folder / f"{table}.csv", infer_schema=False)
    frame.head(int(frame.height * keep)).write_csv(folder / f"{table}.csv")
    return folder


def test_the_guard_refuses_a_truncated_snapshot_unless_removals_are_allowed(store, tmp_path):
    export_store(store, tmp_path / "full", "csv")
    truncated = shrink(tmp_path / "full", tmp_path / "truncated", "cards", 0.8)
    before = exported(store, tmp_path / "before")
    refused = refresh_store(store, truncated, "R1", reports_dir=tmp_path / "rep")
    assert refused.exit_code == 3 and refused.guard.refuses
    assert "16 cards" in refused.guard.breaches[0] and "--max-removed-share 5.00%" in refused.guard.breaches[0]
    assert exported(store, tmp_path / "after") == before, "a refused refresh applies nothing"
    summary = json.loads((tmp_path / "rep" / "refresh-summary.json").read_text())
    assert summary["guard"]["refused"] and summary["guard"]["tables"]["cards"]["removed"] == 4
    assert refresh_store(store, truncated, "R2", reports_dir=tmp_path / "rep2", max_removed_share=0.3).exit_code == 0


def test_an_empty_snapshot_table_is_refused_whatever_the_share(store, tmp_path):
    export_store(store, tmp_path / "full", "csv")
    empty = shrink(tmp_path / "full", tmp_path / "empty", "identifiers", 0.0)
    result = refresh_store(store, empty, "R1", reports_dir=tmp_path / "rep", max_removed_share=1.0)
    assert result.exit_code == 3 and "identifiers is empty" in result.guard.breaches[0]
    allowed = refresh_store(store, empty, "R2", reports_dir=tmp_path / "rep2", allow_removals=True)
    assert allowed.exit_code == 0 and allowed.store_after.identifiers == 0


def test_a_snapshot_that_breaks_an_invariant_is_refused_with_init_s_report(store, tmp_path):
    export_store(store, tmp_path / "bad", "csv")
    customers = pl.read_csv(tmp_path / "bad" / "customers.csv", infer_schema=False)
    pl.concat([customers, customers.head(1)]).write_csv(tmp_path / "bad" / "customers.csv")
    before = exported(store, tmp_path / "before")
    with pytest.raises(SnapshotRefused):
        refresh_store(store, tmp_path / "bad", "R1", reports_dir=tmp_path / "rep")
    with pytest.raises(SnapshotRefused):
        init_store(tmp_path / "other.duckdb", tmp_path / "bad", report_path=tmp_path / "init-report.csv")
    assert (tmp_path / "rep" / "snapshot-findings.csv").read_bytes() == (tmp_path / "init-report.csv").read_bytes()
    assert exported(store, tmp_path / "after") == before


def test_a_dry_run_writes_the_same_reports_and_changes_nothing(run_store, tmp_path):
    store, _ = run_store
    before = exported(store, tmp_path / "before")
    runs_before = ledger_rows(store)
    dry = refresh_store(store, SAMPLE_SNAPSHOT, "R1", reports_dir=tmp_path / "dry", dry_run=True, allow_removals=True)
    assert exported(store, tmp_path / "after-dry") == before and ledger_rows(store) == runs_before
    real = refresh_store(store, SAMPLE_SNAPSHOT, "R1", reports_dir=tmp_path / "real", allow_removals=True)
    for name in ("changes.csv", "not_on_platform.csv"):
        assert (tmp_path / "dry" / name).read_bytes() == (tmp_path / "real" / name).read_bytes()
    assert {k: v for k, v in dry.to_dict().items() if k not in TIMES} == {
        k: v for k, v in real.to_dict().items() if k not in TIMES
    } | {"dry_run": True, "store_after": dry.store_after.to_dict(), "reports_dir": str(tmp_path / "dry")}
    assert dry.store_after == dry.store_before and real.store_after != real.store_before


TIMES = ("started_at", "ended_at", "stage_seconds")


def ledger_rows(store: Path) -> list[tuple]:
    with open_store(store, read_only=True) as con:
        return con.execute("SELECT run_id, kind FROM runs ORDER BY ordinal").fetchall()


def test_explain_says_what_changed_on_the_platform(store, tmp_path):
    export_store(store, tmp_path / "next", "csv")
    identifiers = pl.read_csv(tmp_path / "next" / "identifiers.csv", infer_schema=False)
    extra = pl.DataFrame(
        {"customer_id": ["1001"], "source": ["INSTORE"], "account_id": [""], "id_type": ["externalId"]}
    )
    pl.concat([identifiers, extra.with_columns(id_value=pl.lit("EXT-TILL"))]).write_csv(
        tmp_path / "next" / "identifiers.csv"
    )
    refresh_store(store, tmp_path / "next", "R1", reports_dir=tmp_path / "rep", mask_pii=True)
    assert "EXT-TILL" in (tmp_path / "rep" / "changes.csv").read_text()
    page = (tmp_path / "rep" / "summary.html").read_text()
    assert "EXT-TILL" not in page and "changed-keys" in page, "summary.html masks values under --mask-pii"
    with Explainer(store) as explainer:
        text = explainer.explain(("customer", 1001)).render()
    assert "added INSTORE externalId=EXT-TILL to 1001; changed on the platform (refresh R1, snapshot" in text


def test_the_cli_prints_the_summary_and_exits_with_the_guard_s_code(store, tmp_path):
    export_store(store, tmp_path / "full", "csv")
    truncated = shrink(tmp_path / "full", tmp_path / "truncated", "cards", 0.5)
    args = ["store", "refresh", str(store), "--snapshot", str(truncated), "--reports", str(tmp_path / "rep")]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 3 and "REFUSED, nothing applied" in refused.output
    allowed = CliRunner().invoke(main, [*args, "--allow-removals", "--json"])
    assert allowed.exit_code == 0 and json.loads(allowed.output)["changes"]["card"]["removed"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("point", REFRESH_POINTS)
def test_sigkill_leaves_the_store_before_or_after_the_refresh(run_store, tmp_path, point):
    store, _ = run_store
    before = exported(store, tmp_path / "before")
    reference = tmp_path / "reference.duckdb"
    shutil.copy(store, reference)
    refresh_store(reference, SAMPLE_SNAPSHOT, "R0", reports_dir=tmp_path / "ref", allow_removals=True)
    after = exported(reference, tmp_path / "after")
    command = [str(EXE), "store", "refresh", str(store), "--snapshot", str(SAMPLE_SNAPSHOT), "--allow-removals"]
    environment = {**os.environ, ENV_KILL_AT: point}
    done = subprocess.run([*command, "--reports", str(tmp_path / "k")], env=environment, capture_output=True, text=True)
    assert f"fault hook: SIGKILL at {point}" in done.stderr, done.stderr
    state = exported(store, tmp_path / "killed")
    assert state == (before if point in ("refresh-after-diff", "refresh-in-transaction") else after) or (
        point == "refresh-during-commit" and state in (before, after)
    )
    with duckdb.connect(str(store), read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM runs WHERE kind = 'refresh'") == (0 if state == before else 1)
    if state == before:
        rerun = subprocess.run([*command, "--reports", str(tmp_path / "again")], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert exported(store, tmp_path / "final") == after


LAYOUT = """
[customers]
file = "users.csv"
[customers.columns]
customer_id = "user_id"
status = "user_status"
merged_into = "merged_user_id"
customer_type = "loyalty_type"

[identifiers]
file = "profiles.csv"
[identifiers.columns]
customer_id = "user_id"
id_value = "value"
"""


def platform_export(store: Path, tmp_path: Path) -> Path:
    """The store as a platform export would hold it: other file and column names, and columns the store does not
    know."""
    export_store(store, tmp_path / "plain", "csv")
    folder = tmp_path / "export"
    folder.mkdir()
    customers = pl.read_csv(tmp_path / "plain" / "customers.csv", infer_schema=False)
    customers.rename(
        {
            "customer_id": "user_id",
            "status": "user_status",
            "merged_into": "merged_user_id",
            "customer_type": "loyalty_type",
        }
    ).with_columns(slab=pl.lit("GOLD")).write_csv(folder / "users.csv")
    identifiers = pl.read_csv(tmp_path / "plain" / "identifiers.csv", infer_schema=False)
    identifiers.rename({"customer_id": "user_id", "id_value": "value"}).with_columns(
        dim_modified_date_id=pl.lit("20261206")
    ).write_csv(folder / "profiles.csv")
    shutil.copy(tmp_path / "plain" / "cards.csv", folder / "cards.csv")
    return folder


def test_a_platform_export_loads_through_a_snapshot_layout(store, tmp_path):
    (tmp_path / "layout.toml").write_text(LAYOUT)
    layout = load_snapshot_layout(tmp_path / "layout.toml")
    export = platform_export(store, tmp_path)
    init_store(tmp_path / "from-export.duckdb", export, layout=layout)
    assert exported(tmp_path / "from-export.duckdb", tmp_path / "a") == exported(store, tmp_path / "b")
    result = refresh_store(store, export, "R1", reports_dir=tmp_path / "rep", layout=layout)
    assert result.changed == 0 and result.exit_code == 0
    files = json.loads((tmp_path / "rep" / "refresh-summary.json").read_text())["files"]
    assert [Path(f["path"]).name for f in files] == ["users.csv", "profiles.csv", "cards.csv"]
    # an export without the type: the layout fixes it, and the sample's 3 CAMPAIGN customers change
    (tmp_path / "fixed.toml").write_text(
        LAYOUT.replace('customer_type = "loyalty_type"', '[customers.fixed]\ncustomer_type = "LOYALTY"')
    )
    fixed = refresh_store(
        store, export, "R2", reports_dir=tmp_path / "rep2", layout=load_snapshot_layout(tmp_path / "fixed.toml")
    )
    assert fixed.counts["customer"] == {"new": 0, "removed": 0, "merged": 0, "unmerged": 0, "changed": 3}


def test_masked_values_and_a_layout_naming_a_missing_column_are_refused(store, tmp_path):
    (tmp_path / "layout.toml").write_text(LAYOUT)
    layout = load_snapshot_layout(tmp_path / "layout.toml")
    export = platform_export(store, tmp_path)
    profiles = pl.read_csv(export / "profiles.csv", infer_schema=False)
    profiles.with_columns(
        value=pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("98****21")).otherwise("value")
    ).write_csv(export / "profiles.csv")
    before = exported(store, tmp_path / "before")
    with pytest.raises(StoreError, match=r"profiles.csv: column 'id_value': 1 masked value\(s\), e.g. '98\*\*\*\*21'"):
        refresh_store(store, export, "R1", reports_dir=tmp_path / "rep", layout=layout)
    with pytest.raises(StoreError, match="masked value"):
        init_store(tmp_path / "x.duckdb", export, layout=layout)
    assert exported(store, tmp_path / "after") == before and not (tmp_path / "x.duckdb").exists()
    (tmp_path / "bad.toml").write_text(LAYOUT.replace('id_value = "value"', 'id_value = "identifier"'))
    with pytest.raises(StoreError, match=r"no column 'identifier' \(the layout maps 'id_value' to 'identifier'"):
        init_store(tmp_path / "y.duckdb", export, layout=load_snapshot_layout(tmp_path / "bad.toml"))
    (tmp_path / "typo.toml").write_text(LAYOUT.replace("[identifiers.columns]", "[identifiers.colums]"))
    with pytest.raises(ConfigError, match=r"key 'identifiers.colums': unknown key"):
        load_snapshot_layout(tmp_path / "typo.toml")


def toml_text(config: dict[str, Any]) -> str:
    """A TOML file of an org config as the engine tests hold it (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict) and not _tables(v)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in scalars.items())
        for key, value in body.items():
            name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
            if isinstance(value, dict):
                table(name, value)
            elif _tables(value):
                for item in value:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in item.items())

    table("", config)
    return "\n".join(lines) + "\n"


def _tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def test_replaces_the_platform_did_not_keep_are_written_again_as_replaces(tmp_path):
    """A replace not on the platform is written again as a replace: an add would find the old value there (7006)."""
    path = tmp_path / "store.duckdb"
    init_store(path, SAMPLE_SNAPSHOT)
    run_batch(path, ORG, [ROOT / "tests" / "cases" / "replace_requests.csv"], tmp_path / "run")
    after_run = exported(path, tmp_path / "after-run")
    refresh_store(path, SAMPLE_SNAPSHOT, "R1", config_path=ORG, reports_dir=tmp_path / "rep", allow_removals=True)
    lost = pl.read_csv(tmp_path / "rep" / "not_on_platform.csv", infer_schema=False)
    # the chain's first replace (EXT-1016 by EXT-1016b) is not written again: the second one stands for both
    assert sorted(lost["action"].to_list()) == ["add"] + ["replace"] * 5
    again = run_batch(path, ORG, [tmp_path / "rep" / "not_on_platform.csv"], tmp_path / "again")
    assert again.failed == 0, pl.read_csv(tmp_path / "again" / "errors.csv").rows()
    assert exported(path, tmp_path / "final") == after_run


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(store=stores(), rows=st.lists(request_rows(n_customers=7), min_size=1, max_size=25), kept=st.booleans())
def test_what_the_platform_did_not_keep_runs_back_to_the_run_s_store(tmp_path_factory, store, rows, kept):
    """Any batch (merges, chains, campaign drops, cards): a snapshot of the platform from before the push keeps
    none of the run's changes, and running not_on_platform.csv makes the run's store again; a snapshot from
    after it keeps them all and changes nothing."""
    tmp = tmp_path_factory.mktemp("kept")
    org = tmp / "org.toml"
    org.write_text(toml_text(BASE_CONFIG))
    path = tmp / "store.duckdb"
    init_store(path, write_snapshot(store, tmp / "s0"))
    requests = tmp / "requests.csv"
    pl.DataFrame(
        [{c: row.get(c) for c in REQUEST_COLUMNS} for row in rows], schema=dict.fromkeys(REQUEST_COLUMNS, pl.String)
    ).write_csv(requests)
    ran = run_batch(path, org, [requests], tmp / "run")
    after_run = exported(path, tmp / "after-run")
    changed = ran.outcomes["applied"] + ran.outcomes["merged"]
    if kept:
        export_store(path, tmp / "s1", "csv")
        result = refresh_store(path, tmp / "s1", "R1", config_path=org, reports_dir=tmp / "rep")
        assert result.changed == 0 and [(r.kept, r.not_kept) for r in result.runs] == (
            [(changed, 0)] if changed else []
        )
        return
    result = refresh_store(path, tmp / "s0", "R1", config_path=org, reports_dir=tmp / "rep", allow_removals=True)
    assert sum(r.kept + r.not_kept for r in result.runs) == changed
    lost = tmp / "rep" / "not_on_platform.csv"
    if pl.read_csv(lost).height:
        again = run_batch(path, org, [lost], tmp / "again")
        assert again.failed == 0, pl.read_csv(tmp / "again" / "errors.csv").rows()
    assert exported(path, tmp / "final") == after_run


@pytest.mark.slow
def test_a_refresh_is_refused_while_a_run_holds_the_store_and_a_run_while_a_refresh_does(store, tmp_path):
    export_store(store, tmp_path / "next", "csv")
    release = tmp_path / "release"
    refresh = [str(EXE), "store", "refresh", str(store), "--snapshot", str(tmp_path / "next"), "--allow-removals"]
    run = [
        str(EXE),
        "run",
        "--store",
        str(store),
        "--config",
        str(ORG),
        "--reports",
        str(tmp_path / "r"),
        *map(str, REQUESTS),
    ]
    for holder, holder_point, other in ((run, "in-transaction", refresh), (refresh, "refresh-in-transaction", run)):
        release.unlink(missing_ok=True)
        environment = {**os.environ, ENV_HOLD_AT: holder_point, ENV_HOLD_UNTIL: str(release)}
        if holder is refresh:  # the snapshot must differ, or the refresh has nothing to write
            customers = pl.read_csv(tmp_path / "next" / "customers.csv", infer_schema=False)
            pl.concat([customers, customers.head(1).with_columns(customer_id=pl.lit("999999"))]).write_csv(
                tmp_path / "next" / "customers.csv"
            )
        first = subprocess.Popen(
            [*holder, "--reports", str(tmp_path / "held")] if holder is refresh else holder,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )  # fmt: skip
        try:
            assert first.stderr is not None
            assert first.stderr.readline() == f"fault hook: holding at {holder_point}\n"
            second = subprocess.run(
                [*other, "--reports", str(tmp_path / "other")] if other is refresh else other,
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        finally:
            release.touch()
        first.communicate(timeout=120)
        assert second.returncode == 3 and "in use" in second.stderr, second.stderr


def test_progress_is_told_each_stage_in_order(store, tmp_path):
    told: list[str] = []

    class Observer:
        def stage_done(self, stage: str, seconds: float) -> None:
            told.append(stage)

    export_store(store, tmp_path / "next", "csv")
    refresh_store(store, tmp_path / "next", "R1", reports_dir=tmp_path / "rep", observer=Observer())
    assert told == ["stage", "diff", "apply", "report"]


def test_a_job_file_sets_the_guard_and_flags_win(store, tmp_path):
    export_store(store, tmp_path / "full", "csv")
    truncated = shrink(tmp_path / "full", tmp_path / "truncated", "cards", 0.8)
    job = tmp_path / "nightly.toml"
    job.write_text(f'[job]\nstore = "{store}"\nconfig = "{ORG}"\ninputs = ["{REQUESTS[0]}"]\nmax_removed_share = 0.3\n')
    args = ["store", "refresh", str(store), "--snapshot", str(truncated), "--job", str(job)]
    strict = CliRunner().invoke(main, [*args, "--max-removed-share", "0.1", "--reports", str(tmp_path / "a")])
    assert strict.exit_code == 3, strict.output
    allowed = CliRunner().invoke(main, [*args, "--reports", str(tmp_path / "b")])
    assert allowed.exit_code == 0 and "cards: new 0, removed 4" in allowed.output, allowed.output


def test_a_delink_the_platform_lacks_on_a_card_it_holds_unlinked_runs_back_as_link_then_delink(tmp_path):
    """The run links SLV1X (Active) to customer 5 and delinks it (Not Issued); the platform kept neither, so it
    holds the card unlinked and Active. A delink alone would fail there (3031): not_on_platform.csv links the card
    again with the label it had when the run delinked it, then delinks it, and running that file makes the run's
    store again. (Found by the property test above: its example, one by one.)"""
    customers: dict[int, tuple[str, int | None, str]] = dict.fromkeys(range(1, 7), ("ACTIVE", None, "LOYALTY"))
    store = ModelStore(
        customers,
        {(1, "INSTORE", "", "mobile", "61234567"), (5, "LINE", "", "mobile", "61234569")},
        {number: (series, None, "Active") for number, series in CARDS.items()},
    )
    org = tmp_path / "org.toml"
    org.write_text(toml_text(BASE_CONFIG))
    path = tmp_path / "store.duckdb"
    init_store(path, write_snapshot(store, tmp_path / "s0"))
    requests = tmp_path / "requests.csv"
    requests.write_text(
        "customer_id,lookup_type,lookup_value,source,account_id,action,id_type,id_value,series_id,status_label\n"
        "5,,,INSTORE,,add,cardnumber,SLV1X,102,Active\n"
        ",mobile,61234569,LINE,, Remove ,cardnumber,SLV1X,102,\n"
    )
    ran = run_batch(path, org, [requests], tmp_path / "run")
    assert ran.outcomes["applied"] == 2
    after_run = exported(path, tmp_path / "after-run")
    refresh_store(path, tmp_path / "s0", "R1", config_path=org, reports_dir=tmp_path / "rep", allow_removals=True)
    lost = pl.read_csv(tmp_path / "rep" / "not_on_platform.csv", infer_schema=False)
    assert lost.select("customer_id", "action", "id_value", "series_id", "status_label").rows() == [
        ("5", "add", "SLV1X", "102", "Active"),
        ("5", "remove", "SLV1X", None, "Not Issued"),
    ]
    assert lost["row_id"].n_unique() == 1
    again = run_batch(path, org, [tmp_path / "rep" / "not_on_platform.csv"], tmp_path / "again")
    assert again.failed == 0
    assert exported(path, tmp_path / "final") == after_run
