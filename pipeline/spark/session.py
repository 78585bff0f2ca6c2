"""The Spark Connect session a command works with, and the usage errors of a missing extra or address.

The address comes from --spark-remote, else the SPARK_REMOTE environment variable (as PySpark itself reads it):
`sc://HOST:PORT` of Databricks Connect, any Spark Connect server, or `loyalty-bulk spark-server`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.errors import EXIT_USAGE, LoyaltyBulkError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENV_SPARK_REMOTE = "SPARK_REMOTE"
EXTRA_MISSING = "the Spark engine needs the optional extra `spark`: pip install 'loyalty-bulk[spark]'"


class SparkUsageError(LoyaltyBulkError):
    """The Spark engine cannot start: the `spark` extra is missing or no Spark Connect address was given (exit 2,
    nothing done)."""

    exit_code = EXIT_USAGE


def require_spark(module: str = "pyspark.sql.connect.session") -> None:
    """Import `module` of the `spark` extra, or raise SparkUsageError saying how to install the extra.

    pyspark.sql.connect takes a `__main__` without `__file__` or `__spec__` (`python -c`, pytest-xdist's
    workers) for its own doctest runner and exits the process (code 255, looking for a Spark installation);
    the marker of an interactive prompt, set for the import only, has it check its dependencies instead."""
    main = sys.modules.get("__main__")
    doctest_like = (
        main is not None
        and getattr(main, "__spec__", None) is None
        and not hasattr(main, "__file__")
        and not hasattr(sys, "ps1")
    )
    if doctest_like:
        sys.ps1 = ""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise SparkUsageError(f"{EXTRA_MISSING} ({exc}); nothing was done") from None
    finally:
        if doctest_like:
            del sys.ps1


def spark_remote(remote: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The Spark Connect address: `remote` (--spark-remote) when given, else SPARK_REMOTE."""
    address = remote or (os.environ if environ is None else environ).get(ENV_SPARK_REMOTE, "")
    if not address:
        raise SparkUsageError(
            f"no Spark Connect server given: pass --spark-remote sc://HOST:PORT or set {ENV_SPARK_REMOTE} "
            "(`loyalty-bulk spark-server` serves one on this machine); nothing was done"
        )
    if not address.startswith("sc://"):
        raise SparkUsageError(
            f"--spark-remote or {ENV_SPARK_REMOTE} must be a Spark Connect address sc://HOST:PORT, "
            f"not {address!r}; nothing was done"
        )
    return address


def spark_session(remote: str | None, environ: Mapping[str, str] | None = None) -> SparkSession:
    """A new Spark Connect session to `remote` (--spark-remote), else to SPARK_REMOTE."""
    address = spark_remote(remote, environ)
    require_spark()
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(address).create()
