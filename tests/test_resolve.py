"""The resolve stage: merged_into chains of any length are followed to their end; a cycle refuses the run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import ORG, ROOT
from pipeline.cli import main
from pipeline.engine import resolve
from pipeline.errors import EXIT_REFUSED, StoreError
from pipeline.run import run_batch
from pipeline.store.audit import audit_store
from pipeline.store.schema import COLUMNS, TABLES
from pipeline.store.snapshot import export_store, init_store

DEPTH = 10_001
"""Merges in the chain: customer 1 is followed through 10,001 merged_into steps, far past the old limit of 1,000."""

REQUEST_COLUMNS = ("row_id", "customer_id", "source", "action", "id_type", "id_value")


def write_snapshot(folder: Path, customers: pl.DataFrame, identifiers: pl.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frames = {"customers": customers, "identifiers": identifiers, "cards": pl.DataFrame(schema=COLUMNS["cards"])}
    for table in TABLES:
        frames[table].select(list(COLUMNS[table])).cast(pl.Schema(COLUMNS[table])).write_parquet(
            folder / f"{table}.parquet"
        )
    return folder


def write_requests(path: Path, requests: pl.DataFrame) -> Path:
    requests.select(REQUEST_COLUMNS).write_csv(path)
    return path


def one_row(path: Path, customer_id: int) -> Path:
    """A row for `customer_id` that the chain's end already holds: unchanged, with 91009 when followed."""
    row = {"row_id": "r1", "customer_id": str(customer_id), "source": "INSTORE", "action": "add"}
    return write_requests(path, pl.DataFrame([row | {"id_type": "externalId", "id_value": "EXT-1"}]))


def success_row(reports: Path) -> dict:
    success = pl.read_csv(reports / "success.csv", infer_schema=False)
    assert success.height == 1, pl.read_csv(reports / "errors.csv", infer_schema=False)
    return success.row(0, named=True)


def test_chain_built_by_runs_is_followed_to_its_end(tmp_path):
    """One run merges 1 into 2, 2 into 3, ... (each survivor then sheds what it received, so the next
    merge keeps source entries whole); a later run naming customer 1 reaches the chain's end."""
    n = DEPTH + 1
    customers = pl.DataFrame({"customer_id": pl.int_range(1, n + 1, eager=True)}).with_columns(
        status=pl.lit("ACTIVE"), merged_into=pl.lit(None, dtype=pl.Int64), customer_type=pl.lit("LOYALTY")
    )
    # customer 1 holds EXT-1 in INSTORE; customers 2..n each an email in MOBILE_APP
    identifiers = pl.concat(
        [
            pl.DataFrame({"customer_id": [1], "source": "INSTORE", "id_type": "externalId", "id_value": "EXT-1"}),
            pl.DataFrame({"customer_id": pl.int_range(2, n + 1, eager=True)}).with_columns(
                source=pl.lit("MOBILE_APP"),
                id_type=pl.lit("email"),
                id_value=pl.format("c{}@example.com", "customer_id"),
            ),
        ]
    ).select("customer_id", "source", account_id=pl.lit(""), id_type="id_type", id_value="id_value")
    store = tmp_path / "store.duckdb"
    init_store(store, write_snapshot(tmp_path / "snap", customers, identifiers))

    k = pl.DataFrame({"k": pl.int_range(1, DEPTH + 1, eager=True)})
    value = pl.format("c{}@example.com", pl.col("k") + 1)
    steps = [
        # customer k takes in INSTORE the email customer k+1 holds in MOBILE_APP: k is merged into k+1
        k.select("k", customer_id=pl.col("k"), source=pl.lit("INSTORE"), action=pl.lit("add"), id_value=value),
        # the survivor sheds the email it held and the one it received, keeping only EXT-1 (INSTORE)
        k.select(
            "k", customer_id=pl.col("k") + 1, source=pl.lit("MOBILE_APP"), action=pl.lit("remove"), id_value=value
        ),
        k.select("k", customer_id=pl.col("k") + 1, source=pl.lit("INSTORE"), action=pl.lit("remove"), id_value=value),
    ]
    build = (
        pl.concat([step.with_columns(step=pl.lit(i)) for i, step in enumerate(steps)])
        .sort("k", "step")
        .with_columns(
            row_id=pl.format("b{}", pl.int_range(pl.len())),
            customer_id=pl.col("customer_id").cast(pl.String),
            id_type=pl.lit("email"),
        )
    )
    assert build.height == 3 * DEPTH
    # rows of the same run that name customer 1 after the merges follow the chain the run built (replay.py)
    again = pl.DataFrame({"row_id": [f"a{i}" for i in range(1_000)]}).with_columns(
        customer_id=pl.lit("1"),
        source=pl.lit("INSTORE"),
        action=pl.lit("add"),
        id_type=pl.lit("externalId"),
        id_value=pl.lit("EXT-1"),
    )
    requests = write_requests(
        tmp_path / "build.csv", pl.concat([build.select(REQUEST_COLUMNS), again.select(REQUEST_COLUMNS)])
    )
    built = run_batch(store, ORG, [requests], tmp_path / "r1")
    assert built.exit_code == 0 and built.merges == DEPTH, built.errors_by_code
    followed = pl.read_csv(tmp_path / "r1" / "success.csv", infer_schema=False).filter(
        pl.col("row_id").str.starts_with("a")
    )
    assert set(followed.select("resolved_customer_id", "outcome", "warning_codes").rows()) == {
        (str(n), "unchanged", "8073;91009")
    }

    result = run_batch(store, ORG, [one_row(tmp_path / "follow.csv", 1)], tmp_path / "r2")
    assert result.exit_code == 0
    row = success_row(tmp_path / "r2")
    assert (row["resolved_customer_id"], row["outcome"], row["warning_codes"]) == (str(n), "unchanged", "8073;91009")


