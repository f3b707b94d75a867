"""The notifier's pending steps survive a Redis crash because Redis must persist (docs/notifier.md):
redis-server SIGKILLed mid-stream and restarted on its append-only file loses no step and sends none
twice (by idempotency key); a Redis that does not persist is refused unless explicitly allowed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.notifier.app import build_app
from services.notifier.durability import VolatileRedis
from services.runtime.clock import ManualClock
from services.runtime.customers import Profile, RedisCustomers
from tests.support.kafka_io import produce
from tests.support.notifier_kit import ProviderServer, eventually, notifier_settings, record, tag_changed
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
CUSTOMERS = 80
PLAYBOOKS = """
templates:
  brand-sale: "Hi ${name|there}, the brand sale is on"
  miss-you: "We miss you, ${name|friend}"
playbooks:
  - id: winback
    trigger: {group: value, tag: high_churned, on: added}
    steps:
      - {channel: push, template: brand-sale, delay: 0}
      - {channel: sms,  template: miss-you,   delay: 3d}
"""


@pytest.fixture
async def providers() -> AsyncIterator[ProviderServer]:
    server = await ProviderServer().start()
    yield server
    await server.stop()


async def test_pending_steps_survive_a_redis_sigkill_and_are_each_sent_once(
    kafka_bootstrap: str, private_redis: RedisServer, providers: ProviderServer, tmp_path: Path
) -> None:
    private_redis.start()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS, encoding="utf-8")
    settings = notifier_settings(kafka_bootstrap, private_redis.url, playbooks, providers, lease_s=2.0)
    redis = aioredis.from_url(private_redis.url)
    customers = RedisCustomers(redis, prefix=settings.redis.key_prefix)
    names = [f"sh-{index:03d}" for index in range(CUSTOMERS)]
    for name in names:
        await customers.set_profile(name, Profile(name="Mei", phone="+86 138 0000 0000", timezone="Asia/Shanghai"))
    changes = [record(tag_changed(name, "value", "high_churned", T0)) for name in names]
    clock = ManualClock(T0)
    app = build_app(settings, clock=clock)
    await app.start()
    try:
        half = CUSTOMERS // 2
        await produce(kafka_bootstrap, settings.topics.tag_changes, changes[:half])
        await eventually(lambda: len(providers.delivered("push")) == half, timeout=60, what="the first pushes")

        rest = asyncio.create_task(produce(kafka_bootstrap, settings.topics.tag_changes, changes[half:]))
        await asyncio.sleep(0.2)
        private_redis.kill()  # 40 SMS steps are pending in Redis, more tag changes are arriving
        await asyncio.sleep(2.0)
        private_redis.start()  # the same append-only file
        await rest

        await eventually(lambda: len(providers.delivered("push")) == CUSTOMERS, timeout=90, what="every push")
        clock.advance(timedelta(days=3, minutes=1))
        await eventually(lambda: len(providers.delivered("sms")) == CUSTOMERS, timeout=90, what="every pending SMS")
        await asyncio.sleep(1.0)  # room for a duplicate to show up
    finally:
        await app.stop()
        await redis.aclose()

    sms = Counter(request.key for request in providers.of("sms") if request.status < 300)
    assert len(sms) == CUSTOMERS
    assert set(sms.values()) == {1}, "a pending SMS was sent twice"
    assert {request.body["customer_id"] for request in providers.of("sms")} == set(names)
    # a push in flight at the kill may be re-sent under the same key (the provider deduplicates it)
    assert len(providers.delivered("push")) == CUSTOMERS


async def test_the_notifier_refuses_a_redis_without_persistence_unless_allowed(
    kafka_bootstrap: str, redis_url: str, providers: ProviderServer, tmp_path: Path
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS, encoding="utf-8")
    volatile = RedisServer(tmp_path / "volatile", appendonly=False)
    lazy = RedisServer(tmp_path / "lazy", extra=("--appendfsync", "no"))
    managed = RedisServer(tmp_path / "managed", extra=("--rename-command", "CONFIG", ""))
    managed_volatile = RedisServer(
        tmp_path / "managed-volatile", appendonly=False, extra=("--rename-command", "CONFIG", "")
    )
    servers = [volatile, lazy, managed, managed_volatile]
    for server in servers:
        server.start()
    try:
        for server, found in [
            (volatile, "appendonly is 'no'"),
            (lazy, "appendfsync is 'no'"),
            (managed_volatile, "aof_enabled:0"),
        ]:
            app = build_app(notifier_settings(kafka_bootstrap, server.url, playbooks, providers))
            with pytest.raises(VolatileRedis, match=found) as refused:
                await app.start()
            assert "TAGSTREAM_NOTIFIER__ALLOW_VOLATILE_REDIS=true" in str(refused.value)
            await app.stop()

        for server, options in [(managed, {}), (volatile, {"allow_volatile_redis": True})]:
            app = build_app(notifier_settings(kafka_bootstrap, server.url, playbooks, providers, **options))
            await app.start()
            await app.stop()
    finally:
        for server in servers:
            server.stop()
