"""The tagger service: a faust-streaming worker around the engine.

One agent consumes customer events, manual tag commands and the tagger's own timer/sync messages
(three co-partitioned topics, keyed by customer id), so everything about one customer is applied in
order by one coroutine. Per message it only decodes, calls the pure core and sends what comes back.

Delivery: at-least-once with an exact effect. faust's exactly_once sends sink messages outside the
transaction (faust-streaming#177) and fences producers on rebalance (#323), so instead a batch's tag
changes are sent and *acknowledged by Kafka* before the customer states behind them are written;
faust flushes those table writes before it commits the source offsets. A crash can therefore only
repeat a change (same customer, same seq, same content: the engine is deterministic and evaluates a
message at its record timestamp), never lose one, and consumers drop repeats by seq. Redelivered
events change nothing a second time (event-id de-duplication in the engine).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Literal, TypeVar, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.streams import _current_event  # the partition of a table write comes from here
from faust.types import TP, EventT
from faust.types.stores import StoreT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas.tags import TagGroup
from schemas.topics import DeadLetter, SyncPartition, Tick
from services.engine import DefinitionError, Engine, RuleBook
from services.engine.arrival import Arrival
from services.engine.changes import Change
from services.engine.codec import decode
from services.engine.evaluator import next_due
from services.engine.fingerprint import change_since, decode_fingerprint, encode_fingerprint, fingerprint
from services.engine.timeutil import to_us
from services.runtime.clock import Clock, SystemClock
from services.runtime.definitions_feed import DefinitionsFeed
from services.runtime.engine_build import engine_build
from services.runtime.files import private_directory
from services.runtime.kafka import (
    ensure_topics,
    min_insync_replicas,
    partition_ids,
    send_keyed,
    send_partitioned,
)
from services.runtime.redis import redis_client
from services.runtime.settings import Settings
from services.runtime.zone import day_zone
from services.tagger.consumer import TaggerConsumer
from services.tagger.core import Incoming, Result, TaggerCore
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics
from services.tagger.partitioning import partition_for
from services.tagger.producer import TaggerProducer
from services.tagger.projection import Projection
from services.tagger.watchdog import RebalanceWatch, exit_after

log = logging.getLogger(__name__)

_T = TypeVar("_T")
RAW_TOPIC: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
"""Every topic the tagger touches carries bytes it (de)serialises itself."""
_INTERNAL_PREFIX = b"\x00"  # table keys that are not customers
_MARKER_PREFIX = b"\x00definitions:"
_POSITION_PREFIX = b"\x00position:"
_BACKFILL_CHUNK = 200
_STUCK_CHECKS = 3  # lag timer runs (5 s apart) without progress before a partition is re-read


class TopicLayoutError(RuntimeError):
    """The Kafka topics exist in a shape the tagger cannot work with; the message says how to fix it."""


class Tagger:
    """A tagger worker: the faust app plus what its agent, timers and web views share."""

    def __init__(self, settings: Settings, clock: Clock, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = TaggerMetrics(registry)
        self.zone = day_zone(settings.shop.timezone)
        """The shop's days (built from the zone database once; the engine takes it as data)."""
        self.engine = Engine(RuleBook.compile([], horizon_days=settings.tagger.horizon_days, zone=self.zone))
        self.core = TaggerCore(
            self.engine,
            settings.topics,
            clock,
            Arrival.of(settings.shop.future_skew, settings.history_age),
            currency=settings.shop.currency,
        )
        self.index = CustomerIndex()
        self.feed = DefinitionsFeed(
            settings.kafka, settings.topics.tag_definitions, self._on_definitions, self._on_rejected_definition
        )
        self.recovered = False
        self._next_offset: dict[TP, int] = {}
        """Per source partition: the offset after the last one processed (stored with the states)."""
        self._stuck: dict[TP, tuple[int, int]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.app = faust_app(settings)
        topics = settings.topics
        self.source = self.app.topic(topics.events, topics.tag_commands, topics.tagger_ticks, **RAW_TOPIC)
        self.ticks_topic = self.app.topic(topics.tagger_ticks, **RAW_TOPIC)
        self.table = self.app.Table(
            "customers",
            default=None,
            key_type=bytes,  # bytes types make faust store raw bytes (json otherwise, even in RocksDB)
            value_type=bytes,
            partitions=settings.kafka.partitions,
            # faust creates the changelog: the states behind acknowledged changes need the same durability
            extra_topic_configs={"min.insync.replicas": str(min_insync_replicas(settings.kafka.replication_factor))},
            options={"block_cache_size": settings.tagger.rocksdb_block_cache_mb * 1024 * 1024, "driver": "rocksdict"}
            if settings.tagger.store == "rocksdb"
            else None,
        )
        self.table.on_recover(self._on_recovered)
        self.rebalances = RebalanceWatch()
        self.app.sensors.add(self.rebalances)
        self._wire()

    async def create_topics(self) -> None:
        """Create the topics the tagger reads and writes, the table's changelog included.

        Events, commands and ticks are joined per customer with the table, so all of them must have
        TAGSTREAM_KAFKA__PARTITIONS partitions. A topic created earlier with another count (by a
        service configured differently) stops the worker with the fix, instead of failing later.
        """
        topics = self.settings.topics
        kafka = self.settings.kafka
        # The changelog too, although faust would create it: created after the consumer subscribed,
        # its partitions appear at the next metadata refresh (a broker failure forces one), and that
        # change restarts the group's rebalance in the middle of the failure.
        changelog = self.table.changelog_topic.get_topic_name()
        await ensure_topics(
            kafka,
            [
                topics.events,
                topics.tag_commands,
                topics.tagger_ticks,
                topics.tag_changes,
                topics.events_dlq,
                topics.tag_definitions,
                changelog,
            ],
            compacted=[topics.tag_definitions, changelog],
            # Redis is rebuilt from tag-changes, and the DLQ holds rejected input until someone repairs it.
            kept_forever=[topics.tag_changes, topics.events_dlq],
        )
        joined = (topics.events, topics.tag_commands, topics.tagger_ticks)
        ids = await partition_ids(kafka, joined)
        for topic in joined:
            found = len(ids[topic])
            if found != kafka.partitions:
                raise TopicLayoutError(
                    f"{topic} has {found} partitions but TAGSTREAM_KAFKA__PARTITIONS is {kafka.partitions}: events, "
                    "tag commands and ticks are joined per customer with the tagger's table, so they need the same "
                    f"count. Set TAGSTREAM_KAFKA__PARTITIONS={found} for every tagstream service if all three topics "
                    "have that many, or recreate the odd one out."
                )

    def exit_if_stopping_hangs(self) -> None:
        """In a worker process (`tagstream tagger`) only: once the app begins to stop, end the process
        if it is still stopping after TAGSTREAM_TAGGER__SHUTDOWN_TIMEOUT_S (an app started inside
        another process, as the tests do, must not take that process down)."""

        async def arm(sender: Any, *args: Any, **kwargs: Any) -> None:
            exit_after(self.settings.tagger.shutdown_timeout_s)

        self.app.on_before_shutdown.connect(cast(Any, arm))  # mode's stub rejects coroutine receivers

    @property
    def ready(self) -> bool:
        return self.recovered and self.feed.ready.is_set() and not self.app.rebalancing

    # -- wiring -------------------------------------------------------------------------------------

    def _wire(self) -> None:
        app = self.app

        @app.agent(self.source, concurrency=1, name="tagstream.tagger.process")  # concurrency 1: faust#606
        async def process(stream: faust.StreamT[bytes]) -> None:
            await self.feed.ready.wait()
            # noack_take, not take_events: take_events acks a batch in a `finally`, so a batch cut short
            # by a rebalance (the agent is cancelled) would be committed unprocessed. Here a batch is
            # acknowledged only after its changes are acked by Kafka and its states are written.
            batches = cast(Any, stream).noack_take  # missing from faust's StreamT stub
            size, within = self.settings.tagger.batch_size, self.settings.tagger.batch_within_s
            async for events in batches(size, within=within):
                for event in await self._process_or_abandon(events):
                    await stream.ack(event)

        if self.settings.tagger.projector:
            self._wire_projector()

        @app.task  # type: ignore[untyped-decorator]
        async def read_definitions() -> None:
            await self.feed.run()

        @app.timer(interval=self.settings.tagger.timer_interval_s)  # type: ignore[untyped-decorator]
        async def wake_due_customers() -> None:
            await self._wake_due_customers()

        @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
        async def measure_lag() -> None:
            self._measure_lag()
            await self._unstick()

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            # the liveness probe: a worker stuck in a rebalance past the limit is restarted
            verdict = self.rebalances.liveness(self.settings.tagger.rebalance_stuck_s)
            return web.json(verdict.body(), status=200 if verdict.alive else 503)

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            body = {
                "ready": self.ready,
                "definitions_loaded": self.feed.ready.is_set(),
                "tables_recovered": self.recovered,
                "rebalancing": bool(self.app.rebalancing),
            }
            return web.json(body, status=200 if self.ready else 503)

        @app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            # aiohttp wants the charset apart from the content type
            return web.bytes(generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def _wire_projector(self) -> None:
        @self.app.task  # type: ignore[untyped-decorator]
        async def project() -> None:
            await self._project()

    async def _project(self) -> None:
        """Run the read model's projection (projection.py) until the worker stops; restart it after a failure."""
        tagger = self.settings.tagger
        instance = tagger.group_instance_id
        while True:
            redis = redis_client(self.settings.redis)
            projection = Projection(
                self.settings,
                redis,
                self.clock,
                self.metrics,
                group_id=f"{tagger.app_id}-projector",
                group_instance_id=None if instance is None else f"{instance}-projector",
            )
            try:
                await projection.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the read model's projection failed; restarting it in 5 s")
                await asyncio.sleep(5.0)
            finally:
                await redis.aclose()

    # -- processing ---------------------------------------------------------------------------------

    async def _process_or_abandon(self, events: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """`_process`, again after a Kafka send failed; abandoned (nothing acknowledged) once a rebalance
        or a stop is under way.

        A batch must not fail out of the agent: the exception faust keeps for the crashed agent holds
        the batch's messages, so faust waits for them in every later rebalance and at stop (for good),
        and commits stay below them. A send fails when a leader died and the producer's metadata stayed
        stale past its request timeout. Processing the batch again is safe: its states were not
        written, and the engine repeats the same changes under the same seq. An abandoned batch is not
        committed: whoever owns its partitions next reads it again.
        """
        delay = 0.1
        while True:
            try:
                return await self._process(events)
            except KafkaError as error:
                if self.app.rebalancing or self.app.should_stop:
                    log.warning(
                        "leaving %d messages unacknowledged, to be read again (a rebalance or stop is under way): %r",
                        len(events),
                        error,
                    )
                    return []
                log.warning("processing a batch failed (%r); again in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _process(self, events: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """Process a batch; returns the events that were processed (and may be acknowledged).

        The source topics are neither compacted nor transactional, so a partition's offsets are
        contiguous: an offset beyond the next one expected means faust skipped messages (it can, when
        a rebalance interrupts a delivery). Such a partition is sought back to the first missing
        offset and the rest of its batch left unacknowledged, to be read again in order.
        """
        batch = _Batch(self)
        processed: list[EventT[bytes]] = []
        rewinding: set[TP] = set()
        for event in events:
            message = event.message
            tp = message.tp
            if tp in rewinding:
                continue
            expected = self._next_offset.get(tp)
            if expected is not None and message.offset > expected:
                log.warning(
                    "%s[%d]: got offset %d, expected %d; re-reading from %d",
                    tp.topic,
                    tp.partition,
                    message.offset,
                    expected,
                    expected,
                )
                rewinding.add(tp)
                await self.app.consumer.seek(tp, expected)
                continue
            result = self._handle(message, batch)
            self._next_offset[tp] = max(expected or 0, message.offset + 1)
            batch.position(event)
            processed.append(event)
            if result.sync is not None:
                await batch.commit()
                batch = _Batch(self)
                await self._sync(event, result.sync)
                continue
            await batch.add(event, result)
        await batch.commit()
        return processed

    def _handle(self, message: Any, batch: _Batch) -> Result:
        incoming = Incoming(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            timestamp_us=int(message.timestamp * 1_000_000),
        )
        started = time.perf_counter()
        try:
            result = self.core.handle(incoming, batch.load)
        except Exception as error:  # a bug must not stall the partition: dead-letter the message
            log.exception("failed to process %s[%d]@%d", message.topic, message.partition, message.offset)
            result = self.core.failed(incoming, error)
        self.metrics.count_message(result.kind, result.outcome, time.perf_counter() - started)
        return result

    async def _sync(self, event: EventT[bytes], sync: SyncPartition) -> None:
        """Backfill one partition's customers to the current definitions, then mark it done."""
        partition = event.message.partition
        marker = _MARKER_PREFIX + str(partition).encode()
        stored = self.table.get(marker)
        change = change_since(decode_fingerprint(stored) if stored else {}, self.engine.rulebook)
        now_us = int(event.message.timestamp * 1_000_000)
        if not change.empty:
            started = time.perf_counter()
            customers = self.index.customers(partition)
            self.metrics.backfill_remaining.inc(len(customers))
            for start in range(0, len(customers), _BACKFILL_CHUNK):
                batch = _Batch(self)
                for customer_id in customers[start : start + _BACKFILL_CHUNK]:
                    current = batch.load(customer_id)
                    if current is None:
                        continue
                    state, changes, due = self.core.backfill(current, change, now_us)
                    await batch.add(event, Result("applied", "backfill", customer_id, state, due, changes))
                await batch.commit()
                done = min(_BACKFILL_CHUNK, len(customers) - start)
                self.metrics.backfill_customers.inc(done)
                self.metrics.backfill_remaining.dec(done)
            self.metrics.backfill_seconds.observe(time.perf_counter() - started)
            log.info("partition %d: backfilled %d customers for %s", partition, len(customers), change)
        value = encode_fingerprint(fingerprint(self.engine.rulebook))
        self._store(event, marker, value)
        await self._send_changelog({partition: [(marker, value)]})

    def _store(self, event: EventT[bytes], key: bytes, value: bytes) -> None:
        """Write a value to the local store (RocksDB: the partition's database), not the changelog."""
        token = _current_event.set(weakref.ref(event))  # RocksDB takes the partition from the event
        try:
            self.table.data[key] = value
        finally:
            _current_event.reset(token)

    async def _send_changelog(self, records: dict[int, list[tuple[bytes, bytes]]]) -> None:
        """Send stored values to the table's changelog, per partition in record batches, and return once
        Kafka has acknowledged all of them — then record each partition's last offset in the store,
        as faust does per message (Table._on_changelog_sent), so recovery reads only what is newer.

        Not faust's `send_changelog` per record: its FutureMessage, producer buffer round and callback
        per record cost ~7% of the worker. Not `table[key] = value` at all: that sends through faust's
        producer buffer, and faust's pre-commit flush gives up waiting on that buffer after 0.1 s
        (ProducerBuffer.flush_atmost), so offsets could be committed before the state behind them was
        durable — the crash test lost states that way.
        """
        topic = self.table.changelog_topic.get_topic_name()
        sent = await send_partitioned(kafka_producer(self.app), topic, records)
        acknowledged = await asyncio.gather(*(future for _, future, _ in sent))
        last: dict[int, int] = {}
        for (partition, _, count), metadata in zip(sent, acknowledged, strict=True):
            last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
        for partition, offset in last.items():
            cast("StoreT[bytes, bytes]", self.table.data).set_persisted_offset(TP(topic, partition), offset)

    # -- definitions, recovery, timers --------------------------------------------------------------

    def _on_definitions(self, groups: dict[str, TagGroup]) -> None:
        try:
            rulebook = RuleBook.compile(
                groups.values(),
                horizon_days=self.settings.tagger.horizon_days,
                today=self.zone.date_of(self.clock.now()),
                zone=self.zone,
            )
        except DefinitionError as error:
            self.metrics.definitions_errors.inc()
            log.error("keeping the previous tag definitions: %s", error)
            return
        self.engine.load(rulebook)
        self.metrics.definitions_groups.set(len(rulebook.groups))
        if self.recovered:
            self._spawn(self._request_sync(self._active_partitions()))

    def _on_rejected_definition(self, record: Any, error: Literal["invalid", "mismatched_key"], reason: str) -> None:
        """Every worker reads the whole definitions topic, so each dead-letters what it could not apply:
        the copies are the same record (topic, partition, offset), and come again on each start until
        the record is replaced or removed (compaction keeps the latest per key)."""
        incoming = Incoming(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            timestamp_us=record.timestamp * 1000,
        )
        letter = self.core.dead_letter(incoming, error, reason)
        self.metrics.dead_letters.labels(error).inc()
        self._spawn(self._send_dead_letter(record.key, _dead_letter_json(letter)))

    async def _send_dead_letter(self, key: bytes | None, value: bytes) -> None:
        topic = self.settings.topics.events_dlq
        try:
            await (await self.app.producer.send(topic, key, value, None, None, None))
        except Exception:  # the reason is logged by the feed already; the record stays on its topic
            log.exception("could not dead-letter a definitions record to %s", topic)

    async def _on_recovered(self) -> None:
        active = self._active_partitions()
        self._next_offset = {tp: offset for tp, offset in self._next_offset.items() if tp.partition in active}
        self.index.drop_partitions(self.index.partitions() - active)
        count = self.settings.kafka.partitions
        for key, value in self.table.items():
            if key.startswith(_INTERNAL_PREFIX):
                if key.startswith(_POSITION_PREFIX):
                    topic, _, partition = key[len(_POSITION_PREFIX) :].decode().rpartition(":")
                    if int(partition) in active:
                        self._next_offset[TP(topic, int(partition))] = int(value)
                continue
            partition = partition_for(key, count)
            if partition in active:
                state = decode(value)
                self.index.put(state.customer_id, partition, next_due(state))
        self.recovered = True
        log.info("recovered %d customers in partitions %s", len(self.index), sorted(active))
        # faust starts app tasks (the definitions feed among them) only after recovery: don't wait here
        self._spawn(self._sync_when_definitions_loaded(active))

    async def _sync_when_definitions_loaded(self, partitions: set[int]) -> None:
        await self.feed.ready.wait()
        await self._request_sync(partitions)

    async def _request_sync(self, partitions: Iterable[int]) -> None:
        for partition in sorted(partitions):
            value = SyncPartition(partition=partition).model_dump_json().encode()
            await self.ticks_topic.send(value=value, partition=partition, force=True)

    async def _wake_due_customers(self) -> None:
        if not self.recovered:
            return
        now_us = to_us(self.clock.now())
        due = self.index.pop_due(now_us, self._active_partitions())
        sent: list[tuple[str, int, Awaitable[Any]]] = []
        try:
            for customer_id, due_us in due:
                tick = Tick(customer_id=customer_id, until_us=now_us).model_dump_json().encode()
                sent.append(
                    (customer_id, due_us, await self.ticks_topic.send(key=customer_id.encode(), value=tick, force=True))
                )
        except Exception as error:  # the broker is away: what was not sent is tried again at the next run
            log.error("sending wake-ups failed (%s); %d will be tried again", error, len(due) - len(sent))
        acknowledged = await asyncio.gather(*(future for _, _, future in sent), return_exceptions=True)
        # A wake-up is off the index once handed out: one whose tick Kafka did not take would otherwise
        # leave its customer's time-based flip undone until the customer's next event.
        delivered = {
            customer_id
            for (customer_id, _, _), ack in zip(sent, acknowledged, strict=True)
            if not isinstance(ack, BaseException)
        }
        for customer_id, due_us in due:
            if customer_id not in delivered:
                self.index.restore(customer_id, due_us)
        self.metrics.ticks.inc(len(delivered))
        self.metrics.timer_backlog.set(len(due) + self.index.overdue(now_us))
        self.metrics.timer_scheduled.set(self.index.pending())

    def _measure_lag(self) -> None:
        consumer = self.app.consumer
        for tp, next_offset in self._next_offset.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - next_offset))

    async def _unstick(self) -> None:
        """Re-read a partition that has messages past the last one processed but makes no progress.

        The case the contiguity check in `_process` cannot see: faust skipped the *last* messages of
        a partition (no later message arrives to reveal the jump)."""
        consumer = self.app.consumer
        for tp, next_offset in list(self._next_offset.items()):
            highwater = consumer.highwater(tp)
            if highwater is None or highwater <= next_offset:
                self._stuck.pop(tp, None)
                continue
            seen = self._stuck.get(tp)
            if seen is None or seen[0] != next_offset:
                self._stuck[tp] = (next_offset, 1)
            elif seen[1] + 1 >= _STUCK_CHECKS:
                log.warning(
                    "%s[%d]: no progress at %d below %d; re-reading", tp.topic, tp.partition, next_offset, highwater
                )
                self._stuck.pop(tp, None)
                await consumer.seek(tp, next_offset)
            else:
                self._stuck[tp] = (next_offset, seen[1] + 1)

    def _active_partitions(self) -> set[int]:
        events = self.settings.topics.events
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == events}

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Batch:
    """Results of consecutive messages: changes are sent as they come, states written only after
    every change of the batch is acknowledged."""

    def __init__(self, tagger: Tagger) -> None:
        self._tagger = tagger
        self._states: dict[str, bytes] = {}
        self._writes: list[tuple[EventT[bytes], str, bytes, int | None]] = []
        self._sends: list[Awaitable[Any]] = []
        self._changes: list[tuple[Change, float]] = []
        self._positions: dict[TP, EventT[bytes]] = {}

    def position(self, event: EventT[bytes]) -> None:
        """Remember a processed message: its partition's position is stored with the batch's states."""
        self._positions[event.message.tp] = event

    def load(self, customer_id: str) -> bytes | None:
        pending = self._states.get(customer_id)
        if pending is not None:
            return pending
        stored: bytes | None = self._tagger.table.get(customer_id.encode())
        return stored

    async def add(self, event: EventT[bytes], result: Result) -> None:
        tagger = self._tagger
        if result.dead_letter is not None:
            await self._send(
                tagger.settings.topics.events_dlq, event.message.key, _dead_letter_json(result.dead_letter)
            )
            tagger.metrics.dead_letters.labels(result.dead_letter.error).inc()
        produced_at = event.message.timestamp
        self._changes.extend((change, produced_at) for change in result.changes)
        if result.customer_id is not None and result.state is not None:
            self._states[result.customer_id] = result.state
            self._writes.append((event, result.customer_id, result.state, result.next_check_us))

    async def commit(self) -> None:
        tagger = self._tagger
        if self._changes:  # sent as record batches, one or a few per partition
            outgoing = [(change.customer_id.encode(), change.to_json()) for change, _ in self._changes]
            self._sends.extend(await send_records(tagger.app, tagger.settings.topics.tag_changes, outgoing))
        if self._sends:
            await asyncio.gather(*self._sends)  # every change acknowledged before any state is written
        acknowledged = time.time()
        if self._changes:
            tagger.metrics.count_changes(self._changes, acknowledged)
        latest = {customer_id: (event, state, due) for event, customer_id, state, due in self._writes}
        changelog: dict[int, list[tuple[bytes, bytes]]] = {}
        for customer_id, (event, state, due) in latest.items():  # one record per customer per batch:
            key = customer_id.encode()  # its last state is all recovery needs
            tagger._store(event, key, state)
            changelog.setdefault(event.message.partition, []).append((key, state))
            tagger.index.put(customer_id, event.message.partition, due)
        for tp, event in self._positions.items():
            key, position = _POSITION_PREFIX + f"{tp.topic}:{tp.partition}".encode(), b"%d" % (event.message.offset + 1)
            tagger._store(event, key, position)
            changelog.setdefault(event.message.partition, []).append((key, position))
        if changelog:  # durable in the changelog before the messages are acknowledged
            await tagger._send_changelog(changelog)
        self._sends.clear()
        self._changes.clear()
        self._writes.clear()
        self._positions.clear()

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        # Straight to the producer: faust's Topic.send wraps every message in a FutureMessage and a
        # channel round, which cost ~18% of the worker's time at ~3.5 tag changes per event.
        self._sends.append(await self._tagger.app.producer.send(topic, key, value, None, None, None))


def _dead_letter_json(letter: DeadLetter) -> bytes:
    return letter.model_dump_json().encode()


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    from services.runtime.kafka import client_options

    options = client_options(kafka)
    if kafka.sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=options.get("ssl_context"),
            mechanism=kafka.sasl_mechanism,
        )
    return faust.SSLCredentials(options["ssl_context"])


