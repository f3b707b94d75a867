"""Retries with exponential backoff and full jitter, and a circuit breaker: pure, clock and RNG injected."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


class ProviderError(Exception):
    """A failed provider call; `retryable` is False for answers a retry cannot change (e.g. HTTP 400)."""

    def __init__(self, detail: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.status = status
        """The HTTP status when the provider answered one."""


class CircuitOpen(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"circuit open for {retry_after:.1f}s more")
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt failed (or one failed that a retry cannot fix)."""

    def __init__(self, detail: str, attempts: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Backoff:
    attempts: int = 4
    base_s: float = 0.2
    cap_s: float = 10.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**retry)]."""
        return rng.uniform(0, min(self.cap_s, self.base_s * 2**retry))


class CircuitBreaker:
    """Opens after `threshold` failures in a row; after `reset_s` lets one trial call through (half-open).

    A success closes it; a failed trial opens it again. Time comes from `monotonic` (injected).
    """

    def __init__(self, threshold: int, reset_s: float, monotonic: Callable[[], float]) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold}")
        self._threshold = threshold
        self._reset_s = reset_s
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._monotonic() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        """Raises CircuitOpen when no call may go out now."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial):
            raise self.refusal()
        if state == "half_open":
            self._trial = True

    def refusal(self) -> CircuitOpen:
        """What a caller is told while the circuit is not closed: wait until the next trial may go out."""
        if self._opened_at is None:
            return CircuitOpen(0.0)
        return CircuitOpen(max(0.0, self._opened_at + self._reset_s - self._monotonic()) or self._reset_s)

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failed(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self._threshold:
            self._opened_at = self._monotonic()
            self._trial = False


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    breaker: CircuitBreaker,
    *,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
) -> tuple[T, int]:
    """The call's result and how many attempts it took; raises CircuitOpen or GaveUp.

    CircuitOpen whenever the circuit is not closed: before an attempt, and right after the failure
    that opens it (or a failed half-open trial). The provider is down, not the message wrong, so the
    caller defers the step until the next trial instead of failing it; an open circuit also never
    holds a job for long inside one claim. GaveUp only when this call used its whole retry budget
    with the circuit closed, or met an error a retry cannot fix.
    """
    last = ""
    for attempt in range(backoff.attempts):
        if attempt:
            await sleep(backoff.delay(attempt - 1, rng))
        breaker.before_call()
        try:
            result = await call()
        except ProviderError as error:
            last = error.detail
            if not error.retryable:  # the provider answered: it is up, the request was wrong
                breaker.succeeded()
                raise GaveUp(error.detail, attempt + 1) from None
            breaker.failed()
            if breaker.state != "closed":
                raise breaker.refusal() from None
            continue
        breaker.succeeded()
        return result, attempt + 1
    raise GaveUp(f"{last} (after {backoff.attempts} attempts)", backoff.attempts)
