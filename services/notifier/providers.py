"""Providers: an HTTP webhook per channel (retries, Idempotency-Key, circuit breaker) and a log provider.

Neither writes personal data (phone numbers, e-mails, message texts) to logs or metric labels.
Every webhook request goes through services/runtime/webhooks.py: signed, never redirected, TLS
verified against the system CAs or `provider_ca_file`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

import orjson
from pydantic import SecretStr

from services.notifier.metrics import NotifierMetrics
from services.notifier.ports import Message
from services.runtime.clock import Clock
from services.runtime.resilience import Backoff, CircuitBreaker, call_with_retries
from services.runtime.settings import NotifierSettings
from services.runtime.webhooks import SignedWebhook, secret_bytes

log = logging.getLogger("tagstream.notifier.providers")


def signing_secret(settings: NotifierSettings) -> bytes | None:
    """The signing key from the setting or the mounted file (trailing newline dropped); None when unset."""
    return secret_bytes(settings.signing_secret, settings.signing_secret_file)


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
    """POSTs the message as JSON to the channel's URL (SignedWebhook); 2xx is delivered, 408/425/429/5xx
    and errors retry, 3xx and other 4xx fail at once with the reason.

    Every attempt carries the same `Idempotency-Key` header (the step key, also in the signed body), so
    a provider that deduplicates turns our at-least-once delivery into one message per step. Each
    attempt is signed afresh, with its own timestamp. `encode` shapes the body (the message's own
    fields by default; a WeCom group robot's text message for alerts) and `check` reads a 2xx answer
    that may still hold an error (WeCom answers errors with HTTP 200 and an errcode).
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
        encode: Callable[[Message], bytes] | None = None,
        check: Callable[[bytes], None] | None = None,
    ) -> None:
        self.channel = channel
        observe = metrics.provider_seconds.labels(channel).observe if metrics is not None else None
        self._hook = SignedWebhook(
            channel,
            url,
            signing_secret=signing_secret,
            tls=tls,
            clock=clock,
            auth_header=auth_header,
            timeout_s=timeout_s,
            observe=observe,
        )
        self._backoff = backoff or Backoff()
        self._breaker = breaker or CircuitBreaker(threshold=5, reset_s=30.0, monotonic=time.monotonic)
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._encode = encode or _message_json
        self._check = check

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
        await self._hook.close()

    async def _post(self, message: Message) -> None:
        answer = await self._hook.post(self._encode(message), message.idempotency_key)
        if self._check is not None:
            self._check(answer)


def _message_json(message: Message) -> bytes:
    return orjson.dumps(message.payload())