def chain_snapshot(folder: Path, depth: int) -> Path:
    """Customers 1..depth, each MERGED into the next; customer depth + 1 is ACTIVE and holds EXT-1."""
    customers = pl.DataFrame({"customer_id": pl.int_range(1, depth + 2, eager=True)}).with_columns(
        status=pl.when(pl.col("customer_id") <= depth).then(pl.lit("MERGED")).otherwise(pl.lit("ACTIVE")),
        merged_into=pl.when(pl.col("customer_id") <= depth).then(pl.col("customer_id") + 1),
        customer_type=pl.lit("LOYALTY"),
    )
    identifiers = pl.DataFrame(
        {
            "customer_id": [depth + 1],
            "source": "INSTORE",
            "account_id": "",
            "id_type": "externalId",
            "id_value": "EXT-1",
        }
    )
    return write_snapshot(folder, customers, identifiers)


@pytest.fixture(scope="module")
def chain_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chain")
    store = folder / "store.duckdb"
    init_store(store, chain_snapshot(folder / "snap", 10_000))  # store init's audit accepts the deep chain
    return store


@pytest.mark.parametrize("customer_id", [1, 5_000, 9_999])
def test_chain_loaded_by_store_init_is_followed_to_its_end(chain_store, tmp_path, customer_id):
    result = run_batch(chain_store, ORG, [one_row(tmp_path / "follow.csv", customer_id)], tmp_path / "r", dry_run=True)
    assert result.exit_code == 0
    row = success_row(tmp_path / "r")
    assert (row["resolved_customer_id"], row["warning_codes"]) == ("10001", "8073;91009")


def test_short_chains_take_no_pointer_jumping(tmp_path, monkeypatch):
    """The common case stays as cheap as it was: chains of a few steps are followed step by step."""
    store = tmp_path / "store.duckdb"
    init_store(store, ROOT / "sample_data" / "snapshot")

    def refuse(_):
        raise AssertionError("pointer jumping over all merged customers for a chain of two steps")

    monkeypatch.setattr(resolve, "merge_chain_ends", refuse)
    result = run_batch(store, ORG, [one_row(tmp_path / "follow.csv", 1004)], tmp_path / "r", dry_run=True)
    assert result.exit_code == 0
    row = success_row(tmp_path / "r")  # 1004 -> 1005 -> 1006, which gains EXT-1
    assert (row["resolved_customer_id"], row["outcome"], row["warning_codes"]) == ("1006", "applied", "91009")


def corrupt(store: Path, *statements: str) -> None:
    con = duckdb.connect(str(store))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def exported(store: Path, folder: Path) -> dict[str, bytes]:
    export_store(store, folder, "csv")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_merge_cycle_refuses_the_run_naming_its_customers(chain_store, tmp_path):
    """A cycle breaks SPEC section 1: `store audit` reports it, and a run that meets it applies nothing (exit 3)."""
    store = tmp_path / "store.duckdb"
    store.write_bytes(chain_store.read_bytes())
    # 10,001 now loops back into 9,998: customer 1 reaches the cycle 9998 -> 9999 -> 10000 -> 10001 -> 9998
    corrupt(store, "UPDATE customers SET status = 'MERGED', merged_into = 9998 WHERE customer_id = 10001")
    audit = audit_store(store)
    assert audit.exit_code == 1
    loops = audit.findings.filter(pl.col("detail") == "following merged_into loops")
    assert loops.height == 10_001 and set(loops["invariant"]) == {"merge_chain_ends_active"}

    before = exported(store, tmp_path / "before")
    requests = one_row(tmp_path / "follow.csv", 1)
    with pytest.raises(StoreError) as refused:
        run_batch(store, ORG, [requests], tmp_path / "r")
    message = str(refused.value)
    assert "from customer 1 never reaches an ACTIVE customer: merged_into loops through customers" in message
    assert "9998 -> 9999 -> 10000 -> 10001 -> 9998" in message
    assert "nothing was applied" in message and "store audit" in message
    assert not (tmp_path / "r").exists()
    assert exported(store, tmp_path / "after") == before

    cli = CliRunner().invoke(
        main, ["run", "--store", str(store), "--config", str(ORG), "--reports", str(tmp_path / "c"), str(requests)]
    )
    assert cli.exit_code == EXIT_REFUSED, cli.output
    assert "9998 -> 9999 -> 10000 -> 10001 -> 9998" in cli.output


def test_a_chain_ending_at_a_missing_customer_refuses_the_run(chain_store, tmp_path):
    store = tmp_path / "store.duckdb"
    store.write_bytes(chain_store.read_bytes())
    corrupt(store, "UPDATE customers SET merged_into = 99999 WHERE customer_id = 3")
    with pytest.raises(
        StoreError, match="from customer 2 ends at customer 99999, which does not exist; nothing was applied"
    ):
        run_batch(store, ORG, [one_row(tmp_path / "follow.csv", 2)], tmp_path / "r")
