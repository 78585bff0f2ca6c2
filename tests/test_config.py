"""The org config of SPEC section 7: the sample loads whole, and every broken layout is refused.

A refusal raises ConfigError naming the key, and the CLI turns it into exit code 2.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from pipeline.cli import main
from pipeline.config import BlockedValues, CardSeries, Source, load_config
from pipeline.errors import ConfigError

SAMPLE_CONFIG = ROOT / "sample_data" / "org.toml"
PLAIN_CONFIG = ROOT / "tests" / "cases" / "org-plain.toml"

BASE = """\
[org]
max_active_cards_per_customer = 3
delink_label = "Not Issued"
campaign_identifier_reuse = false

[merge]
enabled = true
max_merges_per_survivor_per_run = 10

[sources.INSTORE]
kind = "single"
id_types = ["mobile", "email", "externalId"]

[sources.WECHAT]
kind = "multi"
accounts = ["WX-MAIN", "WX-CN2"]
id_types = ["mobile", "email", "wechat", "unionId"]

[[card_series]]
id = 101
code = "GOLD"
prefix = "GLD"
suffix = ""
digits = 10
max_active_per_customer = 1

[[card_series]]
id = 103
code = "PARTNER"
prefix = "P-"
suffix = ""
max_active_per_customer = 2

[card_labels]
"Active" = "ACTIVE"
"Issued" = "ISSUED"
"Not Issued" = "NOT_ISSUED"
"Blocked" = "SUSPENDED"
"Expired" = "EXPIRED"
"Deleted" = "DELETED"

[blocked_values.mobile]
exact = ["1234567890"]
patterns = ["^0+$"]
"""
"""A small config in the layout of SPEC section 7; each broken case below edits one spot of it."""

SOURCES = """\
[sources.INSTORE]
kind = "single"
id_types = ["mobile", "email", "externalId"]

[sources.WECHAT]
kind = "multi"
accounts = ["WX-MAIN", "WX-CN2"]
id_types = ["mobile", "email", "wechat", "unionId"]
"""
LABELS = BASE[BASE.index("[card_labels]") : BASE.index("[blocked_values.mobile]")]
ORG = BASE[: BASE.index("[merge]")]
MERGE = BASE[BASE.index("[merge]") : BASE.index("[sources.INSTORE]")]

VALID_CSV = "customer_id,source,action,id_type,id_value\n1001,INSTORE,add,email,x@y.co\n"


def mutate(old: str, new: str) -> str:
    """BASE with `old` (which must occur exactly once) replaced by `new`."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


