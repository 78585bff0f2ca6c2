"""Suite-wide settings, paths and fixtures.

Hypothesis profiles: `ci` (chosen when the environment says CI=true, as CI's runner does) is derandomised, so
a CI run is repeatable and a red one can be rerun exactly, and prints the failing example's reproduction blob
(`@reproduce_failure`). `dev` (everywhere else) explores new examples on every run. Tests keep their own
example counts and deadlines; a profile sets only what they leave open. `HYPOTHESIS_PROFILE=ci` chooses a
profile explicitly.

Paths: ROOT, the sample org without `[mobile]` (ORG, for stores made without --config), the sample snapshot
and request files. Fixtures: `store`, a fresh store made from the sample snapshot (made once per worker,
copied for each test). Markers: `slow` for the long property and end-to-end tests that `make test-fast`
leaves out (pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

from pipeline.settings import env_flag
from pipeline.store.snapshot import export_store, init_store

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