def faust_app(settings: Settings) -> faust.App:
    """The tagger's faust app for these settings: its broker, store, delivery and commit settings and
    its consumer (`TaggerConsumer`). Nothing is wired to it yet (see `Tagger`); `benchmarks.faust_passthrough`
    builds its floor on the same app."""
    tagger = settings.tagger
    private_directory(tagger.datadir)
    app = faust.App(
        tagger.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="rocksdb://" if tagger.store == "rocksdb" else "memory://",
        datadir=str(tagger.datadir),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=tagger.standby_replicas,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_request_timeout=tagger.producer_request_timeout_s,
        web_enabled=True,
        web_port=tagger.web_port,
        web_bind=tagger.web_host,
        web_in_thread=False,
        broker_commit_interval=1.0,
        broker_session_timeout=tagger.session_timeout_s,
        # static membership (docs/tagger.md): a worker back under the same name within the session
        # timeout gets its partitions back without a rebalance
        consumer_group_instance_id=tagger.group_instance_id,
        broker_heartbeat_interval=min(3.0, tagger.session_timeout_s / 3),
        stream_buffer_maxsize=tagger.stream_buffer,
    )
    # before anything creates the consumer; the transport instantiates the class (see consumer.py)
    consumer = type(
        "Consumer",
        (TaggerConsumer,),
        {"direct_delivery": tagger.direct_delivery, "revoke_wait_s": tagger.revoke_wait_s},
    )
    cast(Any, app.transport).Consumer = consumer
    cast(Any, app.transport).Producer = TaggerProducer
    return app


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The AIOKafkaProducer inside faust's producer, for record batches (faust has no batch API)."""
    producer: AIOKafkaProducer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    return producer


async def send_records(app: faust.App, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> list[Awaitable[Any]]:
    """Keyed messages through the app's producer as record batches, where its partitioner puts each
    key (`send_keyed`); the futures resolve once Kafka has acknowledged each batch."""
    partitioner = app.producer.partitioner
    assert partitioner is not None  # faust sets aiokafka's DefaultPartitioner at start
    return await send_keyed(kafka_producer(app), partitioner, topic, messages)


def build_app(settings: Settings, clock: Clock | None = None, registry: CollectorRegistry | None = None) -> Tagger:
    """The tagger for these settings. Nothing connects until the app is started."""
    log.info("tagger engine: %s", engine_build().describe())
    return Tagger(settings, clock or SystemClock(), registry or CollectorRegistry())
