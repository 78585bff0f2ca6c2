"""The platform's API as push and the emulator both speak it, spelled once: its paths, headers, answer codes, a
code's shape in an answer and the basic credential (reference/platform-api.md). No data library: push imports it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

TOKEN_PATH = "/v3/oauth/token/generate"
"""POST {key, secret}: an OAuth token, {"data": {"accessToken", "ttlSeconds"}}."""
CUSTOMERS_PATH = "/v2/customers"
LOOKUP_PATH = f"{CUSTOMERS_PATH}/lookup"
"""GET ?source, accountId, identifierName, identifierValue: the customer holding an identifier in a scope."""
CHANGE_IDENTIFIER = "changeIdentifier"
"""POST {CUSTOMERS_PATH}/{id}/changeIdentifier?source[&accountId]: one call, its body {"add" or "remove": [item]}."""

TOKEN_HEADER = "X-CAP-API-OAUTH-TOKEN"
"""A request's OAuth token."""
REQUEST_ID_HEADER = "X-Cap-Requestid"
"""The platform's id of a request, on its answer."""
RETRY_AFTER_HEADER = "Retry-After"
"""Seconds to wait, on a throttled answer (429)."""

ALREADY_PRESENT_CODES = frozenset({8070, 8071, 8072, 8073, 3012})
"""Warnings of a call that changed nothing: the change was already in place."""
MERGED_CODE = 8051
"""Warning of a call that merged its customer into the identifier's holder."""
VICTIM_CODE = 8069
"""Warning of a read of a merged customer (with FOLLOWED_CODE)."""
FOLLOWED_CODE = 91009
"""Warning: a merged customer was addressed and its survivor used."""
NOT_FOUND_CODE = 8015
INVALID_REQUEST_CODE = 7001
TOKEN_EXPIRED_CODE = 498
"""An OAuth token no longer accepted (HTTP 401 or 498): renew it and send again."""
THROTTLED_CODE = 517
"""The rate limit was reached (HTTP 429): wait for Retry-After."""
CUSTOMER_BUSY_CODE = 521
"""Another call for the same customer is being answered: send again later."""
SEARCH_BUSY_CODE = 461
"""The platform's search is busy: send again later."""
MULTIPLE_CARDS_CODE = 3037
"""A call links or delinks more than one card."""

Endpoint = Literal["token", "lookup", "customer", "change"]


@dataclass(frozen=True)
class Route:
    """The endpoint a request addresses (None: no such endpoint) and the customer id in its path, if any."""

    endpoint: Endpoint | None
    customer_id: int | None = None


def route(method: str, path: str) -> Route:
    """Which endpoint a request's method and path (without its query) address."""
    parts, token, customers = _segments(path), _segments(TOKEN_PATH), _segments(CUSTOMERS_PATH)
    if method == "POST" and parts[:2] == token[:2] and parts[-1] == token[-1]:
        return Route("token")
    if method == "GET" and parts == _segments(LOOKUP_PATH):
        return Route("lookup")
    customer_id = int(parts[2]) if len(parts) >= 3 and parts[:2] == customers and parts[2].isdigit() else None
    if method == "GET" and customer_id is not None and len(parts) == 3:
        return Route("customer", customer_id)
    if method == "POST" and customer_id is not None and parts[3:] == [CHANGE_IDENTIFIER]:
        return Route("change", customer_id)
    return Route(None, customer_id)


def _segments(path: str) -> list[str]:
    return path.strip("/").split("/")


def change_path(customer_id: int, source: str, account_id: str | None) -> str:
    """The path and query of a changeIdentifier call (accountId only when the source has accounts)."""
    query = {"source": source}
    if account_id:
        query["accountId"] = account_id
    return f"{CUSTOMERS_PATH}/{customer_id}/{CHANGE_IDENTIFIER}?{urlencode(query, quote_via=quote)}"


def customer_path(customer_id: int) -> str:
    """The path and query of a customer's read: every profile (source=ALL) and card."""
    return f"{CUSTOMERS_PATH}/{customer_id}?source=ALL"


def basic_authorization(user: str, password: str) -> str:
    """The Authorization header of basic authentication: the user and the MD5 of the password, in base64."""
    digest = hashlib.md5(password.encode("utf-8"), usedforsecurity=False).hexdigest()
    return "Basic " + base64.b64encode(f"{user}:{digest}".encode()).decode("ascii")


def code_entry(code: int, message: str) -> dict[str, Any]:
    """One code of an answer's `errors` or `warnings` list, in the platform's shape."""
    return {"status": False, "code": code, "message": message}
