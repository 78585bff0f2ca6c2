"""The engine equals the sequential model on a realistic generated batch (loyalty-bulk sample)."""

from __future__ import annotations

import csv
from typing import Any

import polars as pl
import pytest

from model import model_store_to_frames, run_model, store_from_snapshot_dir
from pipeline.config import load_config
from pipeline.run import run_batch
from pipeline.store.snapshot import export_store, init_store
from pipeline.tools.sample import generate_sample


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_batch_matches_the_model(tmp_path, seed):
    generate_sample(tmp_path / "s", customers=400, rows=1500, seed=seed)
    config = load_config(tmp_path / "s" / "org.toml")
    with open(tmp_path / "s" / "requests.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    model = store_from_snapshot_dir(tmp_path / "s" / "snapshot")
    expected = run_model(model, rows, config)

    store = tmp_path / "store.duckdb"
    init_store(store, tmp_path / "s" / "snapshot")
    result = run_batch(store, tmp_path / "s" / "org.toml", [tmp_path / "s" / "requests.csv"], tmp_path / "r")
    success = pl.read_csv(tmp_path / "r" / "success.csv", infer_schema=False)
    errors = pl.read_csv(tmp_path / "r" / "errors.csv", infer_schema=False)
    got: dict[int, tuple[Any, ...]] = {
        int(n): ("ok", o, v or "", s or "", w or "")
        for n, o, v, s, w in success.select("row_number", "outcome", "victim_id", "survivor_id", "warning_codes").rows()
    }
    got |= {int(n): ("error", int(c), f) for n, c, f in errors.select("row_number", "error_code", "error_field").rows()}
    want = {
        i: ("ok", r.outcome, str(r.victim_id or ""), str(r.survivor_id or ""), ";".join(map(str, r.warnings)))
        if r.ok
        else ("error", r.error_code, r.error_field)
        for i, r in enumerate(expected, 1)
    }
    assert got == want
    assert result.merges == sum(r.outcome == "merged" for r in expected) > 0

    export_store(store, tmp_path / "out", "parquet")
    for name, frame in model_store_to_frames(model).items():
        engine = pl.read_parquet(tmp_path / "out" / f"{name}.parquet").select(frame.columns)
        assert engine.sort(frame.columns).rows() == frame.sort(frame.columns).rows(), name
