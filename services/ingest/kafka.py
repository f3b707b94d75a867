"""Kafka implementations of the ingest ports: the acknowledged publisher and the definitions view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from schemas.tags import TagGroup
from services.ingest.brokers import BrokerWatch
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import Record, Throttled, Unavailable
from services.runtime.definitions_feed import DefinitionsFeed
from services.runtime.kafka import ensure_topics, producer_options
from services.runtime.settings import IngestSettings, KafkaSettings

log = logging.getLogger(__name__)

_RECONNECT_S = 1.0
_CHECK_TIMEOUT_S = 2.0


class KafkaPublisher:
    """An idempotent acks=all producer that refuses work (Throttled) instead of buffering without bound.

    It connects in the background, so the service starts (and answers 503) while Kafka is away, and
    while a `BrokerWatch` sees that no write can succeed (brokers unreachable, a partition without
    its in-sync quorum) it answers Unavailable at once instead of holding the request for
    send_timeout_s; readiness follows the same watch.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        ingest: IngestSettings,
        metrics: IngestMetrics,
        *,
        topics: Sequence[str] = (),
        compacted: Sequence[str] = (),
        probe_topic: str | None = None,
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        """Created (if missing) before the first write, so the broker's defaults never apply to them."""
        self._compacted = compacted
        self._ingest = ingest
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._probe_topic = probe_topic
        """Where the broker watch writes its probe after a failed send (None: no probe, metadata decides)."""
        self._watch = BrokerWatch(
            kafka,
            topics,
            timeout_s=min(ingest.send_timeout_s, _CHECK_TIMEOUT_S),
            probe=self._probe if probe_topic is not None else None,
        )
        self._watching: asyncio.Task[None] | None = None
        self._inflight = 0

    @property
    def ready(self) -> bool:
        return self._producer is not None and self._watch.writable

    @property
    def saturated(self) -> bool:
        return self._inflight >= self._ingest.producer_buffer_bytes

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect())

    async def wait_ready(self) -> None:
        if self._connecting is not None:
            await asyncio.shield(self._connecting)

    async def stop(self) -> None:
        for task in (self._connecting, self._watching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._producer is not None:
            await self._producer.stop()  # flushes what is still in flight
            self._producer = None

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        producer = self._producer
        if producer is None:
            raise Unavailable(f"Kafka at {self._kafka.bootstrap_servers} is not reachable yet")
        if self._topics and not self._watch.writable:  # known not to take writes: say so now, not in 10 s
            raise Unavailable(f"Kafka cannot take writes now ({self._watch.problem}); nothing was sent")
        size = sum(len(key) + len(value or b"") for key, value in records)
        if self._inflight and self._inflight + size > self._ingest.producer_buffer_bytes:
            raise Throttled(retry_after_s=1)
        self._inflight += size
        self._metrics.buffer_bytes.set(self._inflight)
        try:
            await asyncio.wait_for(self._send_all(producer, topic, records), self._ingest.send_timeout_s)
        except (KafkaError, TimeoutError) as error:
            self._watch.send_failed(f"a send was not acknowledged: {type(error).__name__}")
            raise Unavailable(f"Kafka did not acknowledge the write: {type(error).__name__}: {error}") from None
        finally:
            self._inflight -= size
            self._metrics.buffer_bytes.set(self._inflight)

    async def _probe(self) -> None:
        """One record on the probe topic, acknowledged by its in-sync replicas within send_timeout_s."""
        producer, topic = self._producer, self._probe_topic
        if producer is None or topic is None:
            raise KafkaConnectionError("no producer yet")
        await asyncio.wait_for(self._send_all(producer, topic, [(b"probe", None)]), self._ingest.send_timeout_s)

    @staticmethod
    async def _send_all(producer: AIOKafkaProducer, topic: str, records: Sequence[Record]) -> None:
        pending = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*pending)

    async def _connect(self) -> None:
        options = producer_options(self._kafka) | {
            "linger_ms": self._ingest.linger_ms,
            "request_timeout_ms": int(self._ingest.send_timeout_s * 1000),
        }
        while True:
            producer = AIOKafkaProducer(**options)
            try:
                if self._topics:
                    probes = [self._probe_topic] if self._probe_topic is not None else []
                    await ensure_topics(
                        self._kafka, [*self._topics, *probes], compacted=self._compacted, short_lived=probes
                    )
                await producer.start()
            except (KafkaError, OSError, RuntimeError) as error:
                log.warning("Kafka not reachable (%s); retrying in %.0fs", error, _RECONNECT_S)
                await producer.stop()
                await asyncio.sleep(_RECONNECT_S)
                continue
            self._producer = producer  # writes still wait for the watch, whose probe writes through it
            if self._topics:
                await self._watch.check()
                self._watching = asyncio.create_task(self._watch.run())
            return


class KafkaDefinitions:
    """The tag groups as the compacted definitions topic holds them, plus this process's own writes
    until the topic reads them back (so an API client reads what it has just written)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._feed = DefinitionsFeed(kafka, topic, self._on_definitions)
        self._pending: dict[str, tuple[TagGroup | None, int]] = {}
        self._versions: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._feed.ready.is_set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def wait_ready(self) -> None:
        await self._feed.ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def groups(self) -> Mapping[str, TagGroup]:
        merged = dict(self._feed.groups)
        for group_id, (group, _) in self._pending.items():
            if group is None:
                merged.pop(group_id, None)
            else:
                merged[group_id] = group
        return merged

    def last_version(self, group_id: str) -> int:
        return self._versions.get(group_id, 0)

    def written(self, upserts: Sequence[TagGroup], deletions: Sequence[str]) -> None:
        for group in upserts:
            self._pending[group.id] = (group, group.version)
            self._versions[group.id] = max(self._versions.get(group.id, 0), group.version)
        for group_id in deletions:
            self._pending[group_id] = (None, self._versions.get(group_id, 0))

    def _on_definitions(self, groups: dict[str, TagGroup]) -> None:
        for group in groups.values():
            self._versions[group.id] = max(self._versions.get(group.id, 0), group.version)
        for group_id, (pending, version) in list(self._pending.items()):
            seen = groups.get(group_id)
            if pending is not None:
                caught_up = seen is not None and seen.version >= version
            else:
                caught_up = seen is None or seen.version != version
            if caught_up:
                del self._pending[group_id]

    async def _follow(self) -> None:
        while True:
            try:
                await self._feed.run()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Kafka away at start or later: keep trying, stay not-ready meanwhile
                log.warning("reading %s failed (%s); retrying in %.0fs", self._topic, error, _RECONNECT_S)
                self._feed = DefinitionsFeed(self._kafka, self._topic, self._on_definitions)
                await asyncio.sleep(_RECONNECT_S)