BROKEN = [
    pytest.param('"Blocked" = "SUSPENDED"', '"Blocked" = "BLOCKED"', "card_labels.Blocked", id="unknown-status"),
    pytest.param('"Blocked" = "SUSPENDED"', '"Blocked" = "suspended"', "card_labels.Blocked", id="status-wrong-case"),
    pytest.param('"Active" = "ACTIVE"', '"Active" = 1', "card_labels.Active", id="status-int"),
    pytest.param('"Active" = "ACTIVE"', '"Active" = ["ACTIVE"]', "card_labels.Active", id="status-list"),
    pytest.param('delink_label = "Not Issued"\n', "", "org.delink_label", id="delink-label-missing"),
    pytest.param(
        'delink_label = "Not Issued"', 'delink_label = "Blocked"', "org.delink_label", id="delink-label-not-not-issued"
    ),
    pytest.param('delink_label = "Not Issued"', 'delink_label = "Gone"', "org.delink_label", id="delink-label-unknown"),
    pytest.param('delink_label = "Not Issued"', "delink_label = 1", "org.delink_label", id="delink-label-int"),
    pytest.param('accounts = ["WX-MAIN", "WX-CN2"]\n', "", "sources.WECHAT.accounts", id="multi-without-accounts"),
    pytest.param(
        'accounts = ["WX-MAIN", "WX-CN2"]', "accounts = []", "sources.WECHAT.accounts", id="multi-empty-accounts"
    ),
    pytest.param(
        'accounts = ["WX-MAIN", "WX-CN2"]',
        'accounts = ["WX-MAIN", "WX-MAIN"]',
        "sources.WECHAT.accounts",
        id="multi-duplicate-accounts",
    ),
    pytest.param(
        'kind = "single"', 'kind = "single"\naccounts = ["A"]', "sources.INSTORE.accounts", id="single-with-accounts"
    ),
    pytest.param('kind = "multi"', 'kind = "many"', "sources.WECHAT.kind", id="unknown-source-kind"),
    pytest.param('kind = "single"\n', "", "sources.INSTORE.kind", id="source-kind-missing"),
    pytest.param(
        'id_types = ["mobile", "email", "externalId"]\n', "", "sources.INSTORE.id_types", id="source-id-types-missing"
    ),
    pytest.param('"wechat", "unionId"]', '"wechat", "unionID"]', "sources.WECHAT.id_types", id="unknown-id-type"),
    pytest.param(
        'id_types = ["mobile", "email", "externalId"]',
        'id_types = "mobile"',
        "sources.INSTORE.id_types",
        id="id-types-string",
    ),
    pytest.param(
        "[blocked_values.mobile]", "[blocked_values.phone]", "blocked_values.phone", id="blocked-unknown-id-type"
    ),
    pytest.param(
        'patterns = ["^0+$"]',
        'patterns = ["^0+$", "(unclosed"]',
        "blocked_values.mobile.patterns[1]",
        id="blocked-invalid-regex",
    ),
    pytest.param(
        'exact = ["1234567890"]', "exact = [1234567890]", "blocked_values.mobile.exact", id="blocked-exact-int"
    ),
    pytest.param(
        'exact = ["1234567890"]', 'exacts = ["1234567890"]', "blocked_values.mobile.exacts", id="blocked-unknown-key"
    ),
    pytest.param("[org]", 'colour = "blue"\n\n[org]', "colour", id="unknown-top-level-key"),
    pytest.param("[merge]", "[merges]", "merges", id="unknown-top-level-table"),
    pytest.param(
        "max_merges_per_survivor_per_run = 10",
        "max_merge_per_survivor = 10",
        "merge.max_merge_per_survivor",
        id="typo-in-merge",
    ),
    pytest.param("max_active_cards_per_customer = 3", "max_active_cards = 3", "org.max_active_cards", id="typo-in-org"),
    pytest.param(
        'kind = "single"', 'kind = "single"\nid_type = ["email"]', "sources.INSTORE.id_type", id="typo-in-source"
    ),
    pytest.param("digits = 10", "digit = 10", "card_series[0].digit", id="typo-in-series"),
    pytest.param(
        "max_active_cards_per_customer = 3",
        'max_active_cards_per_customer = "3"',
        "org.max_active_cards_per_customer",
        id="string-for-int",
    ),
    pytest.param(
        "max_active_cards_per_customer = 3",
        "max_active_cards_per_customer = 3.0",
        "org.max_active_cards_per_customer",
        id="float-for-int",
    ),
    pytest.param(
        "campaign_identifier_reuse = false",
        "campaign_identifier_reuse = 0",
        "org.campaign_identifier_reuse",
        id="int-for-bool",
    ),
    pytest.param("enabled = true", "enabled = 1", "merge.enabled", id="int-for-bool-merge"),
    pytest.param("enabled = true", 'enabled = "true"', "merge.enabled", id="string-for-bool"),
    pytest.param(
        "max_merges_per_survivor_per_run = 10",
        "max_merges_per_survivor_per_run = true",
        "merge.max_merges_per_survivor_per_run",
        id="bool-for-int",
    ),
    pytest.param(
        "max_active_per_customer = 1",
        "max_active_per_customer = true",
        "card_series[0].max_active_per_customer",
        id="bool-for-int-series",
    ),
    pytest.param("id = 101", 'id = "101"', "card_series[0].id", id="string-series-id"),
    pytest.param("digits = 10", 'digits = "10"', "card_series[0].digits", id="string-digits"),
    pytest.param('code = "GOLD"', "code = 7", "card_series[0].code", id="int-series-code"),
    pytest.param(
        "max_active_cards_per_customer = 3",
        "max_active_cards_per_customer = -1",
        "org.max_active_cards_per_customer",
        id="negative-org-max",
    ),
    pytest.param(
        "max_merges_per_survivor_per_run = 10",
        "max_merges_per_survivor_per_run = -1",
        "merge.max_merges_per_survivor_per_run",
        id="negative-merge-max",
    ),
    pytest.param(
        "max_active_per_customer = 1",
        "max_active_per_customer = -1",
        "card_series[0].max_active_per_customer",
        id="negative-series-max",
    ),
    pytest.param("digits = 10", "digits = -3", "card_series[0].digits", id="negative-digits"),
    pytest.param("digits = 10", "digits = 0", "card_series[0].digits", id="zero-digits"),
    pytest.param("id = 103", "id = 101", "card_series[1].id", id="duplicate-series-id"),
    pytest.param('code = "PARTNER"', 'code = "GOLD"', "card_series[1].code", id="duplicate-series-code"),
    pytest.param(
        "max_active_per_customer = 2\n", "", "card_series[1].max_active_per_customer", id="series-max-missing"
    ),
    pytest.param(ORG, "", "org", id="missing-org"),
    pytest.param(ORG, "org = 1\n\n", "org", id="org-not-a-table"),
    pytest.param(ORG + MERGE, "merge = true\n\n" + ORG, "merge", id="merge-not-a-table"),
    pytest.param(SOURCES, "", "sources", id="missing-sources"),
    pytest.param(SOURCES, "[sources]\n", "sources", id="empty-sources"),
    pytest.param(LABELS, "", "card_labels", id="missing-card-labels"),
    pytest.param("[card_labels]\n", "[labels]\n", "labels", id="card-labels-misspelt"),
]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def validate_with(config: Path, tmp_path: Path):
    """Run `loyalty-bulk validate` against a valid one-row file; the config decides the outcome."""
    requests = tmp_path / "requests.csv"
    requests.write_text(VALID_CSV, encoding="utf-8")
    return CliRunner().invoke(
        main, ["validate", "--config", str(config), "--reports", str(tmp_path / "reports"), str(requests)]
    )


