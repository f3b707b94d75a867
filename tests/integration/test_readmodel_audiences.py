"""Tag bitmaps at shop size against a real Redis: audiences and campaign snapshots equal to the set
algebra over 10,000 customers' streams, dense ids across a bitmap slice and an id bucket, and the
read model's memory per customer."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from schemas.campaigns import Audience, Campaign, CampaignRecord
from schemas.tags import TagChanged
from services.ingest.audiences import RedisAudiences
from services.ingest.ports import AudienceQuery
from services.notifier.policy.campaigns import campaign_jobs
from services.runtime.bitmaps import ID_BUCKET, SLICE_BYTES
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import ManualClock
from services.runtime.readmodel import ReadModel
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.tag_change_streams import T0, changed, customer_stream, expected_tags

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMERS = 10_000


@pytest.fixture
def reads(redis_client: aioredis.Redis, redis_prefix: str) -> ReadModel:
    return ReadModel(redis_client, key_prefix=redis_prefix)


@pytest.fixture
async def ready(redis_client: aioredis.Redis, redis_prefix: str) -> None:
    await Marker(redis_client, key_prefix=redis_prefix).begin({}, T0, reason="built by the test")


async def _project(projector: Projector, streams: dict[str, list[TagChanged]]) -> None:
    """Every stream, customers in a shuffled order and each one's changes in order, 2,000 per pipeline."""
    pending: list[TagChanged] = []
    for stream in streams.values():
        pending.extend(stream)
        if len(pending) >= 2000:
            await projector.apply_many(pending)
            pending: list[TagChanged] = []
    await projector.apply_many(pending)


def _holders(streams: dict[str, list[TagChanged]]) -> dict[str, set[str]]:
    holders: dict[str, set[str]] = {}
    for customer, stream in streams.items():
        for group, tags in expected_tags(stream).items():
            for tag in tags:
                holders.setdefault(f"{group}/{tag}", set()).add(customer)
    return holders


async def test_audiences_and_campaign_snapshots_equal_the_set_algebra_over_ten_thousand_customers(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel, ready: None
) -> None:
    rng = random.Random(23)
    names = [f"顾客-{n:05d}" if n % 7 else f"c{{{n}}}*" for n in range(CUSTOMERS)]  # hostile ids too
    rng.shuffle(names)
    streams = {name: customer_stream(name, rng.randint(1, 9), rng) for name in names}
    await _project(Projector(redis_client, key_prefix=redis_prefix), streams)
    holders = _holders(streams)
    queries = [
        AudienceQuery(all_of=("tier/gold", "interest/tea"), any_of=(), none_of=()),
        AudienceQuery(all_of=(), any_of=("interest/tea", "interest/coffee"), none_of=("tier/bronze",)),
        AudienceQuery(all_of=("interest/snacks",), any_of=("tier/gold", "tier/silver"), none_of=("interest/tea",)),
        AudienceQuery(all_of=("tier/gold", "tier/silver"), any_of=(), none_of=()),  # exclusive: nobody
    ]
    audiences = RedisAudiences(redis_client, reads.keys, 60, ManualClock(T0))
    campaigns = RedisCampaigns(redis_client, key_prefix=redis_prefix)
    for number, query in enumerate(queries):
        chosen = set.intersection(*(holders.get(ref, set()) for ref in query.all_of)) if query.all_of else None
        if query.any_of:
            union = set().union(*(holders.get(ref, set()) for ref in query.any_of))
            chosen = union if chosen is None else chosen & union
        expected = (chosen or set()) - set().union(*(holders.get(ref, set()) for ref in query.none_of))

        page = await audiences.query(query, 997)
        paged = list(page.customer_ids)
        while page.cursor is not None:
            page = await audiences.page(page.cursor, 997)
            paged += page.customer_ids
        assert page.count == len(paged) == len(expected)
        assert set(paged) == expected
        assert {customer async for customer in audiences.export(query)} == expected

        fanned = await _fan_out(campaigns, f"cp{number}", query)
        assert len(fanned) == len(set(fanned))
        assert set(fanned) == expected


