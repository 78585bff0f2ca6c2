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
platform says nothing changed: already_applied). Never by a guess. An attempt that never left (connection
refused, name not resolved, connect time-out: causes.py) cannot have reached the platform: a plain retry.

Before its first call a push checks, with one request, that the platform answers and takes the credentials
(client.check_platform); a platform that does not stops it with exit 2, nothing sent. `push --retry` on a
finished push re-opens its failed calls and the calls blocked only by them (`reopenable`, Journal.reopen).

Here: the scheduler and the workers' step. The HTTP side is client.py, reading an answer verdict.py, the
platform's paths and codes platform.py, the report push_report.py (imported once every call is sent: it
needs polars, and nothing before it does).
"""

from __future__ import annotations

import hashlib
import heapq
import os
import queue
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import faults
from pipeline.config import load_config
from pipeline.delivery import causes
from pipeline.delivery.client import Client, Credentials, NoAnswer, check_platform
from pipeline.delivery.journal import SUCCESSFUL, CallState, Journal, JournalAnswer, Kind, Outcome, Reopened, State
from pipeline.delivery.pacing import Pace
from pipeline.delivery.platform import REQUEST_ID_HEADER, TOKEN_EXPIRED_CODE, change_path, customer_path
from pipeline.delivery.verdict import answer_codes, in_place, judge, retry_after
from pipeline.errors import ConfigError, NotACallBody, PushUsageError
from pipeline.input.calls import Call, parse_call
from pipeline.settings import CALLS_FILE, REVERT_CALLS_FILE

if TYPE_CHECKING:
    from pipeline.delivery.push_report import PushResult

MAX_ATTEMPTS = 12
"""Requests per call (sends and settling reads) in one series of attempts before it is `failed`."""
BACKOFF_BASE, BACKOFF_CAP = 0.5, 30.0
TICK_SECONDS = 1.0
"""The scheduler reports progress at least this often, also while no call ends (an outage's back-offs)."""


@dataclass(frozen=True)
class PushOptions:
    api: str | None = None
    rate_per_minute: float | None = None
    max_in_flight: int | None = None
    max_drift: int | None = None
    max_drift_rate: float | None = None
    mask_pii: bool = False
    timeout_seconds: float = 30.0
    retry: bool = False
    """On a finished push: a new series of attempts for the failed calls and the calls blocked only by them."""
    max_attempts: int = MAX_ATTEMPTS


@dataclass(frozen=True)
class PushProgress:
    """Where a push stands, for a progress bar or line: calls ended by outcome (earlier pushes of the journal
    included), the plan's size, this process's requests and its seconds since it started."""

    ended: Mapping[str, int]
    total: int
    requests: int
    elapsed: float


@dataclass
class Step:
    """A worker's report of one request for one call, for the scheduler."""

    call_id: str
    state: str  # the call's journal state after this step
    outcome: Outcome | None = None
    delay: float = 0.0
    drift: bool = False


class Pusher:
    """One push: the scheduler and the workers' step."""

    def __init__(
        self,
        folder: Path,
        calls: list[Call],
        journal: Journal,
        client: Client,
        credentials: Credentials,
        options: PushOptions,
        in_flight: int,
        progress: Callable[[PushProgress], None] | None,
    ):
        self.folder, self.calls, self.journal, self.client = folder, calls, journal, client
        self.credentials, self.options, self.in_flight = credentials, options, in_flight
        self.by_id = {c.call_id: c for c in calls}
        self.position = {c.call_id: i for i, c in enumerate(calls)}
        self.progress = progress
        self.started = time.monotonic()
        self.ended: Counter[str] = Counter()
        self.random = random.Random()
        self.waits_on: dict[str, list[str]] = {}
        for call in calls:
            for a in call.after:
                self.waits_on.setdefault(a, []).append(call.call_id)

    def step(self, call_id: str, state: CallState) -> Step:
        """One request for a call: its send (or a settling read), journaled before and after."""
        call = self.by_id[call_id]
        attempt = state.attempts + 1
        limit = self.options.max_attempts
        if attempt - state.series_from > limit:
            self.journal.answered(
                JournalAnswer(
                    call_id, state.attempts, "call", result="gave up", state="done", outcome="failed",
                    detail=f"{limit} attempts" + (f" in series {state.series}" if state.series else ""),
                )
            )  # fmt: skip
            return Step(call_id, "done", "failed")
        kind: Kind = "read" if state.state == "settle" else "call"
        try:
            headers = self.credentials.headers(self.client)
        except NoAnswer as lost:  # the token call got no usable answer: the request it was for never left
            return self._not_sent(call_id, attempt, kind, lost.cause)
        if state.state == "settle":
            return self._settle(call, attempt, headers)
        # paced before the journal records the send, so the journal's last send time is the real one
        self.client.pace.wait()
        self.journal.sending(call_id, attempt, "call")
        faults.kill_point("before-send")
        try:
            status, body, response_headers = self.client.raw(
                "POST", change_path(call.customer_id, call.source, call.account_id), call.body, headers, False
            )
        except NoAnswer as lost:
            faults.kill_point("after-send")
            # sent: it may have reached the platform, settled by a read; never sent: certain, a plain retry
            state_next: State = "settle" if lost.sent else "retry"
            delay = self._backoff(attempt)
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "call", result=lost.cause if lost.sent else f"{lost.cause}: not sent",
                    state=state_next, uncertain=lost.sent, not_before=time.time() + delay, retry_cause=lost.cause,
                )
            )  # fmt: skip
            return Step(call_id, state_next, delay=delay)
        faults.kill_point("after-send")
        verdict = judge(call.expect, status, body, state.uncertain, response_headers)
        codes = (*answer_codes(body, "errors"), *answer_codes(body, "warnings"))
        request_id = response_headers.get(REQUEST_ID_HEADER)
        if verdict.step == "renew" and (self.credentials.auth == "basic" or state.detail == "renewed"):
            # refused again right after a renewal, or basic credentials (nothing to renew): a wrong credential
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "call", http_status=status, codes=codes, request_id=request_id, result="auth",
                    state="retry",
                )
            )  # fmt: skip
            raise self.credentials.refused(
                status, "the calls not answered yet stay in the journal for a later push with the right credentials"
            )
        if verdict.step == "renew":
            self.credentials.renew(self.client, headers)
        if verdict.throttle:
            self.client.pace.delay(verdict.delay)
        if verdict.step == "final":
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "call", http_status=status, codes=codes, request_id=request_id,
                    result=verdict.outcome or "", state="done", outcome=verdict.outcome,
                    warnings=tuple(answer_codes(body, "warnings")),
                )
            )  # fmt: skip
            return Step(call_id, "done", verdict.outcome, drift=verdict.outcome == "drift")
        delay = 0.0 if verdict.step == "renew" else verdict.delay or self._backoff(attempt)
        next_state: State = "settle" if verdict.step == "settle" else "retry"
        renewed = "renewed" if verdict.step == "renew" else None
        self.journal.answered(
            JournalAnswer(
                call_id, attempt, "call", http_status=status, codes=codes, request_id=request_id,
                result=verdict.cause or "", state=next_state, uncertain=verdict.uncertain,
                not_before=time.time() + delay, retry_cause=verdict.cause, detail=renewed,
            )
        )  # fmt: skip
        return Step(call_id, next_state, delay=delay)

    def _not_sent(self, call_id: str, attempt: int, kind: Kind, cause: str) -> Step:
        """An attempt that never left (its token call got no usable answer): journaled as one, retried as such."""
        delay = self._backoff(attempt)
        state: State = "settle" if kind == "read" else "retry"
        self.journal.sending(call_id, attempt, kind)
        self.journal.answered(
            JournalAnswer(
                call_id, attempt, kind, result=f"token call: {cause}: not sent", state=state,
                not_before=time.time() + delay, retry_cause=cause,
            )
        )  # fmt: skip
        return Step(call_id, state, delay=delay)

    def _settle(self, call: Call, attempt: int, headers: dict[str, str]) -> Step:
        """A read of the call's customer that settles an uncertain call: in place, not in place, or unreadable."""
        call_id = call.call_id
        self.client.pace.wait()
        self.journal.sending(call_id, attempt, "read")
        try:
            status, body, response_headers = self.client.raw(
                "GET", customer_path(call.customer_id), None, headers, False
            )
        except NoAnswer as lost:
            delay = self._backoff(attempt)
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "read", result=lost.cause, state="settle", not_before=time.time() + delay,
                    retry_cause=lost.cause,
                )
            )  # fmt: skip
            return Step(call_id, "settle", delay=delay)
        faults.kill_point("settle")
        request_id = response_headers.get(REQUEST_ID_HEADER)
        shown = in_place(call, status, body)
        if status in (401, TOKEN_EXPIRED_CODE) or TOKEN_EXPIRED_CODE in answer_codes(body, "errors"):
            self.credentials.renew(self.client, headers)
            shown = None
        if (
            shown is None
            and status is not None
            and (status == 429 or status >= 500 or status in (401, TOKEN_EXPIRED_CODE))
        ):
            if status == 429:
                self.client.pace.delay(retry_after(response_headers))
            delay = self._backoff(attempt)
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "read", http_status=status, request_id=request_id, result="unreadable",
                    state="settle", not_before=time.time() + delay, retry_cause=causes.of_status(status),
                )
            )  # fmt: skip
            return Step(call_id, "settle", delay=delay)
        if shown:
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "read", http_status=status, request_id=request_id, result="in place",
                    state="done", outcome="already_applied",
                )
            )  # fmt: skip
            return Step(call_id, "done", "already_applied")
        if shown is None:
            self.journal.answered(
                JournalAnswer(
                    call_id, attempt, "read", http_status=status, codes=tuple(answer_codes(body, "errors")),
                    request_id=request_id, result="read shows another state", state="done", outcome="drift",
                )
            )  # fmt: skip
            return Step(call_id, "done", "drift", drift=True)
        # not in place: send again; the earlier attempt may still land, so the answer stays read as uncertain
        self.journal.answered(
            JournalAnswer(
                call_id, attempt, "read", http_status=status, request_id=request_id, result="not in place",
                state="retry", uncertain=True, not_before=time.time(),
            )
        )  # fmt: skip
        return Step(call_id, "retry")

    def _backoff(self, attempt: int) -> float:
        return self.random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))

    def run(self) -> str | None:
        """Schedule every call to its end (or until a drift threshold stops sending); returns why it stopped."""
        states = self.journal.states()
        done: dict[str, Outcome] = {c: s.outcome for c, s in states.items() if s.state == "done" and s.outcome}
        dependents: dict[str, list[str]] = {}
        waiting: dict[str, int] = {}
        for call in self.calls:
            cid = call.call_id
            if cid in done:
                continue
            pending_after = [a for a in call.after if a not in done]
            waiting[cid] = len(pending_after)
            for a in pending_after:
                dependents.setdefault(a, []).append(cid)
        self._block_dependents_of([c for c, o in done.items() if o not in SUCCESSFUL], done)
        self.ended = Counter(done.values())
        waiting = {c: n for c, n in waiting.items() if c not in done}
        if waiting:  # something is left to send: first check that the platform answers and takes the credentials
            customer = self.by_id[min(waiting, key=self.position.__getitem__)].customer_id
            try:
                check_platform(self.client, self.credentials, customer_path(customer))
            finally:  # a restart paces on from it, as from any request
                self.journal.checked(time.time())
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
                        JournalAnswer(
                            cid, state.attempts, "call", result="in flight at restart", state="settle", uncertain=True
                        )
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
        reported = -TICK_SECONDS
        with ThreadPoolExecutor(self.in_flight, thread_name_prefix="push") as pool:
            while True:
                clock = time.monotonic()
                if clock - reported >= TICK_SECONDS:
                    self._report()
                    reported = clock
                while timers and timers[0][0] <= clock:
                    _, pos, cid = heapq.heappop(timers)
                    heapq.heappush(ready, (0 if self.journal_state(cid) == "settle" else 1, pos, cid))
                while stopped is None and ready and inflight < self.in_flight:
                    entry = heapq.heappop(ready)
                    customer = self.by_id[entry[2]].customer_id
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
                wait = max(0.0, timers[0][0] - time.monotonic()) if timers else TICK_SECONDS
                try:
                    item = finished.get(timeout=min(wait, TICK_SECONDS))
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item
                inflight -= 1
                customer = self.by_id[item.call_id].customer_id
                busy.discard(customer)
                for entry in deferred.pop(customer, []):
                    heapq.heappush(ready, entry)
                if item.state == "done" and item.outcome is not None:
                    done[item.call_id] = item.outcome
                    self.ended[item.outcome] += 1
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
                    self._report()
                else:
                    heapq.heappush(timers, (time.monotonic() + item.delay, self.position[item.call_id], item.call_id))
        return stopped

    def _report(self) -> None:
        if self.progress is not None:
            elapsed = time.monotonic() - self.started
            self.progress(PushProgress(dict(self.ended), len(self.calls), self.client.requests, elapsed))

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
            self.ended["blocked"] += len(blocked)
        return len(blocked)

    def _past_drift(self, drifts: int, answered: int) -> str | None:
        if self.options.max_drift is not None and drifts > self.options.max_drift:
            return f"{drifts} drifted calls exceed --max-drift {self.options.max_drift}"
        rate = self.options.max_drift_rate
        if rate is not None and answered and drifts / answered > rate:
            return f"drift rate {drifts / answered:.1%} exceeds --max-drift-rate {rate:.1%}"
        return None


