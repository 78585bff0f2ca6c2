"""A call read in one place (input/calls.py): every line a run writes to calls.ndjson parses as a Call and writes
back as the same line, its call read as the NDJSON input reads it; a line that is not a planned call is refused
saying why, and push's plan names the line."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ORG, REQUESTS
from pipeline.delivery.push import load_plan
from pipeline.delivery.verdict import in_place
from pipeline.errors import NotACallBody
from pipeline.input.calls import Call, Expect, call_rows, parse_call
from pipeline.run import run_batch

LINE: dict[str, Any] = {
    "call_id": "RUN:7",
    "file": "requests.csv",
    "row_number": 8,
    "row_id": "r8",
    "customer_id": 1024,
    "source": "WECHAT",
    "account_id": "WX-MAIN",
    "body": {"add": [{"type": "wechat", "value": "w-1"}]},
    "after": ["RUN:3"],
    "expect": {"outcome": "merged", "warnings": [8051], "survivor_id": 1016},
}


def test_every_line_of_the_sample_plan_parses_as_a_call_and_round_trips(store, tmp_path):
    run_batch(store, ORG, REQUESTS, tmp_path / "r", dry_run=True)
    lines = (tmp_path / "r" / "calls.ndjson").read_text(encoding="utf-8").splitlines()
    calls = [parse_call(line) for line in lines]
    assert calls and any(c.expect.survivor_id for c in calls) and any(c.account_id for c in calls)
    for line, call in zip(lines, calls, strict=True):
        assert call.to_dict() == json.loads(line) and list(call.to_dict()) == list(json.loads(line))
        assert json.dumps(call.to_dict(), ensure_ascii=False, separators=(",", ":")) == line
        action, item = call.change
        ((row,),) = [call_rows(json.loads(line))]
        assert (row["customer_id"], row["action"], row["id_value"]) == (str(call.customer_id), action, item["value"])


def test_a_planned_call_is_typed():
    call = parse_call(json.dumps(LINE))
    assert call == Call(
        call_id="RUN:7", file="requests.csv", row_number=8, row_id="r8", customer_id=1024, source="WECHAT",
        account_id="WX-MAIN", body={"add": [{"type": "wechat", "value": "w-1"}]}, after=("RUN:3",),
        expect=Expect(outcome="merged", warnings=(8051,), survivor_id=1016),
    )  # fmt: skip
    assert call.change == ("add", {"type": "wechat", "value": "w-1"})


def test_a_replace_call_is_one_row_and_its_change_is_in_place_when_v_is_held_and_w_gone():
    body = {"remove": [{"type": "wechat", "value": "w-0"}], "add": [{"type": "wechat", "value": "w-1"}]}
    call = parse_call(json.dumps(LINE | {"body": body, "expect": {"outcome": "applied", "warnings": []}}))
    assert (call.change, call.replaced) == (("replace", {"type": "wechat", "value": "w-1"}), body["remove"][0])
    assert call.to_dict()["body"] == body and list(call.to_dict()["body"]) == ["remove", "add"]
    (row,) = call_rows(json.loads(json.dumps(LINE | {"body": body})))
    assert (row["action"], row["id_value"], row["replaces"]) == ("replace", "w-1", "w-0")

    def read_back(*values: str) -> dict[str, Any]:
        identifiers = [{"type": "wechat", "value": v} for v in values]
        return {
            "status": "ACTIVE",
            "profiles": [{"source": "WECHAT", "accountId": "WX-MAIN", "identifiers": identifiers}],
        }

    assert in_place(call, 200, read_back("w-1")) is True
    assert in_place(call, 200, read_back("w-0")) is False  # not sent, or refused: W still there
    assert in_place(call, 200, read_back()) is False
    assert parse_call(json.dumps(LINE)).replaced is None


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda line: line.pop(key)


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda line: line.update({key: value})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_drop("expect"), "'expect' must be an object"),
        (_drop("call_id"), "no 'call_id'"),
        (_set("after", "RUN:3"), "'after' must be a list of call ids"),
        (_set("customer_id", "1024"), "'customer_id' must be an integer"),
        (_set("row_number", True), "'row_number' must be an integer"),
        (_set("account_id", 5), "'account_id' must be a string or null"),
        (_set("body", None), "'body' must be an object"),
        (lambda line: line["expect"].update(warnings=["8051"]), "'warnings' must be a list of codes"),
        (lambda line: line["expect"].pop("outcome"), "no 'outcome'"),
        (_set("colour", "red"), "unknown key 'colour'"),  # what the NDJSON input refuses, push refuses
        (lambda line: line["body"]["add"][0].pop("value"), "needs 'type' and 'value'"),
    ],
)
def test_a_line_that_is_not_a_planned_call_is_refused_saying_why(change, words):
    line = copy.deepcopy(LINE)
    change(line)
    with pytest.raises(NotACallBody, match=words):
        parse_call(json.dumps(line))


def test_push_s_plan_names_the_line_that_is_not_a_call(tmp_path: Path):
    (tmp_path / "calls.ndjson").write_text(json.dumps(LINE) + "\n\n{not json\n")
    with pytest.raises(NotACallBody, match=r"calls.ndjson, line 3: invalid JSON"):
        load_plan(tmp_path)
    (tmp_path / "calls.ndjson").write_text(json.dumps(LINE) + "\n")
    calls, sha256 = load_plan(tmp_path)
    assert calls == [parse_call(json.dumps(LINE))] and len(sha256) == 64
