"""A file's fingerprint is its rows as read, not its bytes: the same rows saved otherwise are "already applied",
the same bytes read through another layout are not, a store made before fingerprints still refuses the same
bytes, and a job's skip_applied leaves applied inputs out instead of refusing the run."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ORG, REQUESTS, exported
from pipeline.cli import main
from pipeline.errors import StoreError
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.input.read import FINGERPRINT_VERSION, InputLayout, read_requests, rows_fingerprint
from pipeline.job import load_job, run_job
from pipeline.run import run_batch
from pipeline.store.connect import open_store

IDENTIFIERS = REQUESTS[0]
"""01_identifiers.csv: every column, with row ids, empty cells and customer ids."""


def fingerprint(path: Path, layout: InputLayout | None = None) -> str:
    return read_requests([path], layout=layout).files[0].fingerprint


def crlf(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return target


def with_bom(source: Path, target: Path) -> Path:
    target.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    return target


def gzipped(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.compress(source.read_bytes()))
    return target


def all_quoted(source: Path, target: Path) -> Path:
    """Every field quoted, the columns in reverse order: the same rows, other bytes."""
    frame = pl.read_csv(source, infer_schema=False)
    frame.select(reversed(frame.columns)).write_csv(target, quote_style="always")
    return target


def parquet_twin(source: Path, target: Path) -> Path:
    """The same sheet saved as Parquet by a tool that infers types: customer ids become integers, empty cells
    nulls. Read back as text, the rows are the CSV's, so the content is the same."""
    pl.read_csv(source).write_parquet(target)
    return target


SAVED_OTHERWISE = {"crlf": crlf, "bom": with_bom, "gzip": gzipped, "quoted": all_quoted, "parquet": parquet_twin}


def expected_fingerprint(rows: list[dict[str, str]]) -> str:
    """The documented serialisation written out independently of the reader (struct, no polars)."""
    digest = hashlib.sha256(FINGERPRINT_VERSION + f"{len(rows)}\n".encode())
    for column in REQUEST_COLUMNS:
        cells = [(row.get(column) or "").encode() for row in rows]
        digest.update(column.encode() + b"\n")
        digest.update(b"".join(struct.pack("<I", len(cell)) for cell in cells))
        digest.update(b"".join(cells))
    return digest.hexdigest()


def test_the_fingerprint_is_the_documented_serialisation_and_stays_the_same(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        'row_id,customer_id,source,action,id_type,id_value\nr1,1001,INSTORE,add,email,"a,é@b.co"\n', "utf-8"
    )
    rows = [
        {"row_id": "r1", "customer_id": "1001", "source": "INSTORE", "action": "add", "id_type": "email"}
        | {"id_value": "a,é@b.co"}
    ]
    assert fingerprint(path) == expected_fingerprint(rows)
    # pinned: a store compares fingerprints recorded months ago, so a new version must give the same value
    assert fingerprint(path) == "c55e3921c3fa0aa8818f5b072d51801e0dc0ee9f13f02cfd172d4e0d944d416e"


def test_cells_are_told_apart_and_rows_counted_in_order():
    def fp(rows: dict[str, list[str | None]]) -> str:
        return rows_fingerprint(pl.DataFrame(rows, schema=dict.fromkeys(rows, pl.String)))

    assert fp({"id_value": ["ab", "c"]}) != fp({"id_value": ["a", "bc"]})
    assert fp({"id_value": ["a", "b"]}) != fp({"id_value": ["b", "a"]})
    assert fp({"source": ["ab"], "id_value": [""]}) != fp({"source": ["a"], "id_value": ["b"]})
    # the check stage reads a null cell and a missing column as empty text, and so does the fingerprint
    assert fp({"id_value": ["a"], "status_label": [None]}) == fp({"id_value": ["a"], "status_label": [""]})
    assert fp({"id_value": ["a"], "status_label": [""]}) == fp({"id_value": ["a"]})
    assert fp({"id_value": ["a "]}) != fp({"id_value": ["a"]})  # raw text: the reports echo it


@pytest.mark.parametrize("saved", sorted(SAVED_OTHERWISE))
def test_the_same_rows_saved_otherwise_have_the_same_fingerprint(tmp_path, saved):
    twin = SAVED_OTHERWISE[saved](IDENTIFIERS, tmp_path / f"twin.{saved}")
    assert twin.read_bytes() != IDENTIFIERS.read_bytes()
    batch = read_requests([IDENTIFIERS, twin])
    assert batch.files[0].sha256 != batch.files[1].sha256
    assert batch.files[0].fingerprint == batch.files[1].fingerprint


