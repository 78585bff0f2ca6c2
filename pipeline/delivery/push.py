"""`loyalty-bulk push`: send a run's calls.ndjson to the platform, paced, bounded, ordered, resumable.

Every call moves through the journal (journal.py): `sending` is written before a request leaves and
the answer after it came, so all retries go through the journal and none hides in the HTTP layer
(urllib3 with retries=False). The scheduler (main thread) hands ready calls to at most
`max_in_flight` workers: a call is ready once every call of its `after` ended confirmed or
already_applied and no other call for its customer is in flight; a call whose `after` ended
otherwise is blocked. Every request (calls, settling reads, token calls) waits for the pace.

A call whose attempt may have reached the platform (time-out, connection lost after sending, 5xx) is
`uncertain`: it is settled by reading the customer back (the change in place: already_applied; not in
place: sent again) or by a retry whose answer proves the state ("already present" warnings, i.e. the
platform says nothing changed: already_applied). Never by a guess.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import polars as pl
import urllib3

from pipeline import faults
from pipeline.config import CARD, load_config
from pipeline.delivery.emulated import ALREADY_PRESENT_CODES, MERGED_CODE
from pipeline.delivery.journal import SUCCESSFUL, CallState, Journal, Outcome, State
from pipeline.delivery.pacing import Pace
from pipeline.errors import EXIT_OK, EXIT_REFUSED, EXIT_ROWS_FAILED, ConfigError, LoyaltyBulkError
from pipeline.files import write_csv, write_json, write_text
from pipeline.reports.pii import mask_expr
from pipeline.settings import API_KEY_ENV, API_PASSWORD_ENV, API_SECRET_ENV, API_USER_ENV, CALLS_FILE

OUTCOMES: tuple[Outcome, ...] = ("confirmed", "already_applied", "drift", "blocked", "failed")
PUSH_COLUMNS = (
    "call_id",
    "file",
    "row_number",
    "row_id",
    "customer_id",
    "source",
    "account_id",
    "action",
    "id_type",
    "id_value",
    "expected_outcome",
    "outcome",
    "http_status",
    "codes",
    "warnings",
    "attempts",
    "request_id",
    "seconds",
)
MAX_ATTEMPTS = 12
"""Requests per call (sends and settling reads) before it is `failed`."""
RETRY_AFTER_CAP = 60.0
"""A Retry-After longer than this is cut to it: a platform asking for a day must not stall the push a day."""
BACKOFF_BASE, BACKOFF_CAP = 0.5, 30.0
SUMMARY_FILE, CSV_FILE = "push-summary.json", "push.csv"
HTML_START, HTML_END = "<!-- push -->", "<!-- /push -->"


class PushUsageError(LoyaltyBulkError):
    """No API, no credentials or a bad option: exit 2, nothing sent."""

    exit_code = 2


@dataclass(frozen=True)
class PushOptions:
    api: str | None = None
    rate_per_minute: float | None = None
    max_in_flight: int | None = None
    max_drift: int | None = None
    max_drift_rate: float | None = None
    mask_pii: bool = False
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class PushResult:
    """A push's outcome counts and figures; renders the console summary and push-summary.json."""

    reports_dir: str
    api: str
    calls: int
    outcomes: dict[str, int]
    retries: dict[str, int]
    configured_rate: float
    achieved_rate: float
    requests: int
    elapsed_seconds: float
    critical_path: int
    stopped: str | None
    exit_code: int
    drifted: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reports_dir": self.reports_dir,
            "api": self.api,
            "calls": self.calls,
            "outcomes": self.outcomes,
            "retries_by_cause": self.retries,
            "configured_rate_per_minute": self.configured_rate,
            "achieved_rate_per_minute": round(self.achieved_rate, 2),
            "requests": self.requests,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "critical_path_length": self.critical_path,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "drifted": self.drifted,
        }

    def render(self) -> str:
        lines = [f"push of {self.calls} call(s) to {self.api}: exit code {self.exit_code}"]
        lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in self.outcomes.items()))
        if self.retries:
            lines.append("  retries: " + ", ".join(f"{k} {v}" for k, v in self.retries.items()))
        lines.append(
            f"  rate: {self.achieved_rate:.1f} requests/min achieved of {self.configured_rate:g} configured "
            f"({self.requests} requests in {self.elapsed_seconds:.1f} s); critical path {self.critical_path} call(s)"
        )
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}; the rest stays planned, run the same command to resume")
        lines.append(f"  reports: {Path(self.reports_dir) / CSV_FILE}, {Path(self.reports_dir) / SUMMARY_FILE}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    """What an answer means for a call: a final outcome, or the next step (retry, settle, renew)."""

    step: str  # "final" | "retry" | "settle" | "renew"
    outcome: Outcome | None = None
    cause: str | None = None
    delay: float = 0.0
    uncertain: bool = False
    throttle: bool = False


def answer_codes(body: Any, key: str) -> list[int]:
    items = body.get(key) if isinstance(body, dict) else None
    return [int(i["code"]) for i in items if isinstance(i, dict) and "code" in i] if isinstance(items, list) else []


def judge(
    expect: Mapping[str, Any], status: int | None, body: Any, uncertain: bool, headers: Mapping[str, str]
) -> Verdict:
    """Classify one answer of a changeIdentifier call against its `expect` (body codes first, HTTP status second)."""
    errors, warnings = answer_codes(body, "errors"), answer_codes(body, "warnings")
    if status is None:
        return Verdict("settle", cause="no_answer", uncertain=True)
    if status in (401, 498) or 498 in errors:
        return Verdict("renew", cause="auth")
    if status == 429 or 517 in errors:
        return Verdict("retry", cause="throttled", delay=_retry_after(headers), throttle=True)
    if 521 in errors or status == 521:
        return Verdict("retry", cause="customer_busy")
    if 461 in errors or status == 461:
        return Verdict("retry", cause="search_busy")
    if status >= 500:
        return Verdict("retry", cause="server_error", uncertain=True)
    if errors:
        # an earlier attempt may have applied the change (a remove retried answers 7009): read to know
        return Verdict("settle", cause="error_after_uncertain") if uncertain else Verdict("final", "drift")
    got = "merged" if MERGED_CODE in warnings else "unchanged" if ALREADY_PRESENT_CODES & set(warnings) else "applied"
    created = body.get("createdId") if isinstance(body, dict) else None
    if (
        got == expect["outcome"]
        and sorted(warnings) == sorted(expect["warnings"])
        and (got != "merged" or created == expect.get("survivor_id"))
    ):
        return Verdict("final", "confirmed")
    if uncertain and got == "unchanged":
        return Verdict("final", "already_applied")
    return Verdict("final", "drift")


def _retry_after(headers: Mapping[str, str]) -> float:
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0


def in_place(call: Mapping[str, Any], status: int | None, body: Any) -> bool | None:
    """Whether a customer read-back shows the call's change in place (None: the read does not tell)."""
    if status != 200 or not isinstance(body, dict):
        return None
    ((action, (item,)),) = call["body"].items()
    if call["expect"]["outcome"] == "merged":
        return body.get("status") == "MERGED" and body.get("mergedInto") == call["expect"]["survivor_id"]
    if body.get("status") == "MERGED":
        return None
    if item["type"] == CARD:
        held = {c.get("cardNumber"): c.get("statusLabel") for c in body.get("cards", [])}
        return held.get(item["value"]) == item.get("statusLabel") if action == "add" else item["value"] not in held
    scope = (call["source"], call["account_id"])
    holds = any(
        (p.get("source"), p.get("accountId")) == scope
        and {"type": item["type"], "value": item["value"]} in p.get("identifiers", [])
        for p in body.get("profiles", [])
    )
    return holds if action == "add" else not holds


class Credentials:
    """Authentication headers from the environment only; the OAuth token is renewed before it expires."""

    def __init__(self, auth: str, environ: Mapping[str, str]):
        self.auth = auth
        if auth == "basic":
            user, password = environ.get(API_USER_ENV), environ.get(API_PASSWORD_ENV)
            if not user or not password:
                raise PushUsageError(
                    f"basic authentication needs {API_USER_ENV} and {API_PASSWORD_ENV} in the environment; "
                    "nothing was sent"
                )
            digest = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()
            self._basic = "Basic " + base64.b64encode(f"{user}:{digest}".encode()).decode("ascii")
        else:
            key, secret = environ.get(API_KEY_ENV), environ.get(API_SECRET_ENV)
            if not key or not secret:
                raise PushUsageError(
                    f"oauth needs {API_KEY_ENV} and {API_SECRET_ENV} in the environment; nothing was sent"
                )
            self._key = {"key": key, "secret": secret}
        self.token: str | None = None
        self.expires = 0.0
        self.lock = threading.Lock()

    def headers(self, client: Client) -> dict[str, str]:
        if self.auth == "basic":
            return {"Authorization": self._basic}
        with self.lock:
            if self.token is None or time.monotonic() > self.expires:
                self._renew(client)
            return {"X-CAP-API-OAUTH-TOKEN": self.token or ""}

    def renew(self, client: Client, stale: dict[str, str]) -> None:
        """Renew the token once for a 401/498 (unless another thread already did since `stale` was sent)."""
        if self.auth == "basic":
            return
        with self.lock:
            if stale.get("X-CAP-API-OAUTH-TOKEN") == self.token:
                self._renew(client)

    def _renew(self, client: Client) -> None:
        status, body, _ = client.raw("POST", "/v3/oauth/token/generate", self._key, {})
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, dict) or not data.get("accessToken"):
            raise PushUsageError(f"the platform refused the OAuth key (HTTP {status}); nothing more was sent")
        ttl = float(data.get("ttlSeconds") or 300)
        self.token = str(data["accessToken"])
        self.expires = time.monotonic() + ttl * 0.8  # renewed before it expires, not after a refusal