def reopenable(calls: list[Call], states: Mapping[str, CallState]) -> tuple[list[str], list[str]]:
    """What `push --retry` re-opens on a finished push: the calls that ended failed, and the blocked calls whose
    every unsuccessful `after` call is itself re-opened (so, transitively, blocked only by failed calls). A call
    blocked by a drift, directly or through another blocked call, stays: the store must be refreshed first."""
    outcome = {c: s.outcome for c, s in states.items()}
    failed = [c.call_id for c in calls if outcome.get(c.call_id) == "failed"]
    reopened = set(failed)
    blocked: list[str] = []
    candidates = [c for c in calls if outcome.get(c.call_id) == "blocked"]
    grew = True
    while grew:  # `after` names earlier calls, so one pass in plan order suffices; the loop keeps it exact anyway
        grew = False
        for call in candidates:
            if call.call_id in reopened:
                continue
            holding = [a for a in call.after if outcome.get(a) not in SUCCESSFUL]
            if holding and all(a in reopened for a in holding):
                reopened.add(call.call_id)
                blocked.append(call.call_id)
                grew = True
    position = {c.call_id: i for i, c in enumerate(calls)}
    return failed, sorted(blocked, key=position.__getitem__)


def retry_series(journal: Journal, calls: list[Call]) -> dict[str, Any]:
    """`push --retry`: on a finished journal re-open what `reopenable` finds; on an unfinished one (a push killed
    or stopped, this command again) re-open nothing and go on where it stopped. What was done, for the report."""
    if not journal.finished():
        return {"series": journal.series(), "reopened": 0, "failed": 0, "blocked": 0, "resumed": True}
    failed, blocked = reopenable(calls, journal.states())
    done: Reopened = journal.reopen(failed, blocked) if failed or blocked else Reopened(journal.series(), 0, 0)
    return {
        "series": done.series,
        "reopened": done.failed + done.blocked,
        "failed": done.failed,
        "blocked": done.blocked,
        "resumed": False,
    }


