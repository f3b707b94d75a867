"""Rebalance test: a second worker joins and the first leaves (gracefully) while events stream in.

Partitions move between workers twice with events in flight, messages buffered ahead of the agent
and batches being committed: the tag-change stream must stay gapless per customer, never hold two
different changes under one seq, and end with the tags `tagstream replay` gives for the same events.

The group's committed offsets must reach the end too: after rebalances faust's list of acknowledged
offsets can hold repeats, which made its commits crawl a few offsets per second, thousands behind
(about one run in three, before `TaggerConsumer._new_offset`).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.workload import events as generated_events
from tests.support.kafka_io import TopicReader
from tests.support.processes import TaggerProcess, produce_at_rate, tagger_environment, tagger_topics
from tests.support.tag_streams import check_tag_changes, definitions

pytestmark = [pytest.mark.integration, pytest.mark.crash]

EVENTS = 30_000
CUSTOMERS = 1_500
PARTITIONS = 4


@dataclass
class Rebalanced:
    stream: list[dict[str, Any]]
    lines: list[bytes]
    groups: list[Any]
    ends: dict[int, int]
    committed: dict[int, int | None]


@pytest.fixture(scope="module")
async def rebalanced(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rebalanced]:
    tmp_path = tmp_path_factory.mktemp("rebalance")
    prefix = f"it-rebalance-{uuid.uuid4().hex[:8]}"
    groups = definitions()
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, groups)
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=7)]

    first = TaggerProcess(
        tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "first"), tmp_path / "first.log"
    )
    second = TaggerProcess(
        tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "second"), tmp_path / "second.log"
    )
    first.start()
    try:
        await first.wait_ready()
        producing = asyncio.create_task(
            produce_at_rate(kafka_bootstrap, topics["events"], lines, per_second=EVENTS / 15)
        )
        await asyncio.sleep(3)
        second.start()  # joins: the group rebalances, some partitions move to it
        await asyncio.sleep(5)
        assert first.stop() == 0  # leaves gracefully: the rest move to the second worker
        await producing
        ends = await _end_offsets(kafka_bootstrap, topics["events"])
        await _processed_to(second, topics["events"], ends)
        committed = await _committed(kafka_bootstrap, prefix, topics["events"], ends)
    finally:
        first.stop()
        second.stop()

    async with TopicReader(kafka_bootstrap, topics["tag_changes"], isolation_level="read_committed") as reader:
        await reader.drain()
        yield Rebalanced(reader.json(), lines, groups, ends, committed)


async def test_partitions_moving_between_workers_lose_nothing_and_never_reuse_a_seq(rebalanced: Rebalanced) -> None:
    repeats, final = check_tag_changes(rebalanced.stream, rebalanced.lines, rebalanced.groups)
    print(
        f"\nrebalance test: {len(rebalanced.stream)} tag changes for {len(final)} customers, 2 rebalances, "
        f"{repeats} identical repeats ({repeats / max(1, len(rebalanced.stream)):.2%}); "
        f"committed {rebalanced.committed} of {rebalanced.ends}"
    )


async def test_the_group_commits_every_processed_offset_after_rebalances(rebalanced: Rebalanced) -> None:
    assert rebalanced.committed == rebalanced.ends


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _processed_to(worker: TaggerProcess, topic: str, ends: dict[int, int], timeout: float = 120) -> None:
    """Until the worker's lag metric (end offset minus the offset it processed) is 0 on every partition."""
    deadline = time.monotonic() + timeout
    lag: dict[int, float] = {}
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{worker.url}/metrics", timeout=5).read())
        lag = {}
        for line in text.decode().splitlines():
            if line.startswith("tagstream_consumer_lag{") and f'topic="{topic}"' in line:
                partition = int(line.split('partition="')[1].split('"')[0])
                lag[partition] = float(line.rsplit(" ", 1)[1])
        if len(lag) == len(ends) and not any(lag.values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the worker did not process every partition to its end within {timeout}s: lag {lag}")


async def _committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], within: float = 15
) -> dict[int, int | None]:
    """The group's committed offsets once they reach `ends`, or as they stand after `within` seconds
    (the worker commits every second)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + within
        while True:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {
                p: (offsets[tp].offset if (tp := TopicPartition(topic, p)) in offsets else None)
                for p in range(PARTITIONS)
            }
            if committed == ends or time.monotonic() > deadline:
                return committed
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