class NoAnswer(Exception):
    """A request got no answer; `sent` says whether it may have reached the platform."""

    def __init__(self, cause: str, sent: bool):
        super().__init__(cause)
        self.cause, self.sent = cause, sent


class Client:
    """One urllib3 pool, no retries, no redirects: each request is exactly one attempt. Paced."""

    def __init__(self, api: str, pool: int, timeout: float, pace: Pace):
        self.api = api.rstrip("/")
        self.http = urllib3.PoolManager(
            maxsize=pool, block=True, retries=False, timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout)
        )
        self.pace = pace
        self.requests = 0
        self.lock = threading.Lock()

    def raw(
        self, method: str, path: str, body: Any, headers: dict[str, str], paced: bool = True
    ) -> tuple[int, Any, dict[str, str]]:
        """One request; `paced=False` when the caller already waited for the pace (to journal the send time)."""
        if paced:
            self.pace.wait()
        with self.lock:
            self.requests += 1
        try:
            response = self.http.request(
                method,
                self.api + path,
                body=None if body is None else json.dumps(body).encode("utf-8"),
                headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
            )
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.NewConnectionError) as error:
            raise NoAnswer(type(error).__name__, sent=False) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise NoAnswer("timeout", sent=True) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, OSError) as error:
            raise NoAnswer(f"lost connection ({type(error).__name__})", sent=True) from None
        try:
            parsed = json.loads(response.data) if response.data else None
        except ValueError:
            parsed = None
        return response.status, parsed, dict(response.headers)


