"""The push journal (`push.journal`, SQLite beside the reports): every call's state, durable per change.

Each attempt is written before it is sent (`sending`, attempt number, time) and its answer after
(HTTP status, codes, request id, time), each in its own committed transaction with synchronous=FULL,
so a push killed at any moment finds on restart exactly which calls were answered (never sent again),
which were in flight (settled first) and when it last sent anything (pacing goes on from there).
A lock file beside it (`push.journal.lock`, flock) keeps a second push out while one runs.

`push --retry` gives a finished push's failed calls (and the calls blocked only by them) a new series of
attempts (`reopen`): the journal keeps every earlier attempt, numbered on across series, and each attempt and
call says which series it belongs to (series 0 is the first push). A journal written before series existed
gets their columns on open, all 0, and resumes as it always did.

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

from pipeline.delivery.causes import plain
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
    detail TEXT,
    series INTEGER NOT NULL DEFAULT 0,
    series_from INTEGER NOT NULL DEFAULT 0
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
    result TEXT,
    series INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS retries (cause TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    failed INTEGER NOT NULL,
    blocked INTEGER NOT NULL
);
"""
_ADDED_COLUMNS = (
    ("calls", "series", "INTEGER NOT NULL DEFAULT 0"),
    ("calls", "series_from", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "series", "INTEGER NOT NULL DEFAULT 0"),
)
"""Columns a journal written before `push --retry` lacks: added on open (ALTER TABLE), so it still resumes."""
_CALL_COLUMNS = (
    "call_id, position, state, outcome, attempts, uncertain, not_before, http_status, codes, warnings, request_id, "
    "first_sent, answered_at, detail, series, series_from"
)


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
    series: int = 0
    """The series of attempts the call is in: 0 the first push, n the n-th `push --retry` that re-opened it."""
    series_from: int = 0
    """The call's attempts before its series began: the per-call limit counts from here."""


@dataclass(frozen=True)
class Reopened:
    """What `Journal.reopen` gave a new series of attempts."""

    series: int
    failed: int
    blocked: int


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
        for table, column, declaration in _ADDED_COLUMNS:
            if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
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
            rows = self.db.execute(f"SELECT {_CALL_COLUMNS} FROM calls").fetchall()
        return {r[0]: _state(r) for r in rows}

    def states_of(self, call_id: str) -> CallState:
        with self.lock:
            r = self.db.execute(f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return _state(r)

    def sending(self, call_id: str, attempt: int, kind: Kind) -> float:
        """Durably record that an attempt (a call or a settling read) is about to be sent; returns its time."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO attempts (call_id, attempt, kind, sent_at, series) "
                    "SELECT ?, ?, ?, ?, series FROM calls WHERE call_id = ?",
                    (call_id, attempt, kind, now, call_id),
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

    def reopen(self, failed: list[str], blocked: list[str]) -> Reopened:
        """Give failed calls and the calls blocked by them a new series of attempts, in one transaction.

        A failed call whose attempts may have reached the platform stays uncertain and is settled first (a read
        of its customer); one that never reached it is sent again. A blocked call goes back to planned. Every
        earlier attempt stays; attempt numbers go on, and the per-call limit counts from the new series."""
        with self.lock:
            (last,) = self.db.execute("SELECT coalesce(max(series), 0) FROM series").fetchone()
        series = last + 1
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("INSERT INTO series VALUES (?, ?, ?, ?)", (series, time.time(), len(failed), len(blocked)))
        ]
        statements += [
            (
                "UPDATE calls SET state = CASE WHEN uncertain THEN 'settle' ELSE 'retry' END, outcome = NULL, "
                "not_before = 0, series = ?, series_from = attempts, detail = 'reopened: was failed' "
                "WHERE call_id = ? AND outcome = 'failed'",
                (series, c),
            )
            for c in failed
        ]
        statements += [
            (
                "UPDATE calls SET state = 'planned', outcome = NULL, not_before = 0, series = ?, "
                "series_from = attempts, detail = 'reopened: was blocked' WHERE call_id = ? AND outcome = 'blocked'",
                (series, c),
            )
            for c in blocked
        ]
        self._write(statements)
        return Reopened(series, len(failed), len(blocked))

    def series(self) -> int:
        """The number of the latest series of attempts (0: no `push --retry` re-opened anything yet)."""
        with self.lock:
            (last,) = self.db.execute("SELECT coalesce(max(series), 0) FROM series").fetchone()
        return int(last)

    def finished(self) -> bool:
        """Whether every call of the journal has ended (nothing planned, in flight or waiting for a retry)."""
        with self.lock:
            (open_calls,) = self.db.execute("SELECT count(*) FROM calls WHERE state <> 'done'").fetchone()
        return open_calls == 0

    def retries(self) -> dict[str, int]:
        """Retries by cause, in words (a journal of an earlier version counted some under other names)."""
        with self.lock:
            rows = self.db.execute("SELECT cause, count FROM retries ORDER BY cause").fetchall()
        counted: dict[str, int] = {}
        for cause, count in rows:
            counted[plain(cause)] = counted.get(plain(cause), 0) + count
        return dict(sorted(counted.items()))

    def checked(self, at: float) -> None:
        """Record when a push's pre-flight request went out: not a call's send, but the platform counted it."""
        self._write([("INSERT OR REPLACE INTO meta VALUES ('checked_at', ?)", (repr(at),))])

    def last_request(self) -> float | None:
        """When this journal's pushes last sent anything (a call, a settling read or a pre-flight), wall clock."""
        _, _, last = self.sends()
        checked = self.meta("checked_at")
        return max(last or 0.0, float(checked or 0.0)) or None

    def sends(self) -> tuple[int, float | None, float | None]:
        """How many requests were sent in all, and the first and last send times (wall clock)."""
        with self.lock:
            n, first, last = self.db.execute("SELECT count(*), min(sent_at), max(sent_at) FROM attempts").fetchone()
        return n, first, last


def _state(r: tuple[Any, ...]) -> CallState:
    return CallState(
        r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]
    )
