"""Records the events topic's retention deleted before the tagger read them: counted, logged, passed.

The tagger keeps the position it processed up to with the customer states. When the log starts past
that position, the records in between exist nowhere any more: the tagger must say so and go on from
the log start, not seek back to the missing offset for ever (a livelock: the fetch is reset to the
log start, the jump looks like a skip, the tagger seeks back, again and again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client import CollectorRegistry

from services.runtime.clock import ManualClock
from services.runtime.definitions_feed import definition_record
from services.tagger.app import Tagger, build_app
from tests.integration.test_tagger import definitions, paid_event, worker_settings
from tests.support.kafka_io import TopicReader, produce

pytestmark = pytest.mark.integration


class Worker:
    """One start of the tagger on the topics (and changelog) the earlier starts left."""

    def __init__(self, prefix: str, bootstrap: str, redis_url: str, datadir: Path) -> None:
        self.registry = CollectorRegistry()
        settings = worker_settings(prefix, bootstrap, redis_url, datadir, partitions=1)
        self.tagger: Tagger = build_app(settings, clock=ManualClock(datetime.now(UTC)), registry=self.registry)

    async def __aenter__(self) -> Worker:
        await asyncio.wait_for(self.tagger.app.start(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.tagger.app.stop(), 60)

    def lost(self, topic: str) -> float:
        labels = {"topic": topic, "partition": "0"}
        return self.registry.get_sample_value("tagstream_lost_to_retention_total", labels) or 0.0


async def send_orders(bootstrap: str, topic: str, customers: list[str], now: datetime) -> None:
    records = [(c.encode(), json.dumps(paid_event(c, "0", at=now)).encode(), None) for c in customers]
    await produce(bootstrap, topic, records)  # free orders: each still counts as an order


async def customers_with_changes(bootstrap: str, topic: str, wanted: set[str], timeout: float) -> set[str]:
    async with TopicReader(bootstrap, topic) as reader:
        with contextlib.suppress(AssertionError):  # the caller says who is missing, not that the wait ran out
            await reader.until(lambda records: wanted <= {r.key.decode() for r in records}, timeout)
        return {record.key.decode() for record in reader.records}


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
        found = offsets.get(tp)
        return None if found is None else found.offset
    finally:
        await admin.close()


async def test_records_deleted_by_retention_while_the_tagger_was_down_are_counted_and_it_goes_on_from_the_log_start(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"it-retention-{uuid.uuid4().hex[:8]}"
    first = Worker(prefix, kafka_bootstrap, redis_url, tmp_path)
    topics = first.tagger.settings.topics
    events = TopicPartition(topics.events, 0)
    now = datetime.now(UTC).replace(microsecond=0)
    await first.tagger.create_topics()
    await produce(kafka_bootstrap, topics.tag_definitions, [(*definition_record(g), None) for g in definitions()])
    seen = [f"seen-{n}" for n in range(5)]  # offsets 0-4, processed before the stop
    async with first:
        await send_orders(kafka_bootstrap, topics.events, seen, now)
        assert set(seen) <= await customers_with_changes(kafka_bootstrap, topics.tag_changes, set(seen), 90)

    gone = [f"gone-{n}" for n in range(10)]  # offsets 5-14: deleted while the tagger is down
    kept = [f"kept-{n}" for n in range(4)]  # offsets 15-18
    await send_orders(kafka_bootstrap, topics.events, gone + kept, now)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({events: RecordsToDelete(before_offset=15)})
    finally:
        await admin.close()

    caplog.set_level(logging.ERROR, logger="services.tagger.offsets")
    second = Worker(prefix, kafka_bootstrap, redis_url, tmp_path)
    async with second:
        changed = await customers_with_changes(kafka_bootstrap, topics.tag_changes, set(kept), 90)
        assert set(kept) <= changed, f"the tagger did not go on past the deleted records: {sorted(changed)}"
        assert not changed & set(gone)
        assert second.lost(topics.events) == 10
        deadline = time.monotonic() + 30
        while (await committed(kafka_bootstrap, prefix, events) or 0) < 19:
            assert time.monotonic() < deadline, "the tagger's group did not commit past the deleted records"
            await asyncio.sleep(0.5)
        more = [f"after-{n}" for n in range(2)]  # and the partition keeps flowing
        await send_orders(kafka_bootstrap, topics.events, more, now)
        assert set(more) <= await customers_with_changes(kafka_bootstrap, topics.tag_changes, set(more), 60)
        assert second.lost(topics.events) == 10

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "retention" in r.getMessage()]
    assert errors == [
        f"{topics.events}[0]: offsets 5 to 14 (10 records) were deleted by the topic's retention before the "
        "tagger processed them; they are lost to it, going on from 15"
    ]


async def test_a_partition_whose_unprocessed_records_were_all_deleted_goes_on_from_its_end(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    # nothing left past the position to reveal a jump: the partition shows as stalled below its end
    prefix = f"it-retention-{uuid.uuid4().hex[:8]}"
    first = Worker(prefix, kafka_bootstrap, redis_url, tmp_path)
    topics = first.tagger.settings.topics
    events = TopicPartition(topics.events, 0)
    now = datetime.now(UTC).replace(microsecond=0)
    await first.tagger.create_topics()
    await produce(kafka_bootstrap, topics.tag_definitions, [(*definition_record(g), None) for g in definitions()])
    async with first:
        await send_orders(kafka_bootstrap, topics.events, ["seen"], now)
        assert "seen" in await customers_with_changes(kafka_bootstrap, topics.tag_changes, {"seen"}, 90)

    gone = [f"gone-{n}" for n in range(3)]  # offsets 1-3, then the log starts at 4, its end
    await send_orders(kafka_bootstrap, topics.events, gone, now)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records({events: RecordsToDelete(before_offset=4)})
    finally:
        await admin.close()

    second = Worker(prefix, kafka_bootstrap, redis_url, tmp_path)
    async with second:
        deadline = time.monotonic() + 90
        while second.lost(topics.events) != 3:
            assert time.monotonic() < deadline, "the tagger did not count the deleted records"
            await asyncio.sleep(0.5)
        await send_orders(kafka_bootstrap, topics.events, ["later"], now)
        changed = await customers_with_changes(kafka_bootstrap, topics.tag_changes, {"later"}, 60)
        assert "later" in changed
        assert not changed & set(gone)
        assert second.lost(topics.events) == 3
