"""A changeIdentifier call as the pipeline reads it, in one place: a call body (a line of an NDJSON request file,
a body posted to the emulator) into request rows, and a line of calls.ndjson into a typed `Call` for push.

No data library is imported here: push reads its plan with it and must start sending without loading one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pipeline.errors import NotACallBody
from pipeline.input.columns import REPLACES_COLUMN

_CALL_KEYS = {
    "customer_id": "customer_id",
    "customerId": "customer_id",
    "source": "source",
    "account_id": "account_id",
    "accountId": "account_id",
    "row_id": "row_id",
}
_PLAN_KEYS = frozenset({"call_id", "file", "row_number", "after", "expect"})
"""Keys of calls.ndjson that are not part of the call: read back as input, they are ignored."""
_ITEM_KEYS = {"type": "id_type", "value": "id_value", "seriesId": "series_id", "statusLabel": "status_label"}
_ITEM_COLUMNS = frozenset(("series_id", "status_label"))
"""An item's fields a replace row takes from the remove item when the add item does not give them."""
_CARD = "cardnumber"

T = TypeVar("T")


@dataclass(frozen=True)
class Expect:
    """The answer a run expects for a call: its outcome, its warning codes and, for a merge, the survivor."""

    outcome: str
    warnings: tuple[int, ...]
    survivor_id: int | None = None


@dataclass(frozen=True)
class Call:
    """One line of calls.ndjson (delivery/plan.py writes them): a call of one item addressed to the customer the
    run resolved, the row it comes from, the calls it waits for (`after`) and the answer the run expects."""

    call_id: str
    file: str
    row_number: int
    row_id: str | None
    customer_id: int
    source: str
    account_id: str | None
    body: dict[str, list[dict[str, Any]]]
    """The request body as the platform takes it, {"add" or "remove": [item]}, or a replace's {"remove": [W],
    "add": [V]}; sent exactly as it was read."""
    after: tuple[str, ...]
    expect: Expect

    @property
    def change(self) -> tuple[str, dict[str, Any]]:
        """The call's action and its item: for a replace, `replace` and the item it adds (`replaced` is the other)."""
        if self.replaced is not None:
            return "replace", self.body["add"][0]
        ((action, (item,)),) = self.body.items()
        return action, item

    @property
    def replaced(self) -> dict[str, Any] | None:
        """The item a replace removes (W), or None for a call of one item."""
        return self.body["remove"][0] if is_replace_body(self.body) else None

    def to_dict(self) -> dict[str, Any]:
        """The call as its line of calls.ndjson holds it, keys in the line's order."""
        expect: dict[str, Any] = {"outcome": self.expect.outcome, "warnings": list(self.expect.warnings)}
        if self.expect.survivor_id is not None:
            expect["survivor_id"] = self.expect.survivor_id
        return {
            "call_id": self.call_id,
            "file": self.file,
            "row_number": self.row_number,
            "row_id": self.row_id,
            "customer_id": self.customer_id,
            "source": self.source,
            "account_id": self.account_id,
            "body": self.body,
            "after": list(self.after),
            "expect": expect,
        }


def parse_call(line: str | bytes) -> Call:
    """A line of calls.ndjson as a Call; NotACallBody saying what is wrong.

    The call itself is read by `call_rows`, as the NDJSON input and the emulator read it (so push sends nothing
    they would refuse); the plan's keys around it must be there with their types.
    """
    try:
        value = json.loads(line)
    except ValueError as error:
        raise NotACallBody(f"invalid JSON ({error})") from None
    call_rows(value)
    fields = cast(dict[str, Any], value)  # call_rows refuses anything but an object
    body, after, expect = fields.get("body"), fields.get("after"), fields.get("expect")
    if not isinstance(body, dict):
        raise NotACallBody("'body' must be an object")
    if not isinstance(after, list) or not all(type(a) is str for a in after):
        raise NotACallBody("'after' must be a list of call ids")
    if not isinstance(expect, dict):
        raise NotACallBody("'expect' must be an object")
    warnings = expect.get("warnings")
    if not isinstance(warnings, list) or not all(type(w) is int for w in warnings):
        raise NotACallBody("'expect' 'warnings' must be a list of codes")
    return Call(
        call_id=_required(fields, "call_id", str),
        file=_required(fields, "file", str),
        row_number=_required(fields, "row_number", int),
        row_id=_optional(fields, "row_id", str),
        customer_id=_required(fields, "customer_id", int),
        source=_required(fields, "source", str),
        account_id=_optional(fields, "account_id", str),
        body=body,
        after=tuple(after),
        expect=Expect(
            outcome=_required(expect, "outcome", str),
            warnings=tuple(warnings),
            survivor_id=_optional(expect, "survivor_id", int),
        ),
    )


