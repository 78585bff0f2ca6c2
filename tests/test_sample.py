"""The synthetic sample: deterministic, valid by SPEC section 1, and a realistic request mix."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.config import OrgConfig, load_config
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.tools.sample import SampleInfo, generate_sample, sample_config
from reference_rules import format_error, normalize_value

FILES = (
    "org.toml",
    "snapshot/customers.parquet",
    "snapshot/identifiers.parquet",
    "snapshot/cards.parquet",
    "requests.csv",
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return generate_sample(tmp_path_factory.mktemp("sample"), customers=3000, rows=3000, seed=11)


def share(mask: pl.Series) -> float:
    """The share of True in a boolean column."""
    return int(mask.sum()) / mask.len()


def read_snapshot(out: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    snap = out / "snapshot"
    return (
        pl.read_parquet(snap / "customers.parquet"),
        pl.read_parquet(snap / "identifiers.parquet"),
        pl.read_parquet(snap / "cards.parquet"),
    )


def read_requests(out: Path) -> pl.DataFrame:
    return pl.read_csv(out / "requests.csv", infer_schema=False)


def assert_snapshot_invariants(out: Path, config: OrgConfig) -> None:
    """Every invariant of SPEC section 1, plus the format rules for what is in the store."""
    customers, identifiers, cards = read_snapshot(out)
    assert customers.schema == pl.Schema(
        {"customer_id": pl.Int64, "status": pl.String, "merged_into": pl.Int64, "customer_type": pl.String}
    )
    assert identifiers.schema == pl.Schema(
        {
            "customer_id": pl.Int64,
            "source": pl.String,
            "account_id": pl.String,
            "id_type": pl.String,
            "id_value": pl.String,
        }
    )
    assert cards.schema == pl.Schema(
        {"card_number": pl.String, "series_id": pl.Int32, "customer_id": pl.Int64, "status_label": pl.String}
    )

    status = dict(zip(customers["customer_id"], customers["status"], strict=True))
    merged_into = dict(zip(customers["customer_id"], customers["merged_into"], strict=True))
    assert len(status) == customers.height
    assert set(customers["status"]) <= {"ACTIVE", "MERGED"}
    assert set(customers["customer_type"]) <= {"LOYALTY", "CAMPAIGN"}
    for cid, st in status.items():
        assert (st == "MERGED") == (merged_into[cid] is not None)
        seen = {cid}
        while status[cid] == "MERGED":
            cid = merged_into[cid]
            assert cid in status and cid not in seen
            seen.add(cid)

    active = {cid for cid, st in status.items() if st == "ACTIVE"}
    assert set(identifiers["customer_id"]) <= active
    assert set(cards["customer_id"].drop_nulls()) <= active
    assert identifiers.select("source", "account_id", "id_type", "id_value").is_duplicated().sum() == 0
    assert identifiers.select("customer_id", "source", "account_id", "id_type").is_duplicated().sum() == 0
    for _, source, account, id_type, value in identifiers.iter_rows():
        src = config.sources[source]
        assert account in (src.accounts if src.kind == "multi" else ("",))
        assert id_type in src.id_types
        assert normalize_value(id_type, value) == value
        assert format_error(id_type, value) is None
        assert not config.is_blocked(id_type, value)

    assert cards["card_number"].n_unique() == cards.height
    for number, series_id, label in cards.select("card_number", "series_id", "status_label").iter_rows():
        assert re.fullmatch(config.card_series[series_id].number_pattern, number)
        assert label in config.card_labels


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = generate_sample(tmp_path / "a", customers=300, rows=400, seed=7)
    generate_sample(tmp_path / "b", customers=300, rows=400, seed=7)
    generate_sample(tmp_path / "c", customers=300, rows=400, seed=8)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in FILES[1:]:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["org.toml", "requests.csv", "snapshot"]
    assert first.customers == 300 and first.rows == 400


def test_config_loads_with_the_documented_layout(sample: SampleInfo) -> None:
    config = load_config(sample.config_path)
    assert config.card_series == sample_config().card_series
    assert set(config.sources) == {"INSTORE", "WECHAT", "MOBILE_APP", "FACEBOOK", "LINE"}
    assert config.sources["WECHAT"].kind == "multi" and len(config.sources["WECHAT"].accounts) == 2
    assert config.sources["INSTORE"].kind == "single"
    assert len(config.card_series) == 3
    assert config.card_labels[config.delink_label] == "NOT_ISSUED"
    assert config.is_blocked("mobile", "0000000000") and config.is_blocked("email", "test@test.com")


def test_snapshot_keeps_every_invariant(sample: SampleInfo) -> None:
    assert_snapshot_invariants(sample.out_dir, load_config(sample.config_path))


def test_snapshot_is_realistic(sample: SampleInfo) -> None:
    customers, identifiers, cards = read_snapshot(sample.out_dir)
    merged = customers.filter(pl.col("status") == "MERGED")
    assert 0.01 < merged.height / customers.height < 0.04
    assert 0.02 < share(customers["customer_type"] == "CAMPAIGN") < 0.08
    status = dict(zip(customers["customer_id"], customers["status"], strict=True))
    chains = sum(status[target] == "MERGED" for target in merged["merged_into"])
    assert 2 <= chains < 0.3 * merged.height  # some merge chains of length 2, most merges direct
    assert 2.0 < identifiers.height / (customers.height - merged.height) < 3.0
    assert set(identifiers["customer_id"]) == {c for c, s in status.items() if s == "ACTIVE"}
    scopes_per_mobile = (
        identifiers.filter(pl.col("id_type") == "mobile")
        .group_by("id_value")
        .agg(pl.col("customer_id").n_unique().alias("holders"), pl.len())
    )
    assert scopes_per_mobile["holders"].to_list() == [1] * scopes_per_mobile.height
    assert max(scopes_per_mobile["len"].to_list()) >= 3
    assert 0.2 < cards.height / customers.height < 0.4
    held = cards.filter(pl.col("customer_id").is_not_null())
    unheld = cards.filter(pl.col("customer_id").is_null())
    assert share(held["status_label"].is_in(["Active", "Issued"])) > 0.8
    assert share(unheld["status_label"] == "Not Issued") > 0.7
    assert cards["status_label"].is_in(["Expired", "Deleted"]).sum() > 0


def test_request_file_has_the_mix(sample: SampleInfo) -> None:
    requests = read_requests(sample.out_dir)
    assert tuple(requests.columns) == REQUEST_COLUMNS
    assert requests.height == sample.rows == sum(sample.request_kinds.values())
    assert requests["row_id"].n_unique() == requests.height
    action = requests["action"].str.to_lowercase()
    assert (action == "add").sum() > 2 * (action == "remove").sum() > 0
    assert (~action.is_in(["add", "remove"])).sum() > 0
    cards = requests.filter(pl.col("id_type") == "cardnumber")
    assert cards.filter(pl.col("action").str.to_lowercase() == "add").height > 0.05 * requests.height
    assert cards.filter(pl.col("action").str.to_lowercase() == "remove").height > 0.02 * requests.height
    assert requests.filter(pl.col("customer_id").is_null() & pl.col("lookup_value").is_not_null()).height > 0
    assert (~requests["source"].is_in(list(load_config(sample.config_path).sources))).sum() > 0
    for kind in ("fresh_add", "remove", "move", "merge", "card_link", "card_delink", "merged_target", "malformed"):
        assert sample.request_kinds[kind] > 0, kind

    customers, _, _ = read_snapshot(sample.out_dir)
    merged_ids = customers.filter(pl.col("status") == "MERGED")["customer_id"].cast(pl.String)
    assert requests["customer_id"].is_in(merged_ids.implode()).sum() > 0


def test_merge_rows_add_a_value_held_by_one_customer_elsewhere(sample: SampleInfo) -> None:
    _, identifiers, _ = read_snapshot(sample.out_dir)
    holders: dict[tuple[str, str], set[tuple[int, str, str]]] = {}
    scopes: dict[int, set[tuple[str, str]]] = {}
    for cid, source, account, id_type, value in identifiers.iter_rows():
        holders.setdefault((id_type, value), set()).add((cid, source, account))
        scopes.setdefault(cid, set()).add((source, account))
    clean_merges = 0
    for row in read_requests(sample.out_dir).iter_rows(named=True):
        if (row["action"] or "").lower() != "add" or not (row["customer_id"] or "").isdigit() or not row["id_value"]:
            continue
        target, scope = int(row["customer_id"]), (row["source"], row["account_id"] or "")
        value = normalize_value(row["id_type"], row["id_value"].strip())
        others = {h for h in holders.get((row["id_type"], value), set()) if h[0] != target}
        if (
            len({h[0] for h in others}) == 1
            and not (scopes.get(target, set()) | {scope}) & scopes[next(iter(others))[0]]
        ):
            clean_merges += 1
    assert clean_merges >= 0.005 * sample.rows


def test_moves_remove_before_adding_to_another_customer(sample: SampleInfo) -> None:
    requests = read_requests(sample.out_dir).with_row_index("position")
    keyed = requests.with_columns(pl.col("action").str.to_lowercase(), pl.col("id_value").str.strip_chars())
    removes = keyed.filter(pl.col("action") == "remove", pl.col("id_type").is_in(["wechat", "externalId", "cuid"]))
    adds = keyed.filter(pl.col("action") == "add")
    pairs = removes.join(adds, on=["source", "id_type", "id_value"], suffix="_add")
    assert pairs.height > 0
    assert share(pairs["position"] < pairs["position_add"]) > 0.9


@pytest.mark.parametrize(("customers", "rows"), [(1, 5), (50, 200)])
def test_small_sizes_keep_the_invariants(tmp_path: Path, customers: int, rows: int) -> None:
    info = generate_sample(tmp_path, customers=customers, rows=rows, seed=2)
    assert_snapshot_invariants(tmp_path, sample_config())
    assert read_requests(tmp_path).height == rows
    assert info.customers == customers


def test_cli_writes_a_sample(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["sample", "--out", str(out), "--customers", "200", "--rows", "500", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "200 customers" in result.output and "500 rows" in result.output
    assert read_requests(out).height == 500
    assert all((out / name).exists() for name in FILES)