def test_sample_config_loads_every_key():
    config = load_config(SAMPLE_CONFIG)
    assert config.path == str(SAMPLE_CONFIG)
    assert config.sha256 == hashlib.sha256(SAMPLE_CONFIG.read_bytes()).hexdigest()
    assert config.max_active_cards_per_customer == 3
    assert config.delink_label == "Not Issued"
    assert config.campaign_identifier_reuse is False
    assert config.merge_enabled is True
    assert config.max_merges_per_survivor_per_run == 10
    assert config.sources["INSTORE"] == Source("INSTORE", "single", (), frozenset({"mobile", "email", "externalId"}))
    assert config.sources["WECHAT"] == Source(
        "WECHAT", "multi", ("WX-MAIN", "WX-CN2"), frozenset({"mobile", "email", "wechat", "unionId"})
    )
    assert set(config.sources) == {"INSTORE", "WECHAT", "MOBILE_APP", "FACEBOOK", "LINE"}
    assert config.sources["FACEBOOK"].id_types == frozenset({"email", "fbId"})
    assert config.card_series == {
        101: CardSeries(101, "GOLD", "GLD", "", 10, 1),
        102: CardSeries(102, "SILVER", "SLV", "X", 8, 2),
        103: CardSeries(103, "PARTNER", "P-", "", None, 2),
    }
    assert config.card_labels == {
        "Active": "ACTIVE",
        "Issued": "ISSUED",
        "Not Issued": "NOT_ISSUED",
        "Returned": "NOT_ISSUED",
        "Blocked": "SUSPENDED",
        "Expired": "EXPIRED",
        "Deleted": "DELETED",
    }
    assert config.label_status("Not Issued") == "NOT_ISSUED"
    assert config.label_status("not issued") is None
    assert config.blocked_values == {
        "mobile": BlockedValues(frozenset({"1234567890"}), ("^0+$",)),
        "email": BlockedValues(frozenset({"test@test.com"}), ("^noreply@.*",)),
        "externalId": BlockedValues(frozenset({"N/A", "null"}), ()),
    }


