"""The one-row-at-a-time reference model of SPEC sections 2 and 3, for the property tests.

Each row is checked on its own, its target resolved, then applied to the state the previous rows
left; a failed row changes nothing. Plain Python only: the engine is never imported, and trimming,
normalisation, format rules and checks are written here again from the SPEC text.

Interpretations taken where the SPEC leaves room (the engine must agree with every one):
 1. Absent columns and None count as empty; every field is trimmed with str.strip first.
 2. An empty action is 7001 (no more specific code is listed for it); any other value that is not
    add/remove/replace after str.lower() is 7002. A replace on a card row is 7002 on action, raised after
    id_type's own checks and before id_value's.
 3. The customer reference is valid when exactly customer_id is given, or exactly both lookup fields;
    anything else (none, both, half a pair, half a pair plus customer_id) is 7003 on customer_id.
 4. customer_id is ASCII digits only ([0-9]+, leading zeros allowed, '007' is customer 7) with a value
    from 1 to 2**63-1, else 7001 on customer_id.
 5. series_id is known when it is a plain decimal integer (optional '-', leading zeros allowed) equal to
    a configured series id; any other given text is 3004 on any row, whatever its action and id_type.
    On rows that are not card adds a known series_id is otherwise ignored (a delink does not compare it
    with the card's series).
 6. A given status_label that is not a configured label is 8086 on any row. 7011 applies only to card
    rows (add: must map to ISSUED/ACTIVE; remove: must map to NOT_ISSUED); a known label on an
    identifier row is ignored.
 7. id_value is checked in this order: empty (7001), then on adds the format, then the blocked list.
    The format and blocked rules apply to the normalised value. A card number's format is checked only
    when the row's series_id is known; the blocked list is checked for card numbers too (config may
    block 'cardnumber'), even when the series is unknown, so 7005 precedes 3004. Card numbers are not
    subject to the 1..128/Cc rule of 'other' identifiers, only to their series' shape.
 8. A card number fits a series when it is prefix + middle + suffix (non-overlapping), the middle being
    exactly `digits` ASCII digits when set, else anything, the empty string included ('P-' fits 103).
 9. Blocked exact values are compared with the normalised value as written in the config (not
    normalised themselves); patterns use re.fullmatch.
10. White space is str.isspace() everywhere (email's \\s, externalId, mobile noise); 'digits' in the
    mobile rule are ASCII 0-9. Mobile normalisation drops white space, '-', '.', '(' and ')' anywhere,
    then exactly one leading '+' or, failing that, one leading '00'.
11. A lookup never applies format rules: a normalised lookup value that is empty or malformed simply
    finds no one (8015 on lookup_value). Lookups by cardnumber ignore the row's scope.
12. Holders of (T, V) are the customers other than C holding (T, V) in any scope. 8008 is raised only
    for a LOYALTY holder in S; a CAMPAIGN holder in S is handled like any CAMPAIGN holder (8068 error
    when reuse is off; with reuse on it loses the value and the row goes on). The LOYALTY holders
    counted for 8074 and the merge are distinct customers: one customer holding (T, V) in two other
    scopes is one holder. C's own holdings of (T, V) in other scopes are not holders and are kept.
13. The merge checks (7007, 8066, 7008) use the state before the row. On success the campaign
    holders' loss and the merge touch disjoint customers (campaign holders are neither C nor the
    LOYALTY survivor D), so their order does not matter; the model drops the campaign holdings first.
    A campaign holder may be left with no identifier (the SPEC has no invariant against it).
14. The 8066 test: the set of scopes of C's identifiers plus S, intersected with the set of scopes of
    D's identifiers, is not empty. Cards are not scoped and never clash.
15. The merge counter counts, per survivor id, the merges it survived in this run_model call; it starts
    at 0 in every call and is not inherited along chains (D surviving then becoming a victim of E does
    not add D's count to E's). 7008 when the count is already >= max_merges_per_survivor_per_run.
16. 7010 counts identifiers only: a customer holding cards but one identifier cannot remove it.
17. A card label not in the config (possible in a snapshot) maps to no status: not closed, not active.
    Relabelling a card C already holds checks no card limit (the SPEC lists none for that branch).
18. The unheld-card limits count C's cards whose label maps to ISSUED, ACTIVE or SUSPENDED; 3036
    compares the count in the row's series with the series maximum, 3039 all series with the org's.
19. Failed rows carry no warnings (errors.csv has no warning column), no outcome, and their
    resolved_customer_id only when the failure is at apply; id_value is set unless the check failed.
20. A replace's id_value is checked as an add's (format, blocked list): it enters the store. Its apply is
    the add's with step 2 turned round: C's other value W of T in S is taken away first, then V is checked
    and applied as add steps 3 to 5 on that state (so it may merge); a failure of V leaves W where it was.
    The result names W (`replaced_value`) when one was taken away; a replace with no value of T in S
    is an add, outcome and all. A row read from a call line names W itself (`replaces`, normalised as a
    remove's value): C must hold (S, T, W), else 7009 before anything else.
21. A row of a wide file whose lookup has a scope of its own (`lookup_source`, `lookup_account_id`: the job's
    [wide] lookup) finds its customer there instead of in its own scope, and its lookup_type is judged against
    that scope's source (any known type when the source is unknown, as for an unknown row source). A card
    lookup ignores every scope.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mobile_reference import read_with_package
from pipeline.config import ACTIVE_STATUSES, CLOSED_STATUSES, ID_TYPES, LINKABLE_STATUSES, MobileCountries, OrgConfig

CARD = "cardnumber"
MAX_CUSTOMER_ID = 2**63 - 1
ALREADY_PRESENT = {"mobile": 8071, "email": 8072, "externalId": 8073}


@dataclass
class ModelStore:
    customers: dict[int, tuple[str, int | None, str]]
    identifiers: set[tuple[int, str, str, str, str]]
    cards: dict[str, tuple[int, int | None, str]]

    def copy(self) -> ModelStore:
        return ModelStore(dict(self.customers), set(self.identifiers), dict(self.cards))

    def scopes_of(self, customer_id: int) -> set[tuple[str, str]]:
        return {(s, a) for (c, s, a, _, _) in self.identifiers if c == customer_id}

    def invariant_violations(self, config: OrgConfig | None = None) -> list[str]:
        """Every broken invariant of SPEC section 1; the account rule needs the config to be checked."""
        problems = []
        for cid, (status, merged_into, ctype) in self.customers.items():
            if status not in ("ACTIVE", "MERGED") or ctype not in ("LOYALTY", "CAMPAIGN"):
                problems.append(f"customer {cid}: bad status or type {status!r}/{ctype!r}")
            if (status == "MERGED") != (merged_into is not None):
                problems.append(f"customer {cid}: MERGED must go with merged_into")
            if merged_into is not None and (merged_into == cid or merged_into not in self.customers):
                problems.append(f"customer {cid}: merged_into {merged_into} names no other customer")
            seen, current = {cid}, cid
            while (state := self.customers.get(current)) is not None and state[0] == "MERGED":
                following = state[1]
                if following is None or following in seen or following not in self.customers:
                    problems.append(f"customer {cid}: merge chain does not end at an ACTIVE customer")
                    break
                current = following
                seen.add(current)
        identifiers = sorted(self.identifiers)  # a stable order for the messages
        in_scope: Counter = Counter((s, a, t, v) for (_, s, a, t, v) in identifiers)
        slots: Counter = Counter((c, s, a, t) for (c, s, a, t, _) in identifiers)
        problems += [f"identifier {key} held more than once" for key, n in in_scope.items() if n > 1]
        problems += [f"customer slot {key} holds several values" for key, n in slots.items() if n > 1]
        for c, s, a, t, v in identifiers:
            if self.customers.get(c, ("",))[0] != "ACTIVE":
                problems.append(f"identifier {(c, s, a, t, v)} not held by an ACTIVE customer")
            if config is not None and s in config.sources and (config.sources[s].kind == "single") != (a == ""):
                problems.append(f"identifier {(c, s, a, t, v)}: account_id does not fit the source")
        for number, (_, holder, _) in self.cards.items():
            if holder is not None and self.customers.get(holder, ("",))[0] != "ACTIVE":
                problems.append(f"card {number} held by {holder}, not an ACTIVE customer")
        return problems


@dataclass(frozen=True)
class RowResult:
    ok: bool
    outcome: str | None
    error_code: int | None
    error_field: str | None
    resolved_customer_id: int | None
    survivor_id: int | None
    victim_id: int | None
    warnings: tuple[int, ...]
    id_value: str | None
    replaced_value: str | None = None
    """The value W a succeeded replace took away (None for every other row)."""


@dataclass(frozen=True)
class CheckedRow:
    action: str
    source: str
    account_id: str
    customer_id: int | None
    lookup_type: str
    lookup_value: str
    id_type: str
    id_value: str
    series_id: int | None
    status_label: str
    replaces: str | None = None
    """A replace row of a call line: the value W the line removes (normalised), which C must hold."""
    lookup_scope: tuple[str, str] | None = None
    """A wide file's lookup in a scope of its own (lookup_source, lookup_account_id); None: the row's scope."""

    @property
    def scope(self) -> tuple[str, str]:
        return (self.source, self.account_id)


class RowFailed(Exception):
    def __init__(self, code: int, field: str):
        super().__init__(code, field)
        self.code, self.field = code, field


def normalise(id_type: str, value: str, countries: MobileCountries | None = None) -> str:
    """SPEC section 2: applied to a trimmed value before any comparison; mobiles with `[mobile]` too."""
    if id_type == "email":
        return value.lower()
    if id_type == "mobile":
        if countries is not None and (read := read_with_package(value, countries)) is not None:
            return read
        value = "".join(ch for ch in value if not (ch.isspace() or ch in "-.()"))
        if value.startswith("+"):
            return value[1:]
        if value.startswith("00"):
            return value[2:]
    return value


def decimal(text: str) -> int | None:
    """A plain decimal integer ('-' and leading zeros allowed), None for any other text.

    Values of more than 20 significant digits also give None: they are out of every range used here,
    and int() refuses very long digit strings.
    """
    match = re.fullmatch(r"(-?)0*([0-9]+)", text)
    if match is None or len(match[2]) > 20:
        return None
    return int(match[1] + match[2])


INVISIBLE = (
    set(range(0x20))
    | set(range(0x7F, 0xA0))
    | {0xAD, 0x61C, 0x180E, 0xFEFF}
    | set(range(0x200B, 0x2010))
    | set(range(0x202A, 0x202F))
    | set(range(0x2060, 0x2065))
    | set(range(0x2066, 0x2070))
    | set(range(0xFFF9, 0xFFFC))
)


def has_invisible(value: str) -> bool:
    """Project decision (README): control and invisible format characters make email/externalId malformed."""
    return any(ord(ch) in INVISIBLE for ch in value)


def is_lookalike(value: str) -> bool:
    """Project decision (README): an email mixing ASCII letters with Greek or Cyrillic letters is malformed."""
    ascii_letter = any("a" <= ch.lower() <= "z" and ch.isascii() for ch in value)
    return ascii_letter and any(0x370 <= ord(ch) <= 0x52F for ch in value)


def format_error(id_type: str, value: str, mobile_valid: bool | None = None) -> int | None:
    """The code for a normalised non-card add value that may not enter the store, else None.

    With `[mobile]`, `mobile_valid` says whether the written mobile had a valid reading."""
    if id_type == "email":
        ok = len(value) <= 254 and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None
        return None if ok and not has_invisible(value) and not is_lookalike(value) else 8055
    if id_type == "mobile":
        if mobile_valid is not None:
            return None if mobile_valid else 8056
        return None if re.fullmatch(r"[0-9]{8,15}", value) else 8056
    if id_type == "externalId":
        ok = 1 <= len(value) <= 64 and not any(ch.isspace() for ch in value) and not has_invisible(value)
        return None if ok else 8064
    if 1 <= len(value) <= 128 and not any(unicodedata.category(ch) == "Cc" for ch in value):
        return None
    return 7001


def fits_series(number: str, prefix: str, suffix: str, digits: int | None) -> bool:
    if len(number) < len(prefix) + len(suffix) or not number.startswith(prefix) or not number.endswith(suffix):
        return False
    middle = number[len(prefix) : len(number) - len(suffix)]
    return digits is None or re.fullmatch(f"[0-9]{{{digits}}}", middle) is not None


def is_blocked(config: OrgConfig, id_type: str, value: str) -> bool:
    blocked = config.blocked_values.get(id_type)
    if blocked is None:
        return False
    return value in blocked.exact or any(re.fullmatch(p, value) for p in blocked.patterns)


def check_row(raw: dict[str, str | None], config: OrgConfig) -> CheckedRow:
    """Step 1: the row on its own, fields in the SPEC's order; raises RowFailed for the first problem."""
    f = {
        name: (raw.get(name) or "").strip()
        for name in (
            "customer_id",
            "lookup_type",
            "lookup_value",
            "source",
            "account_id",
            "action",
            "id_type",
            "id_value",
            "series_id",
            "status_label",
        )
    }

    action = f["action"].lower()
    if not action:
        raise RowFailed(7001, "action")
    if action not in ("add", "remove", "replace"):
        raise RowFailed(7002, "action")

    if not f["source"]:
        raise RowFailed(7001, "source")
    source = config.sources.get(f["source"])
    if source is None:
        raise RowFailed(8003, "source")

    if source.kind == "multi" and not f["account_id"]:
        raise RowFailed(8045, "account_id")
    if f["account_id"] and f["account_id"] not in source.accounts:
        raise RowFailed(8127, "account_id")  # also: any account_id given for a single-account source

    by_id = bool(f["customer_id"]) and not f["lookup_type"] and not f["lookup_value"]
    by_lookup = not f["customer_id"] and bool(f["lookup_type"]) and bool(f["lookup_value"])
    if not (by_id or by_lookup):
        raise RowFailed(7003, "customer_id")
    customer_id = None
    if by_id:
        customer_id = decimal(f["customer_id"])
        if f["customer_id"].startswith("-") or customer_id is None or not 1 <= customer_id <= MAX_CUSTOMER_ID:
            raise RowFailed(7001, "customer_id")
    lookup_source = (raw.get("lookup_source") or "").strip()
    lookup_scope = (lookup_source, (raw.get("lookup_account_id") or "").strip()) if lookup_source else None
    if lookup_scope is not None and lookup_scope[0] not in config.sources:
        lookup_types = ID_TYPES  # interpretation 21: a lookup scope's source unknown to the config
    else:
        lookup_types = config.sources[lookup_scope[0]].id_types if lookup_scope else source.id_types
    if by_lookup and f["lookup_type"] not in lookup_types and f["lookup_type"] != CARD:
        raise RowFailed(7004, "lookup_type")

    id_type = f["id_type"]
    if not id_type:
        raise RowFailed(7001, "id_type")
    if id_type not in source.id_types and id_type != CARD:
        raise RowFailed(7004, "id_type")
    if action == "replace" and id_type == CARD:
        raise RowFailed(7002, "action")

    series_text = f["series_id"]
    series_number = decimal(series_text)
    series = None if series_number is None else config.card_series.get(series_number)
    card_add = action == "add" and id_type == CARD

    if not f["id_value"]:
        raise RowFailed(7001, "id_value")
    id_value = normalise(id_type, f["id_value"], config.mobile)
    mobile_valid = None
    if config.mobile is not None and id_type == "mobile":
        mobile_valid = read_with_package(f["id_value"], config.mobile) is not None
    if action in ("add", "replace"):
        if card_add:
            if series is not None and not fits_series(id_value, series.prefix, series.suffix, series.digits):
                raise RowFailed(7001, "id_value")
        elif (code := format_error(id_type, id_value, mobile_valid)) is not None:
            raise RowFailed(code, "id_value")
        if is_blocked(config, id_type, id_value):
            raise RowFailed(7005, "id_value")

    if (series_text or card_add) and series is None:
        raise RowFailed(3004, "series_id")

    label = f["status_label"]
    if (card_add and not label) or (label and label not in config.card_labels):
        raise RowFailed(8086, "status_label")
    if card_add and config.card_labels[label] not in LINKABLE_STATUSES:
        raise RowFailed(7011, "status_label")
    if action == "remove" and id_type == CARD and label and config.card_labels[label] != "NOT_ISSUED":
        raise RowFailed(7011, "status_label")

    lookup_value = normalise(f["lookup_type"], f["lookup_value"], config.mobile) if by_lookup else ""
    replaces = raw.get("replaces")
    if replaces is not None and action == "replace":
        replaces = normalise(id_type, replaces.strip(), config.mobile)
    return CheckedRow(
        action,
        source.name,
        f["account_id"],
        customer_id,
        f["lookup_type"] if by_lookup else "",
        lookup_value,
        id_type,
        id_value,
        series.id if series else None,
        label,
        replaces if action == "replace" else None,
        lookup_scope if by_lookup else None,
    )


