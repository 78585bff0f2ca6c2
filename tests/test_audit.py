"""`store audit`: a clean store exits 0; a store corrupted behind the pipeline's back exits 1 naming the rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ORG, REQUESTS
from pipeline.cli import main
from pipeline.run import run_batch
from pipeline.store.audit import audit_store
from pipeline.store.invariants import FINDING_COLUMNS


def corrupt(store: Path, *statements: str) -> None:
    """Change the store with direct SQL, as a careless tool or a manual fix might."""
    con = duckdb.connect(str(store))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_sample_store_passes(store, tmp_path):
    result = audit_store(store, ORG)
    assert result.exit_code == 0 and result.findings.height == 0
    assert "clean" in result.render()
    report = Path(result.report_path)
    assert report == Path(f"{store}.audit.csv")
    assert pl.read_csv(report).columns == list(FINDING_COLUMNS)
    cli = CliRunner().invoke(
        main, ["store", "audit", str(store), "--config", str(ORG), "--report", str(tmp_path / "audit.csv")]
    )
    assert cli.exit_code == 0, cli.output
    assert "clean" in cli.output and (tmp_path / "audit.csv").exists()


def test_store_after_a_real_run_passes(store, tmp_path):
    run_batch(store, ORG, REQUESTS, tmp_path / "r")
    assert audit_store(store, ORG).exit_code == 0


def insert_ident(customer_id: int, source: str, account_id: str, id_type: str, id_value: str) -> str:
    """SQL that adds an identifier row as the store holds it, value_hash included."""
    values = f"{customer_id}, '{source}', '{account_id}', '{id_type}', '{id_value}'"
    return f"INSERT INTO identifiers VALUES ({values}, hash('{id_type}', '{id_value}'))"


CORRUPTIONS = {
    "duplicate identifier in a scope": (
        [insert_ident(1024, "INSTORE", "", "email", "alice@example.com")],
        [("identifier_unique_in_scope", "source=INSTORE account_id= id_type=email id_value=alice@example.com")],
    ),
    "two values in one slot": (
        [insert_ident(1024, "INSTORE", "", "email", "other@example.com")],
        [("one_value_per_slot", "customer_id=1024 source=INSTORE account_id= id_type=email")],
    ),
    "identifier on a MERGED customer": (
        [insert_ident(1004, "INSTORE", "", "externalId", "EXT-ON-MERGED")],
        [
            (
                "identifier_holder_active",
                "customer_id=1004 source=INSTORE account_id= id_type=externalId id_value=EXT-ON-MERGED",
            )
        ],
    ),
    "merge loop": (
        ["UPDATE customers SET status = 'MERGED', merged_into = 1004 WHERE customer_id = 1006"],
        [
            ("merge_chain_ends_active", "customer_id=1004"),
            ("merge_chain_ends_active", "customer_id=1005"),
            ("merge_chain_ends_active", "customer_id=1006"),
        ],
    ),
    "merged_into a missing customer": (
        ["UPDATE customers SET merged_into = 99999 WHERE customer_id = 1013"],
        [("merged_into_other_customer", "customer_id=1013")],
    ),
    "MERGED without merged_into": (
        ["UPDATE customers SET merged_into = NULL WHERE customer_id = 1013"],
        [("merged_iff_merged_into", "customer_id=1013")],
    ),
    "card held by a merged customer": (
        ["UPDATE cards SET customer_id = 1013 WHERE card_number = 'GLD0000000003'"],
        [("card_holder_active", "card_number=GLD0000000003")],
    ),
    "duplicate card number": (
        ["INSERT INTO cards VALUES ('GLD0000000003', 101, NULL, 'Not Issued')"],
        [("card_number_unique", "card_number=GLD0000000003")],
    ),
    "duplicate customer id": (
        ["INSERT INTO customers VALUES (1030, 'ACTIVE', NULL, 'LOYALTY')"],
        [("customer_id_unique", "customer_id=1030")],
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_found_and_named(store, name):
    statements, expected = CORRUPTIONS[name]
    corrupt(store, *statements)
    result = audit_store(store)
    found = set(result.findings.select("invariant", "row_key").rows())
    assert set(expected) <= found, result.render()
    assert result.exit_code == 1
    reported = pl.read_csv(result.report_path, infer_schema=False)
    assert set(expected) <= set(reported.select("invariant", "row_key").rows())


CONFIG_CORRUPTIONS = {
    "unknown series": (
        "UPDATE cards SET series_id = 999 WHERE card_number = 'GLD0000000003'",
        ("card_series_known", "card_number=GLD0000000003"),
    ),
    "card number that does not fit its series": (
        "INSERT INTO cards VALUES ('GLD12', 101, NULL, 'Not Issued')",
        ("card_number_fits_series", "card_number=GLD12"),
    ),
    "unknown card label": (
        "UPDATE cards SET status_label = 'Lost' WHERE card_number = 'GLD0000000004'",
        ("card_label_known", "card_number=GLD0000000004"),
    ),
    "unknown source": (
        insert_ident(1024, "TIKTOK", "", "email", "frank@example.com"),
        (
            "identifier_source_known",
            "customer_id=1024 source=TIKTOK account_id= id_type=email id_value=frank@example.com",
        ),
    ),
    "account on a single-account source": (
        "UPDATE identifiers SET account_id = 'WX-MAIN' WHERE customer_id = 1024 AND id_type = 'email'",
        (
            "identifier_account_known",
            "customer_id=1024 source=INSTORE account_id=WX-MAIN id_type=email id_value=frank@example.com",
        ),
    ),
    "unknown account of a multi-account source": (
        insert_ident(1024, "WECHAT", "WX-NOPE", "wechat", "wx_frank"),
        (
            "identifier_account_known",
            "customer_id=1024 source=WECHAT account_id=WX-NOPE id_type=wechat id_value=wx_frank",
        ),
    ),
    "multi-account source without account": (
        insert_ident(1024, "WECHAT", "", "wechat", "wx_frank"),
        ("identifier_account_known", "customer_id=1024 source=WECHAT account_id= id_type=wechat id_value=wx_frank"),
    ),
    "id type the source does not accept": (
        insert_ident(1024, "FACEBOOK", "", "mobile", "8613800000024"),
        (
            "identifier_type_allowed",
            "customer_id=1024 source=FACEBOOK account_id= id_type=mobile id_value=8613800000024",
        ),
    ),
}


@pytest.mark.parametrize("name", list(CONFIG_CORRUPTIONS))
def test_config_dependent_facts_are_checked_with_config(store, tmp_path, name):
    statement, expected = CONFIG_CORRUPTIONS[name]
    corrupt(store, statement)
    assert audit_store(store).exit_code == 0, "without --config only SPEC section 1 invariants are checked"
    report = tmp_path / "findings.csv"
    cli = CliRunner().invoke(main, ["store", "audit", str(store), "--config", str(ORG), "--report", str(report)])
    assert cli.exit_code == 1, cli.output
    assert expected[0] in cli.output and expected[1] in cli.output
    reported = pl.read_csv(report, infer_schema=False)
    assert reported.select("invariant", "row_key").rows() == [expected]


def test_audit_opens_the_store_read_only(store, tmp_path):
    corrupt(store, "UPDATE customers SET merged_into = NULL WHERE customer_id = 1013", "CHECKPOINT")
    before = sha256(store)
    assert audit_store(store, ORG, report_path=tmp_path / "a.csv").exit_code == 1
    assert sha256(store) == before
    assert not Path(f"{store}.wal").exists()


def test_missing_store_and_bad_config_exit_codes(store, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["store", "audit", str(tmp_path / "none.duckdb")])
    assert missing.exit_code == 3 and "no store" in missing.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[org]\nnot_a_key = 1\n")
    config = runner.invoke(main, ["store", "audit", str(store), "--config", str(bad)])
    assert config.exit_code == 2
