"""The org config of SPEC section 7: loaded once, validated whole, frozen.

A broken config raises ConfigError naming the key (exit code 2). Unknown keys are refused too:
a misspelt key silently falling back to a default is worse than a refusal.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from pipeline.errors import ConfigError

ID_TYPES = frozenset(
    {
        "mobile",
        "email",
        "externalId",
        "wechat",
        "unionId",
        "martjackId",
        "fbId",
        "tmall_uname",
        "cuid",
        "ali_uname",
        "jd_uname",
        "vip_uname",
        "line",
    }
)
CARD = "cardnumber"
STANDARD_STATUSES = frozenset({"NOT_ISSUED", "ISSUED", "ACTIVE", "SUSPENDED", "EXPIRED", "DELETED"})
ACTIVE_STATUSES = frozenset({"ISSUED", "ACTIVE", "SUSPENDED"})
"""A card 'counts as active' when its label maps to one of these."""
CLOSED_STATUSES = frozenset({"EXPIRED", "DELETED"})
LINKABLE_STATUSES = frozenset({"ISSUED", "ACTIVE"})
"""A card may be linked (added) only with a label of one of these statuses."""

SourceKind = Literal["single", "multi"]


@dataclass(frozen=True)
class Source:
    name: str
    kind: SourceKind
    accounts: tuple[str, ...]
    id_types: frozenset[str]


@dataclass(frozen=True)
class CardSeries:
    id: int
    code: str
    prefix: str
    suffix: str
    digits: int | None
    max_active_per_customer: int

    @property
    def number_pattern(self) -> str:
        """The whole-value regular expression a card number of this series must match."""
        middle = f"[0-9]{{{self.digits}}}" if self.digits is not None else ".*"
        return f"^{re.escape(self.prefix)}{middle}{re.escape(self.suffix)}$"


@dataclass(frozen=True)
class BlockedValues:
    exact: frozenset[str]
    patterns: tuple[str, ...]

    def blocks(self, value: str) -> bool:
        return value in self.exact or any(re.fullmatch(p, value) for p in self.patterns)


DEFAULT_RATE_PER_MINUTE = 100
"""The platform's documented limit on demo and testing clusters (reference/platform-api.md)."""
DEFAULT_MAX_IN_FLIGHT = 8


@dataclass(frozen=True)
class PlatformSettings:
    """`[platform]`: where and how fast `push` delivers (secrets never live here: environment only)."""

    api: str | None = None
    auth: Literal["basic", "oauth"] = "basic"
    rate_per_minute: float = DEFAULT_RATE_PER_MINUTE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT


@dataclass(frozen=True)
class MobileCountries:
    """`[mobile]`: the regions a mobile written without a country code is read with, in order (SPEC 2)."""

    default_country: str
    other_countries: tuple[str, ...] = ()

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.default_country, *self.other_countries)

    def describe(self) -> str:
        """'IN or SG': the regions as an 8056 message names them."""
        regions = self.regions
        return regions[0] if len(regions) == 1 else ", ".join(regions[:-1]) + " or " + regions[-1]

    @property
    def key(self) -> str:
        """The form a store records: 'IN,SG' (order matters: the first valid reading wins)."""
        return ",".join(self.regions)


@dataclass(frozen=True)
class OrgConfig:
    path: str
    sha256: str
    sources: dict[str, Source]
    card_series: dict[int, CardSeries]
    card_labels: dict[str, str]
    delink_label: str
    max_active_cards_per_customer: int
    campaign_identifier_reuse: bool = False
    merge_enabled: bool = True
    max_merges_per_survivor_per_run: int = 10
    blocked_values: dict[str, BlockedValues] = field(default_factory=dict)
    identity: str = ""
    """sha256 of the parsed content but [platform]: comments and layout do not change it, any value does."""
    mobile: MobileCountries | None = None
    """`[mobile]`, or None: mobiles by the plain rule of SPEC section 2 only."""
    platform: PlatformSettings = field(default_factory=PlatformSettings)

    def label_status(self, label: str) -> str | None:
        return self.card_labels.get(label)

    def is_blocked(self, id_type: str, value: str) -> bool:
        blocked = self.blocked_values.get(id_type)
        return blocked is not None and blocked.blocks(value)


