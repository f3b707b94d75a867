"""The notifier's Redis stores and their in-memory twins held to the same behaviour, on the real Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.notifier.memory import MemoryLedger, MemoryScheduler, MemoryTagFacts
from services.notifier.policy import ScheduledStep, SendRecord, step_key
from services.notifier.ports import Ledger, Scheduler
from services.notifier.redis_store import RedisLedger, RedisScheduler, RedisTagFacts
from services.runtime.readmodel import ReadModelUnavailable
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.notifier_kit import tag_changed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture(params=["redis", "memory"])
def scheduler(request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_prefix: str) -> Scheduler:
    return RedisScheduler(redis_client, key_prefix=redis_prefix) if request.param == "redis" else MemoryScheduler()


@pytest.fixture(params=["redis", "memory"])
def ledger(request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_prefix: str) -> Ledger:
    return RedisLedger(redis_client, key_prefix=redis_prefix) if request.param == "redis" else MemoryLedger()


def job(customer: str = "c1", seq: int = 1, due: datetime = T0, step: int = 0) -> ScheduledStep:
    values: dict[str, Any] = {
        "key": step_key("winback", step, customer, seq),
        "playbook_id": "winback",
        "step": step,
        "channel": "push",
        "template": "t",
        "coupon": None,
        "cancel_if": (),
        "customer_id": customer,
        "group_id": "value",
        "tag_id": "high_churned",
        "change": "added",
        "seq": seq,
        "triggered_at": T0,
        "due_at": due,
    }
    return ScheduledStep.model_validate(values)


async def test_scheduling_is_idempotent_and_only_due_jobs_are_claimed_in_due_order(scheduler: Scheduler) -> None:
    later, now, earlier = job(seq=1, due=T0 + timedelta(days=3)), job(seq=2, due=T0), job(seq=3, due=T0 - timedelta(1))
    assert await scheduler.schedule([later, now, earlier]) == {later.key, now.key, earlier.key}
    assert await scheduler.schedule([now]) == set()
    claims = await scheduler.claim(T0, 10, LEASE)
    assert [claim.job for claim in claims] == [earlier, now]
    assert [claim.claims for claim in claims] == [1, 1]


async def test_a_claimed_job_is_hidden_until_its_lease_runs_out_then_claimed_again(scheduler: Scheduler) -> None:
    await scheduler.schedule([job()])
    [first] = await scheduler.claim(T0, 10, LEASE)
    assert await scheduler.claim(T0 + LEASE - timedelta(seconds=1), 10, LEASE) == []
    [second] = await scheduler.claim(T0 + LEASE, 10, LEASE)
    assert (second.job, second.claims) == (first.job, 2)
    assert not await scheduler.complete(first)  # the expired lease cannot remove the job
    assert await scheduler.complete(second)
    assert await scheduler.claim(T0 + timedelta(days=1), 10, LEASE) == []


async def test_a_deferred_job_comes_due_again_at_its_new_time(scheduler: Scheduler) -> None:
    await scheduler.schedule([job()])
    [claim] = await scheduler.claim(T0, 10, LEASE)
    assert await scheduler.defer(claim, T0 + timedelta(hours=8))
    assert await scheduler.claim(T0 + timedelta(hours=7), 10, LEASE) == []
    [again] = await scheduler.claim(T0 + timedelta(hours=8), 10, LEASE)
    assert again.claims == 1


async def test_the_backlog_counts_due_unclaimed_jobs_and_the_oldest_due_time(scheduler: Scheduler) -> None:
    await scheduler.schedule([job(seq=1, due=T0 - timedelta(minutes=5)), job(seq=2), job(seq=3, due=T0 + LEASE)])
    assert await scheduler.backlog(T0) == (2, T0 - timedelta(minutes=5))
    await scheduler.claim(T0, 1, LEASE)
    assert await scheduler.backlog(T0) == (1, T0)


async def test_claims_never_hand_one_job_to_two_claimers(scheduler: Scheduler) -> None:
    await scheduler.schedule([job(seq=n) for n in range(1, 201)])
    batches = [await scheduler.claim(T0, 30, LEASE) for _ in range(10)]
    keys = [claim.job.key for batch in batches for claim in batch]
    assert len(keys) == len(set(keys)) == 200


async def test_a_decision_is_remembered_and_sends_are_counted_per_channel(ledger: Ledger) -> None:
    assert not await ledger.decided("k1")
    await ledger.record("k1", "sent", SendRecord("sms", "winback", T0), "c1", timedelta(days=90))
    await ledger.record("k2", "suppressed", None, "c1", timedelta(days=90))
    assert await ledger.decided("k1")
    assert await ledger.decided("k2")
    assert await ledger.history("c1", "sms", T0 - timedelta(days=1)) == [SendRecord("sms", "winback", T0)]
    assert await ledger.history("c1", "sms", T0) == []  # the window starts after `since`
    assert await ledger.history("c1", "push", T0 - timedelta(days=1)) == []


async def test_one_step_reserves_a_coupon_kind_until_its_period_ends(ledger: Ledger) -> None:
    until = T0 + timedelta(days=30)
    assert await ledger.reserve_coupon("c1", "HV-50", "step-a", T0, until) == "step-a"
    assert await ledger.reserve_coupon("c1", "HV-50", "step-b", T0, until) == "step-a"
    assert await ledger.reserve_coupon("c1", "HV-50", "step-a", T0, until) == "step-a"  # a retry keeps it
    assert await ledger.coupon_holder("c1", "HV-50", T0) == "step-a"
    assert await ledger.reserve_coupon("c2", "HV-50", "step-c", T0, until) == "step-c"
    assert await ledger.coupon_holder("c1", "HV-50", until) is None
    assert await ledger.reserve_coupon("c1", "HV-50", "step-b", until, until + timedelta(days=30)) == "step-b"


async def test_only_the_holder_releases_a_coupon_reservation(ledger: Ledger) -> None:
    until = T0 + timedelta(days=30)
    await ledger.reserve_coupon("c1", "HV-50", "step-a", T0, until)
    await ledger.release_coupon("c1", "HV-50", "step-b")
    assert await ledger.coupon_holder("c1", "HV-50", T0) == "step-a"
    await ledger.release_coupon("c1", "HV-50", "step-a")
    assert await ledger.coupon_holder("c1", "HV-50", T0) is None


async def test_tag_facts_read_what_the_projector_wrote(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix)
    facts = RedisTagFacts(redis_client, key_prefix=redis_prefix)
    memory = MemoryTagFacts()
    with pytest.raises(ReadModelUnavailable, match="missing"):
        await facts.holds("c1", "value", "high_churned")  # no marker: Redis lost the read model
    await Marker(redis_client, key_prefix=redis_prefix).begin({}, T0, reason="a new read model")
    assert await facts.holds("c1", "value", "high_churned") is None
    assert await memory.holds("c1", "value", "high_churned") is None
    await projector.apply(tag_changed("c1", "value", "high_churned", T0, seq=1))
    memory.apply("c1", "value", "high_churned", "added")
    assert await facts.holds("c1", "value", "high_churned") is True
    assert await memory.holds("c1", "value", "high_churned") is True
    await projector.apply(tag_changed("c1", "value", "high_churned", T0, seq=2, change="removed"))
    memory.apply("c1", "value", "high_churned", "removed")
    assert await facts.holds("c1", "value", "high_churned") is False
    assert await memory.holds("c1", "value", "high_churned") is False
    assert await facts.last_activity("c1") is None
    await projector.record_activity("c1", T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert await facts.last_activity("c1") == T0 + timedelta(days=2)


async def test_a_customer_channel_lock_has_one_holder_and_only_the_holder_unlocks(ledger: Ledger) -> None:
    assert await ledger.lock("c1", "sms", "step-a", LEASE)
    assert not await ledger.lock("c1", "sms", "step-b", LEASE)
    assert await ledger.lock("c1", "sms", "step-a", LEASE)  # the same step, re-claimed after a crash
    assert await ledger.lock("c1", "push", "step-b", LEASE)
    await ledger.unlock("c1", "sms", "step-b")
    assert not await ledger.lock("c1", "sms", "step-b", LEASE)
    await ledger.unlock("c1", "sms", "step-a")
    assert await ledger.lock("c1", "sms", "step-b", LEASE)


async def test_a_redis_lock_expires_with_its_ttl(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    ledger = RedisLedger(redis_client, key_prefix=redis_prefix)
    assert await ledger.lock("c1", "sms", "crashed", timedelta(milliseconds=50))
    await asyncio.sleep(0.1)
    assert await ledger.lock("c1", "sms", "next", LEASE)
