"""`loyalty-bulk emulate`: the platform's API over a store, on 127.0.0.1 only, for rehearsals and tests.

Serves POST /v2/customers/{id}/changeIdentifier, GET /v2/customers/{id}?source=ALL, GET
/v2/customers/lookup and POST /v3/oauth/token/generate in the platform's shapes (emulated.py applies
the calls with the engine's rules). It enforces a rate (429 with Retry-After once the bucket is empty),
the per-customer lock (521 while another call for that customer is being answered), a latency, and
injected faults; `--log` writes one JSON line per request received. SIGTERM or SIGINT writes the state
to the store and exits 0.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from pipeline.config import OrgConfig
from pipeline.delivery.emulated import Answer, EmulatedPlatform, answer_code
from pipeline.delivery.pacing import TokenBucket, bucket_capacity
from pipeline.delivery.platform import (
    CUSTOMER_BUSY_CODE,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    THROTTLED_CODE,
    TOKEN_EXPIRED_CODE,
    TOKEN_HEADER,
    basic_authorization,
    route,
)
from pipeline.settings import API_KEY_ENV, API_PASSWORD_ENV, API_SECRET_ENV, API_USER_ENV

LOOPBACK = "127.0.0.1"
FAULT_KINDS = ("429", "500", "timeout", "drop-after-apply")


@dataclass(frozen=True)
class EmulatorOptions:
    """How the emulator behaves beyond the platform's rules."""

    port: int = 0
    rate_per_minute: float | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    """Each answer waits latency plus a uniform random extra of up to this (varies the order calls finish in)."""
    faults: dict[str, float] = field(default_factory=dict)
    stall_seconds: float = 30.0
    fault_retry_after: int = 1
    """Retry-After of an injected 429."""
    token_ttl_seconds: int = 300
    token_uses: int | None = None
    """A token stops being accepted (401, code 498) after this many requests: rehearses a mid-push expiry."""
    seed: int | None = None
    log: Path | None = None


def parse_faults(spec: str) -> dict[str, float]:
    """`"429:0.05,500:0.02,timeout:0.02,drop-after-apply:0.02"` -> {kind: share}; ValueError naming the part."""
    faults: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, share = part.rpartition(":")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault '{kind or part}' (known: {', '.join(FAULT_KINDS)})")
        try:
            value = float(share)
        except ValueError:
            raise ValueError(f"fault '{kind}' needs a share from 0 to 1, not '{share}'") from None
        if not 0 <= value <= 1:
            raise ValueError(f"fault '{kind}' needs a share from 0 to 1, not {value}")
        faults[kind] = value
    if sum(faults.values()) > 1:
        raise ValueError("the fault shares add up to more than 1")
    return faults


class Credentials:
    """The credentials the emulator accepts, from its own environment; none set: anything passes."""

    def __init__(self, environ: dict[str, str], token_ttl: int, token_uses: int | None = None):
        user, password = environ.get(API_USER_ENV), environ.get(API_PASSWORD_ENV)
        self.basic = None
        if user and password:
            self.basic = basic_authorization(user, password)
        key, secret = environ.get(API_KEY_ENV), environ.get(API_SECRET_ENV)
        self.oauth = (key, secret) if key and secret else None
        self.token_ttl, self.token_uses = token_ttl, token_uses
        self.tokens: dict[str, float] = {}
        self.uses: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.basic is None and self.oauth is None

    def issue(self, body: Any) -> Answer:
        if self.oauth is not None and (
            not isinstance(body, dict) or (body.get("key"), body.get("secret")) != self.oauth
        ):
            return Answer(401, {"errors": [answer_code(401, "invalid key or secret")]})
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_ttl
        return Answer(200, {"data": {"accessToken": token, "ttlSeconds": self.token_ttl}})

    def refusal(self, headers: Any) -> Answer | None:
        """None if the request's credentials pass, else the 401 to answer (code 498 for an expired token)."""
        if self.open:
            return None
        if self.basic is not None and secrets.compare_digest(headers.get("Authorization", ""), self.basic):
            return None
        token = headers.get(TOKEN_HEADER)
        if self.oauth is not None and token:
            with self.lock:
                expires = self.tokens.get(token)
                used = self.uses[token] = self.uses.get(token, 0) + 1
            worn = self.token_uses is not None and used > self.token_uses
            if expires is not None and expires > time.monotonic() and not worn:
                return None
            if expires is not None:
                return Answer(401, {"errors": [answer_code(TOKEN_EXPIRED_CODE, "token expired")]})
        return Answer(401, {"errors": [answer_code(401, "authentication failed")]})


