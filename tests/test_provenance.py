"""Provenance rows: written with the run's changes, one per change, naming the row that caused it."""

from __future__ import annotations

import csv

import duckdb

from conftest import ORG, REQUESTS
from pipeline.engine.record import ENV_SKIP
from pipeline.lineage.revert import revert_run
from pipeline.run import run_batch
from pipeline.store.connect import open_store


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def test_every_changing_row_has_its_events_with_file_row_and_row_id(store, tmp_path):
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    with open(tmp_path / "r" / "success.csv", newline="") as f:
        success = list(csv.DictReader(f))
    changing = {(r["file"], int(r["row_number"])) for r in success if r["outcome"] in ("applied", "merged")}
    merged = {
        (r["file"], int(r["row_number"]), int(r["victim_id"]), int(r["survivor_id"])) for r in success if r["victim_id"]
    }
    with open_store(store, read_only=True) as con:
        events = rows(
            con,
            """SELECT f.path, p.row_number, p.row_id, p.action, p.from_customer_id, p.to_customer_id, f.sha256
               FROM provenance p JOIN run_files f ON f.run_id = p.run_id AND f.position = p.file_position
               WHERE p.run_id = ?""",
            [result.run_id],
        )
    assert {(path, row) for path, row, *_ in events} == changing
    assert {(p, r, v, s) for p, r, _, a, v, s, _ in events if a == "merge"} == merged
    shas = {f["path"]: f["sha256"] for f in result.files}
    assert all(sha == shas[path] for path, *_, sha in events)
    ids = {(r["file"], int(r["row_number"])): r["row_id"] for r in success}
    assert all(row_id == (ids[(path, row)] or None) for path, row, row_id, *_ in events)
    # a merge moves each identifier of its victim: one move row per identifier the victim held
    assert {a for *_, a, _, _, _ in events} >= {"add", "remove", "merge", "move", "card_link", "card_delink"}


def test_a_dry_run_records_no_provenance_and_a_revert_records_what_it_undid(store, tmp_path):
    run_batch(store, ORG, REQUESTS, tmp_path / "d", dry_run=True)
    with open_store(store, read_only=True) as con:
        assert rows(con, "SELECT count(*) FROM provenance") == [(0,)]
    applied = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    revert_run(store, applied.run_id, "REVERT-1")
    with open_store(store, read_only=True) as con:
        undo = rows(con, "SELECT count(*) FROM undo_identifiers WHERE run_id = ?", [applied.run_id])[0][0]
        undone = dict(rows(con, "SELECT action, count(*) FROM provenance WHERE run_id = 'REVERT-1' GROUP BY 1"))
        kept = rows(con, "SELECT count(*) FROM provenance WHERE run_id = ?", [applied.run_id])[0][0]
    assert undone["revert_remove"] + undone["revert_restore"] == undo
    assert undone["revert_unmerge"] == applied.merges
    assert kept > 0, "the reverted run's own rows stay, so what it did stays explained"


def test_the_bench_switch_marks_the_run_unrecorded(store, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_SKIP, "1")
    result = run_batch(store, ORG, REQUESTS, tmp_path / "r")
    with open_store(store, read_only=True) as con:
        assert rows(con, "SELECT run_id, action FROM provenance") == [(result.run_id, "unrecorded")]
