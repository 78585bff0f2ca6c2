"""A local Spark Connect server: Sail (pysail, no JVM) on 127.0.0.1, for tests and trying the Spark engine.

`loyalty-bulk spark-server` serves one until SIGTERM or Ctrl-C; `start_server` gives the running server to a
caller that stops it itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from pipeline.spark.session import SparkUsageError, require_spark

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 15002
"""Spark Connect's usual port; 0 asks for a free one."""


class LocalServer:
    """A started Sail Spark Connect server on 127.0.0.1 and its `sc://HOST:PORT` address."""

    def __init__(self, port: int = 0) -> None:
        require_spark("pysail")
        from pysail.spark import SparkConnectServer

        self._server = SparkConnectServer(ip=LOOPBACK, port=port)
        try:
            self._server.start(background=True)
        except OSError as exc:
            raise SparkUsageError(
                f"cannot serve Spark Connect on {LOOPBACK}:{port}: {exc} (--port 0 picks a free port); nothing was done"
            ) from None
        host, bound = self._server.listening_address
        self.address = f"sc://{host}:{bound}"

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(port: int = 0) -> LocalServer:
    """Start a local Spark Connect server on 127.0.0.1:`port` (0: a free port); `.address` is `sc://HOST:PORT`."""
    return LocalServer(port)


def serve(port: int = DEFAULT_PORT, announce: Callable[[str], Any] = print) -> int:
    """Serve Spark Connect on 127.0.0.1 until SIGTERM or SIGINT; announce `listening on sc://HOST:PORT` first.

    Returns the exit code (0)."""
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with start_server(port) as server:
            announce(f"listening on {server.address}")
            while not stopping.wait(0.1):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
