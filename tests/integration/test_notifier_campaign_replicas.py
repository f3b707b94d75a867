"""Two notifier replicas as real processes run one campaign, one SIGKILLed mid-fan-out: every step
is delivered exactly once per customer (by idempotency key), none to the holdout.

The replica holding the campaign lease may be the one killed: the survivor takes the lease when it
runs out and resumes from the cursor the victim's last page left (CampaignStore.advance moves it
with the jobs it schedules), so no customer's step is scheduled twice or skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas.campaigns import CampaignRecord
from services.notifier.policy import Campaign, campaign_step_key
from services.runtime.campaigns import RedisCampaigns
from tests.integration.test_notifier_replicas import sent_by
from tests.support.campaign_kit import CAMPAIGN, NO_PLAYBOOKS, customers, eligible, seed
from tests.support.netprobe import free_port
from tests.support.notifier_kit import SIGNING_SECRET, ProviderServer, eventually, unique_topics
from tests.support.processes import NotifierProcess, notifier_environment

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMERS = 3000
NOW_STEPS = [step for step in CAMPAIGN["steps"] if step.get("delay") is None]  # the coupon and the push


async def test_two_replicas_and_a_sigkill_mid_campaign_send_every_step_exactly_once_per_customer(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    providers = await ProviderServer().start()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(NO_PLAYBOOKS)
    topics, run = unique_topics(), uuid.uuid4().hex[:8]
    prefix = f"cr-{run}:"
    common = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA__REPLICATION_FACTOR": "1",
        "REDIS__URL": redis_url,
        "REDIS__KEY_PREFIX": prefix,
        "TOPICS__TAG_CHANGES": topics.tag_changes,
        "TOPICS__NOTIFICATIONS": topics.notifications,
        "TOPICS__NOTIFICATIONS_DLQ": topics.notifications_dlq,
        "NOTIFIER__PLAYBOOKS_FILE": str(playbooks),
        "NOTIFIER__GROUP_ID": f"cr-{run}",
        "NOTIFIER__WEB_HOST": "127.0.0.1",
        "NOTIFIER__PUSH_URL": providers.url("push"),
        "NOTIFIER__COUPON_URL": providers.url("coupon"),
        "NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        "NOTIFIER__QUIET_HOURS": "off",
        "NOTIFIER__CAPS": "[]",
        "NOTIFIER__LEASE_S": "3",
        "NOTIFIER__POLL_INTERVAL_S": "0.05",
        "NOTIFIER__CAMPAIGN_RATES": '["coupon:150", "push:150"]',
        "NOTIFIER__CAMPAIGN_INTERVAL_S": "0.2",
    }
    ids = customers(CUSTOMERS)
    treated, held = eligible(ids)
    expected = {campaign_step_key(CAMPAIGN["id"], step, c) for step in (0, 1) for c in treated}
    redis = aioredis.from_url(redis_url)
    now = datetime.now(UTC)
    await seed(redis, prefix, ids, now)
    replicas = [
        NotifierProcess(
            notifier_environment(common | {"NOTIFIER__WEB_PORT": str(free_port())}), tmp_path / f"notifier-{n}.log"
        )
        for n in range(2)
    ]
    try:
        for replica in replicas:
            replica.start()
        await asyncio.gather(*(replica.wait_ready() for replica in replicas))
        campaign = Campaign.model_validate(dict(CAMPAIGN, steps=NOW_STEPS, start_at=now.isoformat()))
        record = CampaignRecord(campaign=campaign, status="scheduled", created_at=now)
        assert await RedisCampaigns(redis, key_prefix=prefix).create(record)

        store, total = RedisCampaigns(redis, key_prefix=prefix), len(treated) + len(held)
        for _ in range(1200):  # the fan-out takes ~20 s at 150 a second: kill a replica a fifth of the way in
            midway = await store.get(CAMPAIGN["id"])
            if midway is not None and midway.positions and min(midway.positions) >= total // 5:
                break
            await asyncio.sleep(0.05)
        assert midway is not None
        assert min(midway.positions) < total  # still fanning out
        await eventually(lambda: len(providers.delivered()) > 0, timeout=60, what="the first sends")
        sent_by_victim = await asyncio.to_thread(sent_by, replicas[0].port)
        replicas[0].kill()
        await eventually(lambda: len(providers.delivered()) >= len(expected), timeout=240, what="every step sent")
        await asyncio.sleep(4)  # longer than a lease: anything still to be re-sent would show by now

        assert providers.delivered() == expected
        coupons = Counter(r.body["customer_id"] for r in providers.of("coupon") if r.status < 300)
        assert set(coupons) == treated
        assert not held & {r.body["customer_id"] for r in providers.requests}
        stored = await RedisCampaigns(redis, key_prefix=prefix).get(CAMPAIGN["id"])
        assert stored is not None
        assert (stored.status, stored.positions) == ("done", (len(treated) + len(held),) * 2)
        print(
            f"\nthe killed replica had sent {sent_by_victim} pushes; {len(expected)} steps: "
            f"{len(providers.delivered())} distinct keys delivered over {len(providers.requests)} requests, "
            f"{providers.duplicates()} raw duplicates (same key each time)"
        )
        assert await asyncio.to_thread(replicas[1].stop) == 0  # the providers answer on this loop meanwhile
    finally:
        for replica in replicas:
            replica.stop()
        await providers.stop()
        await redis.aclose()
