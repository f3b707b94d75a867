"""The projector's consumer: tag-changes and events into the Redis read model, positioned by Redis.

Its position in each partition is the one stored in Redis beside the data (`ts:meta:offsets`, moved
by the same script that applies a batch: projector.py), never a Kafka commit: after Redis lost its
data, a committed offset would resume mid-stream over an empty read model, and the tags would stay
wrong for good. So the consumer group commits nothing; on assignment, and whenever Redis disagrees
(`behind`, or a changed marker epoch), each partition is sought to Redis's offset, or to its beginning
when Redis has none. `tagstream.tag-changes` is kept forever, so its beginning is offset 0.

Every second or so (`_reconcile`) it also reads the marker (marker.py): a missing one means Redis
lost its data (or the read model was never built), and the first projector to see that begins a
rebuild; a marker of an older key layout makes it delete that layout first (marker.py). Projecting
events records each customer's activity the same way (activity only moves
forward, so re-reading is harmless; events older than that topic's retention are gone for good).

A large batch (a projector behind) is written while the next is validated and decoded (the
projector's CPU and Redis's overlap), and the next is written only once the one before it has landed
and settled, so batches reach Redis in the order they were read. A batch read before its partition
was sought (the one in flight answered `behind` or `paused`, or a reconcile moved it) is dropped,
never written at a position that no longer follows: the consumer reads again from where it was sought.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.events import CustomerEvent, event_adapter
from schemas.notifications import NotificationOutcome
from services.runtime.change_records import ChangeDecoder, ChangeRecord
from services.runtime.clock import Clock
from services.runtime.kafka import client_options, partition_ids
from services.runtime.readmodel import ReadModelStatus, offset_field
from services.runtime.settings import Settings
from services.runtime.zone import day_zone
from services.tagger.marker import Marker
from services.tagger.metrics import ReadModelMetrics
from services.tagger.projector import BatchResult, Position, Projector

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_BATCH = 500
_OVERLAP_FROM = 100
"""Batches of at least this many records are written while the next is decoded."""
_RECONCILE_EVERY_S = 1.0
_PROGRESS_EVERY_S = 5.0
_PAUSED_RETRY_S = 1.0


class Projection:
    """Keeps the read model of one Redis key prefix from the tag-changes and events topics.

    With a `group_id`, partitions are shared with the other workers' projections (tagger mode); without
    one, this instance takes every partition and `run(until_ready=True)` returns once the marker says
    `ready` (`tagstream readmodel rebuild`).
    """

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        clock: Clock,
        metrics: ReadModelMetrics,
        *,
        group_id: str | None,
        group_instance_id: str | None = None,
        on_progress: Callable[[ReadModelStatus], None] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._group_id = group_id
        self._group_instance_id = group_instance_id
        self._on_progress = on_progress
        prefix = settings.redis.key_prefix
        self._projector = Projector(
            redis, key_prefix=prefix, history_limit=settings.redis.history_limit, zone=day_zone(settings.shop.timezone)
        )
        self._marker = Marker(redis, key_prefix=prefix)
        self._changes_topic = settings.topics.tag_changes
        self._notifications_topic = settings.topics.notifications
        self._topics = (settings.topics.tag_changes, settings.topics.events, settings.topics.notifications)
        self._position: dict[TopicPartition, int] = {}
        """Per assigned partition, the offset the consumer was last sought to or applied up to."""
        self._from_start: set[TopicPartition] = set()
        """Partitions sought to their beginning whose first batch has not come yet."""
        self._seeks: dict[TopicPartition, int] = {}
        """Per partition, how often it was sought (or forgotten): a batch fetched before a seek is dropped."""
        self._writing: asyncio.Task[None] | None = None
        """The batch being written: the next one is decoded meanwhile, and written once it is done."""
        self._epoch: str | None = None
        self._last_reconcile = 0.0
        self._last_progress = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._change_decoder = ChangeDecoder()
        self._event_adapter = event_adapter()

    async def run(self, *, until_ready: bool = False) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings.kafka),
            group_id=self._group_id,
            group_instance_id=self._group_instance_id if self._group_id else None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=int(self._settings.tagger.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self._settings.tagger.session_timeout_s / 3) * 1000),
        )
        self._consumer = consumer
        await consumer.start()
        try:
            if self._group_id is None:
                tps = await self._partitions()
                consumer.assign(tps)
                await self.seek_to_stored(tps)
            else:
                consumer.subscribe(list(self._topics), listener=_Listener(self))
            while True:
                status = await self._reconcile()
                if until_ready and status is not None and status.ready:
                    return
                batches = await consumer.getmany(timeout_ms=500, max_records=_BATCH)
                seeks = {tp: self._seeks.get(tp, 0) for tp in batches}
                for tp, records in batches.items():
                    if records:
                        write = self._decoded(tp, records)  # while the previous batch is written
                        await self.written()
                        if self._seeks.get(tp, 0) != seeks[tp]:
                            continue  # sought since: read again from there
                        writing = self._write(tp, records, write)
                        if len(records) < _OVERLAP_FROM:
                            await writing  # a projector keeping up: a task a batch would cost more than it saves
                        else:
                            self._writing = asyncio.create_task(writing)
        finally:
            if self._writing is not None and not self._writing.done():
                self._writing.cancel()  # a script sent is applied whole or not at all, as on any stop
            self._writing = None
            self._consumer = None
            await consumer.stop()

    async def written(self) -> None:
        """Wait for the batch being written (its outcome settled: position, seek, metrics)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    # -- positions ----------------------------------------------------------------------------------

    async def seek_to_stored(self, tps: Iterable[TopicPartition]) -> None:
        """Seek each partition to the offset Redis holds for it, or to its beginning when it holds none."""
        tps = list(tps)
        if not tps:
            return
        status = await _until_done(self._marker.status, "read the read model's positions")
        self._seek_all(tps, status)

    def _seek_all(self, tps: Iterable[TopicPartition], status: ReadModelStatus) -> None:
        stored = status.offsets or {}
        for tp in tps:
            offset = stored.get(offset_field(tp.topic, tp.partition))
            self._seek(tp, offset)

    def _seek(self, tp: TopicPartition, offset: int | None) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._seeks[tp] = self._seeks.get(tp, 0) + 1
        if offset is None:
            # Offset 0, not seek_to_beginning (which waits on the fetcher: no place for a rebalance
            # callback): where retention removed the start, auto_offset_reset=earliest moves it up.
            consumer.seek(tp, 0)
            self._from_start.add(tp)
            self._position.pop(tp, None)
        else:
            consumer.seek(tp, offset)
            self._from_start.discard(tp)
            self._position[tp] = offset

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._seeks[tp] = self._seeks.get(tp, 0) + 1
            self._position.pop(tp, None)
            self._from_start.discard(tp)

    # -- the marker ---------------------------------------------------------------------------------

    async def _reconcile(self) -> ReadModelStatus | None:
        """About once a second: begin a rebuild when the marker is missing, and move every partition
        whose stored offset is not where this consumer stands (Redis lost data, was reset, or another
        projector got further)."""
        now = time.monotonic()
        if now - self._last_reconcile < _RECONCILE_EVERY_S:
            return None
        self._last_reconcile = now
        await self.written()
        status = await _until_done(self._marker.status, "read the read model's marker")
        if status.state == "outdated":
            status = await self._upgrade()
        if status.state == "missing":
            status = await self._begin()
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        if status.epoch != self._epoch:
            log.info("read model epoch %s (%s): re-reading from the positions Redis holds", status.epoch, status.state)
            self._epoch = status.epoch
            self._seek_all(assigned, status)
        else:
            stored = status.offsets or {}
            for tp in assigned:
                if tp in self._from_start:
                    continue
                offset = stored.get(offset_field(tp.topic, tp.partition))
                if offset != self._position.get(tp):
                    self._seek(tp, offset)
        self._report(status)
        return status

    async def _upgrade(self) -> ReadModelStatus:
        log.warning("the read model in Redis has an older key layout: deleting it to rebuild it in this one")
        if await _until_done(lambda: self._marker.upgrade(self._clock.now()), "upgrade the read model"):
            log.info("the read model's older layout is deleted")
        return await _until_done(self._marker.status, "read the read model's marker")

    async def _begin(self) -> ReadModelStatus:
        targets = await self._end_offsets()
        began = await _until_done(
            lambda: self._marker.begin(targets, self._clock.now(), reason="marker missing"), "begin a rebuild"
        )
        if began is not None:
            self._metrics.readmodel_rebuilds.inc()
            log.warning(
                "the read model's marker is missing (Redis lost its data?): rebuilding it from %s, %d records",
                self._changes_topic,
                sum(targets.values()),
            )
        return await _until_done(self._marker.status, "read the read model's marker")

    async def _end_offsets(self) -> dict[str, int]:
        consumer = self._consumer
        assert consumer is not None
        ends = await consumer.end_offsets(await self._partitions())
        return {offset_field(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    async def _partitions(self) -> list[TopicPartition]:
        ids = await partition_ids(self._settings.kafka, self._topics)
        return [TopicPartition(topic, partition) for topic in self._topics for partition in ids[topic]]

    def _report(self, status: ReadModelStatus) -> None:
        self._metrics.readmodel_ready.set(1 if status.ready else 0)
        self._metrics.readmodel_rebuild_remaining.set(status.remaining if status.state == "rebuilding" else 0)
        if self._on_progress is not None:
            self._on_progress(status)
        now = time.monotonic()
        if status.state == "rebuilding" and now - self._last_progress >= _PROGRESS_EVERY_S:
            self._last_progress = now
            log.info("read model rebuild: %d of %d records applied", status.total - status.remaining, status.total)

    # -- applying -----------------------------------------------------------------------------------

    def _decoded(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> Callable[[Position], Awaitable[BatchResult]]:
        """The batch validated and decoded (the projector's own work), and what writes it at a position."""
        values = [record.value for record in records]
        now = self._clock.now
        if tp.topic == self._changes_topic:
            changes = decode_tag_records(values, self._change_decoder)
            return lambda position: self._projector.apply_batch(position, changes, now())
        if tp.topic == self._notifications_topic:
            outcomes = decode_outcomes(values)
            return lambda position: self._projector.record_messages_batch(position, outcomes, now())
        seen = decode_activity(values, self._event_adapter)
        return lambda position: self._projector.record_activity_batch(position, seen, now())

    async def _write(
        self,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord[Any, Any]],
        write: Callable[[Position], Awaitable[BatchResult]],
    ) -> None:
        position = Position(
            offset_field(tp.topic, tp.partition),
            records[0].offset,
            records[-1].offset + 1,
            from_start=tp in self._from_start,
        )
        if position.from_start and position.first > 0 and tp.topic == self._changes_topic:
            log.error(
                "%s[%d] now starts at offset %d: the records before it were deleted (is the topic's retention.ms "
                "-1, as tagstream creates it?), so the read model misses them",
                tp.topic,
                tp.partition,
                position.first,
            )
        result = await _until_done(lambda: write(position), f"write a batch of {tp.topic}")
        self._settle(tp, position, result)
        if result.kind == "paused":
            await asyncio.sleep(_PAUSED_RETRY_S)

    def _settle(self, tp: TopicPartition, position: Position, result: BatchResult) -> None:
        if result.kind == "ok":
            self._from_start.discard(tp)
            self._position[tp] = position.next
            self._metrics.count_projected(result.outcomes)
            return
        if result.kind == "paused":
            self._seek(tp, position.first)  # read it again once the reset is over
            return
        log.info(
            "%s[%d]: Redis holds the read model up to %s, not %d: re-reading from there",
            tp.topic,
            tp.partition,
            "nothing" if result.stored is None else result.stored,
            position.first,
        )
        self._seek(tp, result.stored)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, projection: Projection) -> None:
        self._projection = projection

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._projection.written()  # the batch in flight lands before the partitions move on
        self._projection.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._projection.seek_to_stored(assigned)


def workers_projection(
    settings: Settings,
    redis: Redis,
    clock: Clock,
    metrics: ReadModelMetrics,
    on_progress: Callable[[ReadModelStatus], None] | None = None,
) -> Projection:
    """The projection of the tagger workers' consumer group (`<app_id>-projector`), whether it runs in a
    worker or in `tagstream projector`: one group, so both split the partitions when both run."""
    tagger = settings.tagger
    instance = tagger.group_instance_id
    return Projection(
        settings,
        redis,
        clock,
        metrics,
        group_id=f"{tagger.app_id}-projector",
        group_instance_id=None if instance is None else f"{instance}-projector",
        on_progress=on_progress,
    )


def decode_tag_records(values: Iterable[bytes], decoder: ChangeDecoder | None = None) -> list[ChangeRecord]:
    """The valid tag changes, in the pieces the read model writes (change_records.py; `decoder`
    remembers the pieces across batches); an invalid record is logged and skipped."""
    decoder = decoder or ChangeDecoder()
    decoded = []
    for value in values:
        try:
            decoded.append(decoder.decode(value))
        except ValidationError as error:  # only tagstream writes this topic: log loudly, keep going
            log.error("skipping an invalid tag change: %s", error)
    return decoded


def decode_outcomes(values: Iterable[bytes]) -> list[NotificationOutcome]:
    return _decoded(NotificationOutcome.model_validate_json, values, "notification outcome")


def _decoded(parse: Callable[[bytes], _T], values: Iterable[bytes], what: str) -> list[_T]:
    """Each valid record parsed (`parse` raises pydantic's ValidationError for an invalid one, which
    is logged and skipped)."""
    decoded = []
    for value in values:
        try:
            decoded.append(parse(value))
        except ValidationError as error:  # only tagstream writes these topics: log loudly, keep going
            log.error("skipping an invalid %s: %s", what, error)
    return decoded


def decode_activity(
    values: Iterable[bytes], adapter: TypeAdapter[CustomerEvent] | None = None
) -> list[tuple[str, datetime | None, datetime]]:
    """Per customer in a batch: the latest order and the latest event of any kind (`adapter`:
    schemas.events.event_adapter's, built once)."""
    adapter = adapter or event_adapter()
    latest: dict[str, tuple[datetime | None, datetime]] = {}
    for value in values:
        try:
            event = adapter.validate_json(value)
        except ValidationError:
            continue  # the tagger dead-letters it
        last_order, last_seen = latest.get(event.customer_id, (None, event.occurred_at))
        if event.type == "order_paid" and (last_order is None or event.occurred_at > last_order):
            last_order = event.occurred_at
        latest[event.customer_id] = (last_order, max(last_seen, event.occurred_at))
    return [(customer_id, order, seen) for customer_id, (order, seen) in latest.items()]


async def _until_done(work: Callable[[], Awaitable[_T]], what: str) -> _T:
    """Retry with backoff until it succeeds: Redis being away must not drop a batch, and the writes
    are idempotent, so repeating them is safe."""
    delay = 0.1
    while True:
        try:
            return await work()
        except (RedisError, OSError) as error:
            log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
