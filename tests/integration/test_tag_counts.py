"""Daily tag counts in the read model: exact per local day, the same after a rebuild that replays the
partitions in another order, bounded in size, and the same in the embedded read model."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta

import pytest
import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.embedded.readmodel import MemoryReadModel
from services.runtime.readmodel import DAILY_KEEP_DAYS, ReadModel
from services.runtime.zone import day_zone
from services.tagger.projector import Projector
from tests.support.tag_change_streams import INTERESTS, T0, TIERS, customer_stream, interleave

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SHANGHAI = day_zone("Asia/Shanghai")
DAYS = 400
TAGS = [("tier", tag) for tag in TIERS] + [("interest", tag) for tag in INTERESTS]


def dated_streams(customers: int, rng: random.Random) -> dict[str, list[TagChanged]]:
    """Consistent streams whose changes are spread over DAYS days, many of them near a Shanghai
    midnight (16:00Z), so a change's UTC date and its shop date often differ."""
    streams = {}
    for number in range(customers):
        stream = customer_stream(f"c{number}", rng.randint(1, 30), rng)
        moments = sorted(
            T0 + timedelta(days=rng.randrange(DAYS), hours=rng.choice((6.5, 15.99, 16.01, 23.5))) for _ in stream
        )
        streams[f"c{number}"] = [
            change.model_copy(update={"occurred_at": moment}) for change, moment in zip(stream, moments, strict=True)
        ]
    return streams


def holders_at_end_of_each_day(
    streams: dict[str, list[TagChanged]], days: list[date]
) -> dict[tuple[str, str], list[int]]:
    """The brute-force answer: replay everything in time order and count holders at each local midnight."""
    everything = sorted((c for stream in streams.values() for c in stream), key=lambda c: c.occurred_at)
    held: set[tuple[str, str, str]] = set()
    counts: dict[tuple[str, str], list[int]] = {tag: [] for tag in TAGS}
    position = 0
    for day in days:
        while position < len(everything) and SHANGHAI.date_of(everything[position].occurred_at) <= day:
            change = everything[position]
            key = (change.customer_id, change.group_id, change.tag_id)
            (held.add if change.change == "added" else held.discard)(key)
            position += 1
        per_tag = Counter((group, tag) for _, group, tag in held)
        for tag in TAGS:
            counts[tag].append(per_tag[tag])
    return counts


async def test_daily_counts_are_exact_in_shop_days_and_equal_after_a_rebuild_in_another_order(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    rng = random.Random(16)
    streams = dated_streams(120, rng)
    live = Projector(redis_client, key_prefix=redis_prefix, zone=SHANGHAI)
    rebuilt = Projector(redis_client, key_prefix=redis_prefix + "rebuilt:", zone=SHANGHAI)
    memory = MemoryReadModel(zone=SHANGHAI)
    live_order = sorted((c for stream in streams.values() for c in stream), key=lambda c: c.occurred_at)
    await live.apply_many(live_order)
    await memory.apply_many(live_order)
    # A rebuild reads the partitions at their own pace: each customer's order kept, time order not.
    await rebuilt.apply_many(list(interleave(streams, random.Random(5))))

    last = SHANGHAI.date_of(live_order[-1].occurred_at)
    days = [last - timedelta(days=n) for n in range(DAILY_KEEP_DAYS - 1, -1, -1)]
    expected = holders_at_end_of_each_day(streams, days)
    for model in (
        ReadModel(redis_client, key_prefix=redis_prefix),
        ReadModel(redis_client, key_prefix=redis_prefix + "rebuilt:"),
        memory,
    ):
        counts = await model.tag_counts(TAGS)
        for tag in TAGS:
            assert counts[tag].daily.counts(days[0], days[-1]) == list(zip(days, expected[tag], strict=True)), tag
            assert counts[tag].holders == expected[tag][-1]


async def test_a_tags_daily_counts_stay_bounded_however_many_days_it_changed_on(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix, zone=SHANGHAI)
    flips = []
    for day in range(DAYS):  # one customer flipping a tag every day for DAYS days
        change = "added" if day % 2 == 0 else "removed"
        base = customer_stream("x", 1, random.Random(0))[0]
        flips.append(
            base.model_copy(
                update={
                    "seq": day + 1,
                    "change": change,
                    "occurred_at": T0 + timedelta(days=day),
                    "group_id": "interest",
                    "tag_id": "tea",
                }
            )
        )
    await projector.apply_many(flips)
    stored = await redis_client.hlen(projector.keys.daily("interest", "tea"))
    assert stored <= 2 * DAILY_KEEP_DAYS + 2
    reads = ReadModel(redis_client, key_prefix=redis_prefix)
    last = SHANGHAI.date_of(flips[-1].occurred_at)
    history = (await reads.tag_counts([("interest", "tea")]))[("interest", "tea")].daily.counts(
        last - timedelta(days=DAILY_KEEP_DAYS - 1), last
    )
    assert [count for _, count in history] == [1 - (DAYS - DAILY_KEEP_DAYS + n) % 2 for n in range(DAILY_KEEP_DAYS)]
