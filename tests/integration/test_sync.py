"""The sync sink on the real broker and Redis: `tagstream.tag-changes` in, a signed webhook and WeCom out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas.tags import TagChanged, TagGroup
from services.runtime.clock import ManualClock
from services.runtime.customers import RedisCustomers
from services.runtime.definitions_feed import definition_record
from services.runtime.kafka import ensure_topics
from services.runtime.redis import redis_client
from services.runtime.settings import Settings
from services.sync.app import SyncApp, build_app
from tests.support.kafka_io import TopicReader, produce
from tests.support.notifier_kit import ProviderServer, eventually, record
from tests.support.sync_kit import (
    T0,
    change,
    contact,
    intent_group,
    source_group,
    sync_service_settings,
    webhook_settings,
    wecom_settings,
)
from tests.support.wecom_fake import WeComFake

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def receiver() -> AsyncIterator[ProviderServer]:
    server = await ProviderServer().start()
    yield server
    await server.stop()


async def started(settings: Settings, *groups: TagGroup) -> SyncApp:
    topics = settings.topics
    await ensure_topics(
        settings.kafka, [topics.tag_definitions, topics.tag_changes], compacted=[topics.tag_definitions]
    )
    await produce(
        settings.kafka.bootstrap_servers,
        settings.topics.tag_definitions,
        [(*definition_record(group), None) for group in groups],
    )
    app = build_app(settings, clock=ManualClock(T0))
    await app.start()
    return app


async def send(settings: Settings, *changes: TagChanged) -> None:
    await produce(settings.kafka.bootstrap_servers, settings.topics.tag_changes, [record(c) for c in changes])


def synced(server: ProviderServer) -> list[tuple[str, int, str, str, str]]:
    return [
        (item["customer_id"], item["seq"], item["group_name"], item["tag_name"], item["change"])
        for request in server.of("sync")
        if request.status < 300
        for item in request.body["changes"]
    ]


def counted(app: SyncApp, outcome: str) -> float:
    value: Any = app.metrics.changes.labels("webhook", outcome)._value.get()
    return float(value)


async def test_changes_reach_the_webhook_in_order_and_a_disabled_group_is_not_synced(
    kafka_bootstrap: str, redis_url: str, receiver: ProviderServer
) -> None:
    settings = sync_service_settings(kafka_bootstrap, redis_url, webhook_settings(receiver.url("sync")))
    quiet = TagGroup.model_validate({**intent_group().model_dump(), "id": "quiet", "disabled": True})
    app = await started(settings, intent_group(), source_group(), quiet)
    try:
        await send(
            settings,
            change("c1", "intent", "low", 1),
            change("c1", "quiet", "high", 2),
            change("c1", "intent", "low", 3, "removed"),
            change("c1", "intent", "high", 4),
            change("c2", "source", "douyin", 1),
        )
        await eventually(lambda: len(synced(receiver)) == 4, what="four changes synced")
        assert [item for item in synced(receiver) if item[0] == "c1"] == [
            ("c1", 1, "购买意向", "低意向", "added"),
            ("c1", 3, "购买意向", "低意向", "removed"),
            ("c1", 4, "购买意向", "高意向", "added"),
        ]
        request = receiver.of("sync")[0]
        assert request.key == request.body["batch_id"]
        await eventually(lambda: counted(app, "disabled") == 1, what="the disabled group's change counted")
    finally:
        await app.stop()


async def test_a_resent_batch_is_not_synced_twice(
    kafka_bootstrap: str, redis_url: str, receiver: ProviderServer
) -> None:
    settings = sync_service_settings(kafka_bootstrap, redis_url, webhook_settings(receiver.url("sync")))
    app = await started(settings, intent_group())
    try:
        batch = [change("c1", "intent", "low", 1), change("c1", "intent", "high", 2)]
        await send(settings, *batch)
        await eventually(lambda: len(synced(receiver)) == 2, what="the batch synced")
        await send(settings, *batch)  # the tagger resent them after a crash: same seqs
        await eventually(lambda: counted(app, "duplicate") == 2, what="the resent changes skipped")
        assert len(synced(receiver)) == 2
    finally:
        await app.stop()


async def test_a_receiver_outage_delays_changes_without_losing_any(
    kafka_bootstrap: str, redis_url: str, receiver: ProviderServer
) -> None:
    sync = webhook_settings(receiver.url("sync"), attempts=2)
    settings = sync_service_settings(kafka_bootstrap, redis_url, sync)
    receiver.failing["sync"] = 503
    app = await started(settings, intent_group())
    try:
        await send(settings, *(change(f"c{n}", "intent", "high", 1) for n in range(5)))
        await eventually(lambda: len(receiver.of("sync")) >= 4, what="retries during the outage")
        assert synced(receiver) == []
        receiver.failing.clear()
        await eventually(lambda: len(synced(receiver)) >= 5, what="every change after the outage")
        assert {item[0] for item in synced(receiver)} == {f"c{n}" for n in range(5)}
    finally:
        await app.stop()


async def test_a_batch_the_receiver_refuses_is_dead_lettered_with_the_status(
    kafka_bootstrap: str, redis_url: str, receiver: ProviderServer
) -> None:
    settings = sync_service_settings(kafka_bootstrap, redis_url, webhook_settings(receiver.url("sync")))
    receiver.failing["sync"] = 422
    app = await started(settings, intent_group())
    try:
        await send(settings, change("c1", "intent", "high", 1))
        async with TopicReader(kafka_bootstrap, settings.topics.sync_dlq) as reader:
            await reader.until(lambda records: len(records) == 1, timeout=60)
            [letter] = reader.json()
        assert letter["error"] == "failed"
        assert "HTTP 422" in letter["reason"]
        assert '"seq":1' in letter["original"]
        receiver.failing.clear()
        await send(settings, change("c1", "intent", "low", 2))  # the stream goes on past the refused batch
        await eventually(lambda: [item[1] for item in synced(receiver)] == [2], what="the next change")
    finally:
        await app.stop()


async def test_wecom_contacts_hold_the_changed_tags(kafka_bootstrap: str, redis_url: str) -> None:
    wecom = await WeComFake(expire_token_after_calls=2, rate_limited_calls=1).start()
    settings = sync_service_settings(kafka_bootstrap, redis_url, wecom_settings(wecom.url))
    redis = redis_client(settings.redis)
    customers = RedisCustomers(redis, prefix=settings.redis.key_prefix)
    externals = {customer: await contact(customers, customer) for customer in ("c1", "c2")}
    app = await started(settings, intent_group(), source_group())
    try:
        await send(
            settings,
            change("c1", "intent", "low", 1),
            change("c1", "intent", "low", 2, "removed"),
            change("c1", "intent", "high", 3),
            change("c2", "source", "store", 1),
            change("c2", "source", "douyin", 2),
        )
        await eventually(
            lambda: (
                wecom.tag_names("zhangsan", externals["c2"]) == {("来源渠道", "门店"), ("来源渠道", "抖音")}
                and wecom.tag_names("zhangsan", externals["c1"]) == {("购买意向", "高意向")}
            ),
            what="the WeCom contacts' tags",
        )
    finally:
        await app.stop()
        await redis.aclose()
        await wecom.stop()