def test_ndjson_call_bodies_and_a_csv_of_their_rows_have_the_same_fingerprint(tmp_path):
    calls = tmp_path / "calls.ndjson"
    calls.write_text(
        '{"customer_id": 1001, "source": "INSTORE", "row_id": "c1", "add": [{"type": "email", "value": "a@b.co"}]}\n'
    )
    rows = read_requests([calls]).frame.select(REQUEST_COLUMNS)
    as_csv = tmp_path / "calls.csv"
    rows.write_csv(as_csv)
    assert fingerprint(as_csv) == fingerprint(calls)


def test_the_same_bytes_through_another_layout_have_another_fingerprint(tmp_path):
    renamed = tmp_path / "renamed.csv"
    renamed.write_text("Ref,User,Source,Action,Type,Value\nr1,1001,INSTORE,add,email,a@b.co\n")
    names = {"User": "customer_id", "Source": "source", "Action": "action", "Type": "id_type", "Value": "id_value"}
    keeps_ref = fingerprint(renamed, InputLayout(columns=names | {"Ref": "row_id"}))
    drops_ref = fingerprint(renamed, InputLayout(columns=names | {"Ref": "-"}))
    ref_as_account = fingerprint(renamed, InputLayout(columns=names | {"Ref": "account_id"}))
    assert len({keeps_ref, drops_ref, ref_as_account}) == 3
    # a fixed value is a value of every row: the same as a file that has the column
    written = tmp_path / "written.csv"
    written.write_text("row_id,customer_id,source,action,id_type,id_value\nr1,1001,INSTORE,add,email,a@b.co\n")
    fixed_source = InputLayout(columns=names | {"Ref": "row_id", "Source": "-"}, fixed={"source": "INSTORE"})
    assert fingerprint(renamed, fixed_source) == keeps_ref == fingerprint(written)
    other_source = InputLayout(columns=names | {"Ref": "row_id", "Source": "-"}, fixed={"source": "MOBILE_APP"})
    assert fingerprint(renamed, other_source) != keeps_ref


@pytest.mark.parametrize("saved", sorted(SAVED_OTHERWISE))
def test_a_run_refuses_the_same_rows_saved_otherwise(store, tmp_path, saved):
    first = run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    twin = SAVED_OTHERWISE[saved](IDENTIFIERS, tmp_path / f"twin.{saved}")
    before = exported(store, tmp_path / "before")
    with pytest.raises(StoreError, match=f"already applied by run {first.run_id}") as refused:
        run_batch(store, ORG, [REQUESTS[1], twin], tmp_path / "again")
    assert str(twin) in str(refused.value) and f"the same rows as {IDENTIFIERS}" in str(refused.value)
    assert exported(store, tmp_path / "after") == before
    assert not (tmp_path / "again").exists()


def test_a_run_of_the_same_bytes_through_another_mapping_is_not_refused(store, tmp_path):
    run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    without_row_ids = InputLayout(columns={"row_id": "-"})
    again = run_batch(store, ORG, [IDENTIFIERS], tmp_path / "again", layout=without_row_ids)
    assert again.exit_code in (0, 1) and again.rows > 0
    with pytest.raises(StoreError, match="already applied"):
        run_batch(store, ORG, [crlf(IDENTIFIERS, tmp_path / "crlf.csv")], tmp_path / "third", layout=without_row_ids)


def test_summary_and_ledger_keep_the_sha256_and_add_the_fingerprint(store, tmp_path):
    result = run_batch(store, ORG, [IDENTIFIERS], tmp_path / "r")
    read = read_requests([IDENTIFIERS]).files[0]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["files"] == [
        {"path": str(IDENTIFIERS), "sha256": read.sha256, "fingerprint": read.fingerprint, "rows": read.rows}
    ]
    assert summary["skipped"] == []
    with open_store(store, read_only=True) as con:
        recorded = con.execute("SELECT path, sha256, fingerprint FROM run_files WHERE run_id = ?", [result.run_id])
        assert recorded.fetchall() == [(str(IDENTIFIERS), read.sha256, read.fingerprint)]


@pytest.mark.parametrize("older", ["null", "dropped"])
def test_a_store_made_before_fingerprints_still_refuses_the_same_bytes(store, tmp_path, older):
    first = run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    with open_store(store) as con:
        if older == "null":
            con.execute("UPDATE run_files SET fingerprint = NULL")
        else:
            con.execute("ALTER TABLE run_files DROP COLUMN fingerprint")
    with pytest.raises(StoreError, match=f"already applied by run {first.run_id}"):
        run_batch(store, ORG, [IDENTIFIERS], tmp_path / "again")
    with open_store(store, read_only=True) as con:  # the refused run's writable open gave the column back
        assert con.execute("SELECT count(*) FROM run_files WHERE fingerprint IS NULL").fetchone() == (1,)
    # the earlier run recorded bytes only: the same rows saved otherwise cannot be recognised, and run
    resaved = run_batch(store, ORG, [crlf(IDENTIFIERS, tmp_path / "crlf.csv")], tmp_path / "resaved")
    assert resaved.exit_code in (0, 1)


