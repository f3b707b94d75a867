"""WeCom's server API as the tag sync uses it: an access token cached until it expires, and calls
whose answers are read by `errcode` (WeCom answers errors with HTTP 200).

- `gettoken` (GET, corpid + corpsecret) -> `{errcode, errmsg, access_token, expires_in}`; the token is
  kept until `expires_in` runs out and fetched again when a call answers 40014 (invalid) or 42001
  (expired): WeCom may end a token early.
- 45009 (frequency limit) and -1 (system busy), HTTP 5xx and network errors: backed off and retried.
- any other errcode is WeCom refusing this request for good: `WeComError` with the errcode.

Documented shapes and codes are cited in docs/sync.md.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson

from schemas.excerpt import excerpt
from services.runtime.clock import Clock
from services.runtime.webhooks import read_capped
from services.sync.ports import Unavailable
from services.sync.sink import Retry, Retrying

TOKEN_INVALID = frozenset({40014, 42001})
BUSY = frozenset({45009, -1})
INVALID_TAG = 40068
MAX_ANSWER_BYTES = 1024 * 1024
"""Largest answer read; a corp's whole tag library (at most 10,000 tags) fits well inside."""


class WeComError(Exception):
    """WeCom refused the request for good: `errcode` and its errmsg (shortened)."""

    def __init__(self, path: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeCom {path} errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.detail = f"WeCom {path} errcode {errcode}: {errmsg}"


class WeComApi:
    def __init__(
        self,
        base_url: str,
        corp_id: str,
        secret: bytes,
        retrying: Retrying,
        clock: Clock,
        *,
        timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._corp_id = corp_id
        self._secret = secret.decode()
        self._retrying = retrying
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._expires: datetime | None = None
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `/cgi-bin/<path>`; the answer when errcode is 0. Raises WeComError (refused for
        good) or Unavailable (no decision after every attempt)."""

        async def attempt() -> dict[str, Any]:
            token = await self._current_token()
            answer = await self._request("POST", path, {"access_token": token}, body)
            code = _errcode(answer)
            if code in TOKEN_INVALID:
                self._forget(token)
                raise Retry(f"WeCom {path} errcode {code} (access token invalid or expired)", "token_refreshed")
            if code in BUSY:
                raise Retry(f"WeCom {path} errcode {code} ({_errmsg(answer)})", "rate_limited")
            if code != 0:
                raise WeComError(path, code, _errmsg(answer))
            return answer

        return await self._retrying(attempt, f"WeCom {path}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _current_token(self) -> str:
        async with self._token_lock:  # one gettoken for every caller waiting on an expired token
            if self._token is not None and self._expires is not None and self._clock.now() < self._expires:
                return self._token
            answer = await self._request("GET", "gettoken", {"corpid": self._corp_id, "corpsecret": self._secret}, None)
            code = _errcode(answer)
            if code in BUSY:
                raise Retry(f"WeCom gettoken errcode {code} ({_errmsg(answer)})", "rate_limited")
            token, expires_in = answer.get("access_token"), answer.get("expires_in")
            if code != 0 or not isinstance(token, str) or not isinstance(expires_in, int) or expires_in <= 0:
                # a wrong corp id or secret: every batch would fail the same way, so none is dead-lettered
                raise Unavailable(f"WeCom gettoken errcode {code}: {_errmsg(answer)}; check the corp id and secret")
            self.tokens_fetched += 1
            self._token = token
            # renew a little early (a tenth, at most 5 minutes) so a token never expires between check and use
            self._expires = self._clock.now() + timedelta(seconds=expires_in - min(300, expires_in // 10))
            return token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _request(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        started = time.perf_counter()
        try:
            async with self._session.request(
                method,
                f"{self._base}/cgi-bin/{path}",
                params=query,
                data=orjson.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                allow_redirects=False,
                ssl=self._tls if self._tls is not None else True,
            ) as response:
                status = response.status
                raw = await read_capped(response.content, MAX_ANSWER_BYTES)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise Retry(f"WeCom {path} unreachable: {type(error).__name__}") from None
        finally:
            self._retrying.metrics.observe(time.perf_counter() - started)
        if status != 200:
            raise Retry(f"WeCom {path} answered HTTP {status}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Retry(f"WeCom {path} answered no JSON: {excerpt(raw.decode(errors='replace'))}") from None
        if not isinstance(answer, dict):
            raise Retry(f"WeCom {path} answered {excerpt(answer)}, not an object")
        return answer


def _errcode(answer: dict[str, Any]) -> int:
    code = answer.get("errcode", 0)
    return code if isinstance(code, int) else -1


def _errmsg(answer: dict[str, Any]) -> str:
    return str(answer.get("errmsg", ""))[:200]
