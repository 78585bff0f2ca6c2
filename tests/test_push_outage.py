"""`loyalty-bulk push` after an outage: the pre-flight, never-sent failures retried as certain, retries counted by
plain causes, `push --retry` re-opening what failed (and what only that blocked), progress lines off a terminal.

The outage is the real thing on loopback: the emulator answers the pre-flight, the push is held at its first send
(faults.py's hold hook), the emulator is stopped (its state written) and the push meets a closed port; later an
emulator is started on the same port over the store the first one left. "Equal" means, as in test_push.py: the
emulated platform, exported, is byte for byte the run's store, exported.
"""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import urllib3

from emulator_harness import CLI, read_log, running_emulator
from pipeline.console import plain_push_line, push_progress
from pipeline.delivery import causes
from pipeline.delivery.client import Client, Credentials, NoAnswer
from pipeline.delivery.journal import JOURNAL_FILE, Journal, JournalAnswer, Outcome
from pipeline.delivery.pacing import Pace
from pipeline.delivery.platform import TOKEN_HEADER
from pipeline.delivery.push import PushProgress, load_plan, reopenable
from pipeline.delivery.verdict import judge
from pipeline.faults import ENV_HOLD_AT, ENV_HOLD_UNTIL, ENV_KILL_AT, PUSH_POINTS
from pipeline.input.calls import parse_call
from test_push import CREDS, ORG, REQUESTS, ROOT, Run, _alter_platform, changed_at_most_once, outcomes, push

OAUTH = {"LOYALTY_BULK_API_KEY": "key-1", "LOYALTY_BULK_API_SECRET": "oauth-S3cret-77"}


@pytest.fixture
def sample_run(tmp_path) -> Run:
    return Run(tmp_path / "sample", ROOT / "sample_data" / "snapshot", ORG, REQUESTS)


