"""The tagger service: a faust-streaming worker around the engine, wired here.

One agent consumes customer events, manual tag commands and the tagger's own timer/sync messages
(three co-partitioned topics, keyed by customer id), so everything about one customer is applied in
order by one coroutine; it hands each batch to `BatchProcessor` (processing.py). Timers wake due
customers and watch the source offsets; pages serve health, readiness and metrics.

Delivery: at-least-once with an exact effect. faust's exactly_once sends sink messages outside the
transaction (faust-streaming#177) and fences producers on rebalance (#323), so instead each batch goes
through a `Checkpoint` (checkpoint.py): its tag changes *acknowledged by Kafka* before the customer
states behind them are written and their changelog acknowledged, and only then its messages
acknowledged for faust to commit. A crash can therefore only repeat a change (same customer, same seq,
same content: the engine is deterministic and evaluates a message at its record timestamp), never
lose one, and consumers drop repeats by seq. Redelivered events change nothing a second time
(event-id de-duplication in the engine). The faust app is built in faust_app.py; every use of faust's
private API is in faust_compat.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, cast

from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas.tags import TagGroup
from schemas.topics import SyncPartition, Tick
from services.engine import DefinitionError, Engine, RuleBook
from services.engine.arrival import Arrival
from services.engine.codec import peek_schedule
from services.engine.timeutil import to_us
from services.runtime.clock import Clock, SystemClock
from services.runtime.definitions_feed import DefinitionsFeed
from services.runtime.engine_build import engine_build
from services.runtime.kafka import ensure_query_topics, ensure_topics, partition_ids
from services.runtime.redis import redis_client
from services.runtime.settings import Settings
from services.runtime.zone import day_zone
from services.tagger.checkpoint import dead_letter_json, send_changelog
from services.tagger.core import Incoming, TaggerCore
from services.tagger.decoded import DecodedStates
from services.tagger.delivery import SourceBatches
from services.tagger.faust_app import RAW_TOPIC, customers_table, faust_app
from services.tagger.faust_compat import LocalStore
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics
from services.tagger.offsets import POSITION_PREFIX, SourceOffsets
from services.tagger.processing import MARKER_PREFIX, BatchProcessor
from services.tagger.projection import workers_projection
from services.tagger.queries import answer_queries
from services.tagger.watchdog import RebalanceWatch, exit_after

log = logging.getLogger(__name__)

_INTERNAL_PREFIX = b"\x00"  # table keys that are not customers
_LOG_START_WAIT_S = 10.0  # a ListOffsets call; bounded so that an outage cannot hold the stall checks


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
            partitions=settings.kafka.partitions,  # create_topics stops the worker on any other count
            decoded=DecodedStates(),
        )
        self.index = CustomerIndex()
        self.feed = DefinitionsFeed(
            settings.kafka, settings.topics.tag_definitions, self._on_definitions, self._on_rejected_definition
        )
        self.recovered = False
        self.offsets = SourceOffsets()
        self._fresh: set[int] = set()
        """Partitions that held nothing at recovery and are not yet marked synced (see `_mark_fresh`)."""
        self._background: set[asyncio.Task[None]] = set()
        self.app = faust_app(settings)
        topics = settings.topics
        self.source = self.app.topic(topics.events, topics.tag_commands, topics.tagger_ticks, **RAW_TOPIC)
        self.ticks_topic = self.app.topic(topics.tagger_ticks, **RAW_TOPIC)
        self.table = customers_table(self.app, settings)
        self.table.on_recover(self._on_recovered)
        self.batches = SourceBatches(
            [topics.events, topics.tag_commands, topics.tagger_ticks], settings.tagger.stream_buffer
        )
        self.app.source_batches = self.batches
        self.processor = BatchProcessor(
            app=self.app,
            table=self.table,
            topics=topics,
            core=self.core,
            engine=self.engine,
            metrics=self.metrics,
            index=self.index,
            offsets=self.offsets,
            batches=self.batches,
            backfill_chunk=settings.tagger.backfill_chunk,
            backfill_pause_s=settings.tagger.backfill_pause_s,
        )
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
                topics.notifications,  # the projector keeps each customer's message log from it
                changelog,
            ],
            compacted=[topics.tag_definitions, changelog],
            # Redis is rebuilt from tag-changes, and the DLQ holds rejected input until someone repairs it.
            kept_forever=[topics.tag_changes, topics.events_dlq],
        )
        await ensure_query_topics(kafka, topics)
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

        # Subscribed through faust's conductor, but the consumer hands these topics' records to the
        # processor in batches (services/tagger/delivery.py), not to a stream: no agent reads them.
        app.topics.add(self.source)

        @app.task  # type: ignore[untyped-decorator]
        async def process() -> None:
            await self.feed.ready.wait()
            tagger = self.settings.tagger
            await self.processor.run(self.batches, tagger.batch_size, tagger.batch_within_s)

        if self.settings.tagger.projector:
            self._wire_projector()

        @app.task  # type: ignore[untyped-decorator]
        async def read_definitions() -> None:
            await self.feed.run()

        @app.task  # type: ignore[untyped-decorator]
        async def answer() -> None:
            await answer_queries(self)

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
        while True:
            redis = redis_client(self.settings.redis)
            projection = workers_projection(self.settings, redis, self.clock, self.metrics)
            try:
                await projection.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the read model's projection failed; restarting it in 5 s")
                await asyncio.sleep(5.0)
            finally:
                await redis.aclose()

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
        ready = self.feed.ready.is_set()
        if ready:  # messages may have been processed under the definitions in force: mark with those
            self._mark_fresh()
        self.engine.load(rulebook)
        if not ready:  # the first definitions: nothing was processed yet, everything will be under these
            self._mark_fresh()
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
        self._spawn(self._send_dead_letter(record.key, dead_letter_json(letter)))

    async def _send_dead_letter(self, key: bytes | None, value: bytes) -> None:
        topic = self.settings.topics.events_dlq
        try:
            await (await self.app.producer.send(topic, key, value, None, None, None))
        except Exception:  # the reason is logged by the feed already; the record stays on its topic
            log.exception("could not dead-letter a definitions record to %s", topic)

    async def _on_recovered(self) -> None:
        active = self._active_partitions()
        self.offsets.keep(active)
        self.index.drop_partitions(self.index.partitions() - active)
        count = self.settings.kafka.partitions
        synced: set[int] = set()
        # each active partition's store read through: a customer's partition is the store's, and only
        # its id and next wake-up are read from its state (not the whole state decoded)
        for partition, key, value in LocalStore(self.table).partition_items(active, count):
            if key.startswith(_INTERNAL_PREFIX):
                if key.startswith(POSITION_PREFIX):
                    self.offsets.recover(key, value, active)
                elif key.startswith(MARKER_PREFIX):
                    synced.add(int(key[len(MARKER_PREFIX) :]))
                continue
            customer_id, due_us = peek_schedule(value)
            self.index.put(customer_id, partition, due_us)
        self.recovered = True
        log.info("recovered %d customers in partitions %s", len(self.index), sorted(active))
        self._fresh = active - synced - self.index.partitions()
        if self.feed.ready.is_set():
            self._mark_fresh()
        # faust starts app tasks (the definitions feed among them) only after recovery: don't wait here
        self._spawn(self._sync_when_definitions_loaded(active))

    def _mark_fresh(self) -> None:
        """Mark the new partitions (no customer, never synced) synced to the definitions in force, so
        that their sync re-evaluates nobody: every state they hold was written under these or, after a
        change, is re-evaluated from these. Called where the definitions are known and nothing has run
        under others: at recovery once they are loaded, else when they first are (before the feed is
        ready, so before the agent processes anything), or just before they first change."""
        if self._fresh:
            records = self.processor.mark_synced(self._fresh)
            self._fresh = set()
            self._spawn(self._send_markers(records))

    async def _send_markers(self, records: dict[int, list[tuple[bytes, bytes]]]) -> None:
        try:
            await send_changelog(self.app, self.table, records)
        except Exception:  # stored locally still; only a restore from the changelog alone would sweep them
            log.exception("could not write the definitions markers of partitions %s to the changelog", sorted(records))

    async def _sync_when_definitions_loaded(self, partitions: set[int]) -> None:
        await self.feed.ready.wait()
        await self._request_sync(partitions)

    async def _request_sync(self, partitions: Iterable[int]) -> None:
        # stamped with the worker's clock: a backfill evaluates at its record's time, which must be the
        # clock's (wall time in production), not the producer's wall time under an injected clock
        stamp = self.clock.now().timestamp()
        for partition in sorted(partitions):
            value = SyncPartition(partition=partition).model_dump_json().encode()
            await self.ticks_topic.send(value=value, partition=partition, timestamp=stamp, force=True)

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
        # woken now, and due still (not delivered): read off this run, not counted over every customer
        # (~50 ms a run at 1M wake-ups scheduled)
        self.metrics.timer_backlog.set(2 * len(due) - len(delivered))
        self.metrics.timer_scheduled.set(self.index.pending())

    def _measure_lag(self) -> None:
        for tp, lag in self.offsets.lags(self._highwater()):
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    async def _unstick(self) -> None:
        """Re-read the partitions that have messages past their position but make no progress, and move
        on from the log start where retention deleted the position (offsets.py)."""
        consumer = self.app.consumer
        stalled = dict(self.offsets.stalled(self._highwater()))
        suspects = self.offsets.suspects(stalled)
        if suspects:
            try:
                log_starts = await asyncio.wait_for(consumer.earliest_offsets(*suspects), _LOG_START_WAIT_S)
            except Exception as error:  # the broker is away: a partition still stuck is a suspect again
                log.warning("could not read the log start of %d partitions: %r", len(suspects), error)
                log_starts = {}
            for lost in self.offsets.lost_to_retention(log_starts):
                self.metrics.lost_to_retention.labels(lost.tp.topic, str(lost.tp.partition)).inc(lost.count)
                stalled.pop(lost.tp, None)
                await self.processor.rewind(lost.tp, lost.end)
        for tp, offset in stalled.items():
            await self.processor.rewind(tp, offset)

    def _highwater(self) -> Callable[[TP], int | None]:
        """The consumer's highwater of the partitions assigned now (aiokafka asserts on any other: the
        positions of revoked partitions are kept until the next recovery)."""
        consumer = self.app.consumer
        assigned = consumer.assignment()
        return lambda tp: consumer.highwater(tp) if tp in assigned else None

    def _active_partitions(self) -> set[int]:
        events = self.settings.topics.events
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == events}

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def build_app(settings: Settings, clock: Clock | None = None, registry: CollectorRegistry | None = None) -> Tagger:
    """The tagger for these settings. Nothing connects until the app is started."""
    log.info("tagger engine: %s", engine_build().describe())
    return Tagger(settings, clock or SystemClock(), registry or CollectorRegistry())
