"""The projector against a real Redis: seq idempotency, gaps, history, member sets, concurrency."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.runtime.bitmaps import set_bits
from services.runtime.readmodel import Activity, HeldTag, ReadModel
from services.tagger.projector import ProjectionOutcome, Projector
from tests.support.tag_change_streams import (
    T0,
    assert_matches_streams,
    changed,
    customer_stream,
    dump_read_model,
    interleave,
)

# The fixtures live on the session loop (pyproject), so the tests that use their clients must too.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def projector(redis_client: aioredis.Redis, redis_prefix: str) -> Projector:
    return Projector(redis_client, key_prefix=redis_prefix)


@pytest.fixture
def reads(redis_client: aioredis.Redis, redis_prefix: str) -> ReadModel:
    return ReadModel(redis_client, key_prefix=redis_prefix)


async def test_an_added_then_removed_tag_updates_tags_members_and_history(
    projector: Projector, reads: ReadModel
) -> None:
    assert await projector.apply(changed("c1", 1, "tier", "gold", source="manual")) is ProjectionOutcome.APPLIED

    assert await reads.current_tags("c1") == {"tier": ["gold"]}
    assert await reads.held_tags("c1") == {
        "tier": {"gold": HeldTag(added_at=T0 + timedelta(minutes=1), source="manual", group_version=3)}
    }
    assert [m async for m in reads.members("tier", "gold")] == ["c1"]
    assert await reads.member_count("tier", "gold") == 1
    assert await reads.group_member_count("tier") == 1
    assert await reads.last_seq("c1") == 1

    assert await projector.apply(changed("c1", 2, "tier", "gold", "removed")) is ProjectionOutcome.APPLIED

    assert await reads.current_tags("c1") == {}
    assert [m async for m in reads.members("tier", "gold")] == []
    assert await reads.group_member_count("tier") == 0
    assert [(c.seq, c.change) for c in await reads.history("c1")] == [(2, "removed"), (1, "added")]
    assert await reads.gaps() == 0


async def test_a_redelivered_change_changes_nothing(
    projector: Projector, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await projector.apply(changed("c1", 1, "tier", "gold"))
    await projector.apply(changed("c1", 2, "interest", "tea"))
    before = await dump_read_model(redis_client, redis_prefix)

    assert await projector.apply(changed("c1", 2, "interest", "tea")) is ProjectionOutcome.DUPLICATE

    assert await dump_read_model(redis_client, redis_prefix) == before


async def test_an_older_change_is_stale_and_changes_nothing(
    projector: Projector, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await projector.apply(changed("c1", 1, "tier", "gold"))
    await projector.apply(changed("c1", 2, "tier", "gold", "removed"))
    before = await dump_read_model(redis_client, redis_prefix)

    assert await projector.apply(changed("c1", 1, "tier", "gold")) is ProjectionOutcome.STALE

    assert await dump_read_model(redis_client, redis_prefix) == before


async def test_a_seq_jump_is_applied_and_counted_as_a_gap(projector: Projector, reads: ReadModel) -> None:
    assert await projector.apply(changed("c1", 1, "tier", "bronze")) is ProjectionOutcome.APPLIED
    assert await projector.apply(changed("c1", 4, "interest", "tea")) is ProjectionOutcome.APPLIED_AFTER_GAP
    assert await projector.apply(changed("c2", 3, "interest", "tea")) is ProjectionOutcome.APPLIED_AFTER_GAP
    assert await projector.apply(changed("c1", 5, "interest", "coffee")) is ProjectionOutcome.APPLIED

    assert await reads.gaps() == 2
    assert sorted([c async for c in reads.customers_with_gaps()]) == ["c1", "c2"]
    assert await reads.current_tags("c1") == {"interest": ["coffee", "tea"], "tier": ["bronze"]}
    assert await reads.last_seq("c1") == 5
    assert sorted([m async for m in reads.members("interest", "tea")]) == ["c1", "c2"]
    # What was skipped can no longer be applied: it arrives stale.
    assert await projector.apply(changed("c1", 2, "tier", "bronze", "removed")) is ProjectionOutcome.STALE


async def test_history_is_capped_newest_first_with_reason(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix, history_limit=5)
    reads = ReadModel(redis_client, key_prefix=redis_prefix)
    stream = [
        changed("c1", seq, "interest", "tea", "added" if seq % 2 else "removed", summary=f"step {seq}")
        for seq in range(1, 9)
    ]
    for change in stream:
        await projector.apply(change)

    history = await reads.history("c1", limit=100)

    assert [c.seq for c in history] == [8, 7, 6, 5, 4]
    assert history[0] == stream[-1]
    assert history[0].reason.summary == "step 8"
    assert history[0].reason.conditions[0].observed == "1200.50"
    assert [c.seq for c in await reads.history("c1", offset=1, limit=2)] == [7, 6]
    assert await reads.history("c1", offset=5) == []


async def test_an_exclusive_swap_leaves_one_tag(projector: Projector, reads: ReadModel) -> None:
    await projector.apply(changed("c1", 1, "tier", "bronze"))
    outcomes = await projector.apply_many(
        [changed("c1", 2, "tier", "bronze", "removed"), changed("c1", 3, "tier", "silver")]
    )

    assert outcomes == [ProjectionOutcome.APPLIED, ProjectionOutcome.APPLIED]
    assert await reads.current_tags("c1") == {"tier": ["silver"]}
    assert await reads.member_count("tier", "bronze") == 0
    assert [m async for m in reads.members("tier", "silver")] == ["c1"]
    assert await reads.group_member_count("tier") == 1


async def test_a_group_counts_a_customer_once_whatever_the_number_of_its_tags(
    projector: Projector, reads: ReadModel
) -> None:
    await projector.apply_many(
        [
            changed("c1", 1, "interest", "tea"),
            changed("c1", 2, "interest", "coffee"),
            changed("c2", 1, "interest", "tea"),
            changed("c1", 3, "interest", "tea", "removed"),
        ]
    )
    assert await reads.group_member_count("interest") == 2

    await projector.apply_many([changed("c1", 4, "interest", "coffee", "removed")])
    assert await reads.group_member_count("interest") == 1


async def test_tag_bitmaps_combine_with_bitop_into_the_customers_they_name(
    projector: Projector, reads: ReadModel, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await projector.apply_many(
        [
            changed("c1", 1, "tier", "gold"),
            changed("c1", 2, "interest", "tea"),
            changed("c2", 1, "tier", "gold"),
            changed("c3", 1, "interest", "tea"),
        ]
    )
    gold, tea = projector.keys.bitmap("tier", "gold"), projector.keys.bitmap("interest", "tea")

    async def combined(op: str) -> set[str]:
        target = f"{redis_prefix}scratch"
        await redis_client.bitop(op, target, gold, tea)
        return {name async for ids in set_bits(redis_client, target) for name in await reads.name(ids)}

    assert await combined("AND") == {"c1"}
    assert await combined("OR") == {"c1", "c2", "c3"}
    assert await combined("XOR") == {"c2", "c3"}


async def test_activity_only_moves_forward(projector: Projector, reads: ReadModel) -> None:
    assert await reads.activity("c1") is None

    await projector.record_activity("c1", None, T0)
    assert await reads.activity("c1") == Activity(last_order_at=None, last_seen_at=T0)

    await projector.record_activity("c1", T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    await projector.record_activity("c1", T0, T0 + timedelta(hours=1))

    assert await reads.activity("c1") == Activity(
        last_order_at=T0 + timedelta(hours=1), last_seen_at=T0 + timedelta(hours=2)
    )


async def test_reads_work_on_a_client_that_decodes_responses(redis_url: str, redis_prefix: str) -> None:
    decoding = aioredis.from_url(redis_url, decode_responses=True)
    try:
        projector = Projector(decoding, key_prefix=redis_prefix)
        reads = ReadModel(decoding, key_prefix=redis_prefix)
        assert await projector.apply_many([changed("c1", 1, "tier", "gold")]) == [ProjectionOutcome.APPLIED]
        assert await projector.apply(changed("c1", 1, "tier", "gold")) is ProjectionOutcome.DUPLICATE
        await projector.record_activity("c1", T0, T0)

        assert await reads.current_tags("c1") == {"tier": ["gold"]}
        assert [m async for m in reads.members("tier", "gold")] == ["c1"]
        assert [c.seq for c in await reads.history("c1")] == [1]
        assert await reads.activity("c1") == Activity(last_order_at=T0, last_seen_at=T0)
    finally:
        await decoding.aclose()


async def test_concurrent_customers_end_in_the_state_their_streams_describe(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    rng = random.Random(7)
    streams = {f"cust-{n:02}": customer_stream(f"cust-{n:02}", 10, rng) for n in range(20)}
    assert sum(len(s) for s in streams.values()) == 200
    concurrent_prefix, batched_prefix = f"{redis_prefix}gather:", f"{redis_prefix}batched:"
    concurrent = Projector(redis_client, key_prefix=concurrent_prefix, history_limit=6)
    batched = Projector(redis_client, key_prefix=batched_prefix, history_limit=6)

    async def apply_in_order(stream: list[TagChanged]) -> list[ProjectionOutcome]:
        outcomes = []
        for change in stream:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            outcomes.append(await concurrent.apply(change))
        return outcomes

    results = await asyncio.gather(*(apply_in_order(stream) for stream in rng.sample(list(streams.values()), 20)))
    interleaved = list(interleave(streams, rng))
    for start in range(0, len(interleaved), 37):
        assert set(await batched.apply_many(interleaved[start : start + 37])) == {ProjectionOutcome.APPLIED}

    assert {outcome for outcomes in results for outcome in outcomes} == {ProjectionOutcome.APPLIED}
    await assert_matches_streams(ReadModel(redis_client, key_prefix=concurrent_prefix), streams, history_limit=6)
    await assert_matches_streams(ReadModel(redis_client, key_prefix=batched_prefix), streams, history_limit=6)
    assert await dump_read_model(redis_client, concurrent_prefix) == await dump_read_model(redis_client, batched_prefix)


async def test_applying_the_stream_twice_leaves_identical_state(
    projector: Projector, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    rng = random.Random(11)
    streams = {f"cust-{n}": customer_stream(f"cust-{n}", 15, rng) for n in range(10)}
    stream = list(interleave(streams, rng))
    await projector.apply_many(stream)
    await projector.record_activity("cust-0", T0, T0)
    once = await dump_read_model(redis_client, redis_prefix)

    again = await projector.apply_many(stream)
    for change in rng.sample(stream, 30):
        again.append(await projector.apply(change))
    await projector.record_activity("cust-0", T0, T0)

    assert set(again) <= {ProjectionOutcome.DUPLICATE, ProjectionOutcome.STALE}
    assert await dump_read_model(redis_client, redis_prefix) == once
