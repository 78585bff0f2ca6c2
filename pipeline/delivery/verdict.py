"""What an answer means for a call: `judge` reads a changeIdentifier answer against the call's `expect` (body
codes first, HTTP status second), `in_place` reads a customer's read-back for the call's change. Never a guess:
an answer that does not prove the state is settled by another request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import CARD
from pipeline.delivery import causes
from pipeline.delivery.journal import Outcome
from pipeline.delivery.platform import (
    ALREADY_PRESENT_CODES,
    CUSTOMER_BUSY_CODE,
    MERGED_CODE,
    RETRY_AFTER_HEADER,
    SEARCH_BUSY_CODE,
    THROTTLED_CODE,
    TOKEN_EXPIRED_CODE,
)
from pipeline.input.calls import Call, Expect

RETRY_AFTER_CAP = 60.0
"""A Retry-After longer than this is cut to it: a platform asking for a day must not stall the push a day."""


@dataclass(frozen=True)
class Verdict:
    """What an answer means for a call: a final outcome, or the next step (retry, settle, renew)."""

    step: str  # "final" | "retry" | "settle" | "renew"
    outcome: Outcome | None = None
    cause: str | None = None
    """Why the call goes on, in words (causes.py): counted among the retries."""
    delay: float = 0.0
    uncertain: bool = False
    throttle: bool = False


def answer_codes(body: Any, key: str) -> list[int]:
    items = body.get(key) if isinstance(body, dict) else None
    return [int(i["code"]) for i in items if isinstance(i, dict) and "code" in i] if isinstance(items, list) else []


def judge(expect: Expect, status: int | None, body: Any, uncertain: bool, headers: Mapping[str, str]) -> Verdict:
    """Classify one answer of a changeIdentifier call against its `expect` (body codes first, HTTP status second)."""
    errors, warnings = answer_codes(body, "errors"), answer_codes(body, "warnings")
    if status is None:
        return Verdict("settle", cause=causes.CONNECTION_LOST, uncertain=True)
    if status in (401, TOKEN_EXPIRED_CODE) or TOKEN_EXPIRED_CODE in errors:
        return Verdict("renew", cause=causes.TOKEN_RENEWED)
    if status == 429 or THROTTLED_CODE in errors:
        return Verdict("retry", cause=causes.THROTTLED, delay=retry_after(headers), throttle=True)
    if CUSTOMER_BUSY_CODE in errors or status == CUSTOMER_BUSY_CODE:
        return Verdict("retry", cause=causes.CUSTOMER_BUSY)
    if SEARCH_BUSY_CODE in errors or status == SEARCH_BUSY_CODE:
        return Verdict("retry", cause=causes.PLATFORM_BUSY)
    if status >= 500:
        return Verdict("retry", cause=causes.SERVER_ERROR, uncertain=True)
    if errors or not 200 <= status < 300:
        # an earlier attempt may have applied the change (a remove retried answers 7009): read to know; an
        # answer outside 2xx without the platform's codes (a proxy's 404) is no success either
        return Verdict("settle", cause=causes.ERROR_AFTER_UNCERTAIN) if uncertain else Verdict("final", "drift")
    got = "merged" if MERGED_CODE in warnings else "unchanged" if ALREADY_PRESENT_CODES & set(warnings) else "applied"
    created = body.get("createdId") if isinstance(body, dict) else None
    if (
        got == expect.outcome
        and sorted(warnings) == sorted(expect.warnings)
        and (got != "merged" or created == expect.survivor_id)
    ):
        return Verdict("final", "confirmed")
    if uncertain and got == "unchanged":
        return Verdict("final", "already_applied")
    return Verdict("final", "drift")


def retry_after(headers: Mapping[str, str]) -> float:
    """An answer's Retry-After in seconds (1 if absent or unreadable), capped at RETRY_AFTER_CAP."""
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(headers.get(RETRY_AFTER_HEADER, "1"))))
    except ValueError:
        return 1.0


def in_place(call: Call, status: int | None, body: Any) -> bool | None:
    """Whether a customer read-back shows the call's change in place (None: the read does not tell)."""
    if status != 200 or not isinstance(body, dict):
        return None
    action, item = call.change
    if call.expect.outcome == "merged":
        return body.get("status") == "MERGED" and body.get("mergedInto") == call.expect.survivor_id
    if body.get("status") == "MERGED":
        return None
    if item["type"] == CARD:
        held = {c.get("cardNumber"): c.get("statusLabel") for c in body.get("cards", [])}
        return held.get(item["value"]) == item.get("statusLabel") if action == "add" else item["value"] not in held
    scope = (call.source, call.account_id)

    def holds(held: dict[str, Any]) -> bool:
        return any(
            (p.get("source"), p.get("accountId")) == scope
            and {"type": held["type"], "value": held["value"]} in p.get("identifiers", [])
            for p in body.get("profiles", [])
        )

    if action == "replace":  # the change in place: V held, W gone
        replaced = call.replaced
        return holds(item) and replaced is not None and not holds(replaced)
    return holds(item) if action == "add" else not holds(item)
