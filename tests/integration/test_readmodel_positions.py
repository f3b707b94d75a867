"""The read model's positions and marker against a real Redis: batches applied only in order of the
partition, a lost Redis answered with "behind", rebuilds that end `ready`, resets that keep consent."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from services.runtime.customers import RedisCustomers
from services.runtime.history_codec import INLINE, split_change
from services.runtime.readmodel import ReadModel, offset_field
from services.tagger.marker import Marker
from services.tagger.projector import Position, Projector
from tests.support.tag_change_streams import T0, assert_matches_streams, changed, customer_stream, interleave

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FIELD = offset_field("tagstream.tag-changes", 0)


@pytest.fixture
def projector(redis_client: aioredis.Redis, redis_prefix: str) -> Projector:
    return Projector(redis_client, key_prefix=redis_prefix)


@pytest.fixture
def reads(redis_client: aioredis.Redis, redis_prefix: str) -> ReadModel:
    return ReadModel(redis_client, key_prefix=redis_prefix)


@pytest.fixture
def marker(redis_client: aioredis.Redis, redis_prefix: str) -> Marker:
    return Marker(redis_client, key_prefix=redis_prefix)


async def test_a_batch_moves_the_stored_offset_and_one_beyond_it_is_refused_untouched(
    projector: Projector, reads: ReadModel
) -> None:
    first = await projector.apply_batch(Position(FIELD, 0, 2, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    assert (first.kind, [o.value for o in first.outcomes]) == ("ok", ["applied"])
    assert (await reads.status()).offsets == {FIELD: 2}

    skipped = await projector.apply_batch(Position(FIELD, 5, 6), [changed("c1", 2, "tier", "gold", "removed")], T0)
    assert (skipped.kind, skipped.stored) == ("behind", 2)
    assert await reads.current_tags("c1") == {"tier": ["gold"]}  # nothing of the refused batch was written

    again = await projector.apply_batch(Position(FIELD, 1, 6), [changed("c1", 2, "tier", "gold", "removed")], T0)
    assert again.kind == "ok"
    assert (await reads.status()).offsets == {FIELD: 6}
    assert await reads.current_tags("c1") == {}


async def test_after_redis_lost_its_data_only_a_batch_from_the_partitions_beginning_is_applied(
    redis_client: aioredis.Redis, redis_prefix: str, projector: Projector, reads: ReadModel
) -> None:
    await projector.apply_batch(Position(FIELD, 0, 10, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    await _wipe(redis_client, redis_prefix)

    mid_stream = await projector.apply_batch(Position(FIELD, 10, 11), [changed("c1", 2, "tier", "gold", "removed")], T0)
    assert (mid_stream.kind, mid_stream.stored) == ("behind", None)
    assert await reads.last_seq("c1") == 0
    status = await reads.status()
    assert status.state == "missing"
    assert "missing" in (status.reason or "")


async def test_a_rebuild_is_rebuilding_with_progress_until_every_partition_reaches_its_target(
    projector: Projector, reads: ReadModel, marker: Marker
) -> None:
    other = offset_field("tagstream.events", 0)
    assert await marker.begin({FIELD: 4, other: 0}, T0, reason="marker missing") == "rebuilding"
    assert await marker.begin({FIELD: 99}, T0, reason="a second projector") is None  # the first one won

    await projector.apply_batch(Position(FIELD, 0, 2, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    status = await reads.status()
    assert (status.state, status.total, status.remaining) == ("rebuilding", 4, 2)
    assert await reads.unavailable() == (
        "the read model is rebuilding from tagstream.tag-changes: 2 of 4 records applied"
    )

    done = await projector.apply_batch(Position(FIELD, 2, 4), [changed("c2", 1, "tier", "silver")], T0)
    assert done.state == "ready"
    status = await reads.status()
    assert status.ready
    assert status.ready_at == T0
    assert await reads.unavailable() is None


async def test_a_rebuild_of_empty_topics_is_ready_at_once(marker: Marker, reads: ReadModel) -> None:
    assert await marker.begin({FIELD: 0}, T0, reason="a new read model") == "ready"
    assert (await reads.status()).ready


async def test_a_reset_deletes_the_projection_but_keeps_consent_profiles_and_pauses_projectors(
    redis_client: aioredis.Redis, redis_prefix: str, projector: Projector, reads: ReadModel, marker: Marker
) -> None:
    customers = RedisCustomers(redis_client, prefix=redis_prefix)
    await customers.opt_out("c1", "sms")
    await projector.apply_batch(Position(FIELD, 0, 1, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    await projector.record_activity("c1", T0, T0 + timedelta(hours=1))
    await marker.begin({FIELD: 1}, T0, reason="built")

    await redis_client.hset(marker.keys.meta, "state", "resetting")  # as a reset does first
    paused = await projector.apply_batch(Position(FIELD, 1, 2), [changed("c1", 2, "tier", "gold", "removed")], T0)
    assert paused.kind == "paused"

    deleted = await marker.reset(T0)
    assert deleted >= 4  # history, the tag's bitmap, its daily counts, the counters
    assert await reads.current_tags("c1") == {}
    assert await reads.activity("c1") is None
    assert await reads.last_seq("c1") == 0
    assert (await reads.status()).state == "missing"
    assert await customers.opted_out("c1") == {"sms"}


async def test_a_reset_keeps_dense_ids_so_a_snapshot_taken_before_it_names_the_same_customers(
    redis_client: aioredis.Redis, projector: Projector, reads: ReadModel, marker: Marker
) -> None:
    tagged = [changed(f"c{n}", 1, "tier", "gold") for n in range(5)]
    await projector.apply_batch(Position(FIELD, 0, 5, from_start=True), tagged, T0)
    before = await reads.name(list(range(5)))

    await marker.reset(T0)
    await marker.begin({FIELD: 5}, T0, reason="rebuild")
    await projector.apply_batch(Position(FIELD, 0, 5, from_start=True), tagged[::-1], T0)

    assert await reads.name(list(range(5))) == before
    assert [m async for m in reads.members("tier", "gold")] == before
    assert int(await redis_client.get(reads.keys.next_id)) == 5


async def test_a_read_model_of_the_older_layout_is_refused_then_deleted_by_one_upgrade_and_rebuilt(
    redis_client: aioredis.Redis, redis_prefix: str, projector: Projector, reads: ReadModel, marker: Marker
) -> None:
    """Layout 1 (one key per customer and part, tags as sets) under a `ready` marker without a layout."""
    customers = RedisCustomers(redis_client, prefix=redis_prefix)
    await customers.opt_out("c1", "sms")
    old = {f"{redis_prefix}c:{{c1}}:{part}" for part in ("seq", "tags", "groups", "history", "activity")}
    await redis_client.set(f"{redis_prefix}c:{{c1}}:seq", 1)
    await redis_client.hset(f"{redis_prefix}c:{{c1}}:tags", "tier/gold", "{}")
    await redis_client.hset(f"{redis_prefix}c:{{c1}}:groups", "tier", 1)
    await redis_client.lpush(f"{redis_prefix}c:{{c1}}:history", "{}")
    await redis_client.hset(f"{redis_prefix}c:{{c1}}:activity", "last_seen_us", 1)
    await redis_client.sadd(f"{redis_prefix}t:tier/gold", "c1")
    old.add(f"{redis_prefix}t:tier/gold")
    await redis_client.hset(marker.keys.meta, mapping={"state": "ready", "epoch": "e1"})
    await redis_client.hset(marker.keys.offsets, FIELD, 1)

    status = await reads.status()
    assert status.state == "outdated"
    assert "another key layout" in (status.reason or "")
    assert await marker.begin({FIELD: 1}, T0, reason="marker missing") is None  # not mistaken for a loss

    claims = await asyncio.gather(marker.upgrade(T0), marker.upgrade(T0))
    assert sorted(claims) == [False, True]  # one projector deletes, the other finds nothing to do
    assert not await redis_client.exists(*old)
    assert (await reads.status()).state == "missing"
    assert await customers.opted_out("c1") == {"sms"}

    await marker.begin({FIELD: 1}, T0, reason="marker missing")
    await projector.apply_batch(Position(FIELD, 0, 1, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    assert (await reads.status()).ready
    assert await reads.current_tags("c1") == {"tier": ["gold"]}
    assert [m async for m in reads.members("tier", "gold")] == ["c1"]


async def test_a_read_model_of_layout_2_is_rebuilt_into_layout_3_keeping_dense_ids_and_consent(
    redis_client: aioredis.Redis, redis_prefix: str, projector: Projector, reads: ReadModel, marker: Marker
) -> None:
    """Layout 2: the history a list, per-group counts in the customer's hash, under a `ready` marker of layout 2."""
    customers = RedisCustomers(redis_client, prefix=redis_prefix)
    await customers.opt_out("c1", "sms")
    gold = changed("c1", 1, "tier", "gold")
    customer_key, history_key = reads.keys.customer("c1"), reads.keys.history("c1")
    await redis_client.hset(
        customer_key, mapping={"seq": 1, "id": 0, "t:tier/gold": "1767225600000000 rule 1", "g:tier": 1}
    )
    await redis_client.lpush(history_key, split_change(gold).entry(INLINE))
    await redis_client.setbit(reads.keys.bitmap("tier", "gold"), 0, 1)
    await redis_client.hset(reads.keys.tag_members, "tier/gold", 1)
    await redis_client.hset(reads.keys.group_members, "tier", 1)
    await redis_client.set(reads.keys.next_id, 1)
    await redis_client.hset(reads.keys.id_bucket(0), "0", "c1")
    await redis_client.hset(marker.keys.meta, mapping={"state": "ready", "layout": "2", "epoch": "e2"})
    await redis_client.hset(marker.keys.offsets, FIELD, 1)

    assert (await reads.status()).state == "outdated"
    assert await marker.upgrade(T0)
    assert not await redis_client.exists(history_key, reads.keys.bitmap("tier", "gold"), reads.keys.group_members)
    assert await redis_client.hgetall(customer_key) == {b"id": b"0"}

    await marker.begin({FIELD: 2}, T0, reason="marker missing")
    stream = [gold, changed("c1", 2, "tier", "gold", "removed")]
    await projector.apply_batch(Position(FIELD, 0, 2, from_start=True), stream, T0)
    assert (await reads.status()).ready
    assert await reads.history("c1") == list(reversed(stream))
    assert await redis_client.type(history_key) == b"string"
    assert await reads.current_tags("c1") == {}
    assert await reads.group_member_count("tier") == 0
    assert await reads.name([0]) == ["c1"]  # the dense id kept across the upgrade
    assert await customers.opted_out("c1") == {"sms"}