def load_config(path: Path | str) -> OrgConfig:
    """Read and validate an org config TOML file."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read the org config: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, "(file)", f"not valid TOML: {exc}") from exc
    return parse_config(raw, path=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest())


def parse_config(raw: dict[str, Any], path: str = "<config>", sha256: str = "") -> OrgConfig:
    """Validate a parsed TOML document; `path` only labels error messages."""
    v = TomlValidator(path)
    v.known_keys(
        raw, "", {"org", "merge", "sources", "card_series", "card_labels", "blocked_values", "mobile", "platform"}
    )
    platform = _parse_platform(v, v.table(raw, "platform", required=False))
    org = v.table(raw, "org", required=True)
    v.known_keys(org, "org.", {"max_active_cards_per_customer", "delink_label", "campaign_identifier_reuse"})
    merge = v.table(raw, "merge", required=False)
    v.known_keys(merge, "merge.", {"enabled", "max_merges_per_survivor_per_run"})

    labels_raw = v.table(raw, "card_labels", required=True)
    card_labels: dict[str, str] = {}
    for label, status in labels_raw.items():
        if not isinstance(status, str) or status not in STANDARD_STATUSES:
            v.fail(
                f"card_labels.{label}", f"'{status}' is not a standard status ({', '.join(sorted(STANDARD_STATUSES))})"
            )
        card_labels[label] = status

    delink_label = v.value(org, "org.delink_label", str)
    if card_labels.get(delink_label) != "NOT_ISSUED":
        v.fail("org.delink_label", f"'{delink_label}' must be a card label that maps to NOT_ISSUED")

    sources_raw = v.table(raw, "sources", required=True)
    if not sources_raw:
        v.fail("sources", "at least one source is required")
    sources = {name: _parse_source(v, name, body) for name, body in sources_raw.items()}

    series_list = raw.get("card_series", [])
    if not isinstance(series_list, list):
        v.fail("card_series", "must be an array of tables ([[card_series]])")
    card_series: dict[int, CardSeries] = {}
    codes: set[str] = set()
    for i, body in enumerate(series_list):
        series = _parse_series(v, f"card_series[{i}]", body)
        if series.id in card_series:
            v.fail(f"card_series[{i}].id", f"series id {series.id} is declared twice")
        if series.code in codes:
            v.fail(f"card_series[{i}].code", f"series code '{series.code}' is declared twice")
        card_series[series.id] = series
        codes.add(series.code)

    blocked_raw = v.table(raw, "blocked_values", required=False)
    blocked: dict[str, BlockedValues] = {}
    for id_type, body in blocked_raw.items():
        key = f"blocked_values.{id_type}"
        if id_type not in ID_TYPES and id_type != CARD:
            v.fail(key, f"'{id_type}' is not a known identifier type")
        if not isinstance(body, dict):
            v.fail(key, "must be a table with 'exact' and 'patterns'")
        v.known_keys(body, key + ".", {"exact", "patterns"})
        exact = v.string_list(body.get("exact", []), key + ".exact")
        patterns = v.string_list(body.get("patterns", []), key + ".patterns")
        for j, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                v.fail(f"{key}.patterns[{j}]", f"not a valid regular expression: {exc}")
        blocked[id_type] = BlockedValues(frozenset(exact), tuple(patterns))

    return OrgConfig(
        path=path,
        sha256=sha256,
        sources=sources,
        card_series=card_series,
        card_labels=card_labels,
        delink_label=delink_label,
        max_active_cards_per_customer=v.count(org, "org.max_active_cards_per_customer"),
        campaign_identifier_reuse=v.value(org, "org.campaign_identifier_reuse", bool, default=False),
        merge_enabled=v.value(merge, "merge.enabled", bool, default=True),
        max_merges_per_survivor_per_run=v.count(merge, "merge.max_merges_per_survivor_per_run", default=10),
        blocked_values=blocked,
        mobile=_parse_mobile(v, v.table(raw, "mobile", required=False)) if "mobile" in raw else None,
        # where and how fast a push delivers is not part of the org's data: the store stays bound across it
        identity=hashlib.sha256(
            json.dumps({k: v for k, v in raw.items() if k != "platform"}, sort_keys=True, default=str).encode()
        ).hexdigest(),
        platform=platform,
    )


def _parse_mobile(v: TomlValidator, body: dict[str, Any]) -> MobileCountries:
    """`[mobile]`: every region must be one the phone-number metadata knows (ISO 3166, upper case)."""
    from phonenumbers import SUPPORTED_REGIONS  # imported here: only configs with [mobile] pay for it

    v.known_keys(body, "mobile.", {"default_country", "other_countries"})
    default = v.value(body, "mobile.default_country", str)
    others = v.string_list(body.get("other_countries", []), "mobile.other_countries")
    if default not in SUPPORTED_REGIONS:
        v.fail("mobile.default_country", f"'{default}' is not a region of the phone-number metadata (e.g. \"IN\")")
    for i, region in enumerate(others):
        if region not in SUPPORTED_REGIONS:
            v.fail(f"mobile.other_countries[{i}]", f"'{region}' is not a region of the phone-number metadata")
    if len({default, *others}) != 1 + len(others):
        v.fail("mobile.other_countries", "each region may appear once, and not repeat default_country")
    return MobileCountries(default, tuple(others))


def _parse_platform(v: TomlValidator, body: dict) -> PlatformSettings:
    v.known_keys(body, "platform.", {"api", "auth", "rate_per_minute", "max_in_flight"})
    api = v.value(body, "platform.api", str, default=None)
    if api is not None and not api.startswith(("http://", "https://")):
        v.fail("platform.api", f"'{api}' must be an http:// or https:// URL")
    auth = v.value(body, "platform.auth", str, default="basic")
    if auth not in ("basic", "oauth"):
        v.fail("platform.auth", f'\'{auth}\' must be "basic" or "oauth"')
    rate = body.get("rate_per_minute", DEFAULT_RATE_PER_MINUTE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
        v.fail("platform.rate_per_minute", "must be a positive number of calls per minute")
    in_flight = v.count(body, "platform.max_in_flight", default=DEFAULT_MAX_IN_FLIGHT)
    if in_flight < 1:
        v.fail("platform.max_in_flight", "must be at least 1")
    return PlatformSettings(api=api, auth=auth, rate_per_minute=float(rate), max_in_flight=in_flight)


def _parse_source(v: TomlValidator, name: str, body: Any) -> Source:
    key = f"sources.{name}"
    if not isinstance(body, dict):
        v.fail(key, "must be a table")
    v.known_keys(body, key + ".", {"kind", "accounts", "id_types"})
    kind = v.value(body, key + ".kind", str)
    if kind not in ("single", "multi"):
        v.fail(key + ".kind", f'\'{kind}\' must be "single" or "multi"')
    accounts = tuple(v.string_list(body.get("accounts", []), key + ".accounts"))
    if kind == "multi" and not accounts:
        v.fail(key + ".accounts", "a multi-account source needs at least one account")
    if kind == "single" and accounts:
        v.fail(key + ".accounts", "a single-account source has no accounts")
    if any(not a.strip() or a != a.strip() for a in accounts) or len(set(accounts)) != len(accounts):
        v.fail(key + ".accounts", "account ids must be non-empty, trimmed and distinct")
    if "id_types" not in body:
        v.fail(key + ".id_types", "missing")
    id_types = v.string_list(body["id_types"], key + ".id_types")
    for id_type in id_types:
        if id_type not in ID_TYPES and id_type != CARD:
            v.fail(key + ".id_types", f"'{id_type}' is not a known identifier type")
    return Source(name, kind, accounts, frozenset(id_types) - {CARD})


def _parse_series(v: TomlValidator, key: str, body: Any) -> CardSeries:
    if not isinstance(body, dict):
        v.fail(key, "must be a table")
    v.known_keys(body, key + ".", {"id", "code", "prefix", "suffix", "digits", "max_active_per_customer"})
    digits = body.get("digits")
    if digits is not None:
        digits = v.count(body, key + ".digits")
        if digits < 1:
            v.fail(key + ".digits", "must be at least 1")
    return CardSeries(
        id=v.value(body, key + ".id", int),
        code=v.value(body, key + ".code", str),
        prefix=v.value(body, key + ".prefix", str, default=""),
        suffix=v.value(body, key + ".suffix", str, default=""),
        digits=digits,
        max_active_per_customer=v.count(body, key + ".max_active_per_customer"),
    )


class TomlValidator:
    """Type and key checks for a parsed TOML document; every failure is a ConfigError naming the key."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ConfigError(self.path, key, reason)

    def known_keys(self, table: dict, prefix: str, allowed: AbstractSet[str]) -> None:
        for key in table:
            if key not in allowed:
                self.fail(prefix + key, f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def table(self, raw: dict, key: str, required: bool) -> dict:
        if key not in raw:
            if required:
                self.fail(key, "missing table")
            return {}
        if not isinstance(raw[key], dict):
            self.fail(key, "must be a table")
        return raw[key]

    def value(self, table: dict, key: str, kind: type, default: Any = ...) -> Any:
        name = key.rsplit(".", 1)[-1]
        if name not in table:
            if default is ...:
                self.fail(key, "missing")
            return default
        value = table[name]
        # bool is an int in Python; a flag must not pass as a number or the other way round
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def count(self, table: dict, key: str, default: Any = ...) -> int:
        value = self.value(table, key, int, default)
        if value < 0:
            self.fail(key, "must not be negative")
        return value

    def string_list(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.fail(key, "must be a list of strings")
        return value
