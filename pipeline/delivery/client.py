"""Push's HTTP side: the credentials (from the environment only; an OAuth token renewed before it expires), a
client whose every request is exactly one paced attempt, so every retry goes through the journal, and the
pre-flight check that the platform answers and accepts the credentials before a push sends its first call."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3

from pipeline.delivery import causes
from pipeline.delivery.pacing import Pace
from pipeline.delivery.platform import TOKEN_EXPIRED_CODE, TOKEN_HEADER, TOKEN_PATH, basic_authorization
from pipeline.delivery.verdict import retry_after
from pipeline.errors import PushUsageError
from pipeline.settings import API_KEY_ENV, API_PASSWORD_ENV, API_SECRET_ENV, API_USER_ENV


class Credentials:
    """Authentication headers from the environment only; the OAuth token is renewed before it expires."""

    def __init__(self, auth: str, environ: Mapping[str, str]):
        self.auth = auth
        if auth == "basic":
            user, password = environ.get(API_USER_ENV), environ.get(API_PASSWORD_ENV)
            if not user or not password:
                raise PushUsageError(
                    f"basic authentication needs {API_USER_ENV} and {API_PASSWORD_ENV} in the environment; "
                    "nothing was sent"
                )
            self._basic = basic_authorization(user, password)
        else:
            key, secret = environ.get(API_KEY_ENV), environ.get(API_SECRET_ENV)
            if not key or not secret:
                raise PushUsageError(
                    f"oauth needs {API_KEY_ENV} and {API_SECRET_ENV} in the environment; nothing was sent"
                )
            self._key = {"key": key, "secret": secret}
        self.token: str | None = None
        self.expires = 0.0
        self.lock = threading.Lock()

    @property
    def names(self) -> str:
        """The environment variables the credentials came from (never their values), for a message."""
        return f"{API_USER_ENV}/{API_PASSWORD_ENV}" if self.auth == "basic" else f"{API_KEY_ENV}/{API_SECRET_ENV}"

    def refused(self, status: int | None, left: str) -> PushUsageError:
        """The error of credentials the platform refused, naming where they came from and what is left."""
        answer = f" (HTTP {status})" if status is not None else ""
        return PushUsageError(f"the platform refused the credentials ({self.names}){answer}; {left}")

    def headers(self, client: Client) -> dict[str, str]:
        """A request's authentication headers; with oauth a token call first when there is no live token
        (NoAnswer if the token call got no usable answer: the request it was for was not sent)."""
        if self.auth == "basic":
            return {"Authorization": self._basic}
        with self.lock:
            if self.token is None or time.monotonic() > self.expires:
                self._renew(client)
            return {TOKEN_HEADER: self.token or ""}

    def renew(self, client: Client, stale: dict[str, str]) -> None:
        """Renew the token once for a 401/498 (unless another thread already did since `stale` was sent). A token
        call that gets no usable answer (an outage) leaves no token: the next request's headers ask again."""
        if self.auth == "basic":
            return
        with self.lock:
            if stale.get(TOKEN_HEADER) == self.token:
                self.token = None
                with contextlib.suppress(NoAnswer):
                    self._renew(client)

    def _renew(self, client: Client) -> None:
        status, body, _ = client.raw("POST", TOKEN_PATH, self._key, {})
        if status == 429 or status >= 500:
            raise NoAnswer(causes.of_status(status), sent=False)
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, dict) or not data.get("accessToken"):
            if status in (400, 401, 403, TOKEN_EXPIRED_CODE):
                raise self.refused(status, "nothing more was sent")
            raise PushUsageError(
                f"{client.api} answered the token call with HTTP {status} and no token: is it the platform's "
                "address? nothing more was sent"
            )
        ttl = float(data.get("ttlSeconds") or 300)
        self.token = str(data["accessToken"])
        self.expires = time.monotonic() + ttl * 0.8  # renewed before it expires, not after a refusal


class NoAnswer(Exception):
    """A request got no usable answer; `cause` says why in words (causes.py), `sent` whether it may have
    reached the platform (False: certain it did not, no connection was made)."""

    def __init__(self, cause: str, sent: bool):
        super().__init__(cause)
        self.cause, self.sent = cause, sent


class Client:
    """One urllib3 pool, no retries, no redirects: each request is exactly one attempt. Paced."""

    def __init__(self, api: str, pool: int, timeout: float, pace: Pace):
        self.api = api.rstrip("/")
        self.http = urllib3.PoolManager(
            maxsize=pool, block=True, retries=False, timeout=urllib3.Timeout(connect=min(5.0, timeout), read=timeout)
        )
        self.pace = pace
        self.requests = 0
        self.lock = threading.Lock()

    def raw(
        self, method: str, path: str, body: Any, headers: dict[str, str], paced: bool = True
    ) -> tuple[int, Any, dict[str, str]]:
        """One request; `paced=False` when the caller already waited for the pace (to journal the send time)."""
        if paced:
            self.pace.wait()
        with self.lock:
            self.requests += 1
        try:
            response = self.http.request(
                method,
                self.api + path,
                body=None if body is None else json.dumps(body).encode("utf-8"),
                headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            cause = causes.of_error(error)
            raise NoAnswer(cause, sent=cause not in causes.NEVER_SENT) from None
        try:
            parsed = json.loads(response.data) if response.data else None
        except ValueError:
            parsed = None
        return response.status, parsed, dict(response.headers)


def check_platform(client: Client, credentials: Credentials, path: str) -> None:
    """The pre-flight: one request that shows the platform answers and takes the credentials, before a push sends
    its first call (PushUsageError, exit 2, if not). With oauth the token call is that request; with basic a read
    of `path` (the first customer the push calls). A throttled read passes (the platform answers; the first call
    proves the credentials) and slows the pace."""
    left = "nothing was sent"
    where = f"the platform at {client.api}"
    try:
        headers = credentials.headers(client)
        if credentials.auth != "basic":
            return
        status, body, response_headers = client.raw("GET", path, None, headers)
    except NoAnswer as lost:
        raise PushUsageError(f"{where} did not answer: {lost.cause}; {left} (push again once it answers)") from None
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = {e.get("code") for e in errors if isinstance(e, dict)} if isinstance(errors, list) else set()
    if status in (401, TOKEN_EXPIRED_CODE) or TOKEN_EXPIRED_CODE in codes:
        raise credentials.refused(status, left)
    if status == 429:
        client.pace.delay(retry_after(response_headers))
        return
    if status >= 500:
        raise PushUsageError(f"{where} answered HTTP {status} ({causes.SERVER_ERROR}); {left} (push again later)")
    if not isinstance(body, dict):
        raise PushUsageError(
            f"{client.api} answered HTTP {status} without the platform's JSON: is --api the platform's address? {left}"
        )
