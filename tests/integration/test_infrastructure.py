"""The local infrastructure really works for what tagstream needs from it.

Real broker, real Redis, real faust worker: these tests catch a Kafka version
that drops protocol versions aiokafka uses, a broker config that breaks
transactions (replication factor / min ISR of the internal topics), or a
faust/aiokafka combination that cannot run an agent with a table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import faust
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TableT

pytestmark = pytest.mark.integration

OP_TIMEOUT_S = 30.0


def _unique(prefix: str) -> str:
    return f"tagstream-it-{prefix}-{uuid.uuid4().hex[:10]}"


async def _create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1) for name in names]
        )
        # Wait until the broker reports the topics with all their partitions led.
        for _ in range(100):
            described = await admin.describe_topics(list(names))
            if all(
                t["error_code"] == 0
                and len(t["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topics {list(names)} did not become available")
    finally:
        await admin.close()


async def _read_all(
    bootstrap: str,
    topic: str,
    *,
    isolation_level: str = "read_uncommitted",
    expected: int | None = None,
    timeout: float = OP_TIMEOUT_S,
) -> list[tuple[int, bytes | None, bytes | None]]:
    """Read ``topic`` from the beginning up to its current end offsets.

    Returns ``(partition, key, value)`` in per-partition offset order.  With
    ``expected`` the read instead continues until that many records arrived.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        assert partitions, f"no metadata for topic {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # Under read_committed the end offsets are the last stable offsets.
        end = await consumer.end_offsets(tps)
        records: list[tuple[int, bytes | None, bytes | None]] = []

        async def reached_end() -> bool:
            if expected is not None:
                return len(records) >= expected
            for tp in tps:
                if await consumer.position(tp) < end[tp]:
                    return False
            return True

        async def drain() -> None:
            while not await reached_end():
                batch = await consumer.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    records.extend((tp.partition, m.key, m.value) for m in msgs)

        await asyncio.wait_for(drain(), timeout)
        return records
    finally:
        await consumer.stop()


# --- (a) idempotent producer, acks=all, keyed messages over 3 partitions ----------------------------


@pytest.mark.asyncio
async def test_idempotent_keyed_produce_consume_roundtrip(kafka_bootstrap: str) -> None:
    topic = _unique("keyed")
    await _create_topics(kafka_bootstrap, [topic], partitions=3)

    sent: dict[bytes, list[bytes]] = defaultdict(list)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=15000,
    )
    await producer.start()
    try:
        partition_of_key: dict[bytes, int] = {}
        for i in range(60):
            key = f"customer-{i % 12}".encode()
            value = f"event-{i}".encode()
            meta = await producer.send_and_wait(topic, value=value, key=key)
            # Same key -> same partition, every time.
            assert partition_of_key.setdefault(key, meta.partition) == meta.partition
            sent[key].append(value)
    finally:
        await producer.stop()

    assert len(set(partition_of_key.values())) == 3, "12 keys should spread over all 3 partitions"

    records = await _read_all(kafka_bootstrap, topic, expected=60)
    received: dict[bytes, list[bytes]] = defaultdict(list)
    for partition, got_key, got_value in records:
        assert got_key is not None
        assert got_value is not None
        assert partition == partition_of_key[got_key]
        received[got_key].append(got_value)
    assert len(records) == 60
    # Per-key order is preserved (one partition per key).
    assert received == sent


# --- (b) transactions: committed visible, aborted invisible to read_committed -----------------------


@pytest.mark.asyncio
async def test_transaction_commit_and_abort(kafka_bootstrap: str) -> None:
    topic = _unique("txn")
    await _create_topics(kafka_bootstrap, [topic], partitions=3)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=_unique("txn-producer"),
        request_timeout_ms=15000,
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(5):
                await producer.send(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())

        await producer.begin_transaction()
        for i in range(5):
            await producer.send(topic, key=f"k{i}".encode(), value=f"aborted-{i}".encode())
        await producer.abort_transaction()
    finally:
        await producer.stop()

    committed = await _read_all(kafka_bootstrap, topic, isolation_level="read_committed")
    assert sorted(v for _, _, v in committed if v is not None) == [f"committed-{i}".encode() for i in range(5)]

    # The aborted records did reach the log: read_uncommitted sees both batches.
    everything = await _read_all(kafka_bootstrap, topic, isolation_level="read_uncommitted")
    values = sorted(v for _, _, v in everything if v is not None)
    assert values == sorted([f"committed-{i}".encode() for i in range(5)] + [f"aborted-{i}".encode() for i in range(5)])


