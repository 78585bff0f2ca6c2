"""Test-only fault hooks: the process kills itself with SIGKILL, or waits, at a named point of its work.

`LOYALTY_BULK_KILL_AT=<point>[:<n>]` names the point to die at, on its n-th passage (default the
first); a test sets it to prove that a crash at exactly that point leaves the store (or a journal)
whole, and reads "fault hook: SIGKILL at <point>" on stderr to know the point was reached rather than
the work having finished first.
`LOYALTY_BULK_HOLD_AT=<point>` with `LOYALTY_BULK_HOLD_UNTIL=<file>` makes the process say "fault
hook: holding at <point>" and wait there until the file exists, so a test can make two processes
overlap for certain. Unset (always, outside tests), each hook is one environment lookup.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

ENV_KILL_AT = "LOYALTY_BULK_KILL_AT"
ENV_HOLD_AT = "LOYALTY_BULK_HOLD_AT"
ENV_HOLD_UNTIL = "LOYALTY_BULK_HOLD_UNTIL"
HOLD_LIMIT_SECONDS = 120.0
"""A held process that is never released goes on after this long, so no test can hang on it."""

RUN_POINTS = (
    "after-check",
    "after-decide",
    "in-transaction",
    "during-commit",
    "after-commit",
    "during-checkpoint",
)
"""The points of `run` in the order a run passes them (pipeline/run.py)."""
REFRESH_POINTS = (
    "refresh-after-diff",
    "refresh-in-transaction",
    "refresh-during-commit",
    "refresh-after-commit",
    "refresh-during-checkpoint",
)
"""The points of `store refresh` in the order it passes them (pipeline/refresh.py)."""
SPARK_POINTS = ("spark-after-stage", "spark-after-commit", "spark-during-roll-forward")
"""The points of a real run on a Delta store after its decision (pipeline/spark/publish.py): its changes staged,
its commit row written, half of its roll-forward done. The run's own points (RUN_POINTS) come before them."""
PUSH_POINTS = ("before-send", "after-send", "settle")
"""The points of `push` (pipeline/delivery/push.py): before a request goes out, once it is answered but not yet
journaled, once a settling read is answered but not yet journaled. Passed once per request."""

DURING_DELAY_SECONDS = 0.002
"""How long after a `kill_during` block starts the kill lands: inside any commit that writes data."""


_passages: dict[str, int] = {}
_passages_lock = threading.Lock()


def _kill_due(point: str) -> bool:
    """Whether this passage through the point is the one LOYALTY_BULK_KILL_AT names (threads count together)."""
    spec = os.environ.get(ENV_KILL_AT)
    if not spec:
        return False
    name, _, nth = spec.partition(":")
    if name != point:
        return False
    with _passages_lock:
        _passages[point] = _passages.get(point, 0) + 1
        return _passages[point] >= int(nth or 1)


def kill_point(point: str) -> None:
    """SIGKILL this process here, or hold it here, when the environment names this point."""
    if _kill_due(point):
        _kill(point)
    if os.environ.get(ENV_HOLD_AT) == point:
        _hold(point, Path(os.environ[ENV_HOLD_UNTIL]))


@contextmanager
def kill_during(point: str) -> Iterator[None]:
    """SIGKILL this process from another thread while the block runs (or as it ends, if it is quicker)."""
    if not _kill_due(point):
        yield
        return
    timer = threading.Timer(DURING_DELAY_SECONDS, _kill, args=(point,))
    timer.start()
    yield
    timer.join()  # never returns: the timer's thread kills the process


def _hold(point: str, release: Path) -> None:
    os.write(2, f"fault hook: holding at {point}\n".encode())
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill(point: str) -> NoReturn:
    os.write(2, f"fault hook: SIGKILL at {point}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")