def _optional(fields: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    value = fields.get(key)
    if value is not None and type(value) is not kind:
        raise NotACallBody(f"'{key}' must be {'a string' if kind is str else 'an integer'} or null")
    return value


def _required(fields: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = _optional(fields, key, kind)
    if value is None:
        raise NotACallBody(f"no '{key}'")
    return value


def is_replace_body(body: Mapping[str, Any]) -> bool:
    """Whether a call's lists are one remove and one add of the same identifier type (not a card): a replace."""
    removes, adds = body.get("remove"), body.get("add")
    if not (isinstance(removes, list) and isinstance(adds, list) and len(removes) == len(adds) == 1):
        return False
    removed, added = removes[0], adds[0]
    if not (isinstance(removed, dict) and isinstance(added, dict)):
        return False
    kind, other = added.get("type"), removed.get("type")
    return isinstance(kind, str) and isinstance(other, str) and other.strip() == kind.strip() != _CARD


def call_rows(call: object) -> list[dict[str, str | None]]:
    """The request rows of one call body (removes first, then adds, each in list order), as raw text.

    A body of exactly one remove and one add of the same identifier type (not a card) is one `replace` row: the
    added item's fields, with the removed value in REPLACES_COLUMN (a series or label only the remove item gives
    is kept, so that it is still checked). The NDJSON reader, the emulator and push (through parse_call) all
    read calls with it; raises NotACallBody.
    """
    refuse = NotACallBody
    if not isinstance(call, dict):
        raise refuse(f"a JSON {type(call).__name__}, expected an object")
    head: dict[str, str | None] = {}
    lists: dict[str, object] = {}
    for key, value in call.items():
        if key in _CALL_KEYS:
            column = _CALL_KEYS[key]
            if column in head:
                raise refuse(f"'{key}' repeats '{column}'")
            head[column] = _call_text(value, key)
        elif key in ("add", "remove"):
            lists[key] = value
        elif key == "body":
            if not isinstance(value, dict) or set(value) - {"add", "remove"}:
                raise refuse("'body' must be an object with 'add' and/or 'remove' lists only")
            for action, items in value.items():
                if action in lists:
                    raise refuse(f"'{action}' is given both inside and outside 'body'")
                lists[action] = items
        elif key not in _PLAN_KEYS:
            raise refuse(f"unknown key '{key}'")
    if "customer_id" not in head:
        raise refuse("no customer_id (or customerId)")
    rows: list[dict[str, str | None]] = []
    for action in ("remove", "add"):
        items = lists.get(action, [])
        if not isinstance(items, list):
            raise refuse(f"'{action}' must be a list of items")
        for position, item in enumerate(items, 1):
            where = f"{action} item {position}"
            if not isinstance(item, dict):
                raise refuse(f"{where} is not an object")
            unknown = sorted(set(item) - set(_ITEM_KEYS))
            if unknown:
                raise refuse(f"{where} has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
            if "type" not in item or "value" not in item:
                raise refuse(f"{where} needs 'type' and 'value'")
            row = dict(head, action=action)
            for key, column in _ITEM_KEYS.items():
                row[column] = _call_text(item.get(key), f"{where} '{key}'")
            rows.append(row)
    if not rows:
        raise refuse("no 'add' or 'remove' item")
    if is_replace_body(lists):
        removed, added = rows
        replace = dict(added, action="replace")
        replace[REPLACES_COLUMN] = removed["id_value"]
        for column in _ITEM_COLUMNS:
            replace[column] = added[column] if added[column] is not None else removed[column]
        return [replace]
    return rows


def _call_text(value: object, where: str) -> str | None:
    """A call field as request text: strings as given, integers in decimal, null as absent."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise NotACallBody(f"{where} must be a string or an integer, not {json.dumps(value)[:40]}")
