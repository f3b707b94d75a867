"""`send_keyed`: keyed messages sent as record batches land where keyed sends would, all of them, in order."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from services.runtime.kafka import ensure_topics, send_keyed
from services.runtime.settings import KafkaSettings
from tests.support.kafka_io import TopicReader

pytestmark = pytest.mark.integration


async def test_send_keyed_puts_every_message_where_a_keyed_send_would_in_order(kafka_bootstrap: str) -> None:
    prefix = f"it-batches-{uuid.uuid4().hex[:8]}"
    batched, single = f"{prefix}.batched", f"{prefix}.single"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=5, replication_factor=1)
    await ensure_topics(kafka, [batched, single])
    # ~1 MB: many times the 16 KiB record batch, so every partition's messages span several batches
    messages = [(f"c{i % 97}".encode(), f"{i:06d}".encode() + b"x" * 400) for i in range(2_500)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = await send_keyed(producer, DefaultPartitioner(), batched, messages)
        assert len(futures) > 5  # more than one batch per partition
        for future in futures:
            await future
        for key, value in messages:
            await producer.send(single, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    async with TopicReader(kafka_bootstrap, batched) as reader:
        got = await reader.until(lambda records: len(records) >= len(messages))
    async with TopicReader(kafka_bootstrap, single) as reader:
        expected = await reader.until(lambda records: len(records) >= len(messages))
    assert len(got) == len(messages)
    where = {record.value: record.partition for record in expected}
    assert {record.value: record.partition for record in got} == where  # the same partition per key
    per_key: defaultdict[bytes, list[bytes]] = defaultdict(list)
    for record in sorted(got, key=lambda record: (record.partition, record.offset)):
        per_key[record.key].append(record.value)
    sent: defaultdict[bytes, list[bytes]] = defaultdict(list)
    for key, value in messages:
        sent[key].append(value)
    assert per_key == sent  # nothing lost, nothing repeated, each key's messages in the order given