async def test_projectors_racing_over_one_partition_end_in_the_fold_of_the_whole_stream(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    """A live projector and a rebuild (or two replicas during a rebalance) read the same partition at
    different positions, in batches of different sizes: whatever the interleaving, the result is the
    fold of the stream, because a batch is applied only when Redis already holds everything before it."""
    rng = random.Random(19)
    streams = {f"c{i}": customer_stream(f"c{i}", rng.randint(1, 12), rng) for i in range(30)}
    partition = list(interleave(streams, rng))

    async def read_through(start: int, batch: int) -> None:
        writer = Projector(redis_client, key_prefix=redis_prefix)
        offset, from_start = start, start == 0
        while offset < len(partition):
            end = min(len(partition), offset + batch)
            result = await writer.apply_batch(Position(FIELD, offset, end, from_start), partition[offset:end], T0)
            if result.kind == "behind":
                offset, from_start = (0, True) if result.stored is None else (result.stored, False)
                continue
            offset, from_start = end, False
            await asyncio.sleep(0)

    await asyncio.gather(read_through(0, 7), read_through(len(partition) // 2, 3), read_through(11, 50))
    assert (await reads.status()).offsets == {FIELD: len(partition)}
    await assert_matches_streams(reads, streams, history_limit=200)


async def _wipe(redis_client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)