def resolve_target(store: ModelStore, row: CheckedRow) -> tuple[int, list[int]]:
    """Step 2: the ACTIVE target customer and the resolve warnings; raises RowFailed(8015)."""
    if row.customer_id is not None:
        if row.customer_id not in store.customers:
            raise RowFailed(8015, "customer_id")
        target, warnings = row.customer_id, []
        while store.customers[target][0] == "MERGED":
            survivor = store.customers[target][1]
            assert survivor is not None, "SPEC section 1: MERGED goes with merged_into"
            target, warnings = survivor, [91009]
        return target, warnings
    if row.lookup_type == CARD:
        card = store.cards.get(row.lookup_value)
        holders = [card[1]] if card is not None and card[1] is not None else []
    else:
        wanted = (*(row.lookup_scope or row.scope), row.lookup_type, row.lookup_value)
        holders = [c for (c, *key) in store.identifiers if tuple(key) == wanted and store.customers[c][0] == "ACTIVE"]
    if not holders:
        raise RowFailed(8015, "lookup_value")
    return holders[0], []


@dataclass(frozen=True)
class Applied:
    outcome: str
    warnings: tuple[int, ...] = ()
    survivor_id: int | None = None
    victim_id: int | None = None
    replaced: str | None = None


def add_identifier(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig, merges: Counter) -> Applied:
    s, t, v = row.scope, row.id_type, row.id_value
    if (c, *s, t, v) in store.identifiers:
        return Applied("unchanged", (ALREADY_PRESENT.get(t, 8070),))
    if any((ic, is_, ia, it) == (c, *s, t) for (ic, is_, ia, it, _) in store.identifiers):
        raise RowFailed(7006, "id_value")
    return _gain(store, row, c, config, merges)


