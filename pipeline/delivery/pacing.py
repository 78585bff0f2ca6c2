"""Rates in calls per minute: the pace a push keeps, and the bucket the emulator enforces.

`Pace` is a GCRA (generic cell rate algorithm, the token bucket written as one timestamp): call k may
start at `tat - burst·interval` at the earliest, where `tat` moves on by one interval per call. Its
whole state is that timestamp, so a push rebuilds it after a restart from the send times its journal
holds and the platform's count of the killed process's calls is respected. With `burst` b, no window of
W seconds holds more than W·rate/60 + b calls.
"""

from __future__ import annotations

import math
import threading
import time


class Pace:
    """A GCRA pacer: `wait()` blocks until the next call may start; thread-safe; `delay()` slows it down."""

    def __init__(self, per_minute: float, burst: int = 1, not_before: float | None = None):
        if per_minute <= 0:
            raise ValueError("a rate must be positive (calls per minute)")
        self.interval = 60.0 / per_minute
        self.burst = max(1, burst)
        self._tat = time.monotonic() if not_before is None else not_before
        self._lock = threading.Lock()

    def reserve(self, now: float | None = None) -> float:
        """Take the next slot; return the monotonic time at which the call may start."""
        with self._lock:
            now = time.monotonic() if now is None else now
            start = max(now, self._tat - (self.burst - 1) * self.interval)
            self._tat = max(self._tat, now) + self.interval
            return start

    def wait(self, deadline: float | None = None) -> bool:
        """Sleep until the next slot; False (no slot taken) if it would come after `deadline`."""
        start = self.reserve()
        if deadline is not None and start > deadline:
            return False
        pause = start - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        return True

    def delay(self, seconds: float) -> None:
        """No call starts within `seconds` from now (a Retry-After, or the next window after a 429)."""
        with self._lock:
            self._tat = max(self._tat, time.monotonic() + seconds)


class TokenBucket:
    """The emulator's limit: `per_minute` tokens a minute, holding at most `capacity`; a call takes one."""

    def __init__(self, per_minute: float, capacity: float):
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self._tokens = capacity
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int]:
        """Take a token: (True, 0), or (False, whole seconds until one is there) for Retry-After."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True, 0
            return False, max(1, math.ceil((1 - self._tokens) / self.rate))


def bucket_capacity(per_minute: float) -> float:
    """The emulator's burst: one second's worth of calls, at least 5, so loopback jitter is never throttled."""
    return max(5.0, per_minute / 60.0)
