"""Retries with full-jitter backoff and the circuit breaker, with the clock, sleep and RNG injected."""

from __future__ import annotations

import random

import pytest

from services.runtime.resilience import Backoff, CircuitBreaker, CircuitOpen, GaveUp, ProviderError, call_with_retries


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Flaky:
    """Fails with the given errors in turn, then succeeds."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def run(
    call: Flaky, breaker: CircuitBreaker, backoff: Backoff | None = None
) -> tuple[tuple[str, int], list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await call_with_retries(call, backoff or Backoff(attempts=4), breaker, sleep=sleep, rng=random.Random(7))
    return result, slept


def breaker(ticks: Ticks, threshold: int = 10) -> CircuitBreaker:
    return CircuitBreaker(threshold=threshold, reset_s=30.0, monotonic=ticks)


def test_full_jitter_stays_within_the_exponential_ceiling_and_the_cap() -> None:
    backoff = Backoff(attempts=8, base_s=0.5, cap_s=3.0)
    rng = random.Random(1)
    for retry in range(8):
        delays = [backoff.delay(retry, rng) for _ in range(200)]
        ceiling = min(3.0, 0.5 * 2**retry)
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range


async def test_a_transient_failure_is_retried_after_a_backoff_and_counts_its_attempts() -> None:
    call = Flaky(ProviderError("HTTP 500"), ProviderError("HTTP 503"))
    (result, attempts), slept = await run(call, breaker(Ticks()))
    assert (result, attempts, call.calls) == ("ok", 3, 3)
    assert len(slept) == 2


async def test_after_the_last_attempt_the_call_gives_up_with_the_last_error() -> None:
    call = Flaky(*(ProviderError("HTTP 500") for _ in range(4)))
    with pytest.raises(GaveUp, match="HTTP 500 \\(after 4 attempts\\)") as raised:
        await run(call, breaker(Ticks()))
    assert raised.value.attempts == 4


async def test_an_error_a_retry_cannot_fix_gives_up_at_once() -> None:
    call = Flaky(ProviderError("HTTP 400", retryable=False))
    with pytest.raises(GaveUp, match="HTTP 400") as raised:
        await run(call, breaker(Ticks()))
    assert (raised.value.attempts, call.calls) == (1, 1)


def test_the_breaker_opens_after_the_threshold_and_half_opens_after_the_reset_time() -> None:
    ticks = Ticks()
    circuit = breaker(ticks, threshold=3)
    for _ in range(3):
        circuit.before_call()
        circuit.failed()
    assert circuit.state == "open"
    with pytest.raises(CircuitOpen):
        circuit.before_call()
    ticks.now = 30.0
    assert circuit.state == "half_open"
    circuit.before_call()  # the one trial call
    with pytest.raises(CircuitOpen):
        circuit.before_call()  # nobody else while the trial runs
    circuit.succeeded()
    assert circuit.state == "closed"


def test_a_failed_trial_opens_the_breaker_again() -> None:
    ticks = Ticks()
    circuit = breaker(ticks, threshold=1)
    circuit.before_call()
    circuit.failed()
    ticks.now = 31.0
    circuit.before_call()
    circuit.failed()
    assert circuit.state == "open"


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    circuit = breaker(Ticks(), threshold=2)
    circuit.failed()
    circuit.succeeded()
    circuit.failed()
    assert circuit.state == "closed"


async def test_an_open_circuit_refuses_before_any_attempt() -> None:
    ticks = Ticks()
    circuit = breaker(ticks, threshold=1)
    circuit.failed()
    call = Flaky()
    with pytest.raises(CircuitOpen) as raised:
        await run(call, circuit)
    assert call.calls == 0
    assert raised.value.retry_after == pytest.approx(30.0)


async def test_the_failure_that_opens_the_circuit_ends_the_retries_as_circuit_open_not_gave_up() -> None:
    call = Flaky(*(ProviderError("HTTP 500") for _ in range(4)))
    with pytest.raises(CircuitOpen) as raised:
        await run(call, breaker(Ticks(), threshold=2))
    assert call.calls == 2
    assert raised.value.retry_after == pytest.approx(30.0)


async def test_a_failed_half_open_trial_is_circuit_open_not_gave_up() -> None:
    ticks = Ticks()
    circuit = breaker(ticks, threshold=1)
    circuit.failed()
    ticks.now = 30.0
    call = Flaky(ProviderError("HTTP 503"))
    with pytest.raises(CircuitOpen):
        await run(call, circuit)
    assert (call.calls, circuit.state) == (1, "open")


async def test_a_circuit_opened_by_another_call_during_the_backoff_stops_the_retries_as_circuit_open() -> None:
    ticks = Ticks()
    circuit = breaker(ticks, threshold=3)
    call = Flaky(ProviderError("HTTP 500"))

    async def sleep(seconds: float) -> None:  # meanwhile, other sends fail and open the circuit
        circuit.failed()
        circuit.failed()

    with pytest.raises(CircuitOpen):
        await call_with_retries(call, Backoff(attempts=4), circuit, sleep=sleep, rng=random.Random(7))
    assert call.calls == 1
