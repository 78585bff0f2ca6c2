"""Defaults, in one place. Precedence: command-line flag > environment variable > job file > default."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

DEFAULT_MEMORY_LIMIT = "2GB"
"""DuckDB's memory limit; past it DuckDB spills to the store's .tmp folder instead of growing."""
DEFAULT_THREADS: int | None = None
"""DuckDB worker threads; None lets DuckDB use every core."""
DEFAULT_WORKERS: int | None = None
"""Cores the interacting rows' replay runs on (engine/components.py); None means every core."""

CALLS_FILE = "calls.ndjson"
"""The call plan's name in a run's reports folder: written by run, read by push and the emulator."""
RUN_SUMMARY_FILE = "summary.json"
"""A run's summary in its reports folder: names the run and its store (push records itself there)."""
REVERT_CALLS_FILE = "revert-calls.ndjson"
"""The calls that undo a reverted run on the platform (`revert --compensate`), in a revert's reports folder."""
PUSH_SUMMARY_FILE, PUSH_CSV_FILE = "push-summary.json", "push.csv"
"""What a push writes beside the run's reports: its counts, and one line per call."""

ENV_MEMORY_LIMIT = "LOYALTY_BULK_MEMORY_LIMIT"
ENV_THREADS = "LOYALTY_BULK_THREADS"
ENV_WORKERS = "LOYALTY_BULK_WORKERS"
ENV_MASK_PII = "LOYALTY_BULK_MASK_PII"
ENV_ENGINE = "LOYALTY_BULK_ENGINE"
ENV_BUCKET_ROWS = "LOYALTY_BULK_SPARK_BUCKET_ROWS"
"""Rows a bucket of a run on Spark aims at (spark/decide.py ROWS_PER_BUCKET)."""
ENGINES = ("duckdb", "spark")
"""The engines a store may live on: one DuckDB file (the default), or Delta tables through Spark Connect."""
DEFAULT_ENGINE = "duckdb"


def env_flag(text: str) -> bool:
    """An environment variable read as a flag: anything but '', 0, false or no turns it on."""
    return text.strip().lower() not in ("", "0", "false", "no")


def pick(flag: Any, env_name: str | None, job_value: Any, default: Any, cast: Callable[[str], Any] = str) -> Any:
    """The first value set among flag, environment, job file and default, in that order."""
    if flag is not None:
        return flag
    if env_name and os.environ.get(env_name):
        return cast(os.environ[env_name])
    if job_value is not None:
        return job_value
    return default


API_USER_ENV = "LOYALTY_BULK_API_USER"
API_PASSWORD_ENV = "LOYALTY_BULK_API_PASSWORD"
API_KEY_ENV = "LOYALTY_BULK_API_KEY"
API_SECRET_ENV = "LOYALTY_BULK_API_SECRET"
"""The platform's credentials: read from the environment only, never from a flag or a file, never written."""
