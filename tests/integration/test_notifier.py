"""The notifier end to end in process: real Kafka, real Redis, a real local HTTP server as providers.

The app gets a ManualClock, so "three days later" and "the end of quiet hours" are a clock move;
tag changes are produced straight onto tag-changes, and the read model is seeded with the projector.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from services.notifier.app import NotifierApp, build_app
from services.notifier.redis_store import RedisScheduler
from services.runtime.clock import ManualClock
from services.runtime.customers import Profile, RedisCustomers
from services.runtime.settings import Settings
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.kafka_io import TopicReader, produce, topic_config
from tests.support.notifier_kit import ProviderServer, eventually, notifier_settings, record, tag_changed
from tests.support.playbooks import WINBACK_HIGH_VALUE, playbooks_file

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai

WINBACK = playbooks_file(
    WINBACK_HIGH_VALUE,
    """
  - id: vip-coupon
    trigger: {group: value, tag: vip}
    steps: [{channel: coupon, coupon: HV-50}]
  - id: loyal-coupon
    trigger: {group: loyalty, tag: loyal}
    steps: [{channel: coupon, coupon: HV-50}]
""",
)


class Running:
    """One notifier app plus handles on what it talks to."""

    def __init__(self, app: NotifierApp, settings: Settings, clock: ManualClock, redis: aioredis.Redis) -> None:
        self.app = app
        self.settings = settings
        self.clock = clock
        self.customers = RedisCustomers(redis, prefix=settings.redis.key_prefix)
        self.projector = Projector(redis, key_prefix=settings.redis.key_prefix)
        self.bootstrap = settings.kafka.bootstrap_servers

    async def send(self, *changes: Any) -> None:
        await produce(self.bootstrap, self.settings.topics.tag_changes, [record(change) for change in changes])

    async def outcomes(self, done: Callable[[list[dict[str, Any]]], bool], topic: str | None = None) -> list[Any]:
        async with TopicReader(self.bootstrap, topic or self.settings.topics.notifications) as reader:
            await reader.until(lambda records: done([orjson.loads(r.value) for r in records]), timeout=60)
            return reader.json()


@pytest.fixture
async def providers() -> AsyncIterator[ProviderServer]:
    server = await ProviderServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def start(
    kafka_bootstrap: str, redis_url: str, providers: ProviderServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    started: list[NotifierApp] = []
    redis = aioredis.from_url(redis_url)

    async def run(playbooks: str = WINBACK, at: datetime = T0, **notifier: Any) -> Running:
        path = tmp_path / "playbooks.yaml"
        path.write_text(playbooks, encoding="utf-8")
        settings = notifier_settings(kafka_bootstrap, redis_url, path, providers, **notifier)
        clock = ManualClock(at)
        await Marker(redis, key_prefix=settings.redis.key_prefix).begin({}, at, reason="a new read model")
        app = build_app(settings, clock=clock)
        await app.start()
        started.append(app)
        return Running(app, settings, clock, redis)

    yield run
    for app in started:
        await app.stop()
    await redis.aclose()


def of(outcomes: list[dict[str, Any]], channel: str, customer: str | None = None) -> list[tuple[str, str]]:
    return [
        (o["outcome"], o["reason"])
        for o in outcomes
        if o["channel"] == channel and (customer is None or o["customer_id"] == customer)
    ]


async def test_winback_sends_push_and_coupon_at_once_and_the_sms_after_three_days_unless_the_customer_ordered(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    for customer in ("stays-away", "comes-back"):
        await n.customers.set_profile(customer, Profile(name="Mei", phone="+86 138 0000 0000"))
        change = tag_changed(customer, "value", "high_churned", T0)
        await n.projector.apply(change)
        await n.send(change)
    await eventually(lambda: len(providers.delivered()) == 4, what="push and coupon for both customers")
    assert {r.body["text"] for r in providers.of("push")} == {"Hi Mei, the brand sale is on"}
    assert providers.of("sms") == []

    await n.projector.record_activity("comes-back", T0 + timedelta(days=1), T0 + timedelta(days=1))
    n.clock.advance(timedelta(days=3))
    await eventually(lambda: len(providers.of("sms")) == 1, what="the SMS of the customer who stayed away")
    [sms] = providers.of("sms")
    assert (sms.body["customer_id"], sms.body["to"], sms.key) == (
        "stays-away",
        "+86 138 0000 0000",
        sms.body["idempotency_key"],
    )

    outcomes = await n.outcomes(lambda found: len(of(found, "sms")) == 4)
    assert of(outcomes, "sms", "stays-away") == [("scheduled", ""), ("sent", "")]
    assert of(outcomes, "sms", "comes-back") == [("scheduled", ""), ("cancelled", "cancelled")]
    assert all("138" not in orjson.dumps(o).decode() for o in outcomes)


async def test_a_customer_in_three_matching_tags_gets_one_coupon(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    await n.send(
        tag_changed("c1", "value", "high_churned", T0, seq=1),
        tag_changed("c1", "value", "vip", T0, seq=2),
        tag_changed("c1", "loyalty", "loyal", T0, seq=3),
    )
    outcomes = await n.outcomes(lambda found: len(of(found, "coupon")) == 3)
    assert sorted(of(outcomes, "coupon")) == [("sent", ""), ("suppressed", "duplicate"), ("suppressed", "duplicate")]
    assert len(providers.of("coupon")) == 1


async def test_an_opt_out_set_through_the_customer_store_is_honoured(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    await n.customers.opt_out("c1", "push")
    await n.send(tag_changed("c1", "value", "high_churned", T0))
    outcomes = await n.outcomes(lambda found: len(of(found, "push")) == 1 and len(of(found, "coupon")) == 1)
    assert of(outcomes, "push") == [("suppressed", "consent")]
    assert providers.of("push") == []
    assert len(providers.of("coupon")) == 1


async def test_quiet_hours_hold_a_push_and_send_it_when_the_window_ends(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    night = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    n = await start(at=night, quiet_hours="21:00-08:00")
    await n.customers.set_profile("c1", Profile(timezone="Asia/Shanghai"))
    await n.send(tag_changed("c1", "value", "high_churned", night))
    outcomes = await n.outcomes(lambda found: len(of(found, "push")) == 1)
    assert of(outcomes, "push") == [("deferred", "quiet_hours")]
    assert outcomes[[o["channel"] for o in outcomes].index("push")]["deferred_until"] == "2026-11-24T00:00:00Z"
    assert providers.of("push") == []
    n.clock.set(datetime(2026, 11, 24, 0, 0, tzinfo=UTC))  # 08:00 in Shanghai
    await eventually(lambda: len(providers.of("push")) == 1, what="the held push")


async def test_provider_500s_are_retried_with_one_idempotency_key_then_dead_lettered_and_kept(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    providers.failing["push"] = 500
    n = await start(provider_attempts=3)
    await n.send(tag_changed("c1", "value", "high_churned", T0))
    [dead] = await n.outcomes(lambda found: len(found) == 1, topic=n.settings.topics.notifications_dlq)
    assert (dead["outcome"], dead["reason"], dead["attempts"]) == ("failed", "provider_error", 3)
    assert "HTTP 500" in dead["detail"]
    assert len(providers.of("push")) == 3
    assert len({r.key for r in providers.of("push")}) == 1
    assert len(providers.of("coupon")) == 1  # the other channel is unaffected
    # kept for repair like every dead-letter topic, not for the broker's default week
    assert await topic_config(n.bootstrap, n.settings.topics.notifications_dlq, "retention.ms") == ("-1", True)


async def test_an_unreadable_tag_change_is_dead_lettered_and_does_not_stall_the_partition(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    good = tag_changed("c1", "value", "vip", T0)
    await produce(n.bootstrap, n.settings.topics.tag_changes, [(b"c1", b'{"customer_id": "c1"}', None), record(good)])
    [dead] = await n.outcomes(lambda found: len(found) == 1, topic=n.settings.topics.notifications_dlq)
    assert dead["error"] == "invalid"
    assert "group_id" in dead["reason"]
    await eventually(lambda: len(providers.of("coupon")) == 1, what="the valid change after the poison one")


async def test_the_web_endpoints_report_health_readiness_and_metrics(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    await n.send(tag_changed("c1", "value", "vip", T0))
    sent = 'tagstream_notifications_total{channel="coupon",outcome="sent",reason=""} 1.0'
    base = f"http://127.0.0.1:{n.app.port}"
    async with aiohttp.ClientSession() as http:  # the app serves on this very loop: no blocking client
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert (await response.json())["ready"] is True
        text = ""
        for _ in range(300):  # the counter moves once the outcome is on Kafka, just after the provider call
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            if sent in text:
                break
            await asyncio.sleep(0.1)
    assert sent in text
    assert "tagstream_notifier_provider_seconds_bucket" in text
    assert "tagstream_notifier_scheduler_backlog" in text
    assert "c1" not in text


async def test_a_changed_playbooks_file_is_used_without_a_restart_and_a_bad_one_is_refused(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    n = await start()
    path = n.settings.notifier.playbooks_file
    replacement = path.with_name("next.yaml")
    replacement.write_text(WINBACK.replace("vip-coupon", "vip-coupon-v2"), encoding="utf-8")
    replacement.replace(path)  # a new inode, as a ConfigMap update swaps files
    await eventually(lambda: n.app.playbooks.current.get("vip-coupon-v2") is not None, what="the reload")
    path.write_text("playbooks: [{id: broken}]", encoding="utf-8")
    await eventually(lambda: n.app.metrics.playbook_errors._value.get() == 1, what="the refused file")
    assert n.app.playbooks.current.get("vip-coupon-v2") is not None


async def test_a_request_a_retry_cannot_fix_fails_at_once_and_auth_and_key_headers_are_sent(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    providers.failing["push"] = 400
    n = await start(push_auth="Bearer s3cret")
    await n.send(tag_changed("c1", "value", "high_churned", T0))
    [dead] = await n.outcomes(lambda found: len(found) == 1, topic=n.settings.topics.notifications_dlq)
    assert (dead["outcome"], dead["attempts"]) == ("failed", 1)
    [request] = providers.of("push")
    assert request.authorization == "Bearer s3cret"
    assert request.key == dead["idempotency_key"]
    assert "s3cret" not in repr(n.settings)


async def test_a_provider_answering_500_for_a_while_then_200_gets_every_step_once_and_nothing_is_dead_lettered(
    start: Callable[..., Any], providers: ProviderServer
) -> None:
    providers.failing["push"] = 500
    n = await start(provider_attempts=3, breaker_threshold=2, breaker_reset_s=0.5, batch=2)
    customers = [f"sh-{number:03d}" for number in range(6)]
    await n.send(*(tag_changed(customer, "value", "high_churned", T0) for customer in customers))
    outcomes = await n.outcomes(
        lambda found: {o["customer_id"] for o in found if o["channel"] == "push"} >= set(customers)
    )
    assert set(of(outcomes, "push")) == {("deferred", "circuit_open")}  # the 500 that opened it too
    await asyncio.sleep(1.0)  # a few half-open trials fail meanwhile: each defers its step again
    providers.failing.clear()
    deadline = asyncio.get_running_loop().time() + 60
    while len(providers.delivered("push")) < len(customers) and asyncio.get_running_loop().time() < deadline:
        n.clock.advance(timedelta(seconds=1))  # deferred steps come due on the notifier's clock
        await asyncio.sleep(0.2)
    assert len(providers.delivered("push")) == len(customers)
    outcomes = await n.outcomes(lambda found: len([o for o in found if o["outcome"] == "sent"]) == 2 * len(customers))
    assert [o for o in outcomes if o["outcome"] == "failed"] == []
    assert providers.duplicates() == 0
    assert len([o for o in outcomes if o["channel"] == "push" and o["outcome"] == "sent"]) == len(customers)
    async with TopicReader(n.bootstrap, n.settings.topics.notifications_dlq) as dlq:
        assert await dlq.drain() == []


async def test_stopping_lets_an_in_flight_send_finish_and_complete_its_step(
    start: Callable[..., Any], providers: ProviderServer, redis_url: str
) -> None:
    providers.slow["coupon"] = 1.0
    n = await start()
    await n.send(tag_changed("c1", "value", "vip", T0))
    await eventually(lambda: len(providers.of("coupon")) == 1, what="the coupon request to start")
    await n.app.stop()
    outcomes = await n.outcomes(lambda found: len(found) == 1)
    assert of(outcomes, "coupon") == [("sent", "")]
    redis = aioredis.from_url(redis_url)
    try:
        assert await RedisScheduler(redis, key_prefix=n.settings.redis.key_prefix).size() == 0
    finally:
        await redis.aclose()


NAMED = """
templates:
  upgraded: "${name|您好}，恭喜成为${tag}（${group}）会员"
