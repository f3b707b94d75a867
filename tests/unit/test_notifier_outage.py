"""A provider outage through the real retry and circuit-breaker code, with the in-memory stores.

The breaker's monotonic time is the notifier's manual clock, so an outage of minutes is a loop of
clock moves; the provider answers 500 until `recovers_at`, then 200.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas.tags import Reason, TagChanged
from services.notifier.core import Notifier
from services.notifier.memory import MemoryLedger, MemoryOutcomes, MemoryScheduler, MemoryTagFacts
from services.notifier.policy import Policy, load_playbooks
from services.notifier.ports import Message
from services.runtime.clock import ManualClock
from services.runtime.customers import MemoryCustomers
from services.runtime.resilience import Backoff, CircuitBreaker, ProviderError, call_with_retries

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai

PLAYBOOKS = """
playbooks:
  - id: vip-welcome
    trigger: {group: value, tag: vip}
    steps: [{channel: coupon, coupon: VIP-20}, {channel: coupon, coupon: VIP-FREESHIP, delay: 1m}]
"""


class FlakyProvider:
    """Answers HTTP 500 until the clock reaches `recovers_at`; sends go through call_with_retries."""

    def __init__(self, clock: ManualClock, recovers_at: datetime, *, attempts: int, threshold: int) -> None:
        self.clock = clock
        self.recovers_at = recovers_at
        self.requests: list[str] = []
        self.delivered: list[str] = []
        self.backoff = Backoff(attempts=attempts, base_s=0.2, cap_s=1.0)
        self.breaker = CircuitBreaker(threshold=threshold, reset_s=30.0, monotonic=lambda: clock.now().timestamp())

    async def send(self, message: Message) -> int:
        _, attempts = await call_with_retries(
            lambda: self._post(message), self.backoff, self.breaker, sleep=self._sleep, rng=random.Random(3)
        )
        return attempts

    async def _post(self, message: Message) -> None:
        self.requests.append(message.idempotency_key)
        if self.clock.now() < self.recovers_at:
            raise ProviderError("coupon provider answered HTTP 500")
        self.delivered.append(message.idempotency_key)

    async def _sleep(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    async def close(self) -> None:
        return None


async def run_outage(
    *, customers: int, outage: timedelta, attempts: int, threshold: int
) -> tuple[FlakyProvider, MemoryOutcomes, MemoryScheduler]:
    clock = ManualClock(T0)
    provider = FlakyProvider(clock, T0 + outage, attempts=attempts, threshold=threshold)
    outcomes, scheduler = MemoryOutcomes(), MemoryScheduler()
    notifier = Notifier(
        load_playbooks(PLAYBOOKS),
        scheduler,
        MemoryLedger(),
        MemoryCustomers(),
        MemoryTagFacts(),
        {"coupon": provider},
        outcomes,
        clock,
        policy=Policy(caps=(), quiet_hours=None),
    )
    changes = [
        TagChanged(
            customer_id=f"sh-{n:04d}",
            group_id="value",
            tag_id="vip",
            change="added",
            source="rule",
            reason=Reason(summary="spent over 5000 CNY"),
            group_version=1,
            occurred_at=clock.now(),
            seq=1,
        )
        for n in range(customers)
    ]
    await notifier.on_changes(changes)
    end = T0 + outage + timedelta(minutes=5)
    while clock.now() < end:
        while await notifier.run_due():
            pass
        clock.advance(timedelta(seconds=1))
    return provider, outcomes, scheduler


async def test_a_provider_down_for_minutes_then_up_gets_every_step_exactly_once_and_nothing_is_dead_lettered() -> None:
    provider, outcomes, scheduler = await run_outage(customers=40, outage=timedelta(minutes=4), attempts=4, threshold=4)
    assert outcomes.dead_letters == []
    assert len(provider.delivered) == 80
    assert Counter(provider.delivered).most_common(1)[0][1] == 1
    assert await scheduler.backlog(T0 + timedelta(days=1)) == (0, None)
    reasons = Counter((o.outcome, o.reason) for o in outcomes.outcomes)
    assert reasons[("sent", "")] == 80
    assert reasons[("deferred", "circuit_open")] >= 80  # every step met the open circuit at least once
    assert ("failed", "provider_error") not in reasons
    assert len(provider.requests) < 80 + 4 * 10  # the open circuit kept most steps from calling at all


async def test_the_500_that_opens_the_circuit_and_each_failed_trial_defer_their_step() -> None:
    provider, outcomes, _ = await run_outage(customers=1, outage=timedelta(minutes=3), attempts=8, threshold=2)
    assert outcomes.dead_letters == []
    first = [o for o in outcomes.outcomes if o.step == 0]
    # the second 500 opens the circuit; the trials every 30 s fail until the provider is back
    assert [o.outcome for o in first[:3]] == ["deferred", "deferred", "deferred"]
    assert first[-1].outcome == "sent"
    assert len(provider.delivered) == 2


async def test_a_step_that_uses_its_whole_retry_budget_with_the_circuit_closed_is_failed() -> None:
    provider, outcomes, _ = await run_outage(customers=1, outage=timedelta(minutes=3), attempts=2, threshold=5)
    # 2 + 2 failures in a row stay under the threshold of 5: both steps are failed, none deferred
    assert [(d.step, d.outcome, d.reason, d.attempts) for d in outcomes.dead_letters] == [
        (0, "failed", "provider_error", 2),
        (1, "failed", "provider_error", 2),
    ]
    assert "HTTP 500 (after 2 attempts)" in outcomes.dead_letters[0].detail
    assert (len(provider.requests), provider.delivered) == (4, [])