async def _fan_out(campaigns: RedisCampaigns, campaign_id: str, query: AudienceQuery) -> list[str]:
    """Start a campaign on the audience and walk its snapshot as the runner does, 500 at a time."""
    refs = {"all_of": query.all_of, "any_of": query.any_of, "none_of": query.none_of}
    campaign = Campaign.model_validate(
        {"id": campaign_id, "audience": refs, "templates": {"t": "hi"}, "steps": [{"channel": "push", "template": "t"}]}
    )
    await campaigns.create(CampaignRecord(campaign=campaign, status="scheduled", created_at=T0))
    started = await campaigns.start(campaign_id, Audience.model_validate(refs), T0)
    assert started is not None
    assert started.status == "running"
    fanned: list[str] = []
    while True:
        position, after, ids = await campaigns.pending(campaign_id, 0, 500)
        if not ids:
            break
        jobs = campaign_jobs(campaign, 0, ids, T0, T0 + timedelta(seconds=1))
        assert await campaigns.advance(campaign_id, 0, position, after, jobs)
        assert not await campaigns.advance(campaign_id, 0, position, after, jobs)  # a second replica: refused
        fanned += ids
    assert started.audience == len(fanned)
    return fanned


async def test_customers_whose_dense_ids_straddle_a_bitmap_slice_and_an_id_bucket_are_each_found_once(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel, ready: None
) -> None:
    boundary = SLICE_BYTES * 8  # the first id of the second GETRANGE slice, also a bucket's first id
    assert boundary % ID_BUCKET == 0
    await redis_client.set(reads.keys.next_id, boundary - 5)  # as if 131,067 customers came before
    projector = Projector(redis_client, key_prefix=redis_prefix)
    customers = [f"edge-{n}" for n in range(10)]  # dense ids boundary-5 .. boundary+4
    await projector.apply_many([changed(customer, 1, "tier", "gold") for customer in customers])
    # tea's bitmap ends in the first slice: taking it away must keep everyone beyond its end
    await projector.apply_many([changed(customer, 2, "interest", "tea") for customer in ("edge-0", "edge-2")])

    assert [m async for m in reads.members("tier", "gold")] == customers
    assert await reads.name([boundary - 1, boundary]) == ["edge-4", "edge-5"]
    audiences = RedisAudiences(redis_client, reads.keys, 60, ManualClock(T0))
    query = AudienceQuery(all_of=("tier/gold",), any_of=(), none_of=("interest/tea",))
    pages = [await audiences.query(query, 1)]
    while pages[-1].cursor is not None:
        pages.append(await audiences.page(pages[-1].cursor or "", 2))
    expected = [["edge-1"], ["edge-3", "edge-4"], ["edge-5", "edge-6"], ["edge-7", "edge-8"], ["edge-9"]]
    assert [page.customer_ids for page in pages] == expected
    assert {page.count for page in pages} == {8}


async def test_memory_per_customer_with_one_change_each_stays_under_a_kibibyte(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    """Measured with MEMORY USAGE over every key of the read model (bitmaps, buckets and counters
    shared out); printed for the record. The shape of the million-customer row of issue 17."""
    customers = 5_000
    rng = random.Random(5)
    tags = [("tier", "gold"), ("tier", "silver"), ("interest", "tea"), ("interest", "coffee")]
    projector = Projector(redis_client, key_prefix=redis_prefix)
    changes = [
        changed(f"cust-{n:07d}", 1, *rng.choice(tags), summary="all of 2 conditions matched") for n in range(customers)
    ]
    for first in range(0, customers, 1000):
        await projector.apply_many(changes[first : first + 1000])
        await projector.record_activity_many([(c.customer_id, T0, T0) for c in changes[first : first + 1000]])
    used = 0
    async for key in redis_client.scan_iter(match=f"{redis_prefix}*", count=1000):
        used += int(await redis_client.memory_usage(key) or 0)
    per_customer = used / customers
    print(f"\nread model memory: {per_customer:.0f} bytes per customer (one change and activity each)")
    assert per_customer <= 1024
    assert await reads.member_count("tier", "gold") == sum(1 for c in changes if c.tag_id == "gold")