def test_blocked_values_match_exact_and_whole_value_patterns():
    config = load_config(SAMPLE_CONFIG)
    assert config.is_blocked("mobile", "1234567890")
    assert config.is_blocked("mobile", "0000")
    assert not config.is_blocked("mobile", "10000")
    assert not config.is_blocked("mobile", "00001")
    assert config.is_blocked("email", "noreply@shop.com")
    assert not config.is_blocked("email", "x.noreply@shop.com")
    assert config.is_blocked("externalId", "null")
    assert not config.is_blocked("externalId", "NULL")
    assert not config.is_blocked("wechat", "1234567890")


def test_series_number_pattern_follows_digits():
    series = load_config(SAMPLE_CONFIG).card_series
    assert series[101].number_pattern == "^GLD[0-9]{10}$"
    assert series[103].number_pattern == r"^P\-.*$"


def test_base_config_is_valid(tmp_path: Path):
    """The base the broken cases are made from loads, so each case fails only for its own edit."""
    config = load_config(write_config(tmp_path / "org.toml", BASE))
    assert set(config.sources) == {"INSTORE", "WECHAT"}
    assert validate_with(tmp_path / "org.toml", tmp_path).exit_code == 0


def test_merge_and_reuse_defaults_when_absent(tmp_path: Path):
    text = BASE.replace(MERGE, "").replace("campaign_identifier_reuse = false\n", "")
    config = load_config(write_config(tmp_path / "org.toml", text))
    assert config.merge_enabled is True
    assert config.max_merges_per_survivor_per_run == 10
    assert config.campaign_identifier_reuse is False
    assert config.blocked_values["mobile"].patterns == ("^0+$",)


def test_optional_tables_may_be_absent(tmp_path: Path):
    text = BASE[: BASE.index("[[card_series]]")] + LABELS
    config = load_config(write_config(tmp_path / "org.toml", text))
    assert config.card_series == {}
    assert config.blocked_values == {}


@pytest.mark.parametrize(("old", "new", "key"), BROKEN)
def test_broken_layout_is_refused_naming_the_key(tmp_path: Path, old: str, new: str, key: str):
    path = write_config(tmp_path / "org.toml", mutate(old, new))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.key == key
    assert f"key '{key}'" in str(refused.value)
    assert str(path) in str(refused.value)

    result = validate_with(path, tmp_path)
    assert result.exit_code == 2, result.output
    assert f"key '{key}'" in result.stderr
    assert not (tmp_path / "reports" / "summary.json").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(BASE.replace("[org]", "[org"), "not valid TOML", id="toml-syntax"),
        pytest.param(BASE + '\n[card_labels]\n"Gone" = "DELETED"\n', "not valid TOML", id="table-declared-twice"),
        pytest.param(BASE.replace('"Not Issued"', '"Ne pas émettre"').encode("latin-1"), "utf-8", id="not-utf8"),
        pytest.param(None, "cannot read", id="missing-file"),
    ],
)
def test_unreadable_or_unparsable_file_is_refused(tmp_path: Path, content: str | bytes | None, reason: str):
    path = tmp_path / "org.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.key == "(file)"
    assert reason in str(refused.value)

    result = validate_with(path, tmp_path)
    assert result.exit_code == 2, result.output
    assert reason in result.stderr and str(path) in result.stderr


def test_directory_as_config_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert refused.value.key == "(file)" and "cannot read" in str(refused.value)


def test_the_tests_plain_org_is_the_sample_org_without_mobile():
    """tests/cases/org-plain.toml must follow the sample org: the plain-rule tests prove the sample's rules."""
    sample = tomllib.loads(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert sample.pop("mobile") == {"default_country": "CN", "other_countries": ["HK"]}
    assert tomllib.loads(PLAIN_CONFIG.read_text(encoding="utf-8")) == sample
    assert load_config(PLAIN_CONFIG).mobile is None
