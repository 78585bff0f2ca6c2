"""`loyalty-bulk push` against the real `loyalty-bulk emulate` over loopback (SPEC section 8).

Every test runs the installed commands as subprocesses: faults, SIGKILL and restarts, drift, pacing,
secrets and a token worn out mid-push. "Equal" means: the emulator's store after SIGTERM, exported,
is byte for byte the run's store, exported.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from emulator_harness import CLI, read_log, running_emulator
from model import model_store_to_frames
from pipeline.faults import ENV_KILL_AT, PUSH_POINTS
from pipeline.run import run_batch
from pipeline.store.duck import scalar
from pipeline.store.snapshot import export_store, init_store
from test_engine_properties import BASE_CONFIG, request_rows, stores

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"  # the sample org without [mobile]: stores made without --config
REQUESTS = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))
CREDS = {"LOYALTY_BULK_API_USER": "till", "LOYALTY_BULK_API_PASSWORD": "pw-S3cret-42"}


def exported(store: Path, out: Path) -> dict[str, bytes]:
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def push(reports: Path, config: Path, url: str, *options: str, env: dict[str, str] | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess:  # fmt: skip
    environ = {"PATH": "/usr/bin:/bin", **(CREDS if env is None else env)}
    return subprocess.run(
        [CLI, "push", str(reports), "--config", str(config), "--api", url, *options],
        capture_output=True, text=True, timeout=timeout, env=environ,
    )  # fmt: skip


class Run:
    """A run on a copy of the pre-run store: its reports (calls.ndjson) and both stores."""

    def __init__(self, folder: Path, snapshot: Path, config: Path, requests: list[Path]):
        self.folder, self.config = folder, config
        folder.mkdir(parents=True, exist_ok=True)
        self.pre = folder / "pre.duckdb"
        init_store(self.pre, snapshot)
        self.ran = folder / "ran.duckdb"
        shutil.copyfile(self.pre, self.ran)
        self.reports = folder / "reports"
        self.result = run_batch(self.ran, config, requests, self.reports)
        self.calls = [json.loads(line) for line in (self.reports / "calls.ndjson").read_text().splitlines()]

    def platform(self, name: str = "platform.duckdb") -> Path:
        path = self.folder / name
        shutil.copyfile(self.pre, path)
        return path

    def fresh_reports(self, name: str, calls: list[dict] | None = None) -> Path:
        """A copy of the reports folder without any push state (a new push), optionally with other calls."""
        target = self.folder / name
        shutil.copytree(self.reports, target, ignore=shutil.ignore_patterns("push*"))
        if calls is not None:
            (target / "calls.ndjson").write_text("".join(json.dumps(c) + "\n" for c in calls))
        return target

    def equal(self, platform: Path) -> bool:
        return exported(platform, self.folder / f"x-{platform.stem}") == exported(self.ran, self.folder / "x-ran")


def outcomes(reports: Path) -> dict[str, str]:
    lines = (reports / "push.csv").read_text().splitlines()
    header = lines[0].split(",")
    return {cells[0]: cells[header.index("outcome")] for cells in (line.split(",") for line in lines[1:])}


@pytest.fixture
def sample_run(tmp_path) -> Run:
    return Run(tmp_path / "sample", ROOT / "sample_data" / "snapshot", ORG, REQUESTS)


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory) -> Run:
    """A generated org and batch (a few hundred calls, merges and cards among them)."""
    folder = tmp_path_factory.mktemp("generated")
    subprocess.run(
        [CLI, "sample", "--out", str(folder / "data"), "--customers", "3000", "--rows", "400", "--seed", "7"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = folder / "data"
    return Run(folder / "run", data / "snapshot", data / "org.toml", [data / "requests.csv"])


def changed_at_most_once(log: list[dict], calls: list[dict]) -> None:
    """No call changed the platform twice: per (customer, body), changing answers <= calls of the plan."""
    planned = Counter((c["customer_id"], json.dumps(c["body"], sort_keys=True)) for c in calls)
    posts = [e for e in log if e["method"] == "POST" and e.get("changed")]
    changed = Counter((e["customer_id"], json.dumps(e["body"], sort_keys=True)) for e in posts)
    assert all(n <= planned[key] for key, n in changed.items()), [k for k, n in changed.items() if n > planned[k]]
    assert sum(changed.values()) == len(calls)


@pytest.mark.slow
def test_every_fault_kind_still_equal_and_each_call_changed_the_platform_once(generated_run, tmp_path):
    run = generated_run
    platform, log = run.platform("faults.duckdb"), tmp_path / "log.ndjson"
    reports = run.fresh_reports("faults")
    faults = "429:0.06,500:0.06,timeout:0.05,drop-after-apply:0.06"
    with running_emulator(platform, run.config, "--faults", faults, "--stall", "2", "--seed", "5",
                          "--fault-retry-after", "0", "--log", str(log)) as url:  # fmt: skip
        done = push(reports, run.config, url, "--rate", "60000", "--max-in-flight", "8", "--timeout", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert run.equal(platform)
    entries = read_log(log)
    faulted = [e for e in entries if e.get("fault")]
    assert {e["fault"] for e in faulted} == {"429", "500", "timeout", "drop-after-apply"}
    first_tries = {e["request_id"] for e in entries if e["method"] == "POST"}
    assert len(faulted) >= 0.2 * len(run.calls) and len(first_tries) > len(run.calls)
    changed_at_most_once(entries, run.calls)
    assert set(outcomes(reports).values()) <= {"confirmed", "already_applied"}
    assert "already_applied" in outcomes(reports).values()


KILLS = [  # point:n, the n-th passage through one of PUSH_POINTS
    "before-send:7",
    "after-send:9",
    "settle:1",
    "before-send:15",
    "after-send:3",
    "settle:2",
    "after-send:12",
    "before-send:1",
    "settle:1",
    "after-send:20",
    "before-send:30",
    "after-send:1",
]
"""Named moments: before a send (journal says sending), after the answer came but before the journal
recorded it, and during a settling read (answered, not recorded); the n-th passage of each push."""  # fmt: skip
assert {kill.partition(":")[0] for kill in KILLS} == set(PUSH_POINTS), "every point of the push's hook is killed at"


@pytest.mark.slow
def test_sigkill_at_named_moments_and_restart_gives_the_uninterrupted_result(generated_run, tmp_path):
    run = generated_run
    platform, log = run.platform("killed.duckdb"), tmp_path / "log.ndjson"
    reports = run.fresh_reports("killed")
    killed = 0
    with running_emulator(platform, run.config, "--faults", "timeout:0.15,drop-after-apply:0.05", "--stall", "1.5",
                          "--seed", "11", "--log", str(log)) as url:  # fmt: skip
        for point in KILLS:
            done = push(reports, run.config, url, "--rate", "60000", "--max-in-flight", "4", "--timeout", "0.7",
                        env={**CREDS, ENV_KILL_AT: point})  # fmt: skip
            killed += done.returncode == -9
            assert done.returncode == -9, (point, done.returncode, done.stdout, done.stderr)
            assert f"fault hook: SIGKILL at {point.partition(':')[0]}" in done.stderr, "the hook, not something else"
        final = push(reports, run.config, url, "--rate", "60000", "--timeout", "0.7")
    assert killed >= 10, killed
    assert final.returncode == 0, final.stdout + final.stderr
    assert run.equal(platform)
    changed_at_most_once(read_log(log), run.calls)
    assert set(outcomes(reports).values()) <= {"confirmed", "already_applied"}
    again = push(reports, run.config, "http://127.0.0.1:9", "--rate", "60000")
    assert again.returncode == 0, "a finished push sends nothing more (the emulator is gone)"


def test_replaces_pushed_through_lost_answers_leave_the_platform_as_the_run_left_the_store(tmp_path):
    """A replace is one call; one whose answer was lost is settled by reading the customer back (V held, W gone)."""
    run = Run(
        tmp_path / "replace",
        ROOT / "sample_data" / "snapshot",
        ORG,
        [ROOT / "tests" / "cases" / "replace_requests.csv"],
    )
    assert sum(1 for c in run.calls if "remove" in c["body"] and "add" in c["body"]) == 6
    platform, log = run.platform(), tmp_path / "log.ndjson"
    with running_emulator(platform, ORG, "--faults", "drop-after-apply:0.5,timeout:0.2", "--stall", "1", "--seed", "3",
                          "--log", str(log)) as url:  # fmt: skip
        done = push(run.reports, ORG, url, "--rate", "60000", "--timeout", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert run.equal(platform)
    changed_at_most_once(read_log(log), run.calls)
    pushed = outcomes(run.reports)
    assert set(pushed.values()) <= {"confirmed", "already_applied"} and "already_applied" in pushed.values()
    report = pl.read_csv(run.reports / "push.csv", infer_schema=False)
    assert sorted(report["action"].to_list()) == ["add"] + ["replace"] * 6
    assert set(report.filter(pl.col("row_id") == "R-1-replaced")["id_value"]) == {"alice.new@example.com"}


def _alter_platform(store: Path, calls: list[dict]) -> tuple[str, str]:
    """Another customer takes a value the plan adds; a card the plan delinks is delinked on the platform only."""
    add = next(c for c in calls if "add" in c["body"] and c["body"]["add"][0]["type"] not in ("cardnumber",)
               and c["expect"]["outcome"] == "applied" and c["after"] == [] and c["account_id"] is None)  # fmt: skip
    delink = next(c for c in calls if "remove" in c["body"] and c["body"]["remove"][0]["type"] == "cardnumber")
    item = add["body"]["add"][0]
    with duckdb.connect(str(store)) as con:
        other = scalar(
            con,
            "SELECT customer_id FROM customers WHERE status = 'ACTIVE' AND customer_type = 'LOYALTY' "
            "AND customer_id <> ? AND customer_id NOT IN (SELECT customer_id FROM identifiers WHERE source = ?) "
            "ORDER BY customer_id LIMIT 1",
            [add["customer_id"], add["source"]],
        )
        con.execute(
            "INSERT INTO identifiers VALUES (?, ?, '', ?, ?, hash(?, ?))",
            [other, add["source"], item["type"], item["value"], item["type"], item["value"]],
        )
        con.execute(
            "UPDATE cards SET customer_id = NULL, status_label = 'Not Issued' WHERE card_number = ?",
            [delink["body"]["remove"][0]["value"]],
        )
    return add["call_id"], delink["call_id"]


def test_drift_blocks_dependents_only_and_max_drift_stops_then_resumes(generated_run, tmp_path):
    run = generated_run
    platform = run.platform("drift.duckdb")
    drifted = set(_alter_platform(platform, run.calls))
    dependents: set[str] = set()
    grew = True
    while grew:
        grew = False
        for c in run.calls:
            if c["call_id"] not in dependents and set(c["after"]) & (drifted | dependents):
                dependents.add(c["call_id"])
                grew = True
    stopping = run.fresh_reports("drift-stop")
    with running_emulator(platform, run.config) as url:
        stopped = push(stopping, run.config, url, "--rate", "60000", "--max-drift", "0")
        assert stopped.returncode == 3, stopped.stdout + stopped.stderr
        assert "STOPPED" in stopped.stdout
        first = outcomes(stopping)
        assert "planned" in first.values() and "drift" in first.values()
        resumed = push(stopping, run.config, url, "--rate", "60000")
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    final = outcomes(stopping)
    assert {c for c, o in final.items() if o == "drift"} == drifted
    assert {c for c, o in final.items() if o == "blocked"} == dependents
    assert {o for c, o in final.items() if c not in drifted | dependents} == {"confirmed"}
    summary = json.loads((stopping / "push-summary.json").read_text())
    assert summary["outcomes"]["drift"] == 2 and summary["exit_code"] == 1
    assert 'id="push"' in (stopping / "summary.html").read_text()


@pytest.mark.slow
def test_pacing_on_the_emulator_log(generated_run, tmp_path):
    run, rate = generated_run, 1200.0
    independent = [c for c in run.calls if not c["after"]][:60]
    reports = run.fresh_reports("pacing", independent)
    log = tmp_path / "log.ndjson"
    with running_emulator(run.platform("pace.duckdb"), run.config, "--rate", str(rate), "--log", str(log)) as url:
        done = push(reports, run.config, url, "--rate", str(rate), "--max-in-flight", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    times = sorted(e["received"] for e in read_log(log))
    assert len(times) == len(independent) + 1, "every call, and the pre-flight read before them (paced as well)"
    assert [e for e in read_log(log) if e["status"] == 429] == [], "the emulator's own 429s at its rate"
    # the limiter's burst is 1 (GCRA); arrivals may bunch by what the loopback, the threads and a loaded
    # machine add between a slot and its arrival, allowed here as 0.5 s of the rate
    window, burst, jitter = 2.0, 1, rate / 60 * 0.5
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t < start + window)
        assert inside <= rate * window / 60 + burst + jitter, (start, inside)
    with sqlite3.connect(reports / "push.journal") as journal:
        sent = sorted(t for (t,) in journal.execute("SELECT sent_at FROM attempts"))
    for i, start in enumerate(sent):
        inside = sum(1 for t in sent[i:] if t < start + window)
        assert inside <= rate * window / 60 + burst + 1, ("journal", start, inside)  # +1: a slot's wake-up
    achieved = (len(times) - 1) / (times[-1] - times[0]) * 60
    assert abs(achieved - rate) <= 0.05 * rate, achieved
    summary = json.loads((reports / "push-summary.json").read_text())
    assert summary["configured_rate_per_minute"] == rate


@pytest.mark.slow
def test_pacing_survives_a_restart(generated_run, tmp_path):
    """Killed after its second answer and started again at once, the push keeps the interval from its journal."""
    run, rate = generated_run, 20.0  # one request every 3 s
    reports = run.fresh_reports("pace-restart", [c for c in run.calls if not c["after"]][:4])
    log = tmp_path / "log.ndjson"
    with running_emulator(run.platform("restart.duckdb"), run.config, "--log", str(log)) as url:
        killed = push(reports, run.config, url, "--rate", str(rate), env={**CREDS, ENV_KILL_AT: "after-send:2"})
        assert killed.returncode == -9
        done = push(reports, run.config, url, "--rate", str(rate))
    assert done.returncode == 0, done.stdout + done.stderr
    times = sorted(e["received"] for e in read_log(log))
    assert len(times) >= 7, "4 calls, each push's pre-flight read, the settling read of the one in flight at the kill"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 60 / rate - 0.25, gaps


def test_a_429_with_retry_after_2_delays_that_call_at_least_2_s(sample_run, tmp_path):
    run, log = sample_run, tmp_path / "log.ndjson"
    with running_emulator(run.platform(), run.config, "--faults", "429:0.3", "--fault-retry-after", "2",
                          "--seed", "2", "--log", str(log)) as url:  # fmt: skip
        done = push(run.reports, run.config, url, "--rate", "60000", "--mask-pii")
    assert done.returncode == 0, done.stdout + done.stderr
    masked = (run.reports / "push.csv").read_text()
    values = [c["body"][next(iter(c["body"]))][0]["value"] for c in run.calls]
    assert not [v for v in values if len(v) > 4 and f",{v}," in masked], "--mask-pii masks push.csv's values"
    entries = [e for e in read_log(log) if e["method"] == "POST"]
    throttled = [e for e in entries if e["status"] == 429]
    assert throttled
    for e in throttled:
        again = next(x for x in entries if x["received"] > e["received"] and x["body"] == e["body"]
                     and x["customer_id"] == e["customer_id"])  # fmt: skip
        assert again["received"] - e["answered"] >= 2.0 - 0.01, (e, again)
    assert run.equal(run.folder / "platform.duckdb")


def test_secrets_appear_in_nothing_the_push_wrote_or_said(sample_run, tmp_path):
    run = sample_run
    password, key_secret = CREDS["LOYALTY_BULK_API_PASSWORD"], "oauth-S3cret-99"
    md5 = hashlib.md5(password.encode()).hexdigest()
    basic = base64.b64encode(f"till:{md5}".encode()).decode()
    oauth = {"LOYALTY_BULK_API_KEY": "key-1", "LOYALTY_BULK_API_SECRET": key_secret}
    oauth_org = tmp_path / "oauth.toml"
    oauth_org.write_text(ORG.read_text() + '\n[platform]\nauth = "oauth"\n')
    log = tmp_path / "log.ndjson"
    outputs = []
    with running_emulator(run.platform(), run.config, "--log", str(log), env={**CREDS, **oauth}) as url:
        wrong = push(run.reports, run.config, url, env={**CREDS, "LOYALTY_BULK_API_PASSWORD": "nope-wrong-pw"})
        outputs.append(wrong.stdout + wrong.stderr)
        assert wrong.returncode == 2 and "refused the credentials" in wrong.stderr
        done = push(run.reports, run.config, url, "--rate", "60000")
        outputs.append(done.stdout + done.stderr)
    half = run.fresh_reports("oauth")
    with running_emulator(run.platform("oauth.duckdb"), run.config, "--log", str(log), env=oauth) as url:
        first = push(half, oauth_org, url, "--rate", "60000", env=oauth)
        outputs.append(first.stdout + first.stderr)
    assert first.returncode == 0 and done.returncode == 0, outputs
    tokens = [json.loads(line) for line in log.read_text().splitlines()]
    assert all("accessToken" not in json.dumps(t) for t in tokens)
    written = [p for folder in (run.reports, half) for p in folder.iterdir() if p.is_file()] + [log]
    assert any(p.name == "push.journal" for p in written)
    for secret in (password, md5, basic, key_secret, "nope-wrong-pw"):
        for path in written:
            assert secret.encode() not in path.read_bytes(), (secret, path)
        assert all(secret not in text for text in outputs), secret


def test_a_token_worn_out_mid_push_is_renewed_once_and_the_push_goes_on(sample_run, tmp_path):
    run, log = sample_run, tmp_path / "log.ndjson"
    oauth = {"LOYALTY_BULK_API_KEY": "key-1", "LOYALTY_BULK_API_SECRET": "sec-1"}
    org = tmp_path / "oauth.toml"
    org.write_text(ORG.read_text() + '\n[platform]\nauth = "oauth"\n')
    with running_emulator(run.platform(), org, "--token-uses", "7", "--log", str(log), env=oauth) as url:
        done = push(run.reports, org, url, "--rate", "60000", "--max-in-flight", "1", env=oauth)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = read_log(log)
    expired = [e for e in entries if e["status"] == 401]
    token_calls = [e for e in entries if e["path"].endswith("/token/generate")]
    assert expired and all(e["answer"]["errors"][0]["code"] == 498 for e in expired)
    assert len(token_calls) == 1 + len(expired), "one renewal per expiry"
    assert run.equal(run.folder / "platform.duckdb")
    assert set(outcomes(run.reports).values()) == {"confirmed"}


def _push_on_a_terminal(reports: Path, config: Path, url: str, *options: str) -> tuple[int, str, str]:
    """Run push with stderr on a pseudo-terminal (as in an interactive shell) and stdout on a pipe."""
    leader, follower = os.openpty()
    environ = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "COLUMNS": "120", **CREDS}
    process = subprocess.Popen(
        [CLI, "push", str(reports), "--config", str(config), "--api", url, *options],
        stdout=subprocess.PIPE, stderr=follower, text=True, env=environ,
    )  # fmt: skip
    os.close(follower)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    stdout = process.stdout.read() if process.stdout else ""
    return process.wait(timeout=120), stdout, seen.decode("utf-8", "replace")


def test_the_progress_bar_shows_on_a_terminal_only(sample_run, tmp_path):
    run = sample_run
    with running_emulator(run.platform(), run.config, "--latency", "40") as url:
        code, stdout, terminal = _push_on_a_terminal(run.reports, run.config, url, "--rate", "600")
    with running_emulator(run.platform("piped.duckdb"), run.config) as url:
        piped = push(run.fresh_reports("piped"), run.config, url, "--rate", "60000")
    assert code == 0, stdout + terminal
    calls = len(run.calls)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal)
    # calls ended of all, the achieved rate and the time left, redrawn as the push goes on
    counts = [int(n) for n in re.findall(rf"(\d+)/{calls} calls · \d+ requests/min", shown)]
    assert len(set(counts)) >= 2 and max(counts) <= calls, shown[-2000:]
    assert re.search(rf"/{calls} calls · \d+ requests/min\s+(\d+:\d\d:\d\d|-:--:--)", shown), shown[-2000:]
    assert "requests/min achieved" in stdout  # the summary still goes to stdout
    assert piped.returncode == 0 and "calls ·" not in piped.stderr and "\x1b[" not in piped.stderr + piped.stdout


def test_a_second_push_on_the_same_journal_is_refused(sample_run):
    run = sample_run
    with running_emulator(run.platform(), run.config, "--latency", "1500") as url:
        first = subprocess.Popen(
            [CLI, "push", str(run.reports), "--config", str(run.config), "--api", url, "--rate", "60000"],
            env={"PATH": "/usr/bin:/bin", **CREDS}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(100):
            if (run.reports / "push.journal").exists():
                break
            time.sleep(0.05)
        second = push(run.reports, run.config, url, "--rate", "60000")
        first.wait(timeout=120)
    assert second.returncode == 3 and "another push" in second.stderr
    assert first.returncode == 0


def test_usage_errors_exit_2_and_send_nothing(sample_run):
    run = sample_run
    no_creds = push(run.reports, run.config, "http://127.0.0.1:9", env={})
    assert no_creds.returncode == 2 and "LOYALTY_BULK_API_USER" in no_creds.stderr
    no_api = subprocess.run(
        [CLI, "push", str(run.reports), "--config", str(run.config)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **CREDS},
    )  # fmt: skip
    assert no_api.returncode == 2 and "platform.api" in no_api.stderr
    assert not (run.reports / "push.journal").exists()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def config_toml(raw: dict) -> str:
    """The property tests' config dicts as TOML (tables, tables of tables, one array of tables)."""
    lines: list[str] = []
    for table, body in raw.items():
        if isinstance(body, list):
            for item in body:
                lines += [f"[[{table}]]", *(f"{k} = {_toml_value(v)}" for k, v in item.items())]
        elif all(isinstance(v, dict) for v in body.values()) and body:
            for name, inner in body.items():
                lines += [f"[{table}.{json.dumps(name)}]", *(f"{k} = {_toml_value(v)}" for k, v in inner.items())]
        else:
            lines += [f"[{table}]", *(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in body.items())]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stores(), st.lists(request_rows(n_customers=7), min_size=8, max_size=25), st.booleans(), st.integers(0, 2))
