"""Campaigns in Kafka mode: the ingest API and the notifier over real Kafka and real Redis.

The read model is seeded with the projector (as the tagger would leave it); the notifier runs on a
ManualClock, so "three days later" is a clock move. The report is checked against a count of
distinct idempotency keys on `tagstream.notifications`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from schemas.campaigns import CampaignRecord
from schemas.topics import TopicNames
from services.ingest.app import create_app
from services.notifier.app import build_app
from services.notifier.campaigns import CampaignRunner
from services.notifier.policy import Campaign, campaign_step_key
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import ManualClock
from services.runtime.settings import IngestSettings, Settings
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.campaign_kit import CAMPAIGN, NO_PLAYBOOKS, SEGMENTS, customers, eligible, seed
from tests.support.kafka_io import TopicReader, produce
from tests.support.notifier_kit import ProviderServer, eventually, notifier_settings, record, tag_changed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
ADMIN = "admin-key-0123456789abcdef"


def _topics() -> TopicNames:
    run = uuid.uuid4().hex[:8]
    return TopicNames(**{name: f"cp-{run}.{name}" for name in TopicNames.model_fields})


@asynccontextmanager
async def ingest(settings: Settings, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}]
    settings = settings.model_copy(update={"ingest": IngestSettings(api_keys=keys)})  # type: ignore[arg-type]
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", headers=headers) as http:
            for _ in range(300):  # the definitions topic is read once at start
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            yield http


async def test_a_campaign_to_two_tag_audiences_sends_one_coupon_and_push_now_and_sms_three_days_later_except_returners(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    providers = await ProviderServer().start()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(NO_PLAYBOOKS)
    settings = notifier_settings(
        kafka_bootstrap,
        redis_url,
        playbooks,
        providers,
        topics=_topics(),
        caps=("sms:1/1d", "push:3/7d"),
        campaign_rates=("coupon:100000", "push:100000", "sms:100000"),
        campaign_interval_s=0.2,
    )
    prefix = settings.redis.key_prefix
    ids = customers(400)
    treated, held = eligible(ids)
    redis = aioredis.from_url(redis_url)
    clock = ManualClock(T0)
    await seed(redis, prefix, ids, T0)
    notifier = build_app(settings, clock=clock)
    await notifier.start()
    try:
        async with ingest(settings, clock) as http:
            assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
            answer = await http.post("/v1/campaigns:preview", json=CAMPAIGN)
            assert answer.status_code == 200, answer.text
            preview = answer.json()
            assert (preview["audience"], preview["holdout"]) == (len(treated) + len(held), len(held))
            created = await http.post("/v1/campaigns", json=CAMPAIGN)
            assert created.status_code == 201, created.text
            await eventually(lambda: len(providers.delivered()) == 2 * len(treated), what="coupon and push for each")
            returners = sorted(treated)[:9]
            projector = Projector(redis, key_prefix=prefix)
            for customer in returners:
                await projector.record_activity(customer, T0 + timedelta(days=1), T0 + timedelta(days=1))
            clock.advance(timedelta(days=3))
            await eventually(
                lambda: len(providers.delivered("sms")) == len(treated) - len(returners), what="the SMS step"
            )
            # a step is tallied when its decision is recorded, just after the provider answered
            deadline = time.monotonic() + 30
            while True:
                report = (await http.get(f"/v1/campaigns/{CAMPAIGN['id']}/report")).json()
                decided = [step["sent"] + step["cancelled"] for step in report["steps"]]
                if decided == [len(treated)] * 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            record = (await http.get(f"/v1/campaigns/{CAMPAIGN['id']}")).json()
        for channel in ("coupon", "push"):
            assert Counter(r.body["customer_id"] for r in providers.of(channel)) == Counter(treated)
        assert {r.body["customer_id"] for r in providers.of("sms")} == treated - set(returners)
        assert {r.key for r in providers.of("push")} == {campaign_step_key(CAMPAIGN["id"], 1, c) for c in treated}
        assert record["status"] == "done"

        async with TopicReader(kafka_bootstrap, settings.topics.notifications) as reader:
            expected = 3 * (len(treated) + len(held))
            await reader.until(lambda found: len({orjson.loads(r.value)["idempotency_key"] for r in found}) >= expected)
            outcomes = [o for o in reader.json() if o["campaign_id"] == CAMPAIGN["id"]]
        assert report == report_from(outcomes, report)
        sms = report["steps"][2]
        assert (sms["sent"], sms["held_out"], sms["cancelled"]) == (len(treated) - 9, len(held), 9)
        assert report["conversion"]["treated_converted"] == 9
    finally:
        await notifier.stop()
        await providers.stop()
        await redis.aclose()


def report_from(outcomes: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    """The report's step figures counted from the topic: one final outcome per distinct key."""
    final: dict[str, dict[str, Any]] = {}
    deferred: Counter[tuple[int, str]] = Counter()
    keys = {(o["step"], o["idempotency_key"]) for o in outcomes}
    for outcome in outcomes:
        if outcome["outcome"] == "deferred":
            deferred[(outcome["step"], outcome["reason"])] += 1
        elif outcome["outcome"] != "scheduled" and outcome["reason"] != "duplicate":
            final.setdefault(outcome["idempotency_key"], outcome)
    steps = []
    for step in report["steps"]:
        mine = [o for o in final.values() if o["step"] == step["step"]]
        suppressed = Counter(o["reason"] for o in mine if o["outcome"] == "suppressed" and o["reason"] != "holdout")
        steps.append(
            step
            | {
                "targeted": sum(1 for number, _ in keys if number == step["step"]),
                "held_out": sum(1 for o in mine if o["reason"] == "holdout"),
                "sent": sum(1 for o in mine if o["outcome"] == "sent"),
                "suppressed": dict(suppressed),
                "deferred": {reason: n for (number, reason), n in deferred.items() if number == step["step"]},
                "cancelled": sum(1 for o in mine if o["outcome"] == "cancelled"),
                "failed": sum(1 for o in mine if o["outcome"] == "failed"),
            }
        )
    return report | {"steps": steps}