class Emulator:
    """The server's shared state: platform, limits, faults, per-customer lock and the request log."""

    def __init__(self, platform: EmulatedPlatform, options: EmulatorOptions, environ: dict[str, str]):
        self.platform, self.options = platform, options
        self.bucket = (
            TokenBucket(options.rate_per_minute, bucket_capacity(options.rate_per_minute))
            if options.rate_per_minute
            else None
        )
        self.credentials = Credentials(environ, options.token_ttl_seconds, options.token_uses)
        self.random = random.Random(options.seed)
        self.busy: set[int] = set()
        self.lock = threading.Lock()
        self.log_handle: IO[str] | None = options.log.open("a", encoding="utf-8") if options.log else None
        self.log_lock = threading.Lock()

    def fault(self) -> str | None:
        with self.lock:
            draw = self.random.random()
        for kind, share in self.options.faults.items():
            if draw < share:
                return kind
            draw -= share
        return None

    def latency(self) -> float:
        with self.lock:
            jitter = self.random.uniform(0, self.options.latency_jitter_ms)
        return (self.options.latency_ms + jitter) / 1000.0

    def log(self, entry: dict[str, Any]) -> None:
        if self.log_handle is None:
            return
        with self.log_lock:
            self.log_handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.log_handle.flush()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # an answer leaves as one segment at once: headers and body buffered together, Nagle's algorithm off
    # (otherwise the body waits for the client's delayed ACK of the headers, 40 ms on Linux loopback)
    disable_nagle_algorithm = True
    wbufsize = -1

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `--log` is the request log."""

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        emulator = self.server.emulator
        received = time.time()
        request_id = secrets.token_hex(8)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry: dict[str, Any] = {
            "received": round(received, 6),
            "request_id": request_id,
            "method": method,
            "path": url.path,
            "query": query,
        }
        addressed = route(method, url.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if addressed.endpoint == "token":
            entry["secret_redacted"] = True  # the key, the secret and the token never reach the log
            self._answer(emulator.credentials.issue(body), entry, request_id)
            return
        refusal = emulator.credentials.refusal(self.headers)
        if refusal is not None:
            self._answer(refusal, entry, request_id)
            return
        if emulator.bucket is not None:
            allowed, retry_after = emulator.bucket.take()
            if not allowed:
                answer = Answer(429, {"errors": [answer_code(THROTTLED_CODE, "rate limit exceeded")]})
                self._answer(answer, entry, request_id, {RETRY_AFTER_HEADER: str(retry_after)})
                return
        if addressed.endpoint == "lookup":
            answer = emulator.platform.lookup(
                query.get("source", ""),
                query.get("accountId", ""),
                query.get("identifierName", ""),
                query.get("identifierValue", ""),
            )
            self._after_latency(answer, entry, request_id)
            return
        customer_id = addressed.customer_id
        if customer_id is not None:
            entry["customer_id"] = customer_id
        if addressed.endpoint == "customer" and customer_id is not None:
            self._after_latency(emulator.platform.customer(customer_id), entry, request_id)
            return
        if addressed.endpoint == "change" and customer_id is not None:
            entry["body"] = body
            self._change(customer_id, query, body, entry, request_id)
            return
        self._answer(
            Answer(404, {"errors": [answer_code(404, f"no such endpoint: {method} {url.path}")]}), entry, request_id
        )

    def _change(self, customer_id: int, query: dict[str, str], body: Any, entry: dict, request_id: str) -> None:
        emulator = self.server.emulator
        with emulator.lock:
            overlapping = customer_id in emulator.busy
            if not overlapping:
                emulator.busy.add(customer_id)
        if overlapping:
            answer = Answer(
                521,
                {"errors": [answer_code(CUSTOMER_BUSY_CODE, "Multiple actions are running for the same customer.")]},
            )
            self._answer(answer, entry, request_id)
            return
        try:
            fault = emulator.fault()
            entry["fault"] = fault
            if fault == "429":
                answer = Answer(429, {"errors": [answer_code(THROTTLED_CODE, "rate limit exceeded")]})
                self._after_latency(
                    answer, entry, request_id, {RETRY_AFTER_HEADER: str(emulator.options.fault_retry_after)}
                )
                return
            if fault == "500":
                self._after_latency(Answer(500, {"errors": [answer_code(500, "internal error")]}), entry, request_id)
                return
            answer = emulator.platform.change_identifier(customer_id, query.get("source"), query.get("accountId"), body)
            entry["changed"] = answer.changed
            if fault == "drop-after-apply":
                entry["status"], entry["answer"] = None, answer.body
                emulator.log(entry)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "timeout":
                # logged before the stall: an emulator stopped while stalling still shows what it applied
                entry.update(status=answer.status, answer=answer.body, stalled=emulator.options.stall_seconds)
                emulator.log(entry)
                entry["logged"] = True
                time.sleep(emulator.options.stall_seconds)
            self._after_latency(answer, entry, request_id)
        finally:
            with emulator.lock:
                emulator.busy.discard(customer_id)

    def _after_latency(
        self, answer: Answer, entry: dict, request_id: str, headers: dict[str, str] | None = None
    ) -> None:
        pause = self.server.emulator.latency()
        if pause > 0:
            time.sleep(pause)
        self._answer(answer, entry, request_id, headers)

    def _answer(self, answer: Answer, entry: dict, request_id: str, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(answer.body).encode("utf-8")
        shown = {"redacted": True} if entry.get("secret_redacted") else answer.body
        entry.update(status=answer.status, answer=shown, answered=round(time.time(), 6))
        if not entry.get("logged"):
            self.server.emulator.log(entry)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header(REQUEST_ID_HEADER, request_id)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (its time-out); the call's effect stays


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator


def serve(
    store_path: Path | str,
    config: OrgConfig,
    options: EmulatorOptions,
    announce: Any = print,
    environ: dict[str, str] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then write the state to the store; returns the exit code (0)."""
    platform = EmulatedPlatform.load(store_path, config)
    emulator = Emulator(platform, options, dict(os.environ if environ is None else environ))
    server = _Server((LOOPBACK, options.port), _Handler)
    server.emulator = emulator
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        announce(f"listening on http://{LOOPBACK}:{server.server_address[1]}")
        server.serve_forever(poll_interval=0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.server_close()
        platform.write_to(store_path)
        if emulator.log_handle is not None:
            emulator.log_handle.close()
    return 0