def load_plan(folder: Path) -> tuple[list[Call], str]:
    """The folder's call plan as Calls, in order, and the file's sha256 (a journal belongs to one plan): a run's
    calls.ndjson, or the revert-calls.ndjson that `revert --compensate` wrote in a revert's folder."""
    path = folder / CALLS_FILE
    if not path.exists() and (folder / REVERT_CALLS_FILE).exists():
        path = folder / REVERT_CALLS_FILE
    try:
        content = path.read_bytes()
    except OSError as error:
        raise PushUsageError(f"no call plan at {path} ({error.strerror}); run the batch first") from None
    calls = []
    for number, line in enumerate(content.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                calls.append(parse_call(line))
            except NotACallBody as error:
                raise NotACallBody(f"{path}, line {number}: {error}") from None
    return calls, hashlib.sha256(content).hexdigest()


def push_run(
    reports_dir: Path | str,
    config_path: Path | str,
    options: PushOptions = PushOptions(),
    environ: Mapping[str, str] | None = None,
    progress: Callable[[PushProgress], None] | None = None,
) -> PushResult:
    """Push a run's calls.ndjson to the platform; resumable through `push.journal`. Never raises on a call.

    With `options.retry` a finished push's failed calls (and the calls blocked only by them) get a new series of
    attempts first; without it a finished push sends nothing."""
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
        journal.start(plan_sha, [c.call_id for c in calls])
        retry = retry_series(journal, calls) if options.retry else None
        last_sent = journal.last_request()
        # the platform counted the last process's requests too: the pace goes on from its last one
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
        from pipeline.delivery.push_report import write_report  # polars, for push.csv: loaded once all is sent

        result = write_report(
            folder, calls, journal, api, rate, client.requests, elapsed, stopped, options.mask_pii, retry=retry
        )
    finally:
        journal.close()
    # what reached the platform, recorded beside the run in its store (duckdb: loaded once all is sent)
    from pipeline.store.pushes import record_push

    return replace(result, recorded=record_push(folder))
