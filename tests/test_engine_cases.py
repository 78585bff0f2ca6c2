"""Every hand-written case of test_model.py (one per code and warning, plus in-run dependencies),
run again on the real engine: the same rows, the same expected tuples, the same final store."""

from __future__ import annotations

import pytest

import test_model
from engine_harness import run_engine
from model import ModelStore

MODEL_ONLY = {
    "test_invariant_violations_are_reported",
    "test_copy_is_independent",
    "test_snapshot_round_trip",
    "test_snapshot_values_equal_after_normalisation_are_refused",
    "test_empty_store_frames",
    "test_model_keeps_invariants_on_random_rows",
}

globals().update(
    {name: test for name, test in vars(test_model).items() if name.startswith("test_") and name not in MODEL_ONLY}
)


def engine_run_model(store: ModelStore, rows, config):
    """run_model's contract (mutate the store, return one RowResult per row), fulfilled by the engine."""
    run = run_engine(store, rows, config)
    store.customers = {c: (s, m, t) for c, s, m, t in run.frames["customers"].rows()}
    store.identifiers = set(run.frames["identifiers"].rows())
    store.cards = {n: (s, c, label) for n, s, c, label in run.frames["cards"].rows()}
    return run.results


@pytest.fixture(autouse=True)
def _engine_instead_of_model(monkeypatch):
    monkeypatch.setattr(test_model, "run_model", engine_run_model)