def free_port() -> int:
    """A port nothing listens on (bound and closed at once): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def journal_rows(reports: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(reports / JOURNAL_FILE) as db:
        return db.execute(sql).fetchall()


def nothing_sent(reports: Path) -> bool:
    """The journal holds no attempt and every call is still planned (or there is no journal at all)."""
    if not (reports / JOURNAL_FILE).exists():
        return True
    states = {s for (s,) in journal_rows(reports, "SELECT DISTINCT state FROM calls")}
    return journal_rows(reports, "SELECT count(*) FROM attempts") == [(0,)] and states <= {"planned"}


def push_into_an_outage(
    run: Run, reports: Path, platform: Path, port: int, release: Path, *options: str
) -> subprocess.CompletedProcess:
    """Push with the emulator up for the pre-flight, then gone: the push is held at its first send, the emulator
    stopped (state written to `platform`), the push released to meet a closed port. Returns the finished push."""
    environ = {"PATH": "/usr/bin:/bin", **CREDS, ENV_HOLD_AT: "before-send", ENV_HOLD_UNTIL: str(release)}
    with running_emulator(platform, run.config, port=port) as url:
        process = subprocess.Popen(
            [CLI, "push", str(reports), "--config", str(run.config), "--api", url, "--rate", "60000", *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )  # fmt: skip
        held = process.stderr.readline() if process.stderr else ""
        if "fault hook: holding at before-send" not in held:
            process.kill()
            out, err = process.communicate(timeout=30)
            raise AssertionError((held, out, err))
    release.touch()
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, held + err)


def summary(reports: Path) -> dict:
    return json.loads((reports / "push-summary.json").read_text())


def test_causes_of_requests_that_never_left_and_of_those_that_did():
    """urllib3 2.x with retries=False: refused and unresolved are never sent; a time-out or a connection closed
    after the request went out may have reached the platform."""
    client = Client("http://127.0.0.1:1", 2, 0.5, Pace(60000))

    def no_answer(api: str) -> NoAnswer:
        client.api = api
        with pytest.raises(NoAnswer) as caught:
            client.raw("GET", "/v2/customers/1?source=ALL", None, {})
        return caught.value

    refused = no_answer(f"http://127.0.0.1:{free_port()}")
    assert (refused.cause, refused.sent) == (causes.CONNECTION_REFUSED, False)
    unresolved = no_answer("http://no-such-host.invalid")
    assert (unresolved.cause, unresolved.sent) == (causes.NAME_NOT_RESOLVED, False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def serve() -> None:  # the first connection is left unanswered, the second read and closed
            for _ in range(2):
                conn, _ = server.accept()
                accepted.append(conn)
                if len(accepted) == 2:
                    conn.recv(65536)
                    conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        stalled = no_answer(f"http://127.0.0.1:{port}")
        client.http.clear()
        lost = no_answer(f"http://127.0.0.1:{port}")
        thread.join(5)
        for conn in accepted:
            conn.close()
    assert (stalled.cause, stalled.sent) == (causes.TIMED_OUT, True)
    assert (lost.cause, lost.sent) == (causes.CONNECTION_LOST, True)
    assert {causes.CONNECTION_REFUSED, causes.NAME_NOT_RESOLVED, causes.CONNECT_TIMED_OUT} <= causes.NEVER_SENT
    connect_timeout = urllib3.exceptions.ConnectTimeoutError(None, "timed out")
    assert causes.of_error(connect_timeout) in causes.NEVER_SENT


def test_an_oauth_token_call_in_an_outage_is_a_request_that_never_left():
    """No token for want of an answer is no refusal: the request it was for is retried, and a renewal that meets
    the outage leaves no token, so the next request asks for one again."""
    client = Client(f"http://127.0.0.1:{free_port()}", 2, 0.5, Pace(60000))
    credentials = Credentials("oauth", OAUTH)
    with pytest.raises(NoAnswer) as caught:
        credentials.headers(client)
    assert (caught.value.cause, caught.value.sent) == (causes.CONNECTION_REFUSED, False)
    credentials.token, credentials.expires = "stale", time.monotonic() + 60
    credentials.renew(client, {TOKEN_HEADER: "stale"})
    assert credentials.token is None


def test_an_answer_outside_2xx_without_codes_is_no_success():
    """A proxy's or a wrong address's 404 page: drift on a first attempt, a settling read after an uncertain one."""
    call = parse_call(_call(1, 101, []))
    assert judge(call.expect, 404, None, False, {}).outcome == "drift"
    assert judge(call.expect, 404, None, True, {}).step == "settle"
    assert judge(call.expect, 200, {"createdId": 101, "warnings": []}, False, {}).outcome == "confirmed"


def _call(seq: int, customer: int, after: list[int]) -> str:
    return json.dumps(
        {
            "call_id": f"r:{seq}", "file": "f.csv", "row_number": seq, "row_id": str(seq), "customer_id": customer,
            "source": "INSTORE", "account_id": None, "body": {"add": [{"type": "externalId", "value": f"E{seq}"}]},
            "after": [f"r:{a}" for a in after], "expect": {"outcome": "applied", "warnings": []},
        }
    )  # fmt: skip


def test_retry_reopens_failed_calls_and_those_blocked_only_by_them(tmp_path):
    """failed 1 → blocked 2 → blocked 3: all re-opened; drift 4 → blocked 5: stay; blocked 6 after 1 and 4: stays
    (a drift holds it too); blocked 7 after 6: stays; confirmed 0 and blocked 8 after 0 and 1: 8 re-opened."""
    layout = {0: [], 1: [], 2: [1], 3: [2], 4: [], 5: [4], 6: [1, 4], 7: [6], 8: [0, 1]}
    ended: dict[int, Outcome] = {0: "confirmed", 1: "failed", 4: "drift"}
    calls = [parse_call(_call(seq, 100 + seq, after)) for seq, after in layout.items()]
    journal = Journal.open(tmp_path)
    try:
        journal.start("sha", [c.call_id for c in calls])
        for seq, outcome in ended.items():
            journal.sending(f"r:{seq}", 1, "call")
            journal.answered(
                JournalAnswer(
                    f"r:{seq}", 1, "call", result="timed out", state="retry", uncertain=seq == 1,
                    retry_cause=causes.TIMED_OUT,
                )
            )  # fmt: skip
            journal.sending(f"r:{seq}", 2, "call")
            journal.answered(JournalAnswer(f"r:{seq}", 2, "call", result=outcome, state="done", outcome=outcome))
        journal.block([f"r:{s}" for s in layout if s not in ended], "a call in its after did not succeed")
        assert journal.finished()
        failed, blocked = reopenable(calls, journal.states())
        assert (failed, blocked) == (["r:1"], ["r:2", "r:3", "r:8"])
        reopened = journal.reopen(failed, blocked)
        assert (reopened.series, reopened.failed, reopened.blocked) == (1, 1, 3)
        states = journal.states()
        assert not journal.finished() and journal.series() == 1
        # attempted before and possibly applied: settled by a read first; the blocked ones planned again
        assert (states["r:1"].state, states["r:1"].uncertain, states["r:1"].series_from) == ("settle", True, 2)
        assert {states[f"r:{s}"].state for s in (2, 3, 8)} == {"planned"}
        assert {states[f"r:{s}"].outcome for s in (0, 4, 5, 6, 7)} == {"confirmed", "drift", "blocked"}
        journal.sending("r:1", 3, "read")
        assert journal_rows(
            tmp_path, "SELECT attempt, series FROM attempts WHERE call_id = 'r:1' ORDER BY attempt"
        ) == [
            (1, 0),
            (2, 0),
            (3, 1),
        ]
        assert journal.retries() == {causes.TIMED_OUT: 3}
    finally:
        journal.close()


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY, position INTEGER NOT NULL, state TEXT NOT NULL, outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, uncertain INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
    http_status INTEGER, codes TEXT, warnings TEXT, request_id TEXT, first_sent REAL, answered_at REAL, detail TEXT
);
CREATE TABLE attempts (
    call_id TEXT NOT NULL, attempt INTEGER NOT NULL, kind TEXT NOT NULL, sent_at REAL NOT NULL, answered_at REAL,
    http_status INTEGER, codes TEXT, request_id TEXT, result TEXT
);
CREATE TABLE retries (cause TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""
"""The journal's tables as a push wrote them before `push --retry` existed (no series)."""


