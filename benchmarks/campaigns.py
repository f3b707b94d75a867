"""Campaign fan-out benchmark: steps decided per second for an audience held in Redis.

    python -m benchmarks.campaigns                    # 1,000,000 customers, one push step, 10% holdout
    python -m benchmarks.campaigns --customers 100000
    python -m benchmarks.campaigns --decide-seconds 120   # 1M snapshot and fan-out, then 120 s of decisions

Starts Redis with scripts/redis.sh (or uses TAGSTREAM_TEST_REDIS_URL), gives every customer one tag
through the read model's projector, then runs one notifier in process over the Redis stores —
the campaign runner (snapshot, paced fan-out with the pace set out of the way) and the scheduler's
claim/decide/record loop — with a provider that accepts every message at once and outcomes dropped,
so the figure is what the notifier itself decides per second: claims, the six reads of each decision,
the pure `decide()`, the tallied record and completion. The snapshot and the whole fan-out run
first, then the decisions (`--decide-seconds N`: for N seconds only, a bounded slice of a large
audience). Prints the snapshot time, the fan-out (scheduling) rate, the decision rate and Redis's
longest command meanwhile (SLOWLOG, from the snapshot on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from schemas.campaigns import CampaignRecord
from schemas.notifications import NotificationOutcome
from schemas.tags import Reason, TagChanged
from services.notifier.campaigns import CampaignRunner
from services.notifier.core import Notifier, Tuning
from services.notifier.policy import Campaign, PlaybookSet, Policy
from services.notifier.ports import Message
from services.notifier.redis_store import RedisLedger, RedisScheduler, RedisTagFacts
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import SystemClock
from services.runtime.customers import RedisCustomers
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support import infra

_SEED_BATCH = 10_000


class Accepting:
    async def send(self, message: Message) -> int:
        return 1

    async def close(self) -> None:
        pass


class Dropped:
    async def emit(self, outcome: NotificationOutcome) -> None:
        pass

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        pass


async def run(customers: int, redis_url: str, decide_seconds: float | None) -> None:
    redis = aioredis.from_url(redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    started = time.perf_counter()
    await Marker(redis, key_prefix=prefix).begin({}, datetime.now(UTC), reason="benchmark")
    projector = Projector(redis, key_prefix=prefix)
    for first in range(0, customers, _SEED_BATCH):
        await projector.apply_many([_tagged(f"c{n:08d}") for n in range(first, min(customers, first + _SEED_BATCH))])
    print(f"seeded {customers:,} members in {time.perf_counter() - started:.1f}s")

    clock = SystemClock()
    campaigns = RedisCampaigns(redis, key_prefix=prefix)
    campaign = Campaign.model_validate(
        {
            "id": "bench",
            "audience": {"any_of": ["segment/churn_risk"]},
            "holdout": "10%",
            "templates": {"t": "${name|您好}"},
            "steps": [{"channel": "push", "template": "t"}],
        }
    )
    notifier = Notifier(
        PlaybookSet(),
        RedisScheduler(redis, key_prefix=prefix),
        RedisLedger(redis, key_prefix=prefix),
        RedisCustomers(redis, prefix=prefix),
        RedisTagFacts(redis, key_prefix=prefix),
        {"push": Accepting()},
        Dropped(),
        clock,
        policy=Policy(),
        tuning=Tuning(batch=500, concurrency=15),
        campaigns=campaigns,
    )
    runner = CampaignRunner(campaigns, clock, rates={"push": 100_000}, page=5_000, lease=Tuning().lease)
    await campaigns.create(CampaignRecord(campaign=campaign, status="scheduled", created_at=datetime.now(UTC)))

    redis_started = time.perf_counter()
    await redis.config_set("slowlog-log-slower-than", 1000)  # commands over 1 ms, all kept (this run's Redis)
    await redis.config_set("slowlog-max-len", 100_000)
    await redis.slowlog_reset()
    fanned = first = await runner.run()
    record = await campaigns.get("bench")
    assert record is not None
    assert record.audience is not None
    snapshot_s = time.perf_counter() - redis_started
    print(f"snapshot and the first fan-out round: {snapshot_s:.1f}s (audience {record.audience:,})")

    started = time.perf_counter()
    while record.status == "running" and min(record.positions) < record.audience:
        fanned += await runner.run()
        record = await campaigns.get("bench")
        assert record is not None
    fan_s = time.perf_counter() - started
    print(
        f"fan-out: {fanned:,} steps scheduled, {first:,} in the first round; the rest in {fan_s:.1f}s "
        f"({(fanned - first) / max(fan_s, 1e-9):,.0f}/s)"
    )

    decided, deadline = 0, time.perf_counter() + (decide_seconds or float("inf"))
    started = time.perf_counter()
    scheduler = RedisScheduler(redis, key_prefix=prefix)
    while time.perf_counter() < deadline:
        claimed = await notifier.run_due()
        decided += claimed
        if not claimed and not await scheduler.size():
            break
    seconds = time.perf_counter() - started
    counts = await RedisLedger(redis, key_prefix=prefix).counts("campaign", "bench")
    bound = f" (bounded: --decide-seconds {decide_seconds:g})" if decide_seconds else ""
    print(
        f"decided {decided:,} of {fanned:,} steps in {seconds:.1f}s{bound}: {decided / seconds:,.0f} decisions/s "
        f"(sent {counts.get('0|sent|', 0):,}, held out {counts.get('0|suppressed|holdout', 0):,})"
    )
    longest = max(await redis.slowlog_get(100_000), key=lambda entry: entry["duration"], default=None)
    if longest is not None:
        command = longest["command"]
        text = (command.decode(errors="replace") if isinstance(command, bytes) else str(command))[:80]
        print(f"Redis's longest command meanwhile: {longest['duration'] / 1000:,.1f} ms ({text})")
    keys = [key async for key in redis.scan_iter(f"{prefix}*", count=10_000)]
    for first in range(0, len(keys), 10_000):
        await redis.delete(*keys[first : first + 10_000])
    await redis.aclose()


def _tagged(customer: str) -> TagChanged:
    return TagChanged(
        customer_id=customer,
        group_id="segment",
        tag_id="churn_risk",
        change="added",
        source="rule",
        reason=Reason(summary="days_since_last_order >= 60"),
        group_version=1,
        occurred_at=datetime(2026, 11, 2, tzinfo=UTC),
        seq=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--decide-seconds",
        type=float,
        help="after the whole snapshot and fan-out, decide for this long only (a bounded slice; default: every step)",
    )
    args = parser.parse_args()
    if not 1 <= args.customers <= 10_000_000 or not 1 <= (args.decide_seconds or 1) <= 3600:
        parser.error("--customers must be 1-10,000,000 and --decide-seconds 1-3600")
    redis_url = os.environ.get("TAGSTREAM_TEST_REDIS_URL") or infra.start_redis()
    asyncio.run(run(args.customers, redis_url, args.decide_seconds))


if __name__ == "__main__":
    main()
