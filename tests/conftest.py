"""Suite-wide settings, paths and fixtures.

Hypothesis profiles: `ci` (chosen when the environment says CI=true, as CI's runner does) is derandomised, so
a CI run is repeatable and a red one can be rerun exactly, and prints the failing example's reproduction blob
(`@reproduce_failure`). `dev` (everywhere else) explores new examples on every run. Tests keep their own
example counts and deadlines; a profile sets only what they leave open. `HYPOTHESIS_PROFILE=ci` chooses a
profile explicitly.

Paths: ROOT, the sample org without `[mobile]` (ORG, for stores made without --config), the sample snapshot
and request files. Fixtures: `store`, a fresh store made from the sample snapshot (made once per worker,
copied for each test); `spark_remote`, the `sc://` address of a local Sail Spark Connect server (`loyalty-bulk
spark-server --port 0`, one per worker), and `spark`, a session connected to it. Markers: `slow` for the long
property and end-to-end tests that `make test-fast` leaves out (pyproject.toml).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from pipeline.settings import env_flag
from pipeline.store.snapshot import export_store, init_store

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if env_flag(os.environ.get("CI", "")) else "dev"))

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "tests" / "cases" / "org-plain.toml"
"""The sample org without `[mobile]`: for stores made without --config."""
SAMPLE_SNAPSHOT = ROOT / "sample_data" / "snapshot"
REQUESTS = sorted((ROOT / "sample_data" / "requests").glob("*.csv"))
"""The sample's request files, in run order."""


@pytest.fixture(scope="session")
def sample_snapshot_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store `store init` makes from the sample snapshot, once per worker; tests get copies (`store`)."""
    path = tmp_path_factory.mktemp("sample-store") / "store.duckdb"
    init_store(path, SAMPLE_SNAPSHOT)
    return path


@pytest.fixture
def store(sample_snapshot_store: Path, tmp_path: Path) -> Path:
    """A fresh store made from the sample snapshot, this test's own."""
    path = tmp_path / "store.duckdb"
    shutil.copyfile(sample_snapshot_store, path)
    return path


def exported(store: Path, out: Path) -> dict[str, bytes]:
    """The store as `store export --format csv` writes it, file name -> bytes: equal stores, equal exports."""
    export_store(store, out, "csv")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


CLI = Path(sys.executable).parent / "loyalty-bulk"
"""The command line installed next to the tests' Python."""
SPARK_SERVER_START_SECONDS = 60
"""How long the fixture waits for `spark-server`'s first line (it comes in about 0.1 s)."""


@pytest.fixture(scope="session")
def spark_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `sc://127.0.0.1:PORT` address of a local Spark Connect server (`loyalty-bulk spark-server --port 0`),
    started once per worker and stopped with SIGTERM at the end; its log (stderr) is in the fixture's folder."""
    log = tmp_path_factory.mktemp("spark-server") / "server.log"
    with log.open("wb") as err:
        server = subprocess.Popen(
            [str(CLI), "spark-server", "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
        )
    assert server.stdout is not None
    try:
        ready, _, _ = select.select([server.stdout], [], [], SPARK_SERVER_START_SECONDS)
        line = server.stdout.readline() if ready else ""
        if not line.startswith("listening on sc://"):
            pytest.fail(f"spark-server did not start: {line!r}; its log:\n{log.read_text(errors='replace')}")
        yield line.removeprefix("listening on ").strip()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()


@pytest.fixture(scope="session")
def spark(spark_remote: str) -> Iterator[SparkSession]:
    """A Spark Connect session to the local server of `spark_remote`, shared by the worker's tests."""
    from pipeline.spark.session import spark_session

    session = spark_session(spark_remote)
    yield session
    session.stop()
