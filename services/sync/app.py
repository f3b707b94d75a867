"""The sync service: `build_app(settings)` runs the sink over Kafka and Redis, with a web port.

Like the notifier, a plain aiokafka consumer group (no per-partition state: the applied seqs are in
Redis beside the read model). One loop: read a batch of tag changes, let the sink apply it, dead-
letter what the external system refused (to `tagstream.sync.dlq`, with the reason), and only then
commit the offsets. A batch the external system did not decide is not committed: the consumer
seeks back and reads it again after `retry_pause_s`, so a long outage shows as lag, never as loss.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas.excerpt import describe_validation_error
from schemas.tags import TagChanged
from services.runtime.clock import Clock, SystemClock
from services.runtime.consumers import ConsumerService, dead_letter, pause, rewind
from services.runtime.customers import RedisCustomers
from services.runtime.kafka import ensure_topics, producer_options
from services.runtime.redis import redis_client
from services.runtime.settings import Settings
from services.sync.adapters import build_adapter
from services.sync.metrics import SyncMetrics
from services.sync.ports import Adapter, Rejected, Unavailable
from services.sync.sink import RedisAppliedSeqs, SyncSink

log = logging.getLogger("tagstream.sync")


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    adapter: Adapter | None = None,
    registry: CollectorRegistry | None = None,
) -> SyncApp:
    """Opens no connection yet; `adapter` replaces the one the settings describe (tests)."""
    return SyncApp(settings, clock or SystemClock(), adapter, registry or CollectorRegistry())


class SyncApp(ConsumerService):
    def __init__(self, settings: Settings, clock: Clock, adapter: Adapter | None, registry: CollectorRegistry) -> None:
        super().__init__(settings)
        self.clock = clock
        self.metrics = SyncMetrics(registry, adapter.name if adapter is not None else settings.sync.adapter)
        self._adapter = adapter
        self.sink: SyncSink | None = None

    async def start(self) -> None:
        settings, topics = self.settings, self.settings.topics
        await ensure_topics(
            settings.kafka,
            [topics.tag_changes, topics.tag_definitions, topics.sync_dlq],
            compacted=[topics.tag_definitions],
            kept_forever=[topics.tag_changes, topics.sync_dlq],
        )
        self._redis = redis_client(settings.redis)
        prefix = settings.redis.key_prefix
        customers = RedisCustomers(self._redis, prefix=prefix)
        adapter = self._adapter or build_adapter(settings.sync, customers, self.clock, self.metrics)
        applied = RedisAppliedSeqs(self._redis, key_prefix=prefix, sink=settings.sync.group_id)
        self.sink = SyncSink(adapter, applied, lambda: self.definitions.groups, self.metrics)
        self._producer = AIOKafkaProducer(**producer_options(settings.kafka))
        await self._producer.start()
        # before any change is read: a disabled group must not be synced
        await self._read_definitions("sync-definitions")
        # a batch may wait out WeCom's rate limits
        await self._start_consumer(settings.sync.group_id, max_poll_interval_ms=900_000)
        await self._serve_status(settings.sync.web_host, settings.sync.web_port, self.metrics.registry)
        self._tasks = [asyncio.create_task(self._consume(), name="sync-consume")]
        self.ready = True
        log.info("sync started: adapter %s, web on port %s", adapter.name, self.port)

    async def _close_outputs(self) -> None:
        if self.sink is not None:
            await self.sink.adapter.close()

    async def _consume(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=300, max_records=self.settings.sync.batch)
                records = [record for partition in batch.values() for record in partition]
                if records:
                    await self._handle(records)
                    await self._consumer.commit()  # only now: the external system acknowledged the batch
                await self._measure_lag(records)
            except Unavailable as error:
                log.warning("tag sync paused: %s; the batch will be read again", error)
                await rewind(self._consumer)
                await pause(self._stopping, self.settings.sync.retry_pause_s)
            except Exception:
                log.exception("syncing tag changes failed; re-reading from the last commit")
                self.metrics.error("unavailable")
                await rewind(self._consumer)
                await pause(self._stopping, self.settings.sync.retry_pause_s)

    async def _handle(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        assert self.sink is not None
        changes: list[TagChanged] = []
        origin: dict[tuple[str, int], ConsumerRecord[Any, Any]] = {}
        for record in records:
            change = await self._decode(record)
            if change is not None:
                changes.append(change)
                origin[(change.customer_id, change.seq)] = record
        if not changes:
            return
        result = await self.sink.handle(changes)
        for rejected in result.rejected:
            await self._dead_letter(origin[(rejected.customer_id, rejected.seq)], rejected)

    async def _decode(self, record: ConsumerRecord[Any, Any]) -> TagChanged | None:
        try:
            return TagChanged.model_validate_json(record.value or b"")
        except ValidationError as error:
            self.metrics.counted("invalid")
            await self._send_letter(record, f"not a TagChanged: {describe_validation_error(error)}", "invalid")
            return None

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], rejected: Rejected) -> None:
        log.warning("tag change seq %d dead-lettered: %s", rejected.seq, rejected.reason)
        await self._send_letter(record, f"{self.metrics.adapter} refused it: {rejected.reason}", "failed")

    async def _send_letter(self, record: ConsumerRecord[Any, Any], reason: str, error: Any) -> None:
        assert self._producer is not None
        letter = dead_letter(record, reason, error, self.clock.now())
        await self._producer.send_and_wait(
            self.settings.topics.sync_dlq, key=record.key, value=letter.model_dump_json().encode()
        )

    async def _measure_lag(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        assert self._consumer is not None
        behind = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                behind += max(0, high - await self._consumer.position(tp))
        self.metrics.lag_records.set(behind)
        if records:
            newest = max(record.timestamp for record in records) / 1000
            self.metrics.lag_seconds.set(max(0.0, self.clock.now().timestamp() - newest))
        elif behind == 0:
            self.metrics.lag_seconds.set(0)

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.ready, {"ready": self.ready, "groups": len(self.definitions.groups)}
