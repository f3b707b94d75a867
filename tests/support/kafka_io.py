"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.runtime.kafka import partitions_of
from services.runtime.settings import KafkaSettings


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]]) -> None:
    """(key, value, timestamp_ms) records, each acknowledged by all replicas."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, timestamp_ms in records:
            await producer.send_and_wait(topic, key=key, value=value, timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()


async def produce_to(
    bootstrap: str, topic: str, partition: int, key: bytes | None, value: bytes, timestamp_ms: int | None = None
) -> None:
    """One record on a partition of the caller's choosing, as a producer with another partitioner would
    place it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value, partition=partition, timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning and keeps everything it has seen."""

    def __init__(self, bootstrap: str, topic: str, isolation_level: str = "read_uncommitted") -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level=isolation_level
        )
        self._topic = topic
        self._bootstrap = bootstrap
        self.records: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        partitions = await partitions_of(KafkaSettings(bootstrap_servers=self._bootstrap), self._topic)
        tps = [TopicPartition(self._topic, partition) for partition in sorted(partitions)]
        self._tps = tps
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, done: Callable[[list[Any]], bool], timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {self._topic}; have {len(self.records)} records")
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)
        return self.records

    async def drain(self, timeout: float = 60.0) -> list[Any]:
        """Everything up to the end offsets as of now (with read_committed: the last stable offsets)."""
        ends = await self._consumer.end_offsets(self._tps)
        deadline = time.monotonic() + timeout
        while [tp for tp, end in ends.items() if await self._consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {self._topic} to its end within {timeout}s")
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)
        return self.records

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return dict(await self._consumer.end_offsets(self._tps))

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(record.value) for record in self.records]


async def topic_config(bootstrap: str, topic: str, name: str) -> tuple[str, bool]:
    """A topic's config value read back with the admin client, and whether the topic itself sets it
    (not a broker default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    [entry] = [entry for entry in resource["config_entries"] if entry["config_names"] == name]
    return entry["config_value"], entry["config_source"] == _DYNAMIC_TOPIC_CONFIG


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source for a value set on the topic

T = TypeVar("T")


async def deleting_new_topics(bootstrap: str, prefix: str, work: Awaitable[T]) -> T:
    """`work`'s result; on the way out, the topics named `prefix`... that did not exist before it are
    deleted.

    A benchmark's topics keep their records forever (months-old timestamps), and a broker left with
    every earlier run's partitions serves the next runs slower (docs/performance.md). Two runs sharing
    a broker at once would delete each other's topics: run one at a time (they share the CPU anyway)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        before = set(await admin.list_topics())
        try:
            return await work
        finally:
            created = sorted(name for name in set(await admin.list_topics()) - before if name.startswith(prefix))
            if created:
                await admin.delete_topics(created)
    finally:
        await admin.close()
