"""Push's HTTP side: the credentials (from the environment only; an OAuth token renewed before it expires) and
a client whose every request is exactly one paced attempt, so every retry goes through the journal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3

from pipeline.delivery.pacing import Pace
from pipeline.delivery.platform import TOKEN_HEADER, TOKEN_PATH, basic_authorization
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

    def headers(self, client: Client) -> dict[str, str]:
        if self.auth == "basic":
            return {"Authorization": self._basic}
        with self.lock:
            if self.token is None or time.monotonic() > self.expires:
                self._renew(client)
            return {TOKEN_HEADER: self.token or ""}

    def renew(self, client: Client, stale: dict[str, str]) -> None:
        """Renew the token once for a 401/498 (unless another thread already did since `stale` was sent)."""
        if self.auth == "basic":
            return
        with self.lock:
            if stale.get(TOKEN_HEADER) == self.token:
                self._renew(client)

    def _renew(self, client: Client) -> None:
        status, body, _ = client.raw("POST", TOKEN_PATH, self._key, {})
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, dict) or not data.get("accessToken"):
            raise PushUsageError(f"the platform refused the OAuth key (HTTP {status}); nothing more was sent")
        ttl = float(data.get("ttlSeconds") or 300)
        self.token = str(data["accessToken"])
        self.expires = time.monotonic() + ttl * 0.8  # renewed before it expires, not after a refusal


class NoAnswer(Exception):
    """A request got no answer; `sent` says whether it may have reached the platform."""

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
        except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.NewConnectionError) as error:
            raise NoAnswer(type(error).__name__, sent=False) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise NoAnswer("timeout", sent=True) from None
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError, OSError) as error:
            raise NoAnswer(f"lost connection ({type(error).__name__})", sent=True) from None
        try:
            parsed = json.loads(response.data) if response.data else None
        except ValueError:
            parsed = None
        return response.status, parsed, dict(response.headers)
