"""Providers: an HTTP webhook per channel (retries, Idempotency-Key, circuit breaker) and a log provider.

Neither writes personal data (phone numbers, e-mails, message texts) to logs or metric labels.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp
from pydantic import SecretStr

from services.notifier.metrics import NotifierMetrics
from services.notifier.ports import Message
from services.notifier.resilience import Backoff, CircuitBreaker, ProviderError, call_with_retries

log = logging.getLogger("tagstream.notifier.providers")

_RETRYABLE_STATUS = frozenset({408, 425, 429})


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
    """POSTs the message as JSON to the channel's URL; 2xx is delivered, 408/425/429/5xx and errors retry.

    Every attempt carries the same `Idempotency-Key` header (the step key), so a provider that
    deduplicates turns our at-least-once delivery into one message per step.
    """

    def __init__(
        self,
        channel: str,
        url: str,
        *,
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
        headers = {"Idempotency-Key": message.idempotency_key}
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        started = time.perf_counter()
        try:
            async with self._session.post(self._url, json=message.payload(), headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderError(f"{self.channel} provider unreachable: {type(error).__name__}") from None
        finally:
            if self._metrics is not None:
                self._metrics.provider_seconds.labels(self.channel).observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        raise ProviderError(f"{self.channel} provider answered HTTP {status}", retryable=retryable)