def replace_identifier(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig, merges: Counter) -> Applied:
    """C's value of T in S becomes V: the other value W goes, then V is checked and added as add steps 3 to 5."""
    s, t, v = row.scope, row.id_type, row.id_value
    if row.replaces is not None and (c, *s, t, row.replaces) not in store.identifiers:
        raise RowFailed(7009, "id_value")
    if (c, *s, t, v) in store.identifiers:
        return Applied("unchanged", (ALREADY_PRESENT.get(t, 8070),))
    held = {i for i in store.identifiers if i[:4] == (c, *s, t)}  # W, or nothing: then exactly an add
    trial = store.copy()
    trial.identifiers -= held
    applied = _gain(trial, row, c, config, merges)  # a failure of V raises: `store` still holds W
    store.customers, store.identifiers, store.cards = trial.customers, trial.identifiers, trial.cards
    return dataclasses.replace(applied, replaced=next(iter(held))[4] if held else None)


def _gain(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig, merges: Counter) -> Applied:
    """Add steps 3 to 5: C takes (S, T, V) from the holders, or merges into its one LOYALTY holder elsewhere."""
    s, t, v = row.scope, row.id_type, row.id_value
    holdings = [(hc, (hs, ha)) for (hc, hs, ha, ht, hv) in store.identifiers if (ht, hv) == (t, v) and hc != c]
    kind = {hc: store.customers[hc][2] for hc, _ in holdings}
    if any(kind[hc] == "LOYALTY" and scope == s for hc, scope in holdings):
        raise RowFailed(8008, "id_value")
    campaign = {hc for hc in kind if kind[hc] == "CAMPAIGN"}
    if campaign and not config.campaign_identifier_reuse:
        raise RowFailed(8068, "id_value")
    loyalty = {hc for hc in kind if kind[hc] == "LOYALTY"}
    if len(loyalty) >= 2:
        raise RowFailed(8074, "id_value")
    survivor = next(iter(loyalty)) if loyalty else None
    if survivor is not None:
        if not config.merge_enabled:
            raise RowFailed(7007, "id_value")
        if (store.scopes_of(c) | {s}) & store.scopes_of(survivor):
            raise RowFailed(8066, "id_value")
        if merges[survivor] >= config.max_merges_per_survivor_per_run:
            raise RowFailed(7008, "id_value")

    warnings = [8068] if campaign else []
    store.identifiers -= {i for i in store.identifiers if i[0] in campaign and (i[3], i[4]) == (t, v)}
    if survivor is None:
        store.identifiers.add((c, *s, t, v))
        return Applied("applied", tuple(warnings))
    store.identifiers = {(survivor if ic == c else ic, s, a, t, v) for (ic, s, a, t, v) in store.identifiers}
    store.cards = {n: (ser, survivor if h == c else h, lab) for n, (ser, h, lab) in store.cards.items()}
    store.customers[c] = ("MERGED", survivor, store.customers[c][2])
    store.identifiers.add((survivor, *s, t, v))
    merges[survivor] += 1
    return Applied("merged", tuple(sorted([*warnings, 8051])), survivor_id=survivor, victim_id=c)


