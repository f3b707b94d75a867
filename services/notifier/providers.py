"""Providers: an HTTP webhook per channel (retries, Idempotency-Key, circuit breaker) and a log provider.

Neither writes personal data (phone numbers, e-mails, message texts) to logs or metric labels.
Every webhook request is signed (`Tagstream-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`, docs/notifier.md), is never redirected (a redirect would re-send the phone number to
wherever the Location points), and verifies TLS against the system CAs or `provider_ca_file`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

from services.notifier.metrics import NotifierMetrics
from services.notifier.ports import Message
from services.notifier.resilience import Backoff, CircuitBreaker, ProviderError, call_with_retries
from services.runtime.clock import Clock, SystemClock
from services.runtime.settings import NotifierSettings

log = logging.getLogger("tagstream.notifier.providers")

_RETRYABLE_STATUS = frozenset({408, 425, 429})
SIGNATURE_HEADER = "Tagstream-Signature"
MIN_SECRET_LENGTH = 32


class ProviderConfigError(ValueError):
    """The signing secret file or the CA bundle cannot be used: the path and why (never the secret)."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Tagstream-Signature` value: the receiver recomputes v1 over the raw body it got and checks
    that t is recent, which rejects both forged and replayed requests."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signing_secret(settings: NotifierSettings) -> bytes | None:
    """The signing key from the setting or the mounted file (trailing newline dropped); None when unset."""
    if settings.signing_secret is not None:
        return settings.signing_secret.get_secret_value().encode()
    path = settings.signing_secret_file
    if path is None:
        return None
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise ProviderConfigError(f"{path}: cannot read the signing secret file: {error.strerror}") from None
    if len(secret) < MIN_SECRET_LENGTH:
        raise ProviderConfigError(f"{path}: the signing secret must be at least {MIN_SECRET_LENGTH} characters")
    return secret


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verification always on; against `ca_file` only when one is given."""
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)[:200]
        raise ProviderConfigError(f"{ca_file}: cannot load the provider CA bundle: {reason}") from None


class LogProvider:
    """For local use and the embedded demo: logs that a message would go out, without its content."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.sent = 0

    async def send(self, message: Message) -> int:
        self.sent += 1
        log.info(
            "would send %s to customer %s (playbook %s step %s, key %s, %d characters)",
            message.channel,
            message.customer_id,
            message.playbook_id,
            message.step,
            message.idempotency_key,
            len(message.text or ""),
        )
        return 1

    async def close(self) -> None:
        return None


class WebhookProvider:
    """POSTs the message as JSON to the channel's URL; 2xx is delivered, 408/425/429/5xx and errors retry,
    3xx and other 4xx fail at once with the reason.

    Every attempt carries the same `Idempotency-Key` header (the step key, also in the signed body), so
    a provider that deduplicates turns our at-least-once delivery into one message per step. Each
    attempt is signed afresh, with its own timestamp.
    """

    def __init__(
        self,
        channel: str,
        url: str,
        *,
        signing_secret: bytes,
        tls: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        auth_header: SecretStr | None = None,
        timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
        metrics: NotifierMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.channel = channel
        self._url = url
        self._secret = signing_secret
        self._tls = tls or tls_context(None)
        self._clock = clock or SystemClock()
        self._auth = auth_header
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._backoff = backoff or Backoff()
        self._breaker = breaker or CircuitBreaker(threshold=5, reset_s=30.0, monotonic=time.monotonic)
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    async def send(self, message: Message) -> int:
        try:
            _, attempts = await call_with_retries(
                lambda: self._post(message), self._backoff, self._breaker, sleep=self._sleep, rng=self._rng
            )
        finally:
            if self._metrics is not None:
                self._metrics.circuit_open.labels(self.channel).set(1 if self._breaker.state == "open" else 0)
        return attempts

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, message: Message) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = orjson.dumps(message.payload())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.idempotency_key,
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
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderError(f"{self.channel} provider unreachable: {type(error).__name__}") from None
        finally:
            if self._metrics is not None:
                self._metrics.provider_seconds.labels(self.channel).observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            target = (urlsplit(location).hostname or "the same host") if location else "nowhere"
            raise ProviderError(
                f"{self.channel} provider answered HTTP {status}, a redirect to {target}: not followed "
                "(the message would go to an address not configured); set the provider URL to the final one",
                retryable=False,
            )
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        raise ProviderError(f"{self.channel} provider answered HTTP {status}", retryable=retryable)