# --- (c) Redis ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_redis_set_get_and_lua(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    prefix = _unique("redis")
    try:
        assert await client.ping() is True
        assert await client.set(f"{prefix}:name", "tagstream") is True
        assert await client.get(f"{prefix}:name") == b"tagstream"

        script = """
        redis.call('SET', KEYS[1], ARGV[1])
        local n = redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]))
        return {redis.call('GET', KEYS[1]), n}
        """
        result = await client.eval(script, 2, f"{prefix}:tag", f"{prefix}:count", "vip", 3)
        assert result == [b"vip", 3]
        result = await client.eval(script, 2, f"{prefix}:tag", f"{prefix}:count", "churn-risk", 4)
        assert result == [b"churn-risk", 7]
    finally:
        await client.delete(f"{prefix}:name", f"{prefix}:tag", f"{prefix}:count")
        await client.aclose()


# --- (d) faust-streaming worker: agent + table, observed through an output topic -----------------


def make_counting_app(
    bootstrap: str, app_id: str, source: str, sink: str, datadir: Path
) -> tuple[faust.App, TableT[str, int]]:
    """A minimal tagger-shaped faust app: count events per key in a Table, emit ``key:count``."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        topic_partitions=3,
        topic_replication_factor=1,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10,
        broker_commit_interval=0.5,
    )
    source_topic = app.topic(source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    sink_topic = app.topic(sink, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=3)

    @app.agent(source_topic)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for key, _value in stream.items():
            name = key.decode()
            counts[name] += 1
            await sink_topic.send(key=key, value=f"{name}:{counts[name]}".encode())

    return app, counts


async def _committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp: off for tp, off in ends.items() if off > 0}
    finally:
        await consumer.stop()


@pytest.mark.asyncio
async def test_faust_agent_with_table(kafka_bootstrap: str, tmp_path: Path) -> None:
    app_id = _unique("faust")
    source, sink = f"{app_id}-in", f"{app_id}-out"
    # auto.create.topics.enable=false (as in production): source and sink
    # topics are created up front; faust creates its own internal topics
    # (table changelog, leader topic) itself.
    await _create_topics(kafka_bootstrap, [source, sink], partitions=3)

    events = [b"alice", b"bob", b"alice", b"carol", b"alice", b"bob"]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key in events:
            await producer.send_and_wait(source, key=key, value=b"{}")
    finally:
        await producer.stop()
    source_ends = await _end_offsets(kafka_bootstrap, source, 3)

    app, counts = make_counting_app(kafka_bootstrap, app_id, source, sink, tmp_path)
    await asyncio.wait_for(app.start(), OP_TIMEOUT_S)
    try:
        await _read_all(kafka_bootstrap, sink, expected=len(events), timeout=45.0)
        # The worker commits its progress on the source topic (at-least-once).
        committed: dict[TopicPartition, int] = {}
        for _ in range(100):
            committed = await _committed_offsets(kafka_bootstrap, app_id)
            if {tp: off for tp, off in committed.items() if tp.topic == source} == source_ends:
                break
            await asyncio.sleep(0.1)
        assert {tp: off for tp, off in committed.items() if tp.topic == source} == source_ends
        assert dict(counts.items()) == {"alice": 3, "bob": 2, "carol": 1}
    finally:
        await asyncio.wait_for(app.stop(), OP_TIMEOUT_S)

    # Everything the agent emitted, exactly once per input event, in per-key order.
    output = await _read_all(kafka_bootstrap, sink)
    per_key: dict[str, list[str]] = defaultdict(list)
    for _, out_key, out_value in output:
        assert out_key is not None
        assert out_value is not None
        name, n = out_value.decode().split(":")
        assert name == out_key.decode()
        per_key[name].append(n)
    assert per_key == {"alice": ["1", "2", "3"], "bob": ["1", "2"], "carol": ["1"]}


# --- (e) topic creation: compacted definitions, tag changes kept forever ----------------------------


@pytest.mark.asyncio
async def test_ensure_topics_creates_compacted_and_kept_forever_topics_once(kafka_bootstrap: str) -> None:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from services.runtime.kafka import ensure_topics
    from services.runtime.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, replication_factor=1, partitions=2)
    plain, compacted, forever = _unique("plain"), _unique("compacted"), _unique("forever")
    for _ in range(2):  # the second call finds them all and changes nothing
        await ensure_topics(settings, [plain, compacted, forever], compacted=[compacted], kept_forever=[forever])

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        names = ("cleanup.policy", "retention.ms")
        responses = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(names))
                for topic in (plain, compacted, forever)
            ]
        )
        described = await admin.describe_topics([plain])
    finally:
        await admin.close()
    configs = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }
    assert configs[plain]["cleanup.policy"] == "delete"
    assert configs[plain]["retention.ms"] == "604800000"  # the broker's default: a week
    assert configs[compacted]["cleanup.policy"] == "compact"
    assert configs[forever] == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert len(described[0]["partitions"]) == 2