async def test_playbooks_replaced_through_ingest_are_used_by_a_running_notifier_without_a_restart(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    providers = await ProviderServer().start()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(NO_PLAYBOOKS)
    settings = notifier_settings(kafka_bootstrap, redis_url, playbooks, providers, topics=_topics())
    redis = aioredis.from_url(redis_url)
    clock = ManualClock(T0)
    await Marker(redis, key_prefix=settings.redis.key_prefix).begin({}, T0, reason="a new read model")
    notifier = build_app(settings, clock=clock)
    await notifier.start()
    lapsed = {
        "id": "lapsed-push",
        "trigger": {"group": "segment", "tag": "lapsed"},
        "steps": [{"channel": "push", "template": "miss-you"}],
    }
    try:
        async with ingest(settings, clock) as http:
            assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
            body = {"version": 0, "templates": {"miss-you": "${name|您好}，好久不见"}, "playbooks": [lapsed]}
            replaced = await http.put("/v1/playbooks", json=body)
            assert replaced.status_code == 200, replaced.text
            await eventually(lambda: notifier.playbooks.current.get("lapsed-push") is not None, what="the reload")
            change = tag_changed("沪-1", "segment", "lapsed", T0)
            await produce(kafka_bootstrap, settings.topics.tag_changes, [record(change)])
            await eventually(lambda: len(providers.delivered("push")) == 1, what="the new playbook's push")
            [push] = providers.of("push")
            assert (push.body["playbook_id"], push.body["text"]) == ("lapsed-push", "您好，好久不见")
            listed = (await http.get("/v1/playbooks")).json()
            assert (listed["version"], [p["id"] for p in listed["playbooks"]]) == (1, ["lapsed-push"])
    finally:
        await notifier.stop()
        await providers.stop()
        await redis.aclose()


async def test_a_campaign_waits_to_take_its_audience_until_the_read_model_is_whole(redis_url: str) -> None:
    redis = aioredis.from_url(redis_url)
    prefix = f"cw-{uuid.uuid4().hex[:8]}:"
    store, clock = RedisCampaigns(redis, key_prefix=prefix), ManualClock(T0)
    runner = CampaignRunner(store, clock, rates={"push": 100}, page=100, lease=timedelta(seconds=5))
    campaign = Campaign.model_validate(dict(CAMPAIGN, start_at=T0.isoformat()))
    try:
        assert await store.create(CampaignRecord(campaign=campaign, status="scheduled", created_at=T0))
        assert await runner.run() == 0  # no read model yet (Redis lost it, or it was never built)
        assert (await store.get(CAMPAIGN["id"])).status == "scheduled"  # type: ignore[union-attr]
        await seed(redis, prefix, customers(30), T0)
        clock.advance(timedelta(seconds=1))
        assert await runner.run() > 0
        record = await store.get(CAMPAIGN["id"])
        assert record is not None
        assert (record.status, record.audience) == ("running", len(set().union(*eligible(customers(30)))))
    finally:
        await redis.aclose()
