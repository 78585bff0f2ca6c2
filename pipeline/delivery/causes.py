"""Why a request of a push did not end its call, in the words the journal, push-summary.json and the console
use, spelled once: every retry is counted under one of these, and a request that got no answer is classified
here as never sent (it cannot have reached the platform: retried as a plain retry) or sent (it may have
reached the platform: settled by proof, never by a guess).

urllib3 2.x with retries=False raises the error of the one attempt itself: NameResolutionError (a subclass of
NewConnectionError) when the name does not resolve, NewConnectionError when the connection is refused or the
host unreachable, ConnectTimeoutError when the connection is not made in time. All three come before a byte
of the request left. A ReadTimeoutError, or a connection lost (ProtocolError, an OSError), comes after it was
sent. An SSLError can come from the handshake or from reading the answer: taken as sent, the safe reading.
"""

from __future__ import annotations

import errno

import urllib3

CONNECTION_REFUSED = "connection refused"
NAME_NOT_RESOLVED = "name not resolved"
HOST_UNREACHABLE = "host unreachable"
CONNECT_TIMED_OUT = "connect timed out"
CONNECT_FAILED = "connection not made"
TIMED_OUT = "timed out"
CONNECTION_LOST = "connection lost"
TLS_FAILED = "TLS failed"
THROTTLED = "throttled (429)"
SERVER_ERROR = "server error (5xx)"
CUSTOMER_BUSY = "customer busy (521)"
PLATFORM_BUSY = "platform busy (461)"
TOKEN_RENEWED = "token renewed"
ERROR_AFTER_UNCERTAIN = "error after an uncertain attempt"
"""An error answer to a call whose earlier attempt may have applied it (a remove retried): read to know."""

NEVER_SENT: frozenset[str] = frozenset(
    {CONNECTION_REFUSED, NAME_NOT_RESOLVED, HOST_UNREACHABLE, CONNECT_TIMED_OUT, CONNECT_FAILED}
)
"""Causes of a request that cannot have reached the platform: no connection was ever made."""

LEGACY: dict[str, str] = {
    "NameResolutionError": NAME_NOT_RESOLVED,
    "NewConnectionError": CONNECT_FAILED,
    "ConnectTimeoutError": CONNECT_TIMED_OUT,
    "timeout": TIMED_OUT,
    "lost": CONNECTION_LOST,
    "no_answer": CONNECTION_LOST,
    "throttled": THROTTLED,
    "server_error": SERVER_ERROR,
    "customer_busy": CUSTOMER_BUSY,
    "search_busy": PLATFORM_BUSY,
    "auth": TOKEN_RENEWED,
    "error_after_uncertain": ERROR_AFTER_UNCERTAIN,
    "settle": "settling read unanswered",
}
"""The names a journal written by an earlier version counted retries under, in today's words."""

_UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL})


def plain(cause: str) -> str:
    """A retry cause as a person reads it (a journal of an earlier version counted some under class names)."""
    return LEGACY.get(cause, cause)


def of_error(error: BaseException) -> str:
    """The cause of a request that got no answer, from the exception urllib3 raised for it."""
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        return NAME_NOT_RESOLVED
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        reason = error.__cause__ if isinstance(error.__cause__, OSError) else None
        if isinstance(reason, ConnectionRefusedError):
            return CONNECTION_REFUSED
        if reason is not None and reason.errno in _UNREACHABLE_ERRNOS:
            return HOST_UNREACHABLE
        return CONNECT_FAILED
    if isinstance(error, urllib3.exceptions.ConnectTimeoutError):
        return CONNECT_TIMED_OUT
    if isinstance(error, urllib3.exceptions.ReadTimeoutError):
        return TIMED_OUT
    if isinstance(error, urllib3.exceptions.SSLError):
        return TLS_FAILED
    return CONNECTION_LOST


def of_status(status: int) -> str:
    """The cause of an answer that is retried as it stands (throttled, an expired token, else a server error)."""
    if status == 429:
        return THROTTLED
    if status in (401, 498):
        return TOKEN_RENEWED
    return SERVER_ERROR