def test_property_push_with_varying_order_leaves_the_platform_as_the_run_left_the_store(store, rows, reuse, merges):
    raw = dict(BASE_CONFIG, org=dict(BASE_CONFIG["org"], campaign_identifier_reuse=reuse))
    raw["merge"] = {"enabled": True, "max_merges_per_survivor_per_run": merges}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "snapshot").mkdir()
        for name, frame in model_store_to_frames(store).items():
            frame.write_parquet(work / "snapshot" / f"{name}.parquet")
        (work / "org.toml").write_text(config_toml(raw))
        columns = ["customer_id", "lookup_type", "lookup_value", "source", "account_id", "action", "id_type",
                   "id_value", "series_id", "status_label"]  # fmt: skip
        pl.DataFrame([[r.get(c) or "" for c in columns] for r in rows], schema=columns, orient="row").write_csv(
            work / "requests.csv"
        )
        run = Run(work / "run", work / "snapshot", work / "org.toml", [work / "requests.csv"])
        assume(len(run.calls) >= 2)
        platform, log = run.platform(), work / "log.ndjson"
        with running_emulator(
            platform, run.config, "--latency", "2", "--latency-jitter", "40", "--log", str(log)
        ) as url:
            done = push(run.reports, run.config, url, "--rate", "60000", "--max-in-flight", "8")
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(outcomes(run.reports).values()) <= {"confirmed"}
        assert run.equal(platform)