def remove_identifier(store: ModelStore, row: CheckedRow, c: int) -> Applied:
    identifier = (c, *row.scope, row.id_type, row.id_value)
    if identifier not in store.identifiers:
        raise RowFailed(7009, "id_value")
    if sum(1 for i in store.identifiers if i[0] == c) == 1:
        raise RowFailed(7010, "id_value")
    store.identifiers.remove(identifier)
    return Applied("applied")


def active_cards(store: ModelStore, config: OrgConfig, c: int, series_id: int | None = None) -> int:
    return sum(
        1
        for (ser, holder, label) in store.cards.values()
        if holder == c and config.card_labels.get(label) in ACTIVE_STATUSES and (series_id is None or ser == series_id)
    )


def add_card(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig) -> Applied:
    card = store.cards.get(row.id_value)
    if card is None:
        raise RowFailed(3010, "id_value")
    series_id, holder, label = card
    if series_id != row.series_id:
        raise RowFailed(3000, "id_value")
    if config.card_labels.get(label) in CLOSED_STATUSES:
        raise RowFailed(8087, "id_value")
    if holder == c and label == row.status_label:
        return Applied("unchanged", (3012,))
    if holder is not None and holder != c:
        raise RowFailed(3027, "id_value")
    if holder is None:
        if active_cards(store, config, c, series_id) >= config.card_series[series_id].max_active_per_customer:
            raise RowFailed(3036, "id_value")
        if active_cards(store, config, c) >= config.max_active_cards_per_customer:
            raise RowFailed(3039, "id_value")
    store.cards[row.id_value] = (series_id, c, row.status_label)
    return Applied("applied")


