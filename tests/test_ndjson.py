"""NDJSON input (SPEC section 2): call bodies as request rows, refusals naming the line, and the round trip
of a run's calls.ndjson read back as input on the pre-run store."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from engine_harness import run_engine
from pipeline.errors import InputFileError
from pipeline.input.columns import FRAME_COLUMNS
from pipeline.input.read import read_requests
from pipeline.job import JobOverrides, run_job
from pipeline.run import run_batch
from pipeline.store.snapshot import export_store, init_store
from pipeline.validate import validate_files
from test_engine_properties import scenarios

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"  # the sample org without [mobile]: stores made without --config
REQUESTS = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))


def rows_of(path: Path) -> list[tuple]:
    frame = read_requests([path]).frame
    return frame.select(
        "row_number",
        "customer_id",
        "source",
        "account_id",
        "action",
        "id_type",
        "id_value",
        "series_id",
        "status_label",
        "row_id",
    ).rows()


def test_a_line_gives_its_removes_then_its_adds_and_row_numbers_count_rows(tmp_path):
    path = tmp_path / "calls.jsonl"
    path.write_text(
        '{"customerId": 1001, "source": "WECHAT", "accountId": "WX-MAIN", "row_id": "r1",'
        ' "add": [{"type": "wechat", "value": "w1"}, {"type": "mobile", "value": 61234567}],'
        ' "remove": [{"type": "email", "value": "a@b.com"}]}\n'
        "\n"
        '{"customer_id": "1002", "source": "INSTORE", "body": {"add": [{"type": "cardnumber", "value": "GLD1",'
        ' "seriesId": 101, "statusLabel": "Active"}]}, "call_id": "x:1", "after": [], "expect": {}}\n'
    )
    assert rows_of(path) == [
        (1, "1001", "WECHAT", "WX-MAIN", "remove", "email", "a@b.com", None, None, "r1"),
        (2, "1001", "WECHAT", "WX-MAIN", "add", "wechat", "w1", None, None, "r1"),
        (3, "1001", "WECHAT", "WX-MAIN", "add", "mobile", "61234567", None, None, "r1"),
        (4, "1002", "INSTORE", None, "add", "cardnumber", "GLD1", "101", "Active", None),
    ]
    zipped = tmp_path / "calls.ndjson.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert rows_of(zipped) == rows_of(path)
    assert read_requests([zipped]).files[0].format == "ndjson"


def test_one_remove_and_one_add_of_a_type_is_one_replace_row_carrying_the_removed_value(tmp_path):
    path = tmp_path / "calls.ndjson"
    path.write_text(
        '{"customer_id": 1001, "source": "INSTORE", "row_id": "r1", "body": {"remove": [{"type": "email",'
        ' "value": "Old@x.co"}], "add": [{"type": "email", "value": "n@x.co"}]}}\n'
        '{"customer_id": 1001, "source": "INSTORE", "add": [{"type": "email", "value": "n@x.co"}],'
        ' "remove": [{"type": "mobile", "value": "61234567"}]}\n'
        '{"customer_id": 1002, "source": "INSTORE", "remove": [{"type": "cardnumber", "value": "GLD1"}],'
        ' "add": [{"type": "cardnumber", "value": "GLD2", "seriesId": 101, "statusLabel": "Active"}]}\n'
        '{"customer_id": 1003, "source": "INSTORE", "remove": [{"type": "email", "value": "a@x.co"}],'
        ' "add": [{"type": "email", "value": "b@x.co"}, {"type": "email", "value": "c@x.co"}]}\n'
    )
    frame = read_requests([path]).frame
    assert frame.select("row_number", "customer_id", "action", "id_type", "id_value", "replaces").rows() == [
        (1, "1001", "replace", "email", "n@x.co", "Old@x.co"),  # a replace: one row, the removed value carried
        (2, "1001", "remove", "mobile", "61234567", None),  # another type: two rows as before
        (3, "1001", "add", "email", "n@x.co", None),
        (4, "1002", "remove", "cardnumber", "GLD1", None),  # cards are never replaced
        (5, "1002", "add", "cardnumber", "GLD2", None),
        (6, "1003", "remove", "email", "a@x.co", None),  # more than one add: not a replace
        (7, "1003", "add", "email", "b@x.co", None),
        (8, "1003", "add", "email", "c@x.co", None),
    ]
    again = tmp_path / "again.ndjson"
    again.write_text(path.read_text().replace("Old@x.co", "other@x.co"))
    assert read_requests([again]).files[0].fingerprint != read_requests([path]).files[0].fingerprint
    assert read_requests([path]).files[0].columns == read_requests([REQUESTS[0]]).files[0].columns


def test_a_replace_line_needs_the_customer_to_hold_the_removed_value(tmp_path):
    calls = tmp_path / "replace.ndjson"
    calls.write_text(
        '{"customer_id": 1001, "source": "INSTORE", "row_id": "held", "remove": [{"type": "email",'
        ' "value": " ALICE@example.com"}], "add": [{"type": "email", "value": "alice.new@example.com"}]}\n'
        '{"customer_id": 1016, "source": "INSTORE", "row_id": "not-held", "remove": [{"type": "externalId",'
        ' "value": "EXT-9999"}], "add": [{"type": "externalId", "value": "EXT-1016b"}]}\n'
        '{"customer_id": 1011, "source": "INSTORE", "row_id": "nothing-held", "remove": [{"type": "email",'
        ' "value": "x@example.com"}], "add": [{"type": "email", "value": "eleven@example.com"}]}\n'
    )
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    result = run_batch(store, ORG, [calls], tmp_path / "r")
    assert (result.outcomes["applied"], result.failed) == (1, 2)
    errors = {r["row_id"]: r for r in csv_rows(tmp_path / "r" / "errors.csv")}
    assert {k: (e["action"], e["error_code"], e["error_field"]) for k, e in errors.items()} == {
        "not-held": ("replace", "7009", "id_value"),
        "nothing-held": ("replace", "7009", "id_value"),
    }
    assert "externalId 'EXT-9999'" in errors["not-held"]["error_message"]
    assert "replaces" not in errors["not-held"]
    (call,) = [json.loads(line) for line in (tmp_path / "r" / "calls.ndjson").read_text().splitlines()]
    assert call["body"] == {
        "remove": [{"type": "email", "value": "alice@example.com"}],
        "add": [{"type": "email", "value": "alice.new@example.com"}],
    }


def test_a_run_of_replaces_read_back_from_its_calls_gives_the_same_store(tmp_path):
    pre = tmp_path / "pre.duckdb"
    init_store(pre, ROOT / "sample_data" / "snapshot")
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    shutil.copyfile(pre, first)
    shutil.copyfile(pre, second)
    run = run_batch(first, ORG, [ROOT / "tests" / "cases" / "replace_requests.csv"], tmp_path / "r")
    replayed = run_batch(second, ORG, [tmp_path / "r" / "calls.ndjson"], tmp_path / "r2")
    assert replayed.failed == 0 and replayed.outcomes["unchanged"] == 0 and replayed.calls == run.calls == 7
    success = csv_rows(tmp_path / "r2" / "success.csv")
    assert [r["action"] for r in success].count("replace") == 6  # the plain add went as an add
    assert exported(second, tmp_path / "e2") == exported(first, tmp_path / "e1")
    again = run_batch(second, ORG, [tmp_path / "r" / "calls.ndjson"], tmp_path / "r3", allow_reapply=True)
    assert again.failed == 6  # every replace's removed value is gone now: 7009; the add is unchanged


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("lines", "line", "words"),
    [
        (['{"customer_id": 1, "add": [{"type": "email", "value": "a@b.co"}]}', "[1, 2]"], 2, "JSON list"),
        (["", '{"customer_id": 1, "add": [{"type": "email"}]}'], 2, "needs 'type' and 'value'"),
        (['{"customer_id": 1, "add": {"type": "email", "value": "x"}}'], 1, "must be a list"),
        (['{"customer_id": 1, "remove": []}'], 1, "no 'add' or 'remove' item"),
        (['{"add": [{"type": "email", "value": "x"}]}'], 1, "no customer_id"),
        (['{"customer_id": 1, "customerId": 1, "add": [{"type": "email", "value": "x"}]}'], 1, "repeats"),
        (['{"customer_id": 1, "colour": 2, "add": [{"type": "email", "value": "x"}]}'], 1, "unknown key 'colour'"),
        (['{"customer_id": 1.5, "add": [{"type": "email", "value": "x"}]}'], 1, "string or an integer"),
        (['{"customer_id": 1, "add": [{"type": "email", "value": "x", "seriesCode": "G"}]}'], 1, "seriesCode"),
        (['{"customer_id": 1, "add": [{"type": "e", "value": "x"}], "body": {"add": []}}'], 1, "both inside"),
        (["{not json"], 1, "invalid JSON"),
    ],
)
def test_a_line_that_is_not_a_call_body_is_refused_naming_the_line(tmp_path, lines, line, words):
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError) as refused:
        read_requests([path])
    assert (refused.value.code, refused.value.line) == (7102, line)
    assert words in str(refused.value)


def test_validate_and_run_and_jobs_read_ndjson(tmp_path):
    calls = tmp_path / "in.ndjson"
    calls.write_text(
        '{"customer_id": 1024, "source": "INSTORE", "add": [{"type": "externalId", "value": "EXT-N1"}]}\n'
        '{"customer_id": 1024, "source": "INSTORE", "add": [{"type": "email", "value": "bad"}]}\n'
    )
    checked = validate_files(ORG, [calls], tmp_path / "v")
    assert (checked.rows, checked.rows_failed) == (2, 1)
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")
    result = run_batch(store, ORG, [calls], tmp_path / "r", dry_run=True)
    assert (result.outcomes["applied"], result.failed) == (1, 1)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nstore = "{store}"\nconfig = "{ORG}"\ninputs = ["*.ndjson"]\nreports = "jr"\n')
    jobbed = run_job(job, JobOverrides())
    assert (jobbed.outcomes["applied"], jobbed.failed) == (1, 1)


def exported(store: Path, out: Path) -> dict[str, bytes]:
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_calls_ndjson_read_back_on_the_pre_run_store_gives_the_same_store(tmp_path):
    pre = tmp_path / "pre.duckdb"
    init_store(pre, ROOT / "sample_data" / "snapshot")
    first, second = tmp_path / "first.duckdb", tmp_path / "second.duckdb"
    shutil.copyfile(pre, first)
    shutil.copyfile(pre, second)
    run = run_batch(first, ORG, REQUESTS, tmp_path / "r")
    assert run.merges > 0 and run.calls > 0
    replayed = run_batch(second, ORG, [tmp_path / "r" / "calls.ndjson"], tmp_path / "r2")
    assert replayed.failed == 0 and replayed.outcomes["unchanged"] == 0
    assert replayed.calls == run.calls
    assert exported(second, tmp_path / "e2") == exported(first, tmp_path / "e1") != exported(pre, tmp_path / "e0")


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_the_plan_run_as_a_batch_gives_the_run_s_store_on_random_batches(scenario):
    config, store, rows = scenario
    engine = run_engine(store, rows, config)
    with tempfile.TemporaryDirectory() as folder:
        plan = Path(folder) / "calls.ndjson"
        plan.write_text("".join(json.dumps(call) + "\n" for call in engine.calls))
        frame = read_requests([plan]).frame
    as_rows = frame.select(FRAME_COLUMNS[3:]).to_dicts()  # a replace's removed value with its row
    replayed = run_engine(store, as_rows, config)
    assert all(r.outcome in ("applied", "merged") for r in replayed.results)
    assert {n: f.rows() for n, f in replayed.frames.items()} == {n: f.rows() for n, f in engine.frames.items()}
