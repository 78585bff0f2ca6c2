"""`loyalty-bulk emulate`: the real server on 127.0.0.1, its answers, limits, faults, credentials and state."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import urllib3

from emulator_harness import HTTP, post, read_log, running_emulator
from pipeline.delivery.emulate import parse_faults
from pipeline.run import run_batch
from pipeline.store.snapshot import export_store, init_store

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"  # the sample org without [mobile]: stores made without --config
REQUESTS = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))


@pytest.fixture
def pre_run(tmp_path) -> Path:
    path = tmp_path / "pre.duckdb"
    init_store(path, ROOT / "sample_data" / "snapshot")
    return path


def copy(store: Path, name: str) -> Path:
    target = store.with_name(name)
    shutil.copyfile(store, target)
    return target


def exported(store: Path, out: Path) -> dict[str, bytes]:
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def change_url(base: str, call: dict) -> str:
    account = f"&accountId={call['account_id']}" if call["account_id"] else ""
    return f"{base}/v2/customers/{call['customer_id']}/changeIdentifier?source={call['source']}{account}"


def test_the_plan_sent_in_order_answers_as_expected_and_leaves_the_run_s_store(pre_run, tmp_path):
    ran, platform = copy(pre_run, "ran.duckdb"), copy(pre_run, "platform.duckdb")
    run_batch(ran, ORG, REQUESTS, tmp_path / "r")
    calls = [json.loads(line) for line in (tmp_path / "r" / "calls.ndjson").read_text().splitlines()]
    with running_emulator(platform, ORG, "--log", str(tmp_path / "log.ndjson")) as base:
        for call in calls:
            answer = post(change_url(base, call), call["body"])
            assert answer.status == 200, (call, answer.data)
            reply = answer.json()
            codes = sorted(w["code"] for w in reply["warnings"])
            assert codes == call["expect"]["warnings"], call
            if call["expect"]["outcome"] == "merged":
                assert reply["createdId"] == call["expect"]["survivor_id"]
            assert answer.headers["X-Cap-Requestid"]
        profile = HTTP.request("GET", f"{base}/v2/customers/{calls[0]['customer_id']}?source=ALL").json()
        values = {i["value"] for p in profile["profiles"] for i in p["identifiers"]}
        assert calls[0]["body"]["add"][0]["value"] in values
        missing = HTTP.request("GET", f"{base}/v2/customers/999999?source=ALL")
        assert missing.status == 404 and missing.json()["errors"][0]["code"] == 8015
    assert exported(platform, tmp_path / "e1") == exported(ran, tmp_path / "e2")
    log = read_log(tmp_path / "log.ndjson")
    assert sum(1 for e in log if e.get("changed")) == len(calls)


def test_an_item_error_answers_the_platform_codes_and_changes_nothing(pre_run, tmp_path):
    platform = copy(pre_run, "platform.duckdb")
    with running_emulator(platform, ORG) as base:
        bad = post(
            f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE", {"add": [{"type": "email", "value": "x"}]}
        )
        assert bad.status == 400 and [e["code"] for e in bad.json()["errors"]] == [8055]
        nobody = post(
            f"{base}/v2/customers/424242/changeIdentifier?source=INSTORE",
            {"add": [{"type": "email", "value": "n@x.co"}]},
        )
        assert [e["code"] for e in nobody.json()["errors"]] == [8015]
        shape = post(f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE", {"add": "x"})
        assert shape.status == 400
    assert exported(platform, tmp_path / "e1") == exported(pre_run, tmp_path / "e0")


def test_one_remove_and_one_add_of_a_type_is_a_replace_applied_as_one_change(pre_run, tmp_path):
    platform = copy(pre_run, "platform.duckdb")
    url_of = "{}/v2/customers/{}/changeIdentifier?source={}".format

    def replace(old: str, new: str, kind: str = "email") -> dict:
        return {"remove": [{"type": kind, "value": old}], "add": [{"type": kind, "value": new}]}

    with running_emulator(platform, ORG) as base:
        taken = post(url_of(base, 1001, "INSTORE"), replace("alice@example.com", "shared@example.com"))
        assert taken.status == 400 and [e["code"] for e in taken.json()["errors"]] == [8008]  # V's code, W kept
        done = post(url_of(base, 1001, "INSTORE"), replace("ALICE@example.com", "alice.new@example.com"))
        assert done.status == 200 and done.json() == {"createdId": 1001, "warnings": []}
        again = post(url_of(base, 1001, "INSTORE"), replace("alice@example.com", "alice.new@example.com"))
        assert again.status == 400 and [e["code"] for e in again.json()["errors"]] == [7009]  # W is gone now
        merged = post(url_of(base, 1017, "FACEBOOK"), replace("dana@example.com", "chain.survivor@example.com"))
        assert merged.status == 200 and merged.json()["createdId"] == 1006
        assert sorted(w["code"] for w in merged.json()["warnings"]) == [8051]
        profile = HTTP.request("GET", f"{base}/v2/customers/1006?source=ALL").json()
        values = {i["value"] for p in profile["profiles"] for i in p["identifiers"]}
        assert "chain.survivor@example.com" in values and "dana@example.com" not in values and "fb_1017" in values
    ran = copy(pre_run, "ran.duckdb")
    requests = tmp_path / "replaces.csv"
    requests.write_text(
        "customer_id,source,action,id_type,id_value\n"
        "1001,INSTORE,replace,email,alice.new@example.com\n"
        "1017,FACEBOOK,replace,email,chain.survivor@example.com\n"
    )
    run_batch(ran, ORG, [requests], tmp_path / "r")
    assert exported(platform, tmp_path / "e1") == exported(ran, tmp_path / "e2")


def test_overlapping_calls_for_one_customer_get_521(pre_run):
    with running_emulator(copy(pre_run, "p.duckdb"), ORG, "--latency", "400") as base:
        url = f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, url, {"add": [{"type": "externalId", "value": "EXT-X1"}]})
            time.sleep(0.1)
            second = pool.submit(post, url, {"add": [{"type": "externalId", "value": "EXT-X1"}]})
            statuses = sorted([first.result().status, second.result().status])
        assert statuses == [200, 521]
        other = post(
            f"{base}/v2/customers/1016/changeIdentifier?source=INSTORE",
            {"remove": [{"type": "externalId", "value": "nope"}]},
        )
        assert other.status == 400  # another customer is not locked out


def test_the_rate_is_enforced_with_429_and_retry_after(pre_run):
    with running_emulator(copy(pre_run, "p.duckdb"), ORG, "--rate", "60") as base:
        statuses = [HTTP.request("GET", f"{base}/v2/customers/1024?source=ALL") for _ in range(8)]
        throttled = [r for r in statuses if r.status == 429]
        assert [r.status for r in statuses[:5]] == [200] * 5, "the bucket holds 5 calls"
        assert throttled and all(int(r.headers["Retry-After"]) >= 1 for r in throttled)
        assert throttled[0].json()["errors"][0]["code"] == 517


def test_faults_500_and_drop_after_apply(pre_run, tmp_path):
    with running_emulator(copy(pre_run, "p.duckdb"), ORG, "--faults", "500:1") as base:
        answer = post(
            f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE",
            {"add": [{"type": "externalId", "value": "EXT-F"}]},
        )
        assert answer.status == 500
        profile = HTTP.request("GET", f"{base}/v2/customers/1024?source=ALL").json()
        assert "EXT-F" not in json.dumps(profile)
    log_path = tmp_path / "drop.ndjson"
    with running_emulator(
        copy(pre_run, "q.duckdb"), ORG, "--faults", "drop-after-apply:1", "--log", str(log_path)
    ) as base:
        with pytest.raises(urllib3.exceptions.ProtocolError):
            post(
                f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE",
                {"add": [{"type": "externalId", "value": "EXT-D"}]},
            )
        profile = HTTP.request("GET", f"{base}/v2/customers/1024?source=ALL").json()
        assert "EXT-D" in json.dumps(profile), "the call was applied before the connection dropped"
    (dropped,) = [e for e in read_log(log_path) if e["method"] == "POST"]
    assert (dropped["fault"], dropped["status"], dropped["changed"]) == ("drop-after-apply", None, True)


def test_timeout_applies_then_stalls(pre_run):
    with running_emulator(copy(pre_run, "p.duckdb"), ORG, "--faults", "timeout:1", "--stall", "3") as base:
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.TimeoutError):
            HTTP.request(
                "POST",
                f"{base}/v2/customers/1024/changeIdentifier?source=INSTORE",
                body=json.dumps({"add": [{"type": "externalId", "value": "EXT-T"}]}).encode(),
                timeout=urllib3.Timeout(total=1),
            )
        assert time.monotonic() - started < 3
        # applied before the stall: visible while the answer is still held back (polled, bounded)
        for _ in range(50):
            if "EXT-T" in json.dumps(HTTP.request("GET", f"{base}/v2/customers/1024?source=ALL").json()):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the timed-out call was not applied")
        assert time.monotonic() - started < 3 + 1, "seen applied before the stall ended"


def test_credentials_from_its_environment(pre_run):
    env = {
        "LOYALTY_BULK_API_USER": "till",
        "LOYALTY_BULK_API_PASSWORD": "s3cret",
        "LOYALTY_BULK_API_KEY": "k",
        "LOYALTY_BULK_API_SECRET": "sec",
    }
    basic = "Basic " + base64.b64encode(b"till:" + hashlib.md5(b"s3cret").hexdigest().encode()).decode()
    with running_emulator(copy(pre_run, "p.duckdb"), ORG, "--token-ttl", "1", env=env) as base:
        url = f"{base}/v2/customers/1024?source=ALL"
        assert HTTP.request("GET", url).status == 401
        assert HTTP.request("GET", url, headers={"Authorization": "Basic eDp5"}).status == 401
        assert HTTP.request("GET", url, headers={"Authorization": basic}).status == 200
        assert post(f"{base}/v3/oauth/token/generate", {"key": "k", "secret": "bad"}).status == 401
        token = post(f"{base}/v3/oauth/token/generate", {"key": "k", "secret": "sec"}).json()["data"]
        assert token["ttlSeconds"] == 1
        assert HTTP.request("GET", url, headers={"X-CAP-API-OAUTH-TOKEN": token["accessToken"]}).status == 200
        time.sleep(1.2)
        expired = HTTP.request("GET", url, headers={"X-CAP-API-OAUTH-TOKEN": token["accessToken"]})
        assert expired.status == 401 and expired.json()["errors"][0]["code"] == 498


def test_no_credentials_set_lets_any_pass(pre_run):
    with running_emulator(copy(pre_run, "p.duckdb"), ORG) as base:
        assert (
            HTTP.request("GET", f"{base}/v2/customers/1024?source=ALL", headers={"Authorization": "Basic x"}).status
            == 200
        )


def test_fault_specs_are_parsed_and_refused_naming_the_part():
    assert parse_faults("429:0.05,500:0.02,timeout:0.02,drop-after-apply:0.02") == {
        "429": 0.05,
        "500": 0.02,
        "timeout": 0.02,
        "drop-after-apply": 0.02,
    }
    for bad, words in [("418:0.1", "unknown fault '418'"), ("500:x", "share"), ("500:0.7,429:0.6", "more than 1")]:
        with pytest.raises(ValueError, match=words):
            parse_faults(bad)
