"""Sales alerts on the real broker and Redis: a hot-lead tag change -> the salesperson's WeCom group robot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.notifier.app import build_app
from services.runtime.clock import ManualClock
from services.runtime.customers import Profile, RedisCustomers
from services.tagger.marker import Marker
from tests.support.kafka_io import TopicReader, produce
from tests.support.notifier_kit import ProviderServer, eventually, notifier_settings, record, tag_changed
from tests.support.sync_kit import T0
from tests.support.wecom_fake import GroupRobotFake

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

HOT_LEADS = """
templates:
  hot-lead: "${name|A lead} (${customer_id}) is ${tag} now"
playbooks:
  - id: hot-lead
    trigger: {group: intent, tag: high}
    steps: [{channel: alert, template: hot-lead}]
    caps: [{channel: alert, limit: 1, window: 1d}]
"""


@pytest.fixture
async def robot() -> AsyncIterator[GroupRobotFake]:
    fake = await GroupRobotFake(busy=2).start()
    yield fake
    await fake.stop()


async def test_a_hot_lead_alerts_its_salesperson_once_through_the_group_robot(
    kafka_bootstrap: str, redis_url: str, robot: GroupRobotFake, tmp_path: Path
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(HOT_LEADS, encoding="utf-8")
    providers = await ProviderServer().start()
    settings = notifier_settings(kafka_bootstrap, redis_url, playbooks, providers, alert_url=robot.url)
    redis = aioredis.from_url(redis_url)
    customers = RedisCustomers(redis, prefix=settings.redis.key_prefix)
    await Marker(redis, key_prefix=settings.redis.key_prefix).begin({}, T0, reason="a new read model")
    await customers.set_profile("lead-1", Profile(name="王芳", owner="sales.li"))
    await customers.set_profile("lead-2", Profile(name="李雷"))  # nobody's lead yet: no owner
    app = build_app(settings, clock=ManualClock(T0))
    await app.start()
    try:
        changes = [tag_changed("lead-1", "intent", "high", T0, seq=1), tag_changed("lead-2", "intent", "high", T0)]
        await produce(kafka_bootstrap, settings.topics.tag_changes, [record(c) for c in changes])
        await eventually(lambda: len(robot.received) == 1, what="the alert through the robot")
        resent = tag_changed("lead-1", "intent", "high", T0, seq=1)  # the tagger resent it after a crash
        await produce(kafka_bootstrap, settings.topics.tag_changes, [record(resent)])
        async with TopicReader(kafka_bootstrap, settings.topics.notifications) as reader:
            outcomes = await reader.until(lambda records: len(records) >= 3, timeout=60)
        alerts = [o for o in reader.json() if o["channel"] == "alert"]
        decided = sorted((o["customer_id"], o["outcome"], o["reason"]) for o in alerts)
        assert decided == [
            ("lead-1", "sent", ""),
            ("lead-1", "suppressed", "duplicate"),
            ("lead-2", "suppressed", "unreachable"),
        ]
        assert len(outcomes) == 3
        [(_, key, body)] = robot.received
        assert body == {
            "msgtype": "text",
            "text": {"content": "王芳 (lead-1) is high now", "mentioned_list": ["sales.li"]},
        }
        assert key == next(o["idempotency_key"] for o in reader.json() if o["outcome"] == "sent")
        assert robot.refused == 2  # 45009 twice, then delivered: one message, no duplicate
        assert providers.requests == []
    finally:
        await app.stop()
        await providers.stop()
        await redis.aclose()
