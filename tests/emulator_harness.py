"""Start the real `loyalty-bulk emulate` on 127.0.0.1 for a test, and stop it with SIGTERM (state written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import urllib3

CLI = str(Path(sys.executable).parent / "loyalty-bulk")
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=20))
"""The tests' own client: no retries, so each request is exactly one call."""


@contextmanager
def running_emulator(
    store: Path, config: Path, *options: str, env: dict[str, str] | None = None, port: int = 0
) -> Iterator[str]:
    """Yield the emulator's base URL (on `port`, 0: a free one); on exit SIGTERM it, wait (bounded), check it
    exited 0."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_BULK_API_")}
    environ.update(env or {})
    process = subprocess.Popen(
        [CLI, "emulate", "--store", str(store), "--config", str(config), "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        assert line.startswith("listening on http://127.0.0.1:"), (
            line,
            process.stderr.read() if process.stderr else "",
        )
        yield line.removeprefix("listening on ")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, process.stderr.read() if process.stderr else code


def post(url: str, body: dict, headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
    return HTTP.request(
        "POST", url, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
