"""The push journal (`push.journal`, SQLite beside the reports): every call's state, durable per change.

Each attempt is written before it is sent (`sending`, attempt number, time) and its answer after
(HTTP status, codes, request id, time), each in its own committed transaction with synchronous=FULL,
so a push killed at any moment finds on restart exactly which calls were answered (never sent again),
which were in flight (settled first) and when it last sent anything (pacing goes on from there).
A lock file beside it (`push.journal.lock`, flock) keeps a second push out while one runs.

SQLite rather than DuckDB: small durable transactions from several threads, and the standard library.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pipeline.errors import JournalBusy, StoreError

Outcome = Literal["confirmed", "already_applied", "drift", "blocked", "failed"]
State = Literal["planned", "sending", "retry", "settle", "done"]
Kind = Literal["call", "read"]
"""An attempt's request: the call itself, or a read of its customer that settles it."""
SUCCESSFUL: frozenset[str] = frozenset({"confirmed", "already_applied"})
JOURNAL_FILE = "push.journal"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    uncertain INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    http_status INTEGER,
    codes TEXT,
    warnings TEXT,
    request_id TEXT,
    first_sent REAL,
    answered_at REAL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    call_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    kind TEXT NOT NULL,
    sent_at REAL NOT NULL,
    answered_at REAL,
    http_status INTEGER,
    codes TEXT,
    request_id TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS retries (cause TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class CallState:
    call_id: str
    position: int
    state: State
    outcome: Outcome | None
    attempts: int
    uncertain: bool
    not_before: float
    http_status: int | None
    codes: str | None
    warnings: str | None
    request_id: str | None
    first_sent: float | None
    answered_at: float | None
    detail: str | None


@dataclass(frozen=True)
class JournalAnswer:
    """An attempt's answer (or its lack) and the call's next state, as `Journal.answered` records them."""

    call_id: str
    attempt: int
    kind: Kind
    _: KW_ONLY
    result: str
    """What the answer meant, in words (the attempt's `result`)."""
    state: State
    http_status: int | None = None
    codes: tuple[int, ...] = ()
    """The answer's error and warning codes."""
    request_id: str | None = None
    outcome: Outcome | None = None
    uncertain: bool = False
    """The attempt may have reached the platform: the call stays settled by proof, never by a guess."""
    not_before: float = 0.0
    """Wall-clock time before which the call is not tried again."""
    warnings: tuple[int, ...] | None = None
    """The answer's warning codes (None: keep what the journal holds)."""
    retry_cause: str | None = None
    """Counted among the retries by cause."""
    detail: str | None = None


class Journal:
    """One push's journal; open it with `Journal.open`, which takes the lock (JournalBusy if held)."""

    def __init__(self, path: Path, lock: IO[str]):
        self.path, self._lock_file = path, lock
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    @classmethod
    def open(cls, folder: Path) -> Journal:
        path = folder / JOURNAL_FILE
        lock = (folder / f"{JOURNAL_FILE}.lock").open("a")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise JournalBusy(f"another push is using {path} (pid in {path}.lock); nothing was sent") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return cls(path, lock)

    def close(self) -> None:
        self.db.close()
        self._lock_file.close()

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self.db.execute(sql, params)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def meta(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def start(self, plan_sha256: str, call_ids: list[str]) -> bool:
        """Record the plan on a new journal (True), or check a resumed one holds the same plan (False)."""
        known = self.meta("plan_sha256")
        if known is not None:
            if known != plan_sha256:
                raise StoreError(
                    f"{self.path} belongs to another calls.ndjson (sha256 {known[:12]}…); nothing was sent"
                )
            return False
        self._write(
            [("INSERT INTO meta VALUES ('plan_sha256', ?)", (plan_sha256,))]
            + [
                ("INSERT INTO calls (call_id, position, state) VALUES (?, ?, 'planned')", (c, i))
                for i, c in enumerate(call_ids)
            ]
        )
        return True

    def states(self) -> dict[str, CallState]:
        with self.lock:
            rows = self.db.execute(
                "SELECT call_id, position, state, outcome, attempts, uncertain, not_before, http_status, codes, "
                "warnings, request_id, first_sent, answered_at, detail FROM calls"
            ).fetchall()
        return {r[0]: _state(r) for r in rows}

    def states_of(self, call_id: str) -> CallState:
        with self.lock:
            r = self.db.execute(
                "SELECT call_id, position, state, outcome, attempts, uncertain, not_before, http_status, codes, "
                "warnings, request_id, first_sent, answered_at, detail FROM calls WHERE call_id = ?",
                (call_id,),
            ).fetchone()
        return _state(r)

    def sending(self, call_id: str, attempt: int, kind: Kind) -> float:
        """Durably record that an attempt (a call or a settling read) is about to be sent; returns its time."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO attempts (call_id, attempt, kind, sent_at) VALUES (?, ?, ?, ?)",
                    (call_id, attempt, kind, now),
                ),
                (
                    "UPDATE calls SET state = 'sending', attempts = ?, first_sent = coalesce(first_sent, ?) "
                    "WHERE call_id = ?",
                    (attempt, now, call_id),
                ),
            ]
        )
        return now

    def answered(self, answer: JournalAnswer) -> None:
        """Durably record an attempt's answer (or its lack) and the call's next state, in one transaction."""
        a, now = answer, time.time()
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE attempts SET answered_at = ?, http_status = ?, codes = ?, request_id = ?, result = ? "
                "WHERE call_id = ? AND attempt = ? AND kind = ? AND answered_at IS NULL",
                (now, a.http_status, json.dumps(list(a.codes)), a.request_id, a.result, a.call_id, a.attempt, a.kind),
            ),
            (
                "UPDATE calls SET state = ?, outcome = ?, uncertain = max(uncertain, ?), not_before = ?, "
                "http_status = coalesce(?, http_status), codes = ?, warnings = coalesce(?, warnings), "
                "request_id = coalesce(?, request_id), answered_at = ?, detail = ? WHERE call_id = ?",
                (
                    a.state,
                    a.outcome,
                    int(a.uncertain),
                    a.not_before,
                    a.http_status,
                    ";".join(map(str, a.codes)),
                    None if a.warnings is None else ";".join(map(str, a.warnings)),
                    a.request_id,
                    now,
                    a.detail,
                    a.call_id,
                ),
            ),
        ]
        if a.retry_cause is not None:
            statements.append(
                (
                    "INSERT INTO retries VALUES (?, 1) ON CONFLICT (cause) DO UPDATE SET count = count + 1",
                    (a.retry_cause,),
                )
            )
        self._write(statements)

    def block(self, call_ids: list[str], detail: str) -> None:
        self._write(
            [
                ("UPDATE calls SET state = 'done', outcome = 'blocked', detail = ? WHERE call_id = ?", (detail, c))
                for c in call_ids
            ]
        )

    def count_retry(self, cause: str) -> None:
        self._write(
            [("INSERT INTO retries VALUES (?, 1) ON CONFLICT (cause) DO UPDATE SET count = count + 1", (cause,))]
        )

    def retries(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT cause, count FROM retries ORDER BY cause").fetchall())

    def sends(self) -> tuple[int, float | None, float | None]:
        """How many requests were sent in all, and the first and last send times (wall clock)."""
        with self.lock:
            n, first, last = self.db.execute("SELECT count(*), min(sent_at), max(sent_at) FROM attempts").fetchone()
        return n, first, last


def _state(r: tuple[Any, ...]) -> CallState:
    return CallState(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13])
