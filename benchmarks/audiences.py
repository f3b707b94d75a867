"""Read model at scale: Redis memory per customer, audience queries and campaign snapshots, the
layout before (one key per customer and part, tags as sets) beside the one now (a hash per customer,
tags as bitmaps over dense ids), in one run on one Redis.

    python -m benchmarks.audiences --customers 100000
    python -m benchmarks.audiences --customers 1000000 --no-before     # only the layout now

Starts Redis with scripts/redis.sh (or uses TAGSTREAM_TEST_REDIS_URL). Every customer gets the tag
changes of a shop's read model: `lifecycle/active` and `channel/app` (93.6% each, so `all_of` both
holds ~87.6%: the 876k of issue 17 at a million), `tier/gold` (20%), `segment/churn_risk` (10%), each
change with a two-condition reason, and activity. The layout now is written by the real projector
(Lua, pipelined); the layout before by the same commands its projector ran. Measured per layout:
`used_memory` growth per customer; `all_of` the two large tags as the ingest API runs it (median of
5, first page of 100) and a campaign's audience snapshot (`any_of` the two minus `segment/churn_risk`),
each with the longest single Redis command it ran (SLOWLOG with a 0 µs threshold: Redis is
single-threaded, so that is how long every other client waited).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from schemas.campaigns import Campaign, CampaignRecord
from schemas.tags import TagChanged
from services.ingest.audiences import RedisAudiences
from services.ingest.ports import AudienceQuery
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import SystemClock
from services.runtime.readmodel import Keys
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support import infra

TAGS = {
    ("lifecycle", "active"): 0.936,
    ("channel", "app"): 0.936,
    ("tier", "gold"): 0.2,
    ("segment", "churn_risk"): 0.1,
}
ALL_OF = ("lifecycle/active", "channel/app")
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
_CHUNK = 2_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--no-before", action="store_true", help="skip the layout before (half the memory)")
    args = parser.parse_args(argv)
    if not 1_000 <= args.customers <= 5_000_000:
        parser.error("--customers must be 1,000-5,000,000")
    redis_url = os.environ.get("TAGSTREAM_TEST_REDIS_URL") or infra.start_redis()
    return asyncio.run(run(redis_url, args.customers, before=not args.no_before))


async def run(redis_url: str, customers: int, *, before: bool) -> int:
    redis = Redis.from_url(redis_url)
    rows: list[tuple[str, str, str]] = []
    prefixes = []
    try:
        now_prefix = f"bench-aud-{uuid.uuid4().hex[:6]}:"
        prefixes.append(now_prefix)
        rows += await _measure_now(redis, now_prefix, customers)
        if before:
            old_prefix = f"bench-aud-{uuid.uuid4().hex[:6]}:"
            prefixes.append(old_prefix)
            rows += await _measure_before(redis, old_prefix, customers)
    finally:
        for prefix in prefixes:
            await forget(redis, prefix)
        await redis.aclose()
    print(f"\n{customers:,} customers, {sum(TAGS.values()):.2f} tags each on average; load {os.getloadavg()[0]:.2f}")
    print("\n| measure | layout | value |\n| --- | --- | ---: |")
    for name, layout, value in rows:
        print(f"| {name} | {layout} | {value} |")
    return 0


def changes_of(number: int, rng: random.Random) -> list[TagChanged]:
    customer = f"c{number:08d}"
    held = [tag for tag, share in TAGS.items() if rng.random() < share]
    return [
        TagChanged.model_validate(
            {
                "customer_id": customer,
                "group_id": group,
                "tag_id": tag,
                "change": "added",
                "source": "rule",
                "reason": {
                    "summary": "all of 2 conditions matched",
                    "conditions": [
                        {
                            "metric": "order_count",
                            "op": "gte",
                            "value": 2,
                            "window": {"last": "30d"},
                            "observed": 3,
                            "matched": True,
                        },
                        {"metric": "days_since_last_order", "op": "lte", "value": 60, "observed": 12, "matched": True},
                    ],
                },
                "group_version": 3,
                "caused_by": f"e-{customer}-{seq}",
                "occurred_at": T0 + timedelta(seconds=number),
                "seq": seq,
            }
        )
        for seq, (group, tag) in enumerate(held, start=1)
    ]


async def _seed(customers: int, write: Callable[[list[TagChanged]], Awaitable[None]]) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    pending: list[TagChanged] = []
    for number in range(customers):
        pending += changes_of(number, rng)
        if len(pending) >= _CHUNK:
            await write(pending)
            pending = []
    if pending:
        await write(pending)
    return time.perf_counter() - started


async def _measure_now(redis: Redis, prefix: str, customers: int) -> list[tuple[str, str, str]]:
    layout = "now"
    projector = Projector(redis, key_prefix=prefix)
    await Marker(redis, key_prefix=prefix).begin({}, datetime.now(UTC), reason="benchmark")

    async def write(changes: list[TagChanged]) -> None:
        await projector.apply_many(changes)
        await projector.record_activity_many([(c.customer_id, c.occurred_at, c.occurred_at) for c in changes])

    memory = await _used_memory(redis)
    seconds = await _seed(customers, write)
    per_customer = (await _used_memory(redis) - memory) / customers
    print(f"layout now: {customers:,} customers projected in {seconds:.0f} s", file=sys.stderr)
    audiences = RedisAudiences(redis, Keys(prefix), 60, SystemClock())
    query = AudienceQuery(all_of=ALL_OF, any_of=(), none_of=())
    timings, longest, count = [], 0.0, 0
    for _ in range(5):
        (page, took), slowest = await longest_command(redis, lambda: timed(audiences.query(query, 100)))
        timings.append(took)
        longest, count = max(longest, slowest), page.count
    campaigns = RedisCampaigns(redis, key_prefix=prefix)
    campaign = Campaign.model_validate(
        {
            "id": "bench",
            "audience": {"any_of": list(ALL_OF), "none_of": ["segment/churn_risk"]},
            "templates": {"t": "hi"},
            "steps": [{"channel": "push", "template": "t"}],
        }
    )
    await campaigns.create(CampaignRecord(campaign=campaign, status="scheduled", created_at=T0))
    (record, snapshot_s), snapshot_longest = await longest_command(
        redis, lambda: timed(campaigns.start("bench", campaign.audience, T0))
    )
    assert record is not None
    return _rows(layout, per_customer, count, timings, longest, record.audience or 0, snapshot_s, snapshot_longest)


async def _measure_before(redis: Redis, prefix: str, customers: int) -> list[tuple[str, str, str]]:
    """Layout 1 as its projector wrote it, its audience query and campaign snapshot as they ran."""
    layout = "before"

    async def write(changes: list[TagChanged]) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for change in changes:
                base = f"{prefix}c:{{{change.customer_id}}}"
                held = {"added_at": change.occurred_at, "source": change.source, "group_version": 3}
                pipe.set(f"{base}:seq", change.seq)
                pipe.hset(
                    f"{base}:tags", f"{change.group_id}/{change.tag_id}", orjson.dumps(held, option=orjson.OPT_UTC_Z)
                )
                pipe.hincrby(f"{base}:groups", change.group_id, 1)
                pipe.lpush(f"{base}:history", change.model_dump_json())
                pipe.sadd(f"{prefix}t:{change.group_id}/{change.tag_id}", change.customer_id)
                moment = int(change.occurred_at.timestamp() * 1_000_000)
                pipe.hset(f"{base}:activity", mapping={"last_order_us": moment, "last_seen_us": moment})
            await pipe.execute()

    memory = await _used_memory(redis)
    seconds = await _seed(customers, write)
    per_customer = (await _used_memory(redis) - memory) / customers
    print(f"layout before: {customers:,} customers written in {seconds:.0f} s", file=sys.stderr)
    members = [f"{prefix}t:{ref}" for ref in ALL_OF]

    async def query() -> int:
        key = f"{prefix}audience:{uuid.uuid4().hex}"
        async with redis.pipeline(transaction=True) as pipe:
            pipe.sinterstore(f"{key}:all", members)
            pipe.sinterstore(f"{key}:base", [f"{key}:all"])
            pipe.zunionstore(key, {f"{key}:base": 0})
            pipe.expire(key, 60)
            pipe.delete(f"{key}:all", f"{key}:base")
            pipe.zcard(key)
            pipe.zrangebylex(key, "-", "+", 0, 101)
            replies = await pipe.execute()
        return int(replies[5])

    timings, longest, count = [], 0.0, 0
    for _ in range(5):
        (count, took), slowest = await longest_command(redis, lambda: timed(query()))
        timings.append(took)
        longest = max(longest, slowest)
    snapshot = redis.register_script(_BEFORE_SNAPSHOT)
    work = [f"{prefix}cp:audience", f"{prefix}cp:any", f"{prefix}cp:base"]
    (audience, snapshot_s), snapshot_longest = await longest_command(
        redis, lambda: timed(snapshot([*work, *members, f"{prefix}t:segment/churn_risk"], []))
    )
    return _rows(layout, per_customer, count, timings, longest, int(audience), snapshot_s, snapshot_longest)


# The campaign snapshot of layout 1 (services/runtime/campaigns.py before): any_of the two tags minus
# churn_risk, SUNIONSTORE / SDIFFSTORE into a sorted set of equal scores, in one script.
_BEFORE_SNAPSHOT = """
redis.call('SUNIONSTORE', KEYS[2], KEYS[4], KEYS[5])
redis.call('SDIFFSTORE', KEYS[3], KEYS[2], KEYS[6])
redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[3], 'WEIGHTS', 0)
redis.call('DEL', KEYS[2], KEYS[3])
return redis.call('ZCARD', KEYS[1])
"""


def _rows(
    layout: str,
    per_customer: float,
    count: int,
    timings: list[float],
    longest: float,
    audience: int,
    snapshot_s: float,
    snapshot_longest: float,
) -> list[tuple[str, str, str]]:
    return [
        ("Redis memory per customer (used_memory growth)", layout, f"{per_customer / 1024:.2f} KiB"),
        (
            f"audience all_of {' and '.join(ALL_OF)} ({count:,}), median of 5",
            layout,
            f"{statistics.median(timings) * 1000:.0f} ms",
        ),
        ("longest Redis command of that query", layout, f"{longest:.1f} ms"),
        (f"campaign audience snapshot ({audience:,})", layout, f"{snapshot_s * 1000:.0f} ms"),
        ("longest Redis command of that snapshot", layout, f"{snapshot_longest:.1f} ms"),
    ]


async def longest_command(redis: Redis, work: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """What `work` returns, and the longest single command Redis ran meanwhile, in ms (SLOWLOG, every
    command logged while it runs)."""
    threshold = str((await redis.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"])
    length = str((await redis.config_get("slowlog-max-len"))["slowlog-max-len"])
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.config_set("slowlog-max-len", 10_000)
    try:
        await redis.slowlog_reset()
        result = await work()
        entries = await redis.slowlog_get(10_000)
    finally:
        await redis.config_set("slowlog-log-slower-than", threshold)
        await redis.config_set("slowlog-max-len", length)
    ran = [entry["duration"] for entry in entries if _ran_by_work(entry)]
    return result, max(ran, default=0) / 1000


def _ran_by_work(entry: dict[str, Any]) -> bool:
    command = entry["command"]
    name = (command if isinstance(command, bytes) else str(command).encode()).split(b" ", 1)[0].upper()
    return name not in (b"SLOWLOG", b"CONFIG")


async def timed(work: Awaitable[Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await work
    return result, time.perf_counter() - started


async def _used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def forget(redis: Redis, prefix: str) -> None:
    """The run's keys out of the shared Redis."""
    batch = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)


if __name__ == "__main__":
    sys.exit(main())
