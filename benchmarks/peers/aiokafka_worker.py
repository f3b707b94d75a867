"""A bare aiokafka loop around `TaggerCore`: the least a Kafka worker can do per event.

    python -m benchmarks.peers.aiokafka_worker CLOCK_FILE READY_FILE   # settings from TAGSTREAM_*

One consumer on the tagger's three topics; per fetched batch: the core on every record, tag changes
and dead letters sent as record batches and acknowledged, then the states written to RocksDB and to a
changelog topic (acknowledged), then the offsets committed (at most once a second, as the tagger's
`broker_commit_interval`). A crash anywhere repeats work, never loses it: the tagger's guarantee.
Single worker, no rebalance handling: it measures the loop, not group membership.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from rocksdict import Options, Rdict, WriteBatch

from benchmarks.peers.common import PeerWorker, Timers
from services.runtime.kafka import ensure_topics, send_keyed, send_partitioned
from services.tagger.core import Incoming, Result, TaggerCore

COMMIT_INTERVAL_S = 1.0


class Loop:
    def __init__(self, worker: PeerWorker) -> None:
        self.worker = worker
        settings = worker.settings
        self.topics = settings.topics
        self.core: TaggerCore = worker.core()
        self.timers = Timers(worker.clock, settings.kafka.partitions)
        self.changelog = f"{settings.tagger.app_id}-customers-changelog"
        settings.tagger.datadir.mkdir(parents=True, exist_ok=True)
        self.store = Rdict(str(settings.tagger.datadir / "customers"), options=Options(raw_mode=True))
        bootstrap = settings.kafka.bootstrap_servers
        self.consumer = AIOKafkaConsumer(
            self.topics.events,
            self.topics.tag_commands,
            self.topics.tagger_ticks,
            bootstrap_servers=bootstrap,
            group_id=settings.tagger.app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            max_batch_size=settings.tagger.producer_batch_bytes,  # the tagger's record batches
        )
        self.partitioner = DefaultPartitioner()
        self.stopping = asyncio.Event()
        self._offsets: dict[TopicPartition, int] = {}
        self._committed_at = 0.0

    async def run(self) -> None:
        settings = self.worker.settings
        await ensure_topics(settings.kafka, [self.changelog], compacted=[self.changelog])
        await self.consumer.start()
        await self.producer.start()
        try:
            while not self.consumer.assignment():
                await asyncio.sleep(0.01)
            self.worker.signal_ready()
            size = settings.tagger.batch_size
            while not self.stopping.is_set():
                await self._send_ticks()
                batch = await self.consumer.getmany(timeout_ms=200, max_records=size)
                if batch:
                    await self._process([record for records in batch.values() for record in records])
                await self._commit(force=False)
            await self._commit(force=True)
        finally:
            await self.consumer.stop()
            await self.producer.stop()
            self.store.close()

    async def _process(self, records: list[Any]) -> None:
        pending: dict[str, bytes] = {}

        def load(customer_id: str) -> bytes | None:
            found = pending.get(customer_id)
            return found if found is not None else self.store.get(customer_id.encode())

        changes: list[tuple[bytes, bytes]] = []
        dead: list[tuple[bytes, bytes]] = []
        latest: dict[str, tuple[int, bytes, int | None]] = {}
        for record in records:
            incoming = Incoming(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                timestamp_us=record.timestamp * 1000,
            )
            try:
                result: Result = self.core.handle(incoming, load)
            except Exception as error:  # as the tagger: a bug dead-letters the record, never stalls
                result = self.core.failed(incoming, error)
            if result.dead_letter is not None:
                dead.append((record.key or b"", result.dead_letter.model_dump_json().encode()))
            changes.extend((change.customer_id.encode(), change.to_json()) for change in result.changes)
            if result.customer_id is not None and result.state is not None:
                pending[result.customer_id] = result.state
                latest[result.customer_id] = (record.partition, result.state, result.next_check_us)
            self._offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        sends: list[Awaitable[Any]] = []
        if changes:
            sends += await send_keyed(self.producer, self.partitioner, self.topics.tag_changes, changes)
        if dead:
            sends += await send_keyed(self.producer, self.partitioner, self.topics.events_dlq, dead)
        await asyncio.gather(*sends)  # every change acknowledged before any state is written
        writes = WriteBatch(raw_mode=True)
        changelog: dict[int, list[tuple[bytes, bytes]]] = {}
        for customer_id, (partition, state, due) in latest.items():
            key = customer_id.encode()
            writes.put(key, state)
            changelog.setdefault(partition, []).append((key, state))
            self.timers.schedule(customer_id, due)
        self.store.write(writes)
        sent = await send_partitioned(self.producer, self.changelog, changelog)
        await asyncio.gather(*(future for _, future, _ in sent))  # states durable before offsets commit

    async def _send_ticks(self) -> None:
        ticks = self.timers.due()
        if ticks:
            await asyncio.gather(*await send_keyed(self.producer, self.partitioner, self.topics.tagger_ticks, ticks))

    async def _commit(self, *, force: bool) -> None:
        if self._offsets and (force or time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S):
            await self.consumer.commit(dict(self._offsets))
            self._offsets.clear()
            self._committed_at = time.monotonic()


async def serve(worker: PeerWorker) -> None:
    loop = Loop(worker)
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, loop.stopping.set)
    await loop.run()


def main(argv: list[str]) -> int:
    asyncio.run(serve(PeerWorker.from_arguments(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