playbooks:
  - {id: upgrade, trigger: {group: tier, tag: gold}, steps: [{channel: push, template: upgraded}]}
"""


async def test_messages_name_tags_as_the_definitions_topic_does_and_a_customer_without_a_name_is_greeted(
    start: Callable[..., Any], providers: ProviderServer, kafka_bootstrap: str
) -> None:
    from schemas.tags import TagGroup
    from services.runtime.definitions_feed import definition_record

    tiers = TagGroup.model_validate(
        {
            "id": "tier",
            "name": "会员等级",
            "mode": "exclusive",
            "tagging": "manual",
            "tags": [{"id": "gold", "name": "金卡"}],
        }
    )
    n = await start(NAMED)
    await produce(kafka_bootstrap, n.settings.topics.tag_definitions, [(*definition_record(tiers), None)])
    await eventually(lambda: "tier" in n.app.definitions.groups, what="the definition read")
    await n.customers.set_profile("named", Profile(name="李雷"))
    await n.send(tag_changed("named", "tier", "gold", T0), tag_changed("anonymous", "tier", "gold", T0))
    await eventually(lambda: len(providers.of("push")) == 2, what="both pushes")
    assert {r.body["customer_id"]: r.body["text"] for r in providers.of("push")} == {
        "named": "李雷，恭喜成为金卡（会员等级）会员",
        "anonymous": "您好，恭喜成为金卡（会员等级）会员",
    }
