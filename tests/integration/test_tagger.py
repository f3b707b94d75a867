"""The tagger worker on the real broker: events in, exact tag changes out."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.tags import TagGroup
from schemas.topics import TopicNames
from services.engine.codec import decode
from services.runtime.clock import ManualClock
from services.runtime.definitions_feed import definition_record
from services.runtime.engine_build import engine_build
from services.runtime.partitioning import partition_for
from services.runtime.readmodel import ReadModel
from services.runtime.redis import redis_client
from services.runtime.settings import KafkaSettings, RedisSettings, Settings, TaggerSettings
from services.tagger.app import Tagger, build_app
from services.tagger.faust_compat import kafka_producer
from tests.support.builders import cond, group, order_bands, value_tiers
from tests.support.kafka_io import TopicReader, produce, produce_to, topic_config

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def topic_names(prefix: str) -> TopicNames:
    return TopicNames(**{name: f"{prefix}.{name}" for name in TopicNames.model_fields})


def worker_settings(
    prefix: str, kafka: str, redis_url: str, datadir: Path, *, partitions: int, **tagger: Any
) -> Settings:
    """An in-process tagger on its own topics and key prefix, quick to batch and to wake customers."""
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka, partitions=partitions, replication_factor=1),
        redis=RedisSettings(url=redis_url, key_prefix=f"{prefix}:"),
        topics=topic_names(prefix),
        tagger=TaggerSettings(
            app_id=prefix,
            store="memory",
            datadir=datadir,
            web_port=free_port(),
            web_host="127.0.0.1",
            batch_within_s=0.02,
            timer_interval_s=0.1,
            standby_replicas=0,
            **tagger,
        ),
    )


def definitions() -> list[TagGroup]:
    care = group("care", [("vip_care", None), ("regular", [cond("order_count", "gte", 1)])], tagging="both")
    recency = group("recency", [("week", [cond("days_since_last_order", "lte", 7)])], mode="multi")
    return [value_tiers(), order_bands(), care, recency]


class Harness:
    def __init__(self, tagger: Tagger, clock: ManualClock, bootstrap: str) -> None:
        self.tagger = tagger
        self.clock = clock
        self.bootstrap = bootstrap
        self.topics = tagger.settings.topics

    def now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    async def send_events(self, *events: dict[str, Any], key: bytes | None = None) -> None:
        records = [
            (key if key is not None else event["customer_id"].encode(), json.dumps(event).encode(), self.now_ms())
            for event in events
        ]
        await produce(self.bootstrap, self.topics.events, records)

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        await produce(self.bootstrap, topic, [(key, value, self.now_ms())])

    async def publish(self, *groups: TagGroup) -> None:
        await produce(self.bootstrap, self.topics.tag_definitions, [(*definition_record(g), None) for g in groups])

    async def changes_for(self, customer: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        async with TopicReader(self.bootstrap, self.topics.tag_changes) as reader:
            await reader.until(lambda records: len(_mine(records, customer)) >= count, timeout)
            return [json.loads(record.value) for record in _mine(reader.records, customer)]

    async def dead_letters(self, count: int) -> list[dict[str, Any]]:
        async with TopicReader(self.bootstrap, self.topics.events_dlq) as reader:
            await reader.until(lambda records: len(records) >= count)
            return reader.json()

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(self._get, path)  # the server runs on this event loop

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.tagger.settings.tagger.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())


def _mine(records: list[Any], customer: str) -> list[Any]:
    return [record for record in records if record.key == customer.encode()]


def paid_event(customer: str, amount: str, *, order: str | None = None, at: datetime) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": f"e-{uuid.uuid4().hex}",
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "order_id": order or f"o-{uuid.uuid4().hex[:8]}",
        "amount": amount,
        "currency": "CNY",
    }


def summary(changes: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(c["group_id"], c["tag_id"], c["change"], c["source"]) for c in changes]


@asynccontextmanager
async def running(settings: Settings, clock: ManualClock, kafka: str, *groups: TagGroup) -> AsyncIterator[Harness]:
    """An in-process tagger on `settings`' topics with `groups` defined, started and ready."""
    tagger = build_app(settings, clock=clock)
    await tagger.create_topics()
    run = Harness(tagger, clock, kafka)
    await run.publish(*groups)
    await asyncio.wait_for(tagger.app.start(), 60)
    deadline = time.monotonic() + 60
    while not tagger.ready:
        assert time.monotonic() < deadline, "tagger did not become ready"
        await asyncio.sleep(0.1)
    yield run
    await asyncio.wait_for(tagger.app.stop(), 60)