def remove_card(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig) -> Applied:
    card = store.cards.get(row.id_value)
    if card is None:
        raise RowFailed(3010, "id_value")
    series_id, holder, label = card
    if config.card_labels.get(label) in CLOSED_STATUSES:
        raise RowFailed(8087, "id_value")
    if holder != c:
        raise RowFailed(3031, "id_value")
    store.cards[row.id_value] = (series_id, None, row.status_label or config.delink_label)
    return Applied("applied")


def apply_row(store: ModelStore, row: CheckedRow, c: int, config: OrgConfig, merges: Counter) -> Applied:
    """Step 3: changes the store only when it returns (a RowFailed leaves it untouched)."""
    if row.id_type == CARD:
        return add_card(store, row, c, config) if row.action == "add" else remove_card(store, row, c, config)
    if row.action == "add":
        return add_identifier(store, row, c, config, merges)
    if row.action == "replace":
        return replace_identifier(store, row, c, config, merges)
    return remove_identifier(store, row, c)


RowObserver = Callable[[int, CheckedRow, ModelStore, ModelStore, Applied], None]
"""Told of each succeeded row: its index, the checked row, the store before it (a copy) and after it."""


def run_model(
    store: ModelStore, rows: list[dict[str, str | None]], config: OrgConfig, on_row: RowObserver | None = None
) -> list[RowResult]:
    """Apply the rows one at a time, in order, to `store` (mutated); one result per row.

    `on_row`, when given, sees each succeeded row with the store before and after it (explain's tests
    derive the row's changes from that difference, independently of the engine).
    """
    merges: Counter = Counter()  # merges survived in this run, per survivor id
    results = []
    for index, raw in enumerate(rows):
        row = target = None
        before = store.copy() if on_row is not None else None
        try:
            row = check_row(raw, config)
            target, resolve_warnings = resolve_target(store, row)
            applied = apply_row(store, row, target, config, merges)
            if on_row is not None and before is not None:
                on_row(index, row, before, store, applied)
        except RowFailed as failure:
            results.append(
                RowResult(
                    False, None, failure.code, failure.field, target, None, None, (), row.id_value if row else None
                )
            )
            continue
        results.append(
            RowResult(
                True,
                applied.outcome,
                None,
                None,
                target,
                applied.survivor_id,
                applied.victim_id,
                tuple(sorted(set(applied.warnings) | set(resolve_warnings))),
                row.id_value,
                applied.replaced,
            )
        )
    return results


