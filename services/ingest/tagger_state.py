"""Ingest's side of `tagstream.tagger-queries`: ask the tagger workers, gather their answers.

Aggregates and previews need the customers' stored states, which only the tagger workers hold
(per partition, in their tables). A question goes to every worker (services/tagger/queries.py);
each answers for the partitions it holds, and this gathers answers by query id until every
partition needed is covered — the customer's one for a lookup, all of them for a preview — or the
wait is over, which raises `TaggerUnavailable` naming the partitions nobody answered for.

Answers are read from the end of the answers topic as it was when this started, so a question
asked after `start` is never missed; the first answer per partition counts (after a rebalance two
workers may answer for one partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.queries import CustomerAggregates, PreviewTally, TaggerAnswer, TaggerQuery
from schemas.tags import TagGroup
from services.engine.lookup import merge
from services.ingest.ports import TaggerUnavailable
from services.runtime.clock import Clock
from services.runtime.kafka import client_options, ensure_query_topics, partitions_of, producer_options
from services.runtime.partitioning import partition_for
from services.runtime.settings import Settings

log = logging.getLogger(__name__)

_RECONNECT_S = 2.0


class _Gathering:
    def __init__(self, needed: set[int]) -> None:
        self.needed = needed
        self.answers: dict[int, TaggerAnswer] = {}
        self.done = asyncio.Event()

    def take(self, answer: TaggerAnswer) -> None:
        for partition in answer.partitions:
            if partition in self.needed and partition not in self.answers:
                self.answers[partition] = answer
        if self.needed <= set(self.answers):
            self.done.set()

    @property
    def missing(self) -> list[int]:
        return sorted(self.needed - set(self.answers))


class KafkaTaggerState:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._waiting: dict[str, _Gathering] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reading: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Connect in the background (Kafka may be away when the service starts): until connected, a
        question waits, within its own timeout."""
        self._reading = asyncio.create_task(self._connect_and_read(), name="tagstream-tagger-answers")

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def customer(self, customer_id: str) -> CustomerAggregates | None:
        partition = partition_for(customer_id.encode(), self._settings.kafka.partitions)
        query = self._query("customer", customer_id=customer_id)
        answers = await self._ask(query, {partition}, self._settings.ingest.lookup_timeout_s)
        return answers[0].customer

    async def preview(self, groups: Sequence[TagGroup], sample: int) -> PreviewTally:
        query = self._query("preview", groups=list(groups), sample=sample)
        needed = set(range(self._settings.kafka.partitions))
        answers = await self._ask(query, needed, self._settings.ingest.preview_timeout_s)
        errors = sorted({answer.error for answer in answers if answer.error})
        if errors:
            raise TaggerUnavailable([], 0, reason=f"the tagger could not evaluate the draft: {'; '.join(errors)}")
        return merge((answer.preview for answer in answers if answer.preview is not None), sample)

    def _query(self, kind: str, **fields: object) -> TaggerQuery:
        return TaggerQuery.model_validate(
            {"query_id": uuid.uuid4().hex, "kind": kind, "asked_at": self._clock.now(), **fields}
        )

    async def _ask(self, query: TaggerQuery, needed: set[int], timeout_s: float) -> list[TaggerAnswer]:
        gathering = _Gathering(needed)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        if not self._connected.is_set() or self._producer is None:
            raise TaggerUnavailable(sorted(needed), timeout_s, reason=f"Kafka was not reachable within {timeout_s:g}s")
        self._waiting[query.query_id] = gathering
        try:
            await self._producer.send_and_wait(
                self._settings.topics.tagger_queries, query.model_dump_json().encode(), key=query.query_id.encode()
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gathering.done.wait(), max(0.0, timeout_s - (time.monotonic() - started)))
        finally:
            del self._waiting[query.query_id]
        if gathering.missing:
            raise TaggerUnavailable(gathering.missing, timeout_s)
        return list({id(answer): answer for answer in gathering.answers.values()}.values())

    async def _connect_and_read(self) -> None:
        while not self._connected.is_set():
            try:
                await self._connect()
            except (KafkaError, OSError, RuntimeError) as error:
                log.warning("tagger queries: Kafka not reachable (%s); retrying in %.0fs", error, _RECONNECT_S)
                await asyncio.sleep(_RECONNECT_S)
        await self._read()

    async def _connect(self) -> None:
        kafka = self._settings.kafka
        topics = self._settings.topics
        await ensure_query_topics(kafka, topics)
        producer = AIOKafkaProducer(**producer_options(kafka))
        consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False)
        self._producer, self._consumer = producer, consumer
        await producer.start()
        await consumer.start()
        answers = await partitions_of(kafka, topics.tagger_answers)
        partitions = [TopicPartition(topics.tagger_answers, p) for p in answers]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end now: a question asked next must not be answered before it
            await consumer.position(tp)
        self._connected.set()

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except Exception:  # the broker is away: questions time out meanwhile, reading goes on
                log.exception("reading tagger answers failed; again in 1 s")
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for record in records:
                    key = (record.key or b"").decode("utf-8", "replace")
                    gathering = self._waiting.get(key)
                    if gathering is None:
                        continue
                    try:
                        gathering.take(TaggerAnswer.model_validate_json(record.value or b""))
                    except ValidationError as error:
                        log.error("ignoring an invalid tagger answer: %s", error)
