"""Signed JSON webhooks, shared by the notifier's providers and the tag sync sink's webhook adapter.

Every request is signed (`Tagstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
docs/notifier.md), is never redirected (a redirect would re-send personal data to wherever the
Location points), and verifies TLS against the system CAs or a configured CA bundle.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from services.runtime.clock import Clock, SystemClock
from services.runtime.resilience import ProviderError

_RETRYABLE_STATUS = frozenset({408, 425, 429})
SIGNATURE_HEADER = "Tagstream-Signature"
MIN_SECRET_LENGTH = 32
MAX_ANSWER_BYTES = 64 * 1024
"""Read of a provider's answer; the rest is dropped (an answer is an ack, never a document)."""


class ProviderConfigError(ValueError):
    """The signing secret file or the CA bundle cannot be used: the path and why (never the secret)."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Tagstream-Signature` value: the receiver recomputes v1 over the raw body it got and checks
    that t is recent, which rejects both forged and replayed requests."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def secret_bytes(
    value: SecretStr | None, path: Path | None, *, what: str = "signing secret", min_length: int = MIN_SECRET_LENGTH
) -> bytes | None:
    """A secret from its setting or from the file a Secret is mounted as (trailing newline dropped).

    Raises ProviderConfigError naming the file and `what` was wrong with it, never the secret itself."""
    if value is not None:
        return value.get_secret_value().encode()
    if path is None:
        return None
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise ProviderConfigError(f"{path}: cannot read the {what} file: {error.strerror}") from None
    if len(secret) < min_length:
        raise ProviderConfigError(f"{path}: the {what} must be at least {min_length} characters")
    return secret


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verification always on; against `ca_file` only when one is given."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)[:200]
        raise ProviderConfigError(f"{ca_file}: cannot load the provider CA bundle: {reason}") from None


class SignedWebhook:
    """One signed JSON POST to one URL: 2xx returns the answer's body; anything else raises ProviderError,
    retryable for 408/425/429/5xx and network errors, not for 3xx (never followed) and other 4xx.

    Every request carries `Idempotency-Key` and a fresh `Tagstream-Signature`; the notifier's providers
    and the tag sync sink's webhook (services/sync/webhook.py) both send through it.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        signing_secret: bytes,
        tls: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        auth_header: SecretStr | None = None,
        timeout_s: float = 5.0,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        """`observe` is told each request's duration in seconds (a histogram's observe)."""
        self.name = name
        self._url = url
        self._secret = signing_secret
        self._tls = tls or tls_context(None)
        self._clock = clock or SystemClock()
        self._auth = auth_header
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._observe = observe
        self._session: aiohttp.ClientSession | None = None

    async def post(self, body: bytes, idempotency_key: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            SIGNATURE_HEADER: signature(self._secret, int(self._clock.now().timestamp()), body),
        }
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        started = time.perf_counter()
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False, ssl=self._tls
            ) as response:
                status = response.status
                location = response.headers.get("Location", "")
                answer = await read_capped(response.content)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderError(f"{self.name} provider unreachable: {type(error).__name__}") from None
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return answer
        if 300 <= status < 400:
            target = (urlsplit(location).hostname or "the same host") if location else "nowhere"
            raise ProviderError(
                f"{self.name} provider answered HTTP {status}, a redirect to {target}: not followed "
                "(the message would go to an address not configured); set the provider URL to the final one",
                retryable=False,
                status=status,
            )
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        raise ProviderError(f"{self.name} provider answered HTTP {status}", retryable=retryable, status=status)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def read_capped(content: aiohttp.StreamReader, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """An HTTP answer's body up to `limit` bytes (the rest is never read into memory)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