def _read_table(folder: Path, name: str) -> pl.DataFrame:
    for candidate in (folder / f"{name}.parquet", folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.exists():
            if candidate.suffix == ".parquet":
                return pl.read_parquet(candidate).cast(pl.String)
            return pl.read_csv(candidate, infer_schema=False)
    raise FileNotFoundError(f"{folder}: no {name}.csv or {name}.parquet")


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _optional_int(value: object) -> int | None:
    return int(_text(value)) if _text(value) else None


def store_from_snapshot_dir(path: Path | str, countries: MobileCountries | None = None) -> ModelStore:
    """A snapshot folder read like `store init`: values trimmed, identifier values normalised
    (mobiles with `countries`, as `store init --config` reads them with the org's `[mobile]`).

    Raises ValueError when normalisation makes two identifier rows equal (init refuses those too).
    """
    folder = Path(path)
    customers = {
        int(_text(r["customer_id"])): (_text(r["status"]), _optional_int(r["merged_into"]), _text(r["customer_type"]))
        for r in _read_table(folder, "customers").iter_rows(named=True)
    }
    identifiers: set[tuple[int, str, str, str, str]] = set()
    for r in _read_table(folder, "identifiers").iter_rows(named=True):
        id_type = _text(r["id_type"])
        identifier = (
            int(_text(r["customer_id"])),
            _text(r["source"]),
            _text(r["account_id"]),
            id_type,
            normalise(id_type, _text(r["id_value"]), countries),
        )
        if identifier in identifiers:
            raise ValueError(f"{folder}: identifier {identifier} appears twice after normalisation")
        identifiers.add(identifier)
    cards = {
        _text(r["card_number"]): (int(_text(r["series_id"])), _optional_int(r["customer_id"]), _text(r["status_label"]))
        for r in _read_table(folder, "cards").iter_rows(named=True)
    }
    return ModelStore(customers, identifiers, cards)


FRAME_KEYS = {
    "customers": ["customer_id"],
    "identifiers": ["source", "account_id", "id_type", "id_value"],
    "cards": ["card_number"],
}
"""The unique key of each table; model_store_to_frames sorts by it, and engine frames should be too."""


def model_store_to_frames(store: ModelStore) -> dict[str, pl.DataFrame]:
    """The store as the three SPEC section 1 tables, sorted by their keys, for comparison with the engine."""
    customers = pl.DataFrame(
        [(cid, status, merged_into, ctype) for cid, (status, merged_into, ctype) in store.customers.items()],
        schema={"customer_id": pl.Int64, "status": pl.String, "merged_into": pl.Int64, "customer_type": pl.String},
        orient="row",
    )
    identifiers = pl.DataFrame(
        sorted(store.identifiers),
        schema={
            "customer_id": pl.Int64,
            "source": pl.String,
            "account_id": pl.String,
            "id_type": pl.String,
            "id_value": pl.String,
        },
        orient="row",
    )
    cards = pl.DataFrame(
        [(number, ser, holder, label) for number, (ser, holder, label) in store.cards.items()],
        schema={"card_number": pl.String, "series_id": pl.Int32, "customer_id": pl.Int64, "status_label": pl.String},
        orient="row",
    )
    frames = {"customers": customers, "identifiers": identifiers, "cards": cards}
    return {name: frame.sort(FRAME_KEYS[name]) for name, frame in frames.items()}