def call_path(call: Mapping[str, Any]) -> str:
    query = {"source": call["source"]}
    if call["account_id"]:
        query["accountId"] = call["account_id"]
    return f"/v2/customers/{int(call['customer_id'])}/changeIdentifier?{urlencode(query, quote_via=quote)}"


@dataclass
class Step:
    """A worker's report of one request for one call, for the scheduler."""

    call_id: str
    state: str  # the call's journal state after this step
    outcome: Outcome | None = None
    delay: float = 0.0
    drift: bool = False


def critical_path(calls: list[dict[str, Any]]) -> int:
    """The longest chain of `after` (calls in plan order, `after` naming earlier calls only)."""
    depth: dict[str, int] = {}
    for call in calls:
        depth[call["call_id"]] = 1 + max((depth.get(a, 0) for a in call["after"]), default=0)
    return max(depth.values(), default=0)


class Pusher:
    """One push: the scheduler, the workers' step, and the reports."""

    def __init__(
        self,
        folder: Path,
        calls: list[dict[str, Any]],
        journal: Journal,
        client: Client,
        credentials: Credentials,
        options: PushOptions,
        in_flight: int,
        progress: Callable[[int, int, float], None] | None,
    ):
        self.folder, self.calls, self.journal, self.client = folder, calls, journal, client
        self.credentials, self.options, self.in_flight = credentials, options, in_flight
        self.by_id = {c["call_id"]: c for c in calls}
        self.position = {c["call_id"]: i for i, c in enumerate(calls)}
        self.progress = progress
        self.random = random.Random()
        self.waits_on: dict[str, list[str]] = {}
        for call in calls:
            for a in call["after"]:
                self.waits_on.setdefault(a, []).append(call["call_id"])

    def step(self, call_id: str, state: CallState) -> Step:
        """One request for a call: its send (or a settling read), journaled before and after."""
        call = self.by_id[call_id]
        attempt = state.attempts + 1
        if attempt > MAX_ATTEMPTS:
            self.journal.answered(
                call_id,
                state.attempts,
                "call",
                None,
                [],
                None,
                "gave up",
                "done",
                "failed",
                detail=f"{MAX_ATTEMPTS} attempts",
            )
            return Step(call_id, "done", "failed")
        if state.state == "settle":
            return self._settle(call, attempt, state)
        headers = self.credentials.headers(self.client)
        # paced before the journal records the send, so the journal's last send time is the real one
        self.client.pace.wait()
        self.journal.sending(call_id, attempt, "call")
        faults.kill_point("before-send")
        try:
            status, body, response_headers = self.client.raw("POST", call_path(call), call["body"], headers, False)
        except NoAnswer as lost:
            faults.kill_point("after-send")
            state_next: State = "settle" if lost.sent else "retry"
            self.journal.answered(
                call_id,
                attempt,
                "call",
                None,
                [],
                None,
                lost.cause,
                state_next,
                uncertain=lost.sent,
                not_before=time.time() + self._backoff(attempt),
                retry_cause=lost.cause.split(" ")[0],
            )
            return Step(call_id, state_next, delay=self._backoff(attempt))
        faults.kill_point("after-send")
        verdict = judge(call["expect"], status, body, state.uncertain, response_headers)
        codes = answer_codes(body, "errors") + answer_codes(body, "warnings")
        request_id = response_headers.get("X-Cap-Requestid")
        if verdict.step == "renew" and (self.credentials.auth == "basic" or state.detail == "renewed"):
            # refused again right after a renewal, or basic credentials (nothing to renew): a wrong credential
            self.journal.answered(call_id, attempt, "call", status, codes, request_id, "auth", "retry")
            raise PushUsageError(
                f"the platform refused the credentials (HTTP {status}); the calls not answered yet stay in the "
                "journal for a later push with the right credentials"
            )
        if verdict.step == "renew":
            self.credentials.renew(self.client, headers)
        if verdict.throttle:
            self.client.pace.delay(verdict.delay)
        if verdict.step == "final":
            self.journal.answered(
                call_id,
                attempt,
                "call",
                status,
                codes,
                request_id,
                verdict.outcome or "",
                "done",
                verdict.outcome,
                warnings=answer_codes(body, "warnings"),
            )
            return Step(call_id, "done", verdict.outcome, drift=verdict.outcome == "drift")
        delay = 0.0 if verdict.step == "renew" else verdict.delay or self._backoff(attempt)
        next_state: State = "settle" if verdict.step == "settle" else "retry"
        renewed = "renewed" if verdict.step == "renew" else None
        self.journal.answered(
            call_id,
            attempt,
            "call",
            status,
            codes,
            request_id,
            verdict.cause or "",
            next_state,
            uncertain=verdict.uncertain,
            not_before=time.time() + delay,
            retry_cause=verdict.cause,
            detail=renewed,
        )
        return Step(call_id, next_state, delay=delay)

    def _settle(self, call: dict[str, Any], attempt: int, state: CallState) -> Step:
        headers = self.credentials.headers(self.client)
        self.client.pace.wait()
        self.journal.sending(call["call_id"], attempt, "read")
        try:
            status, body, response_headers = self.client.raw(
                "GET", f"/v2/customers/{int(call['customer_id'])}?source=ALL", None, headers, False
            )
        except NoAnswer as lost:
            self.journal.answered(
                call["call_id"],
                attempt,
                "read",
                None,
                [],
                None,
                lost.cause,
                "settle",
                not_before=time.time() + self._backoff(attempt),
                retry_cause="settle",
            )
            return Step(call["call_id"], "settle", delay=self._backoff(attempt))
        faults.kill_point("settle")
        request_id = response_headers.get("X-Cap-Requestid")
        shown = in_place(call, status, body)
        if status in (401, 498) or 498 in answer_codes(body, "errors"):
            self.credentials.renew(self.client, headers)
            shown = None
        if shown is None and status is not None and (status == 429 or status >= 500 or status in (401, 498)):
            if status == 429:
                self.client.pace.delay(_retry_after(response_headers))
            delay = self._backoff(attempt)
            self.journal.answered(
                call["call_id"],
                attempt,
                "read",
                status,
                [],
                request_id,
                "unreadable",
                "settle",
                not_before=time.time() + delay,
                retry_cause="settle",
            )
            return Step(call["call_id"], "settle", delay=delay)
        if shown:
            self.journal.answered(
                call["call_id"], attempt, "read", status, [], request_id, "in place", "done", "already_applied"
            )
            return Step(call["call_id"], "done", "already_applied")
        if shown is None:
            self.journal.answered(
                call["call_id"],
                attempt,
                "read",
                status,
                answer_codes(body, "errors"),
                request_id,
                "read shows another state",
                "done",
                "drift",
            )
            return Step(call["call_id"], "done", "drift", drift=True)
        # not in place: send again; the earlier attempt may still land, so the answer stays read as uncertain
        self.journal.answered(
            call["call_id"],
            attempt,
            "read",
            status,
            [],
            request_id,
            "not in place",
            "retry",
            uncertain=True,
            not_before=time.time(),
        )
        return Step(call["call_id"], "retry")

    def _backoff(self, attempt: int) -> float:
        return self.random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))

    def run(self) -> str | None:
        """Schedule every call to its end (or until a drift threshold stops sending); returns why it stopped."""
        states = self.journal.states()
        done: dict[str, Outcome] = {c: s.outcome for c, s in states.items() if s.state == "done" and s.outcome}
        dependents: dict[str, list[str]] = {}
        waiting: dict[str, int] = {}
        for call in self.calls:
            cid = call["call_id"]
            if cid in done:
                continue
            pending_after = [a for a in call["after"] if a not in done]
            waiting[cid] = len(pending_after)
            for a in pending_after:
                dependents.setdefault(a, []).append(cid)
        self._block_dependents_of([c for c, o in done.items() if o not in SUCCESSFUL], done)
        waiting = {c: n for c, n in waiting.items() if c not in done}
        ready: list[tuple[int, int, str]] = []
        timers: list[tuple[float, int, str]] = []
        now = time.time()
        for cid, n in waiting.items():
            if n == 0:
                state = states[cid]
                # a call that was in flight when the last push died is settled before anything new is sent
                first = 0 if state.state in ("sending", "settle") else 1
                if state.state == "sending":
                    self.journal.answered(
                        cid, state.attempts, "call", None, [], None, "in flight at restart", "settle", uncertain=True
                    )
                if state.not_before > now:
                    heapq.heappush(timers, (state.not_before - now + time.monotonic(), self.position[cid], cid))
                else:
                    heapq.heappush(ready, (first, self.position[cid], cid))
        busy: set[int] = set()
        deferred: dict[int, list[tuple[int, int, str]]] = {}
        finished: queue.Queue[Step | BaseException] = queue.Queue()
        inflight = 0
        drifts = sum(1 for o in done.values() if o == "drift")
        answered = len(done)
        stopped: str | None = None
        total = len(self.calls)
        with ThreadPoolExecutor(self.in_flight, thread_name_prefix="push") as pool:
            while True:
                clock = time.monotonic()
                while timers and timers[0][0] <= clock:
                    _, pos, cid = heapq.heappop(timers)
                    heapq.heappush(ready, (0 if self.journal_state(cid) == "settle" else 1, pos, cid))
                while stopped is None and ready and inflight < self.in_flight:
                    entry = heapq.heappop(ready)
                    customer = int(self.by_id[entry[2]]["customer_id"])
                    if customer in busy:
                        deferred.setdefault(customer, []).append(entry)
                        continue
                    busy.add(customer)
                    inflight += 1
                    cid = entry[2]
                    state = self.journal.states_of(cid)
                    pool.submit(self._guarded, cid, state, finished)
                if inflight == 0 and (stopped is not None or (not ready and not timers)):
                    break
                wait = max(0.0, timers[0][0] - time.monotonic()) if timers else 1.0
                try:
                    item = finished.get(timeout=min(wait, 1.0) if inflight else wait)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                inflight -= 1
                customer = int(self.by_id[item.call_id]["customer_id"])
                busy.discard(customer)
                for entry in deferred.pop(customer, []):
                    heapq.heappush(ready, entry)
                if item.state == "done" and item.outcome is not None:
                    done[item.call_id] = item.outcome
                    answered += 1
                    drifts += item.drift
                    if item.outcome in SUCCESSFUL:
                        for dep in dependents.get(item.call_id, []):
                            waiting[dep] -= 1
                            if waiting[dep] == 0 and dep not in done:
                                heapq.heappush(ready, (1, self.position[dep], dep))
                    else:
                        answered += self._block_dependents_of([item.call_id], done)
                    if stopped is None:
                        stopped = self._past_drift(drifts, answered)
                    if self.progress is not None:
                        self.progress(answered, total, self.client.requests)
                else:
                    heapq.heappush(timers, (time.monotonic() + item.delay, self.position[item.call_id], item.call_id))
        return stopped

    def journal_state(self, call_id: str) -> str:
        return self.journal.states_of(call_id).state

    def _guarded(self, call_id: str, state: CallState, finished: queue.Queue[Step | BaseException]) -> None:
        try:
            finished.put(self.step(call_id, state))
        except BaseException as error:  # the scheduler re-raises it; the journal already holds the truth
            finished.put(error)

    def _block_dependents_of(self, failed: list[str], done: dict[str, Outcome]) -> int:
        """Block every call that waits, directly or not, on a call that ended unsuccessfully; returns how many."""
        waits_on = self.waits_on
        blocked, todo = [], list(failed)
        while todo:
            for dep in waits_on.get(todo.pop(), []):
                if dep not in done:
                    done[dep] = "blocked"
                    blocked.append(dep)
                    todo.append(dep)
        if blocked:
            self.journal.block(blocked, "a call in its after did not succeed")
        return len(blocked)

    def _past_drift(self, drifts: int, answered: int) -> str | None:
        if self.options.max_drift is not None and drifts > self.options.max_drift:
            return f"{drifts} drifted calls exceed --max-drift {self.options.max_drift}"
        rate = self.options.max_drift_rate
        if rate is not None and answered and drifts / answered > rate:
            return f"drift rate {drifts / answered:.1%} exceeds --max-drift-rate {rate:.1%}"
        return None