@pytest.fixture(scope="module")
async def harness(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    prefix = f"it-tagger-{uuid.uuid4().hex[:8]}"
    datadir = Path(tmp_path_factory.mktemp("tagger"))
    settings = worker_settings(prefix, kafka_bootstrap, redis_url, datadir, partitions=3, projector=True)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with running(settings, clock, kafka_bootstrap, *definitions()) as run:
        yield run


async def test_events_become_exact_tag_changes(harness: Harness) -> None:
    now = harness.clock.now()
    await harness.send_events(
        paid_event("alice", "100", order="a1", at=now),
        paid_event("alice", "250", order="a2", at=now),
        paid_event("alice", "1650", order="a3", at=now),
        paid_event("alice", "10", order="a4", at=now),
    )
    changes = await harness.changes_for("alice", 10)
    assert summary(changes) == [
        ("care", "regular", "added", "rule"),
        ("orders", "o1_3", "added", "rule"),
        ("recency", "week", "added", "rule"),
        ("value", "low", "added", "rule"),
        ("value", "low", "removed", "rule"),
        ("value", "mid", "added", "rule"),
        ("value", "mid", "removed", "rule"),
        ("value", "high", "added", "rule"),
        ("orders", "o1_3", "removed", "rule"),
        ("orders", "o4_6", "added", "rule"),
    ]
    assert [c["seq"] for c in changes] == list(range(1, 11))


async def test_manual_commands_apply_in_order_and_forbidden_ones_are_dead_lettered(harness: Harness) -> None:
    now = harness.clock.now()
    await harness.send_events(paid_event("bob", "50", at=now))
    # Kafka orders messages within a topic partition, not across the events and commands topics:
    # the command is sent once the event is applied, as an operator acting on what they see would.
    assert len(await harness.changes_for("bob", 4)) == 4
    command = {
        "command_id": f"cmd-{uuid.uuid4().hex}",
        "customer_id": "bob",
        "group_id": "care",
        "tag_id": "vip_care",
        "action": "add",
        "actor": "ops@shop",
        "occurred_at": now.isoformat(),
    }
    forbidden = command | {"command_id": "cmd-forbidden", "group_id": "value", "tag_id": "high"}
    await harness.send_raw(harness.topics.tag_commands, b"bob", json.dumps(command).encode())
    await harness.send_raw(harness.topics.tag_commands, b"bob", json.dumps(forbidden).encode())
    changes = await harness.changes_for("bob", 6)
    assert summary(changes)[-2:] == [("care", "regular", "removed", "manual"), ("care", "vip_care", "added", "manual")]
    letters = await harness.dead_letters(1)
    refused = [letter for letter in letters if letter["key"] == "bob"]
    assert refused[0]["error"] == "refused"
    assert "allows only automatic tagging" in refused[0]["reason"]
    assert json.loads(refused[0]["original"])["command_id"] == "cmd-forbidden"


async def test_bad_input_is_dead_lettered_with_the_reason_and_never_stalls_the_partition(harness: Harness) -> None:
    now = harness.clock.now()
    await harness.send_raw(harness.topics.events, b"carol", b"{not json")
    await harness.send_raw(
        harness.topics.events, b"carol", json.dumps({"type": "browse", "customer_id": "carol"}).encode()
    )
    await harness.send_events(paid_event("carol", "10", at=now), key=b"someone-else")
    await harness.send_events(paid_event("carol", "400", at=now))  # the same partition keeps flowing
    changes = await harness.changes_for("carol", 4)
    assert ("value", "mid", "added", "rule") in summary(changes)
    letters = [letter for letter in await harness.dead_letters(4) if letter["key"] in ("carol", "someone-else")]
    reasons = {letter["error"]: letter["reason"] for letter in letters}
    assert "Invalid JSON" in reasons["invalid"] or "event_id" in reasons["invalid"]
    assert "does not match customer_id 'carol'" in reasons["mismatched_key"]
    assert {letter["original"] for letter in letters} >= {"{not json"}


async def test_an_order_in_another_currency_is_dead_lettered_and_a_free_order_counts(harness: Harness) -> None:
    now = harness.clock.now()
    await harness.send_events(
        paid_event("fern", "50", at=now) | {"currency": "USD"}, paid_event("fern", "0.00", at=now)
    )
    changes = await harness.changes_for("fern", 4)
    assert sorted(summary(changes)) == [
        ("care", "regular", "added", "rule"),
        ("orders", "o1_3", "added", "rule"),
        ("recency", "week", "added", "rule"),
        ("value", "low", "added", "rule"),
    ]
    assert changes[-1]["caused_by"] == changes[0]["caused_by"]  # all four from the free order
    letters = [letter for letter in await harness.dead_letters(1) if letter["key"] == "fern"]
    assert letters, "the USD order was not dead-lettered"
    assert letters[0]["error"] == "invalid"
    assert "currency 'USD' is not the shop's currency 'CNY'" in letters[0]["reason"]


async def test_an_event_dated_past_the_skew_is_dead_lettered_and_moves_no_clock(harness: Harness) -> None:
    now = harness.clock.now()
    next_year = paid_event("erin", "5000", at=now + timedelta(days=365))
    await harness.send_events(next_year, paid_event("erin", "10", at=now))
    changes = await harness.changes_for("erin", 4)
    assert ("value", "low", "added", "rule") in summary(changes)  # only the order of today counted
    assert ("value", "high", "added", "rule") not in summary(changes)
    letters = [letter for letter in await harness.dead_letters(1) if letter["key"] == "erin"]
    assert [letter["error"] for letter in letters] == ["invalid"]
    assert letters[0]["reason"].startswith(f"occurred_at {next_year['occurred_at'][:19]}")
    assert "ahead of the clock" in letters[0]["reason"]
    assert json.loads(letters[0]["original"])["event_id"] == next_year["event_id"]


async def test_history_on_the_topic_causes_import_changes(harness: Harness) -> None:
    now = harness.clock.now()
    imported = paid_event("fay", "100", at=now) | {"source": "import"}
    await harness.send_events(imported, paid_event("gus", "100", at=now - timedelta(days=3)))
    assert {c["source"] for c in await harness.changes_for("fay", 4)} == {"import"}
    assert {c["source"] for c in await harness.changes_for("gus", 4)} == {"import"}  # older than history_age


async def test_a_definition_published_while_customers_exist_is_backfilled(harness: Harness) -> None:
    now = harness.clock.now()
    await harness.send_events(paid_event("dave", "700", at=now))
    assert len(await harness.changes_for("dave", 4)) == 4
    big = group("big", [("spender", [cond("total_spent", "gte", 500)])], mode="multi")
    await harness.publish(big)
    changes = await harness.changes_for("dave", 5)
    assert summary(changes)[-1] == ("big", "spender", "added", "rule_change")
    assert changes[-1]["caused_by"] == "definition:big:v1"


async def test_a_backfill_evaluates_at_the_workers_clock_not_the_producers(harness: Harness) -> None:
    start = harness.clock.now()
    await harness.send_events(paid_event("hal", "900", at=start))
    await harness.changes_for("hal", 4)
    later = start + timedelta(days=2)
    harness.clock.set(later)
    try:
        await harness.publish(group("huge", [("spender", [cond("total_spent", "gte", 800)])], mode="multi"))
        async with TopicReader(harness.bootstrap, harness.topics.tag_changes) as reader:
            await reader.until(lambda records: any(b'"huge"' in record.value for record in _mine(records, "hal")))
            huge = [json.loads(r.value) for r in _mine(reader.records, "hal") if b'"huge"' in r.value]
    finally:
        harness.clock.set(start)
    assert summary(huge) == [("huge", "spender", "added", "rule_change")]
    assert huge[0]["occurred_at"].startswith(later.date().isoformat())


async def test_a_recency_tag_drops_when_its_time_passes(harness: Harness) -> None:
    start = harness.clock.now()
    await harness.send_events(paid_event("erin", "20", at=start))
    first = await harness.changes_for("erin", 4)
    assert ("recency", "week", "added", "rule") in summary(first)
    harness.clock.set(start + timedelta(days=8, seconds=1))
    changes = await harness.changes_for("erin", 5)
    assert summary(changes)[-1] == ("recency", "week", "removed", "time")
    assert changes[-1]["occurred_at"].startswith((start + timedelta(days=8)).date().isoformat())
    harness.clock.set(start)


async def test_health_readiness_and_metrics_are_served(harness: Harness) -> None:
    assert (await harness.get("/healthz"))[0] == 200
    status, body = await harness.get("/readyz")
    assert status == 200
    assert json.loads(body)["ready"] is True
    status, body = await harness.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'tagstream_events_processed_total{kind="order_paid",outcome="applied"}' in text
    assert "tagstream_tag_changes_total" in text
    assert "tagstream_dlq_total" in text
    assert f'tagstream_tagger_build_info{{engine="{engine_build().kind}"}} 1.0' in text


async def test_the_redis_read_model_matches_the_table(harness: Harness) -> None:
    customers = ["alice", "bob", "carol", "dave", "erin"]
    redis = redis_client(harness.tagger.settings.redis)
    model = ReadModel(redis, key_prefix=harness.tagger.settings.redis.key_prefix)
    try:
        deadline = time.monotonic() + 30
        while True:
            table = {c: decode(harness.tagger.table[c.encode()]).tag_ids() for c in customers}
            projected = {c: {g: sorted(t) for g, t in (await model.current_tags(c)).items()} for c in customers}
            if projected == table or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert projected == table
        assert all(table[c] for c in customers)
        history = await model.history("alice", 0, 3)
        last = decode(harness.tagger.table[b"alice"]).seq
        assert [change.seq for change in history] == [last, last - 1, last - 2]  # newest first, with reasons
        assert history[0].reason.summary
        activity = await model.activity("alice")
        assert activity is not None
        assert activity.last_order_at is not None
        assert await model.gaps() == 0
    finally:
        await redis.aclose()


async def test_the_changelog_asks_for_its_in_sync_replicas_and_tag_changes_go_through_an_idempotent_producer(
    harness: Harness,
) -> None:
    changelog = harness.tagger.table.changelog_topic.get_topic_name()
    assert await topic_config(harness.bootstrap, changelog, "min.insync.replicas") == ("1", True)
    producer = kafka_producer(harness.tagger.app)
    # aiokafka keeps a transaction manager (producer id + sequence numbers) exactly when idempotent
    assert producer._txn_manager is not None


async def test_key_less_and_wrongly_keyed_records_on_every_input_topic_are_dead_lettered_with_the_reason(
    harness: Harness,
) -> None:
    now = harness.clock.now()
    # a key-less event would land on any partition: erin's state would exist in two of them
    await harness.send_raw(harness.topics.events, None, json.dumps(paid_event("erin", "900", at=now)).encode())
    command = {
        "command_id": f"cmd-{uuid.uuid4().hex}",
        "customer_id": "erin",
        "group_id": "care",
        "tag_id": "vip_care",
        "action": "add",
        "actor": "ops@shop",
        "occurred_at": now.isoformat(),
    }
    await harness.send_raw(harness.topics.tag_commands, None, json.dumps(command).encode())
    await harness.send_raw(harness.topics.tag_commands, b"frank", json.dumps(command).encode())
    misfiled = group("misfiled", [("anyone", [cond("order_count", "gte", 1)])], mode="multi")
    _, value = definition_record(misfiled)
    await produce(harness.bootstrap, harness.topics.tag_definitions, [(b"value", value, None)])
    # keyed right, but placed by another partitioner (librdkafka's CRC32): erin's state would split too
    elsewhere = (partition_for(b"erin", harness.tagger.settings.kafka.partitions) + 1) % 3
    placed = json.dumps(paid_event("erin", "700", at=now)).encode()
    await produce_to(harness.bootstrap, harness.topics.events, elsewhere, b"erin", placed, harness.now_ms())
    await harness.send_events(paid_event("erin", "20", at=now))  # keyed right: applied as usual
    assert summary(await harness.changes_for("erin", 4))[0] == ("care", "regular", "added", "rule")

    async with TopicReader(harness.bootstrap, harness.topics.events_dlq) as reader:
        await reader.until(lambda records: len(_about_erin_or_misfiled(records)) >= 5)
        letters = _about_erin_or_misfiled(reader.records)
    by_topic = {(letter["topic"], letter["key"]): letter for letter in letters}
    assert set(by_topic) == {
        (harness.topics.events, None),
        (harness.topics.events, "erin"),
        (harness.topics.tag_commands, None),
        (harness.topics.tag_commands, "frank"),
        (harness.topics.tag_definitions, "value"),
    }
    assert {letter["error"] for letter in letters} == {"mismatched_key"}
    assert (
        by_topic[harness.topics.events, None]["reason"]
        == "the message has no key; key messages by customer_id ('erin')"
    )
    assert "does not match customer_id 'erin'" in by_topic[harness.topics.tag_commands, "frank"]["reason"]
    misplaced = by_topic[harness.topics.events, "erin"]
    assert misplaced["partition"] == elsewhere
    assert f"belongs in partition {(elsewhere + 2) % 3} of 3, not {elsewhere}" in misplaced["reason"]
    assert "does not match the group id 'misfiled'" in by_topic[harness.topics.tag_definitions, "value"]["reason"]
    assert json.loads(by_topic[harness.topics.tag_definitions, "value"]["original"])["id"] == "misfiled"
    # the misfiled record neither replaced the group `value` nor added `misfiled`
    assert harness.tagger.feed.groups["value"].id == "value"
    assert "misfiled" not in harness.tagger.feed.groups


def _about_erin_or_misfiled(records: list[Any]) -> list[dict[str, Any]]:
    letters = [json.loads(record.value) for record in records]
    return [letter for letter in letters if "'erin'" in letter["reason"] or "'misfiled'" in letter["reason"]]
