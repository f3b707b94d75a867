"""The tagger workers' side of `tagstream.tagger-queries`: answer for the partitions held here.

Every worker reads the whole (one-partition) query topic from its end at start, with no consumer
group, so each question reaches every worker. A worker answers only for the partitions it holds as
active (a standby's copy may lag), on `tagstream.tagger-answers`, and only once it is ready
(tables recovered, definitions loaded); the asker gathers answers until every partition it needs is
covered, or gives up naming the ones missing. A question older than `_MAX_AGE_S` is skipped: its
asker has given up.

- `customer`: the worker holding the customer's partition answers with its aggregates (lookup.py).
- `preview`: each worker evaluates the draft on every customer of the partitions it holds, in one
  scan of its table, and answers once per partition it still holds at the end (a partition that
  moved meanwhile is answered by its new owner). The scan yields to the event loop every
  `_YIELD_EVERY` customers, so the agent keeps processing: RocksDB iterates from the snapshot each
  partition's iterator opened on; the in-memory store (development) is copied first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from schemas.excerpt import describe_validation_error, excerpt
from schemas.queries import TaggerAnswer, TaggerQuery
from services.engine import DefinitionError, RuleBook
from services.engine.codec import decode
from services.engine.lookup import Preview, aggregates_of
from services.engine.timeutil import to_us
from services.runtime.clock import Clock
from services.runtime.kafka import client_options, partitions_of, producer_options
from services.runtime.partitioning import partition_for
from services.runtime.settings import Settings

if TYPE_CHECKING:
    from services.tagger.app import Tagger

log = logging.getLogger(__name__)

INTERNAL_PREFIX = b"\x00"
"""Table keys that are not customers (definition markers, source positions: app.py)."""
_MAX_AGE_S = 900.0
_YIELD_EVERY = 500


class StateView(Protocol):
    """What a worker lets queries read: its active partitions' customers and their stored states."""

    @property
    def ready(self) -> bool: ...

    @property
    def rulebook(self) -> RuleBook: ...

    def active_partitions(self) -> set[int]: ...

    def stored(self, customer_id: str) -> bytes | None: ...

    def states(self) -> Iterable[tuple[bytes, bytes]]:
        """(key, stored state) of every customer of the active partitions, in one pass."""
        ...


class QueryResponder:
    def __init__(self, settings: Settings, view: StateView, clock: Clock, worker: str) -> None:
        self._settings = settings
        self._view = view
        self._clock = clock
        self._worker = worker

    async def run(self) -> None:
        """Answer questions until cancelled."""
        kafka = self._settings.kafka
        topics = self._settings.topics
        consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False)
        producer = AIOKafkaProducer(**producer_options(kafka))
        await producer.start()
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topics.tagger_queries, p) for p in await partitions_of(kafka, topics.tagger_queries)
            ]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self._answer(producer, record.value)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _answer(self, producer: AIOKafkaProducer, value: bytes | None) -> None:
        try:
            query = TaggerQuery.model_validate_json(value or b"")
        except ValidationError as error:
            log.error("ignoring an invalid tagger query: %s", describe_validation_error(error))
            return
        if time.time() - query.asked_at.timestamp() > _MAX_AGE_S or not self._view.ready:
            return
        async for answer in self.answers(query):
            await producer.send_and_wait(
                self._settings.topics.tagger_answers, answer.model_dump_json().encode(), key=query.query_id.encode()
            )

    async def answers(self, query: TaggerQuery) -> AsyncIterator[TaggerAnswer]:
        """This worker's answers to one question (none when it holds none of the partitions asked)."""
        view = self._view
        now = self._clock.now()
        now_us = to_us(now)
        if query.kind == "customer":
            assert query.customer_id is not None
            partition = partition_for(query.customer_id.encode(), self._settings.kafka.partitions)
            if partition not in view.active_partitions():
                return
            stored = view.stored(query.customer_id)
            customer = None if stored is None else aggregates_of(decode(stored), view.rulebook, now_us)
            yield TaggerAnswer(query_id=query.query_id, worker=self._worker, partitions=[partition], customer=customer)
            return
        partitions = view.active_partitions()
        rulebook = view.rulebook
        try:
            previews = {
                partition: Preview(rulebook, query.groups or [], sample=query.sample, today=rulebook.zone.date_of(now))
                for partition in sorted(partitions)
            }
        except DefinitionError as error:
            reason = excerpt(str(error), 400)
            yield TaggerAnswer(
                query_id=query.query_id, worker=self._worker, partitions=sorted(partitions), error=reason
            )
            return
        count = self._settings.kafka.partitions
        for seen, (key, stored) in enumerate(view.states(), start=1):
            preview = previews.get(partition_for(key, count))
            if preview is not None:
                preview.add(stored, now_us)
            if seen % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        still = view.active_partitions()
        for partition, preview in sorted(previews.items()):
            if partition in still:  # still ours: the states read were current
                yield TaggerAnswer(
                    query_id=query.query_id, worker=self._worker, partitions=[partition], preview=preview.tally()
                )


class TaggerView:
    """A worker's state as queries read it: the customers index and the table, active partitions only."""

    def __init__(self, tagger: Tagger) -> None:
        self._tagger = tagger

    @property
    def ready(self) -> bool:
        return self._tagger.ready

    @property
    def rulebook(self) -> RuleBook:
        return self._tagger.engine.rulebook

    def active_partitions(self) -> set[int]:
        events = self._tagger.settings.topics.events
        return {tp.partition for tp in self._tagger.app.assignor.assigned_actives() if tp.topic == events}

    def stored(self, customer_id: str) -> bytes | None:
        found: bytes | None = self._tagger.table.get(customer_id.encode())
        return found

    def states(self) -> Iterable[tuple[bytes, bytes]]:
        # A scan, not a lookup per customer: RocksDB iterates each active partition's database in
        # order, from the snapshot its iterator was opened on. The in-memory store is a dict the
        # agent writes to between yields, so it is copied first.
        items: Iterable[tuple[bytes, bytes]] = self._tagger.table.items()
        if self._tagger.settings.tagger.store == "memory":
            items = list(items)
        for key, value in items:
            if not key.startswith(INTERNAL_PREFIX):
                yield key, value


async def answer_queries(tagger: Tagger) -> None:
    """The worker's app task: answer queries until the worker stops; restart after a failure."""
    settings = tagger.settings
    worker = settings.tagger.group_instance_id or f"{socket.gethostname()}:{os.getpid()}"
    while True:
        try:
            await QueryResponder(settings, TaggerView(tagger), tagger.clock, worker).run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("answering tagger queries failed; restarting in 5 s")
            await asyncio.sleep(5.0)