def load_plan(folder: Path) -> tuple[list[dict[str, Any]], str]:
    path = folder / CALLS_FILE
    try:
        content = path.read_bytes()
    except OSError as error:
        raise PushUsageError(f"no call plan at {path} ({error.strerror}); run the batch first") from None
    calls = [json.loads(line) for line in content.decode("utf-8").splitlines() if line.strip()]
    return calls, hashlib.sha256(content).hexdigest()


def push_run(
    reports_dir: Path | str,
    config_path: Path | str,
    options: PushOptions = PushOptions(),
    environ: Mapping[str, str] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> PushResult:
    """Push a run's calls.ndjson to the platform; resumable through `push.journal`. Never raises on a call."""
    folder = Path(reports_dir)
    environ = os.environ if environ is None else environ
    config = load_config(config_path)
    api = options.api or config.platform.api
    if not api:
        raise ConfigError(config_path, "platform.api", "no API to push to: set [platform] api or give --api")
    if not api.startswith(("http://", "https://")):
        raise PushUsageError(f"--api '{api}' must be an http:// or https:// URL; nothing was sent")
    rate = options.rate_per_minute or config.platform.rate_per_minute
    in_flight = options.max_in_flight or config.platform.max_in_flight
    credentials = Credentials(config.platform.auth, environ)
    calls, plan_sha = load_plan(folder)
    journal = Journal.open(folder)
    try:
        journal.start(plan_sha, [c["call_id"] for c in calls])
        _, _, last_sent = journal.sends()
        # the platform counted the last process's calls too: the pace goes on from its last send
        not_before = time.monotonic() + max(0.0, (last_sent or 0) + 60.0 / rate - time.time())
        client = Client(api, in_flight, options.timeout_seconds, Pace(rate, burst=1, not_before=not_before))
        started = time.monotonic()
        pusher = Pusher(
            folder,
            calls,
            journal,
            client,
            credentials,
            options,
            in_flight,
            progress,
        )
        stopped = pusher.run()
        elapsed = time.monotonic() - started
        return _report(folder, calls, journal, api, rate, client.requests, elapsed, stopped, options.mask_pii)
    finally:
        journal.close()


def _report(
    folder: Path,
    calls: list[dict[str, Any]],
    journal: Journal,
    api: str,
    rate: float,
    requests: int,
    elapsed: float,
    stopped: str | None,
    mask_pii: bool,
) -> PushResult:
    states = journal.states()
    rows = []
    for call in calls:
        s = states[call["call_id"]]
        ((action, (item,)),) = call["body"].items()
        seconds = round(s.answered_at - s.first_sent, 3) if s.answered_at and s.first_sent else None
        rows.append(
            (
                call["call_id"],
                call["file"],
                call["row_number"],
                call["row_id"],
                call["customer_id"],
                call["source"],
                call["account_id"],
                action,
                item["type"],
                item["value"],
                call["expect"]["outcome"],
                s.outcome or "planned",
                s.http_status,
                s.codes,
                s.warnings,
                s.attempts,
                s.request_id,
                seconds,
            )
        )
    frame = pl.DataFrame(
        rows,
        schema={
            "call_id": pl.String,
            "file": pl.String,
            "row_number": pl.Int64,
            "row_id": pl.String,
            "customer_id": pl.Int64,
            "source": pl.String,
            "account_id": pl.String,
            "action": pl.String,
            "id_type": pl.String,
            "id_value": pl.String,
            "expected_outcome": pl.String,
            "outcome": pl.String,
            "http_status": pl.Int64,
            "codes": pl.String,
            "warnings": pl.String,
            "attempts": pl.Int64,
            "request_id": pl.String,
            "seconds": pl.Float64,
        },
        orient="row",
    )
    if mask_pii:
        frame = frame.with_columns(mask_expr(pl.col("id_type"), pl.col("id_value")).alias("id_value"))
    write_csv(frame, folder / CSV_FILE)
    counts: dict[str, int] = {o: frame.filter(pl.col("outcome") == o).height for o in OUTCOMES}
    planned = frame.filter(pl.col("outcome") == "planned").height
    if planned:
        counts["planned"] = planned
    sent, _, _ = journal.sends()
    achieved = (requests / elapsed * 60.0) if elapsed > 0 and requests > 1 else 0.0
    ok = counts["confirmed"] + counts["already_applied"] == len(calls)
    exit_code = EXIT_REFUSED if stopped else EXIT_OK if ok else EXIT_ROWS_FAILED
    drifted = (
        frame.filter(pl.col("outcome") == "drift")
        .select("call_id", "customer_id", "action", "id_type", "codes")
        .head(100)
        .to_dicts()
    )
    result = PushResult(
        reports_dir=str(folder),
        api=api,
        calls=len(calls),
        outcomes=counts,
        retries=journal.retries(),
        configured_rate=rate,
        achieved_rate=achieved,
        requests=sent,
        elapsed_seconds=elapsed,
        critical_path=critical_path(calls),
        stopped=stopped,
        exit_code=exit_code,
        drifted=drifted,
    )
    write_json(result.to_dict(), folder / SUMMARY_FILE)
    _add_html_section(folder / "summary.html", result)
    return result


def _add_html_section(path: Path, result: PushResult) -> None:
    """Put (or replace) the "push" section of the run's summary.html: outcomes, rate, drifted calls first."""
    import html

    if not path.exists():
        return
    page = path.read_text(encoding="utf-8")
    if HTML_START in page:
        page = page[: page.index(HTML_START)] + page[page.index(HTML_END) + len(HTML_END) :]
    rows = "".join(
        f"<tr><td>{html.escape(str(d['call_id']))}</td><td>{d['customer_id']}</td><td>{html.escape(str(d['action']))}"
        f"</td><td>{html.escape(str(d['id_type']))}</td><td>{html.escape(str(d['codes']))}</td></tr>"
        for d in result.drifted
    )
    outcomes = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in result.outcomes.items())
    section = (
        f'{HTML_START}<section id="push"><h2>push</h2>'
        + (
            "<h3>drifted calls</h3><table><tr><th>call</th><th>customer</th><th>action</th><th>type</th>"
            f"<th>codes</th></tr>{rows}</table>"
            if rows
            else ""
        )
        + f"<table>{outcomes}</table><p>{result.achieved_rate:.1f} requests/min achieved of "
        f"{result.configured_rate:g} configured; {result.requests} requests in {result.elapsed_seconds:.1f} s; "
        f"critical path {result.critical_path}; exit code {result.exit_code}"
        + (f"; stopped: {html.escape(result.stopped)}" if result.stopped else "")
        + f"</p></section>{HTML_END}"
    )
    write_text(page.replace("</main></body></html>", section + "</main></body></html>"), path)