def test_a_file_of_no_rows_is_never_already_applied(store, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("source,action,id_type,id_value,customer_id\n")
    run_batch(store, ORG, [empty], tmp_path / "first")
    assert run_batch(store, ORG, [empty], tmp_path / "again").exit_code == 0


def job_file(tmp_path: Path, store: Path, inputs: list[Path], extra: str = "") -> Path:
    path = tmp_path / "job.toml"
    listed = ", ".join(json.dumps(str(p)) for p in inputs)
    path.write_text(
        f'[job]\nname = "nightly"\nstore = "{store}"\nconfig = "{ORG}"\ninputs = [{listed}]\n'
        f'reports = "{tmp_path}/reports/{{run_id}}"\nskip_applied = true\n{extra}'
    )
    return path


def ledger_runs(store: Path) -> list[tuple[str, int]]:
    with open_store(store, read_only=True) as con:
        return con.execute("SELECT run_id, rows FROM runs ORDER BY ordinal").fetchall()


def test_skip_applied_leaves_applied_inputs_out_with_a_note_and_runs_the_rest(store, tmp_path):
    first = run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    resaved = crlf(IDENTIFIERS, tmp_path / "01_resaved.csv")
    cards = shutil.copyfile(REQUESTS[1], tmp_path / "02_cards.csv")
    job = job_file(tmp_path, store, [resaved, cards])
    assert load_job(job).skip_applied
    done = CliRunner().invoke(main, ["job", str(job)])
    assert done.exit_code in (0, 1), done.output
    assert f"skipped, already applied: {resaved} (by run {first.run_id} at " in done.output
    (run_id, rows) = ledger_runs(store)[-1]
    assert rows == read_requests([cards]).frame.height
    summary = json.loads((tmp_path / "reports" / run_id / "summary.json").read_text())
    assert [f["path"] for f in summary["files"]] == [str(cards)]
    assert summary["skipped"] == [
        {
            "path": str(resaved),
            "sha256": hashlib.sha256(resaved.read_bytes()).hexdigest(),
            "fingerprint": fingerprint(IDENTIFIERS),
            "rows": first.rows,
            "applied_by": first.run_id,
            "applied_at": first.started_at,
            "applied_path": str(IDENTIFIERS),
        }
    ]
    success = pl.read_csv(tmp_path / "reports" / run_id / "success.csv", infer_schema=False)
    assert set(success["file"]) == {str(cards)} and success["row_number"].cast(int).min() == 1
    with open_store(store, read_only=True) as con:
        assert con.execute("SELECT path FROM run_files WHERE run_id = ?", [run_id]).fetchall() == [(str(cards),)]


def test_skip_applied_with_every_input_applied_runs_nothing(store, tmp_path):
    run_batch(store, ORG, [IDENTIFIERS, REQUESTS[1]], tmp_path / "first")
    runs, before = ledger_runs(store), exported(store, tmp_path / "before")
    job = job_file(tmp_path, store, [IDENTIFIERS, gzipped(REQUESTS[1], tmp_path / "cards.csv.gz")])
    done = CliRunner().invoke(main, ["job", str(job)])
    assert done.exit_code == 0, done.output
    assert "nothing to run: every input (2) was already applied" in done.output
    assert done.output.count("skipped, already applied") == 2 and "reports: none (nothing ran)" in done.output
    assert ledger_runs(store) == runs and exported(store, tmp_path / "after") == before
    assert not (tmp_path / "reports").exists()
    as_json = json.loads(CliRunner().invoke(main, ["job", str(job), "--json"]).output)
    assert as_json["rows"] == 0 and as_json["files"] == [] and len(as_json["skipped"]) == 2


def test_skip_applied_in_a_dry_run_previews_the_real_run_and_allow_reapply_wins(store, tmp_path):
    run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    job = load_job(job_file(tmp_path, store, [IDENTIFIERS, REQUESTS[1]], extra="dry_run = true\n"))
    dry = run_job(job)
    assert dry.dry_run and [f["path"] for f in dry.files] == [str(REQUESTS[1])] and len(dry.skipped) == 1
    reapplied = run_job(job_file(tmp_path, store, [IDENTIFIERS], extra="allow_reapply = true\n"))
    assert not reapplied.skipped and [f["path"] for f in reapplied.files] == [str(IDENTIFIERS)]


def test_without_skip_applied_a_job_is_refused_naming_the_way_out(store, tmp_path):
    run_batch(store, ORG, [IDENTIFIERS], tmp_path / "first")
    job = job_file(tmp_path, store, [IDENTIFIERS])
    job.write_text(job.read_text().replace("skip_applied = true\n", ""))
    refused = CliRunner().invoke(main, ["job", str(job)])
    assert refused.exit_code == 3
    assert "already applied" in refused.output and "skip_applied = true" in refused.output