def _old_journal(reports: Path, in_flight: str) -> None:
    """A journal of the earlier layout for the reports' plan: every call planned but one, in flight (sending) when
    its push died before the request left; retries counted under the earlier names."""
    calls, sha = load_plan(reports)
    with sqlite3.connect(reports / JOURNAL_FILE) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO meta VALUES ('plan_sha256', ?)", (sha,))
        db.executemany(
            "INSERT INTO calls (call_id, position, state) VALUES (?, ?, 'planned')",
            [(c.call_id, i) for i, c in enumerate(calls)],
        )
        sent = time.time() - 60
        db.execute(
            "UPDATE calls SET state = 'sending', attempts = 1, first_sent = ? WHERE call_id = ?", (sent, in_flight)
        )
        db.execute("INSERT INTO attempts VALUES (?, 1, 'call', ?, NULL, NULL, NULL, NULL, NULL)", (in_flight, sent))
        db.executemany("INSERT INTO retries VALUES (?, ?)", [("NewConnectionError", 2), ("timeout", 1)])


def test_a_journal_written_before_series_existed_still_resumes(sample_run):
    run = sample_run
    first = run.calls[0]["call_id"]
    _old_journal(run.reports, first)
    with running_emulator(run.platform(), run.config) as url:
        done = push(run.reports, run.config, url, "--rate", "60000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(outcomes(run.reports).values()) == {"confirmed"}
    assert run.equal(run.folder / "platform.duckdb")
    # the call in flight at the old push's death was settled by a read first, then sent
    kinds = journal_rows(run.reports, f"SELECT kind, series FROM attempts WHERE call_id = '{first}' ORDER BY attempt")
    assert kinds == [("call", 0), ("read", 0), ("call", 0)]
    retries = summary(run.reports)["retries_by_cause"]
    assert retries == {causes.CONNECT_FAILED: 2, causes.TIMED_OUT: 1}, "the earlier names read in words"


def test_preflight_unreachable_exits_2_naming_the_address_and_sends_nothing(sample_run):
    run = sample_run
    closed = f"http://127.0.0.1:{free_port()}"
    refused = push(run.reports, run.config, closed)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"the platform at {closed} did not answer: connection refused; nothing was sent" in refused.stderr
    assert nothing_sent(run.reports)
    unresolved = push(run.reports, run.config, "http://no-such-host.invalid:8080")
    assert unresolved.returncode == 2 and "did not answer: name not resolved" in unresolved.stderr
    assert "no-such-host.invalid:8080" in unresolved.stderr
    assert nothing_sent(run.reports)


def test_preflight_refused_credentials_exit_2_naming_the_variables_never_the_secret(sample_run, tmp_path):
    run, log = sample_run, tmp_path / "log.ndjson"
    oauth_org = tmp_path / "oauth.toml"
    oauth_org.write_text(ORG.read_text() + '\n[platform]\nauth = "oauth"\n')
    with running_emulator(run.platform(), run.config, "--log", str(log), env={**CREDS, **OAUTH}) as url:
        basic = push(run.reports, run.config, url, env={**CREDS, "LOYALTY_BULK_API_PASSWORD": "nope-wrong-pw"})
        wrong = {**OAUTH, "LOYALTY_BULK_API_SECRET": "nope-wrong-secret"}
        oauth = push(run.fresh_reports("oauth"), oauth_org, url, env=wrong)
    assert basic.returncode == 2, basic.stdout + basic.stderr
    assert "the platform refused the credentials (LOYALTY_BULK_API_USER/LOYALTY_BULK_API_PASSWORD)" in basic.stderr
    assert oauth.returncode == 2, oauth.stdout + oauth.stderr
    assert "the platform refused the credentials (LOYALTY_BULK_API_KEY/LOYALTY_BULK_API_SECRET)" in oauth.stderr
    for said in (basic.stdout + basic.stderr, oauth.stdout + oauth.stderr):
        assert "nope-wrong" not in said and CREDS["LOYALTY_BULK_API_PASSWORD"] not in said
    assert nothing_sent(run.reports) and nothing_sent(run.folder / "oauth")
    requests = [(e["method"], e["path"]) for e in read_log(log)]
    assert requests == [("GET", f"/v2/customers/{run.calls[0]['customer_id']}"), ("POST", "/v3/oauth/token/generate")]


def test_a_finished_push_checks_nothing_and_sends_nothing_without_retry(sample_run):
    run = sample_run
    with running_emulator(run.platform(), run.config) as url:
        assert push(run.reports, run.config, url, "--rate", "60000").returncode == 0
    again = push(run.reports, run.config, f"http://127.0.0.1:{free_port()}", "--retry")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "retry: nothing to re-open" in again.stdout


@pytest.mark.slow
def test_connection_refused_mid_push_is_retried_as_certain_and_counted_in_words(sample_run, tmp_path):
    run, port, log = sample_run, free_port(), tmp_path / "log.ndjson"
    platform, release = run.platform(), tmp_path / "release"
    environ = {"PATH": "/usr/bin:/bin", **CREDS, ENV_HOLD_AT: "before-send", ENV_HOLD_UNTIL: str(release)}
    with running_emulator(platform, run.config, port=port) as url:
        process = subprocess.Popen(
            [CLI, "push", str(run.reports), "--config", str(run.config), "--api", url, "--rate", "60000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )  # fmt: skip
        assert process.stderr and "holding at before-send" in process.stderr.readline()
    release.touch()
    refused = "SELECT count(*) FROM attempts WHERE result = 'connection refused: not sent'"
    for _ in range(200):
        if journal_rows(run.reports, refused)[0][0] >= 2:
            break
        time.sleep(0.05)
    with running_emulator(platform, run.config, "--log", str(log), port=port):
        out, err = process.communicate(timeout=180)
    assert process.returncode == 0, out + err
    assert set(outcomes(run.reports).values()) == {"confirmed"}, "never uncertain, so never already_applied"
    assert journal_rows(run.reports, "SELECT count(*) FROM attempts WHERE kind = 'read'") == [(0,)]
    assert [e for e in read_log(log) if e["method"] == "GET"] == [], "no settling read"
    retries = summary(run.reports)["retries_by_cause"]
    assert retries.get(causes.CONNECTION_REFUSED, 0) >= 2 and not [c for c in retries if "Error" in c], retries
    retries_line = next(line for line in out.splitlines() if line.startswith("  retries: "))
    assert f"{causes.CONNECTION_REFUSED} " in retries_line, out
    assert run.equal(platform)


@pytest.mark.slow
def test_a_nights_outage_is_recovered_with_push_retry(sample_run, tmp_path):
    run, port, log = sample_run, free_port(), tmp_path / "log.ndjson"
    platform = run.platform()
    failing = push_into_an_outage(run, run.reports, platform, port, tmp_path / "release", "--max-attempts", "2")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    first = outcomes(run.reports)
    assert set(first.values()) == {"failed", "blocked"}, first
    assert journal_rows(run.reports, "SELECT count(*) FROM attempts WHERE kind = 'read'") == [(0,)]
    before = journal_rows(run.reports, "SELECT call_id, attempt, kind, result FROM attempts ORDER BY call_id, attempt")
    with running_emulator(platform, run.config, "--log", str(log), port=port) as url:
        plain = push(run.reports, run.config, url, "--rate", "60000")
        assert plain.returncode == 1 and read_log(log) == [], "without --retry a finished push sends nothing"
        retried = push(run.reports, run.config, url, "--rate", "60000", "--retry")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    failed = sum(1 for o in first.values() if o == "failed")
    assert f"retry: re-opened {len(run.calls)} call(s) for series 1 of attempts: {failed} failed" in retried.stdout
    assert set(outcomes(run.reports).values()) == {"confirmed"}
    assert run.equal(platform)
    changed_at_most_once(read_log(log), run.calls)
    after = journal_rows(run.reports, "SELECT call_id, attempt, kind, result FROM attempts ORDER BY call_id, attempt")
    assert set(before) <= set(after), "every earlier attempt is kept"
    assert journal_rows(run.reports, "SELECT DISTINCT series FROM attempts ORDER BY series") == [(0,), (1,)]
    assert summary(run.reports)["retry"] == {
        "series": 1, "reopened": len(run.calls), "failed": failed, "blocked": len(run.calls) - failed, "resumed": False
    }  # fmt: skip


RETRY_KILLS = ["before-send:1", "after-send:2", "settle:1", "after-send:1", "settle:1", "before-send:2"]
"""Kills of `push --retry` and its restarts: each leaves a call in flight that the next one settles first."""
assert {kill.partition(":")[0] for kill in RETRY_KILLS} == set(PUSH_POINTS)


@pytest.mark.slow
def test_push_retry_killed_at_every_push_point_and_restarted_recovers_the_same(sample_run, tmp_path):
    run, port, log = sample_run, free_port(), tmp_path / "log.ndjson"
    platform = run.platform()
    failing = push_into_an_outage(run, run.reports, platform, port, tmp_path / "release", "--max-attempts", "1")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    with running_emulator(platform, run.config, "--log", str(log), port=port) as url:
        for point in RETRY_KILLS:
            killed = push(run.reports, run.config, url, "--rate", "60000", "--max-in-flight", "2", "--retry",
                          env={**CREDS, ENV_KILL_AT: point})  # fmt: skip
            assert killed.returncode == -9, (point, killed.returncode, killed.stdout, killed.stderr)
            assert f"fault hook: SIGKILL at {point.partition(':')[0]}" in killed.stderr
        final = push(run.reports, run.config, url, "--rate", "60000", "--retry")
    assert final.returncode == 0, final.stdout + final.stderr
    assert "retry: the last push had not finished" in final.stdout
    assert set(outcomes(run.reports).values()) <= {"confirmed", "already_applied"}
    assert run.equal(platform)
    changed_at_most_once(read_log(log), run.calls)
    assert journal_rows(run.reports, "SELECT max(series) FROM series") == [(1,)], "one --retry, one series"


@pytest.mark.slow
def test_push_retry_leaves_a_drift_and_what_it_blocks(sample_run, tmp_path):
    """A drift stops the push (--max-drift 0), an outage fails the rest, --retry re-opens only what failed."""
    run, port, log = sample_run, free_port(), tmp_path / "log.ndjson"
    platform = run.platform()
    drifting = set(_alter_platform(platform, run.calls))
    with running_emulator(platform, run.config, port=port) as url:
        stopped = push(run.reports, run.config, url, "--rate", "60000", "--max-in-flight", "1", "--max-drift", "0")
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    drifted_first = {c for c, o in outcomes(run.reports).items() if o == "drift"}
    assert drifted_first and drifted_first <= drifting
    failing = push_into_an_outage(run, run.reports, platform, port, tmp_path / "release", "--max-attempts", "1")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    ended = outcomes(run.reports)
    assert "failed" in ended.values() and "planned" not in ended.values()
    calls, _ = load_plan(run.reports)
    journal = Journal.open(run.reports)
    try:
        expected_failed, expected_blocked = reopenable(calls, journal.states())
    finally:
        journal.close()
    assert not drifted_first & set(expected_failed + expected_blocked)
    with running_emulator(platform, run.config, "--log", str(log), port=port) as url:
        retried = push(run.reports, run.config, url, "--rate", "60000", "--retry")
    assert retried.returncode == 1, retried.stdout + retried.stderr
    reopened = len(expected_failed) + len(expected_blocked)
    assert f"retry: re-opened {reopened} call(s) for series 1 of attempts: {len(expected_failed)} failed" in (
        retried.stdout
    )
    final = outcomes(run.reports)
    dependents: set[str] = set()
    for c in run.calls:  # plan order: `after` names earlier calls
        if set(c["after"]) & (drifting | dependents):
            dependents.add(c["call_id"])
    assert {c for c, o in final.items() if o == "drift"} == drifting
    assert {c for c, o in final.items() if o == "blocked"} == dependents
    assert {o for c, o in final.items() if c not in drifting | dependents} == {"confirmed"}
    for call_id in drifted_first:  # never sent again: every attempt of a drift of the first push is of series 0
        assert journal_rows(run.reports, f"SELECT DISTINCT series FROM attempts WHERE call_id = '{call_id}'") == [(0,)]
    sent_again = {
        (e["customer_id"], json.dumps(e["body"], sort_keys=True)) for e in read_log(log) if e["method"] == "POST"
    }
    for c in run.calls:
        if c["call_id"] in drifted_first:
            assert (c["customer_id"], json.dumps(c["body"], sort_keys=True)) not in sent_again


def test_plain_progress_lines_off_a_terminal():
    state = PushProgress({"confirmed": 30, "failed": 5, "blocked": 2}, 120, 90, 60.0)
    assert plain_push_line(state) == (
        "push: 37/120 calls ended (confirmed 30, blocked 2, failed 5); 90 requests/min; 00:01:00 elapsed"
    )
    assert plain_push_line(PushProgress({}, 3, 0, 0.0)) == "push: 0/3 calls ended; 0 requests/min; 00:00:00 elapsed"
    out = io.StringIO()
    with push_progress(stream=out, every=0.0) as line:
        assert line is not None
        line(state)
        line(state)
    assert out.getvalue().splitlines() == [plain_push_line(state)] * 2
    quiet = io.StringIO()
    with push_progress(enabled=False, stream=quiet) as none:
        assert none is None
    rare = io.StringIO()
    with push_progress(stream=rare) as line:
        assert line is not None
        line(state)  # within the first 10 s: nothing yet
    assert rare.getvalue() == ""


@pytest.mark.slow
def test_a_push_off_a_terminal_says_where_it_stands_while_no_call_ends(sample_run):
    """One call answered after 5.5 s, its pre-flight read too: at 10 s the push has ended none and says so."""
    run = sample_run
    reports = run.fresh_reports("slow", run.calls[:1])
    with running_emulator(run.platform(), run.config, "--latency", "5500") as url:
        done = push(reports, run.config, url, "--rate", "60000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "push: 0/1 calls ended; " in done.stderr and " elapsed" in done.stderr, done.stderr
    assert "\x1b[" not in done.stderr
