"""The embedded read model gives the same answers as the Redis projector + ReadModel, change for change."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.embedded.readmodel import MemoryReadModel
from services.runtime.readmodel import ReadModel
from services.tagger.projector import Projector

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
GROUPS = {"tier": ("bronze", "silver", "gold"), "interest": ("tea", "coffee")}


@pytest.fixture
def redis_side(redis_client: aioredis.Redis, redis_prefix: str) -> tuple[Projector, ReadModel]:
    projector = Projector(redis_client, key_prefix=redis_prefix, history_limit=5)
    return projector, ReadModel(redis_client, key_prefix=redis_prefix)


def _stream(rng: random.Random, customers: int, length: int) -> list[TagChanged]:
    """Changes with redeliveries, stale repeats, seq jumps and adds of held / removes of unheld tags."""
    seqs = dict.fromkeys(range(customers), 0)
    stream: list[TagChanged] = []
    for step in range(length):
        customer = rng.randrange(customers)
        roll = rng.random()
        if roll < 0.1 and seqs[customer] > 0:
            seq = seqs[customer]  # redelivery
        elif roll < 0.15 and seqs[customer] > 1:
            seq = rng.randrange(1, seqs[customer])  # stale
        else:
            seqs[customer] += 3 if roll > 0.95 else 1  # a jump now and then
            seq = seqs[customer]
        group = rng.choice(sorted(GROUPS))
        stream.append(
            TagChanged.model_validate(
                {
                    "customer_id": f"c{customer}",
                    "group_id": group,
                    "tag_id": rng.choice(GROUPS[group]),
                    "change": rng.choice(("added", "added", "removed")),
                    "source": rng.choice(("rule", "manual", "time")),
                    "reason": {"summary": f"step {step}", "conditions": []},
                    "group_version": rng.randint(1, 3),
                    "caused_by": f"e{step}",
                    "occurred_at": T0 + timedelta(minutes=step),
                    "seq": seq,
                }
            )
        )
    return stream


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_memory_read_model_answers_like_redis_for_the_same_stream(
    seed: int, redis_side: tuple[Projector, ReadModel]
) -> None:
    projector, redis_reads = redis_side
    memory = MemoryReadModel(history_limit=5)
    rng = random.Random(seed)
    stream = _stream(rng, customers=6, length=300)

    assert await memory.apply_many(stream) == await projector.apply_many(stream)
    for customer in range(6):
        at = T0 + timedelta(days=rng.randint(0, 9))
        for model in (memory, projector):
            await model.record_activity(f"c{customer}", at if customer % 2 else None, at)
            await model.record_activity(f"c{customer}", None, at - timedelta(days=1))  # older: ignored

    for customer_id in [f"c{n}" for n in range(7)]:  # c6 never appeared
        assert await memory.current_tags(customer_id) == await redis_reads.current_tags(customer_id)
        assert await memory.held_tags(customer_id) == await redis_reads.held_tags(customer_id)
        assert await memory.history(customer_id, 1, 3) == await redis_reads.history(customer_id, 1, 3)
        assert await memory.last_seq(customer_id) == await redis_reads.last_seq(customer_id)
        assert await memory.activity(customer_id) == await redis_reads.activity(customer_id)
    for group, tags in GROUPS.items():
        assert await memory.group_member_count(group) == await redis_reads.group_member_count(group)
        for tag in tags:
            assert sorted([m async for m in memory.members(group, tag)]) == sorted(
                [m async for m in redis_reads.members(group, tag)]
            )
            assert await memory.member_count(group, tag) == await redis_reads.member_count(group, tag)
    assert await memory.gaps() == await redis_reads.gaps() > 0
    assert [c async for c in memory.customers_with_gaps()] == sorted(
        [c async for c in redis_reads.customers_with_gaps()]
    )
