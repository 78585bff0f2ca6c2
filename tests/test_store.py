"""The store: init from snapshots, the invariant check, export, and the `store` commands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import SnapshotRefused, StoreError
from pipeline.results import StoreCounts
from pipeline.store.connect import VACUUM_SHARE, defer_vacuum, open_store, tombstone_shares
from pipeline.store.invariants import find_invariant_violations
from pipeline.store.schema import SCHEMA_VERSION, TABLES, store_counts
from pipeline.store.snapshot import export_store, init_store

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "snapshot"

SCHEMAS = {
    "customers": {"customer_id": pl.Int64, "status": pl.String, "merged_into": pl.Int64, "customer_type": pl.String},
    "identifiers": {
        "customer_id": pl.Int64,
        "source": pl.String,
        "account_id": pl.String,
        "id_type": pl.String,
        "id_value": pl.String,
    },
    "cards": {"card_number": pl.String, "series_id": pl.Int32, "customer_id": pl.Int64, "status_label": pl.String},
}


def base_rows() -> dict[str, list[tuple]]:
    """A small valid snapshot: 3 merged into 1, the same email in two scopes of two customers."""
    return {
        "customers": [
            (1, "ACTIVE", None, "LOYALTY"),
            (2, "ACTIVE", None, "LOYALTY"),
            (3, "MERGED", 1, "LOYALTY"),
            (4, "ACTIVE", None, "CAMPAIGN"),
        ],
        "identifiers": [
            (1, "INSTORE", "", "email", "a@b.co"),
            (2, "WECHAT", "WX-MAIN", "email", "a@b.co"),
            (2, "INSTORE", "", "mobile", "33612345678"),
            (4, "LINE", "", "line", "line_4"),
        ],
        "cards": [("GLD0000000001", 101, 1, "Active"), ("GLD0000000002", 101, None, "Not Issued")],
    }


def write_snapshot(folder: Path, rows: dict[str, list[tuple]], fmt: str = "csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        frame = pl.DataFrame(rows[table], schema=SCHEMAS[table], orient="row")
        if fmt == "parquet":
            frame.write_parquet(folder / f"{table}.parquet")
        else:
            frame.write_csv(folder / f"{table}.csv")
    return folder


def read_store(store: Path, sql: str) -> list[tuple]:
    con = open_store(store, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sample_snapshot_inits(tmp_path):
    counts = init_store(tmp_path / "s.duckdb", SAMPLE)
    assert counts == StoreCounts(customers=30, active=26, merged=4, identifiers=45, cards=16, linked_cards=9)
    assert read_store(tmp_path / "s.duckdb", "SELECT value FROM store_meta WHERE key = 'schema_version'") == [
        (SCHEMA_VERSION,)
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.duckdb"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_snapshot_formats_init(tmp_path, fmt):
    snap = write_snapshot(tmp_path / "snap", base_rows(), fmt)
    counts = init_store(tmp_path / "s.duckdb", snap)
    assert counts.to_dict() == {
        "customers": 4,
        "active": 3,
        "merged": 1,
        "identifiers": 4,
        "cards": 2,
        "linked_cards": 1,
    }
    assert read_store(tmp_path / "s.duckdb", "SELECT * FROM cards ORDER BY card_number") == [
        ("GLD0000000001", 101, 1, "Active"),
        ("GLD0000000002", 101, None, "Not Issued"),
    ]


def test_gzipped_csv_snapshot_inits(tmp_path):
    import gzip

    snap = write_snapshot(tmp_path / "snap", base_rows())
    raw = (snap / "identifiers.csv").read_bytes()
    (snap / "identifiers.csv").unlink()
    (snap / "identifiers.csv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + raw))
    assert init_store(tmp_path / "s.duckdb", snap).identifiers == 4


def test_counts_render_is_one_line(tmp_path):
    counts = init_store(tmp_path / "s.duckdb", SAMPLE)
    assert counts.render() == "30 customers (26 active, 4 merged), 45 identifiers, 16 cards (9 linked)"
    con = open_store(tmp_path / "s.duckdb", read_only=True)
    assert store_counts(con) == counts
    assert find_invariant_violations(con).columns == ["invariant", "table", "row_key", "detail"]
    assert find_invariant_violations(con).is_empty()
    con.close()


def with_change(table: str, *, add: Sequence[tuple] = (), replace: dict[int, tuple] | None = None):
    rows = base_rows()
    for index, row in (replace or {}).items():
        rows[table][index] = row
    rows[table].extend(add)
    return rows


REFUSALS = [
    ("customer_id_unique", "customer_id=2", with_change("customers", add=[(2, "ACTIVE", None, "CAMPAIGN")])),
    ("status_valid", "customer_id=2", with_change("customers", replace={1: (2, "DELETED", None, "LOYALTY")})),
    ("customer_type_valid", "customer_id=2", with_change("customers", replace={1: (2, "ACTIVE", None, "VIP")})),
    ("merged_iff_merged_into", "customer_id=3", with_change("customers", replace={2: (3, "MERGED", None, "LOYALTY")})),
    ("merged_iff_merged_into", "customer_id=4", with_change("customers", replace={3: (4, "ACTIVE", 1, "CAMPAIGN")})),
    (
        "merged_into_other_customer",
        "customer_id=3",
        with_change("customers", replace={2: (3, "MERGED", 99, "LOYALTY")}),
    ),
    ("merged_into_other_customer", "customer_id=3", with_change("customers", replace={2: (3, "MERGED", 3, "LOYALTY")})),
    (
        "merge_chain_ends_active",
        "customer_id=5",
        with_change("customers", add=[(5, "MERGED", 6, "LOYALTY"), (6, "MERGED", 5, "LOYALTY")]),
    ),
    ("merge_chain_ends_active", "customer_id=3", with_change("customers", replace={2: (3, "MERGED", 99, "LOYALTY")})),
    (
        "identifier_unique_in_scope",
        "source=INSTORE account_id= id_type=email id_value=a@b.co",
        with_change("identifiers", add=[(2, "INSTORE", "", "email", "a@b.co")]),
    ),
    (
        "one_value_per_slot",
        "customer_id=2 source=INSTORE account_id= id_type=mobile",
        with_change("identifiers", add=[(2, "INSTORE", "", "mobile", "33699999999")]),
    ),
    (
        "identifier_holder_active",
        "customer_id=3 source=LINE account_id= id_type=line id_value=line_3",
        with_change("identifiers", add=[(3, "LINE", "", "line", "line_3")]),
    ),
    (
        "identifier_holder_active",
        "customer_id=77 source=LINE account_id= id_type=line id_value=line_77",
        with_change("identifiers", add=[(77, "LINE", "", "line", "line_77")]),
    ),
    (
        "card_number_unique",
        "card_number=GLD0000000002",
        with_change("cards", add=[("GLD0000000002", 101, 2, "Active")]),
    ),
    (
        "card_holder_active",
        "card_number=GLD0000000003",
        with_change("cards", add=[("GLD0000000003", 101, 3, "Active")]),
    ),
    (
        "card_holder_active",
        "card_number=GLD0000000003",
        with_change("cards", add=[("GLD0000000003", 101, 42, "Active")]),
    ),
    (
        "not_null",
        "customer_id=2 source=LINE account_id= id_type=line id_value=NULL",
        with_change("identifiers", add=[(2, "LINE", "", "line", "   ")]),
    ),
    (
        "not_null",
        "customer_id=NULL status=ACTIVE merged_into=NULL customer_type=LOYALTY",
        with_change("customers", add=[(None, "ACTIVE", None, "LOYALTY")]),
    ),
    (
        "not_null",
        "card_number=GLD0000000009 series_id=101 customer_id=NULL status_label=NULL",
        with_change("cards", add=[("GLD0000000009", 101, None, "")]),
    ),
]


@pytest.mark.parametrize(
    ("invariant", "row_key", "rows"), REFUSALS, ids=[f"{i}-{case[0]}" for i, case in enumerate(REFUSALS)]
)
def test_snapshot_breaking_an_invariant_is_refused(tmp_path, invariant, row_key, rows):
    snap = write_snapshot(tmp_path / "snap", rows)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SnapshotRefused) as refused:
        init_store(out / "s.duckdb", snap)
    report = pl.read_csv(out / "s.duckdb.init-report.csv", infer_schema=False)
    assert refused.value.findings == report.height >= 1
    assert (invariant, row_key) in set(zip(report["invariant"], report["row_key"], strict=True))
    assert sorted(p.name for p in out.iterdir()) == ["s.duckdb.init-report.csv"]


def test_cycle_and_long_chain_are_found_by_pointer_jumping(tmp_path):
    rows = base_rows()
    rows["customers"] += [(100 + i, "MERGED", 101 + i, "LOYALTY") for i in range(200)] + [
        (300, "ACTIVE", None, "LOYALTY")
    ]
    rows["customers"] += [(1000 + i, "MERGED", 1000 + (i + 1) % 50, "LOYALTY") for i in range(50)]
    snap = write_snapshot(tmp_path / "snap", rows, "parquet")
    with pytest.raises(SnapshotRefused):
        init_store(tmp_path / "s.duckdb", snap, report_path=tmp_path / "report.csv")
    report = pl.read_csv(tmp_path / "report.csv", infer_schema=False)
    assert report["invariant"].unique().to_list() == ["merge_chain_ends_active"]
    assert sorted(report["row_key"]) == sorted(f"customer_id={1000 + i}" for i in range(50))
    assert set(report["detail"]) == {"following merged_into loops"}


def test_init_normalises_and_trims(tmp_path):
    rows = base_rows()
    rows["customers"][1] = (2, " ACTIVE ", None, "LOYALTY\t")
    rows["identifiers"] = [
        (1, " INSTORE", None, "email", " Foo@X.COM "),
        (2, "INSTORE", "", "mobile", "+33 6 12 34 56 78"),
        (4, "LINE", "", "mobile", "0033 (6) 12-34.56.79"),
        (4, "LINE", "", "line", " Line_4 "),
    ]
    init_store(tmp_path / "s.duckdb", write_snapshot(tmp_path / "snap", rows))
    assert read_store(
        tmp_path / "s.duckdb", "SELECT * EXCLUDE (value_hash) FROM identifiers ORDER BY customer_id, id_type"
    ) == [
        (1, "INSTORE", "", "email", "foo@x.com"),
        (2, "INSTORE", "", "mobile", "33612345678"),
        (4, "LINE", "", "line", "Line_4"),
        (4, "LINE", "", "mobile", "33612345679"),
    ]
    assert read_store(tmp_path / "s.duckdb", "SELECT status, customer_type FROM customers WHERE customer_id = 2") == [
        ("ACTIVE", "LOYALTY")
    ]


def test_values_equal_after_normalisation_are_refused(tmp_path):
    rows = base_rows()
    rows["identifiers"] += [(4, "INSTORE", "", "email", "A@B.CO ")]
    rows["identifiers"] += [(1, "INSTORE", "", "mobile", "+33 6 12 34 56 78")]
    with pytest.raises(SnapshotRefused) as refused:
        init_store(tmp_path / "s.duckdb", write_snapshot(tmp_path / "snap", rows))
    report = pl.read_csv(refused.value.report, infer_schema=False)
    assert sorted(zip(report["invariant"], report["row_key"], report["detail"], strict=True)) == [
        (
            "identifier_unique_in_scope",
            "source=INSTORE account_id= id_type=email id_value=a@b.co",
            "2 rows, held by customer_id 1, 4",
        ),
        (
            "identifier_unique_in_scope",
            "source=INSTORE account_id= id_type=mobile id_value=33612345678",
            "2 rows, held by customer_id 1, 2",
        ),
    ]
    assert not (tmp_path / "s.duckdb").exists()


@pytest.mark.parametrize(
    ("table", "header", "message"),
    [
        ("customers", "customer_id,status,merged_into", "missing column 'customer_type'"),
        ("cards", "card_number,series_id,customer_id,status_label,colour", "unknown column 'colour'"),
    ],
)
def test_snapshot_with_wrong_columns_is_refused(tmp_path, table, header, message):
    snap = write_snapshot(tmp_path / "snap", base_rows())
    (snap / f"{table}.csv").write_text(header + "\n")
    with pytest.raises(StoreError, match=message) as refused:
        init_store(tmp_path / "s.duckdb", snap)
    assert f"{table}.csv" in str(refused.value)
    assert list(tmp_path.iterdir()) == [snap]


def test_non_integer_id_is_refused_naming_file_and_column(tmp_path):
    snap = write_snapshot(tmp_path / "snap", base_rows())
    with (snap / "cards.csv").open("a") as f:
        f.write("GLD0000000003,101,12x,Active\n")
    with pytest.raises(StoreError, match=r"cards\.csv: column 'customer_id': 1 value\(s\).*'12x'"):
        init_store(tmp_path / "s.duckdb", snap)


def test_ambiguous_or_missing_snapshot_files_are_refused(tmp_path):
    snap = write_snapshot(tmp_path / "snap", base_rows())
    write_snapshot(snap, base_rows(), "parquet")
    with pytest.raises(StoreError, match="several customers files"):
        init_store(tmp_path / "s.duckdb", snap)
    other = write_snapshot(tmp_path / "other", base_rows())
    (other / "cards.csv").unlink()
    with pytest.raises(StoreError, match="no cards file"):
        init_store(tmp_path / "s.duckdb", other)


def test_existing_store_needs_force(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, SAMPLE)
    with pytest.raises(StoreError, match="already exists"):
        init_store(store, write_snapshot(tmp_path / "snap", base_rows()))
    assert init_store(store, tmp_path / "snap", force=True).customers == 4
    assert read_store(store, "SELECT count(*) FROM customers") == [(4,)]


def test_refused_force_init_keeps_the_old_store(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, SAMPLE)
    bad = write_snapshot(tmp_path / "snap", with_change("customers", add=[(1, "ACTIVE", None, "LOYALTY")]))
    with pytest.raises(SnapshotRefused):
        init_store(store, bad, force=True)
    assert read_store(store, "SELECT count(*) FROM customers") == [(30,)]


def test_open_store_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        open_store(tmp_path / "missing.duckdb")
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    with pytest.raises(StoreError, match="not a loyalty-bulk store"):
        open_store(tmp_path / "other.duckdb")


HASHES_CURRENT = "SELECT count(*), count(*) FILTER (value_hash = hash(id_type, id_value)) FROM identifiers"
META = "SELECT key, value FROM store_meta WHERE key IN ('schema_version', 'value_hash_probe') ORDER BY key"


def test_a_version_1_store_gains_value_hash_when_first_opened_for_writing(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, SAMPLE)
    before = read_store(store, "SELECT * EXCLUDE (value_hash) FROM identifiers ORDER BY ALL")
    probe = read_store(store, META)[1]
    with duckdb.connect(str(store)) as con:  # the store as schema_version 1 made it
        con.execute("ALTER TABLE identifiers DROP COLUMN value_hash")
        con.execute("UPDATE store_meta SET value = '1' WHERE key = 'schema_version'")
        con.execute("DELETE FROM store_meta WHERE key = 'value_hash_probe'")
    # a read-only open reads it as it is (export, audit, explain use the values only)
    assert read_store(store, "SELECT * FROM identifiers ORDER BY ALL") == before
    assert read_store(store, META) == [("schema_version", "1")]
    open_store(store).close()
    assert read_store(store, META) == [("schema_version", SCHEMA_VERSION), probe]
    assert read_store(store, HASHES_CURRENT) == [(len(before), len(before))]
    assert read_store(store, "SELECT * EXCLUDE (value_hash) FROM identifiers ORDER BY ALL") == before
    nullable = read_store(store, "SELECT is_nullable FROM duckdb_columns() WHERE column_name = 'value_hash'")
    assert nullable == [(False,)]


def test_value_hashes_of_another_hash_function_are_recomputed(tmp_path):
    store = tmp_path / "s.duckdb"
    init_store(store, SAMPLE)
    rows = read_store(store, "SELECT count(*) FROM identifiers")[0][0]
    with duckdb.connect(str(store)) as con:  # as if written by a DuckDB whose hash() differs
        con.execute("UPDATE identifiers SET value_hash = value_hash + 1")
        con.execute("UPDATE store_meta SET value = 'another' WHERE key = 'value_hash_probe'")
    assert read_store(store, HASHES_CURRENT) == [(rows, 0)]
    open_store(store).close()
    assert read_store(store, HASHES_CURRENT) == [(rows, rows)]
    assert read_store(store, META)[1][1] != "another"


def test_schema_has_no_unique_index_and_required_columns_are_not_null(tmp_path):
    init_store(tmp_path / "s.duckdb", SAMPLE)
    assert read_store(tmp_path / "s.duckdb", "SELECT count(*) FROM duckdb_indexes()") == [(0,)]
    nullable = read_store(
        tmp_path / "s.duckdb",
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE is_nullable AND table_name IN ('customers', 'identifiers', 'cards') ORDER BY ALL",
    )
    assert nullable == [("cards", "customer_id"), ("customers", "merged_into")]
    assert read_store(tmp_path / "s.duckdb", HASHES_CURRENT) == [(45, 45)]


def test_invariant_check_runs_on_a_read_only_store(tmp_path):
    init_store(tmp_path / "s.duckdb", SAMPLE)
    con = open_store(tmp_path / "s.duckdb", read_only=True)
    try:
        assert find_invariant_violations(con).is_empty()
    finally:
        con.close()
    con = open_store(tmp_path / "s.duckdb")
    con.execute("UPDATE customers SET status = 'MERGED', merged_into = 1001 WHERE customer_id = 1030")
    findings = find_invariant_violations(con)
    con.close()
    found = set(zip(findings["invariant"], findings["table"], strict=True))
    assert sorted(found) == [("identifier_holder_active", "identifiers")]
    assert findings.height == 3


def test_csv_export_init_export_is_byte_identical(tmp_path):
    init_store(tmp_path / "a.duckdb", SAMPLE)
    export_store(tmp_path / "a.duckdb", tmp_path / "exp1", "csv")
    init_store(tmp_path / "b.duckdb", tmp_path / "exp1")
    counts = export_store(tmp_path / "b.duckdb", tmp_path / "exp2", "csv")
    assert counts.customers == 30
    for table in TABLES:
        assert (tmp_path / "exp1" / f"{table}.csv").read_bytes() == (tmp_path / "exp2" / f"{table}.csv").read_bytes()
    first = (tmp_path / "exp1" / "identifiers.csv").read_text().splitlines()
    assert first[:2] == ["customer_id,source,account_id,id_type,id_value", '1001,INSTORE,"",email,alice@example.com']
    assert sorted(p.name for p in (tmp_path / "exp1").iterdir()) == ["cards.csv", "customers.csv", "identifiers.csv"]


def test_parquet_export_init_export_keeps_the_data(tmp_path):
    init_store(tmp_path / "a.duckdb", SAMPLE)
    export_store(tmp_path / "a.duckdb", tmp_path / "exp1", "parquet")
    init_store(tmp_path / "b.duckdb", tmp_path / "exp1")
    export_store(tmp_path / "b.duckdb", tmp_path / "exp2", "parquet")
    for table in TABLES:
        first = pl.read_parquet(tmp_path / "exp1" / f"{table}.parquet")
        assert first.equals(pl.read_parquet(tmp_path / "exp2" / f"{table}.parquet"))
        assert first.schema == pl.Schema(SCHEMAS[table])
    original = pl.read_csv(SAMPLE / "customers.csv", schema=SCHEMAS["customers"])
    assert pl.read_parquet(tmp_path / "exp1" / "customers.parquet").equals(original.sort("customer_id"))


def test_export_refuses_a_folder_holding_another_format(tmp_path):
    init_store(tmp_path / "a.duckdb", SAMPLE)
    export_store(tmp_path / "a.duckdb", tmp_path / "exp", "csv")
    with pytest.raises(StoreError, match="another format"):
        export_store(tmp_path / "a.duckdb", tmp_path / "exp", "parquet")


def test_cli_store_init_and_export_exit_codes(tmp_path):
    runner = CliRunner()
    store = tmp_path / "s.duckdb"
    ok = runner.invoke(main, ["store", "init", str(store), "--snapshot", str(SAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "30 customers (26 active, 4 merged)" in ok.output
    again = runner.invoke(main, ["store", "init", str(store), "--snapshot", str(SAMPLE)])
    assert again.exit_code == 3
    bad = write_snapshot(tmp_path / "bad", with_change("customers", add=[(2, "ACTIVE", None, "LOYALTY")]))
    report = tmp_path / "findings.csv"
    refused = runner.invoke(
        main, ["store", "init", str(tmp_path / "t.duckdb"), "--snapshot", str(bad), "--report", str(report)]
    )
    assert refused.exit_code == 3
    assert "no store was written" in refused.output and report.exists()
    assert not (tmp_path / "t.duckdb").exists()
    exported = runner.invoke(main, ["store", "export", str(store), str(tmp_path / "exp"), "--format", "csv"])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "exp" / "customers.csv").exists()
    missing = runner.invoke(main, ["store", "export", str(tmp_path / "nope.duckdb"), str(tmp_path / "exp2")])
    assert missing.exit_code == 2


def test_vacuum_waits_until_deleted_rows_reach_their_share(tmp_path):
    """A run's close does not compact row groups for a few scattered deletions (store.defer_vacuum): the deleted
    rows stay counted as stored until they reach VACUUM_SHARE of a table, and the close after that compacts."""
    store = tmp_path / "s.duckdb"
    init_store(store, SAMPLE)
    rows = 2_000_000  # DuckDB compacts only tables of more than a few row groups (122,880 rows each)
    with duckdb.connect(str(store)) as con:
        con.execute(
            "INSERT INTO identifiers SELECT 1, 'BULK', '', 'email', i::VARCHAR, hash('email', i::VARCHAR) "
            "FROM range($1) t(i)",
            [rows],
        )
    total = rows + 45  # and the sample's own

    def delete_eighth(remainder: int) -> bool:
        """Open as a run does, delete an eighth of the bulk rows, close; whether the vacuum was deferred."""
        con = open_store(store)
        try:
            deferred = defer_vacuum(con)
            vacuum_tasks = con.execute("SELECT current_setting('max_vacuum_tasks')").fetchall()[0][0]
            assert (vacuum_tasks == 0) == deferred
            con.execute("DELETE FROM identifiers WHERE source = 'BULK' AND id_value::BIGINT % 8 = $1", [remainder])
        finally:
            con.close()
        return deferred

    def deleted_share() -> float:
        with open_store(store, read_only=True) as con:
            return tombstone_shares(con)["identifiers"]

    assert deleted_share() == 0.0
    assert delete_eighth(0)
    assert deleted_share() == pytest.approx(250_000 / total)  # the close kept them
    assert delete_eighth(1)  # 12.5 % < VACUUM_SHARE: deferred again
    assert deleted_share() == pytest.approx(500_000 / total)
    assert not delete_eighth(2)  # 25 % >= VACUUM_SHARE: this close compacts, this run's deletions too
    assert deleted_share() < VACUUM_SHARE / 4
    with open_store(store, read_only=True) as con:
        assert store_counts(con).identifiers == total - 750_000
        assert tombstone_shares(con)["customers"] == tombstone_shares(con)["cards"] == 0.0
