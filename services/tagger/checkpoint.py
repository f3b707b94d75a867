"""The tagger's commit protocol for one batch: changes, then state and changelog, then offsets.

1. The batch's tag changes and dead letters are sent (record batches) and acknowledged by Kafka.
2. Only then is each customer's last state of the batch, and each source partition's position
   (services/tagger/offsets.py), written to the local store and to the table's changelog, and the
   changelog acknowledged.
3. Only then may the batch's offsets be committed (up to the positions just stored).

A crash before 2 leaves the old state and the uncommitted offsets: the batch is read again, and the
engine (deterministic, evaluating each message at its record timestamp) repeats the same changes
under the same seq, which consumers drop. A crash between 2 and 3 re-reads messages whose state is
written already: de-duplicated by event id. So a change may repeat, never go missing.

A checkpoint holds plain records (partition, key, state), not faust events, so a batch of records can
go through it however it was fetched. It reads and writes the partitions' local stores itself
(`LocalStore`: a direct read per state, one write batch per partition), not through faust's table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import TP, TableT

from schemas.topics import DeadLetter, TopicNames
from services.engine.changes import TagChange
from services.runtime.kafka import send_partitioned
from services.tagger.core import Result
from services.tagger.faust_app import send_records
from services.tagger.faust_compat import LocalStore, kafka_producer, mark_persisted
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics
from services.tagger.offsets import position_record


class Checkpoint:
    """One batch's results: changes are sent as they come, states written only after every change of
    the batch is acknowledged (`commit`)."""

    def __init__(
        self,
        app: faust.App,
        table: TableT[bytes, bytes],
        topics: TopicNames,
        metrics: TaggerMetrics,
        index: CustomerIndex,
    ) -> None:
        self._app = app
        self._table = table
        self._topics = topics
        self._metrics = metrics
        self._index = index
        self._store = LocalStore(table)
        self._read: Callable[[bytes], bytes | None] = _no_partition_chosen
        self._latest: dict[str, tuple[int, bytes, int | None]] = {}
        """Per customer, in first-seen order: the partition, last state and next check of the batch."""
        self._sends: list[Awaitable[Any]] = []
        self._changes: list[TagChange] = []
        self._caused_at: list[tuple[float, int]] = []
        """Per message with changes: its record timestamp and how many (`TaggerMetrics.count_changes`)."""
        self._outgoing: dict[int, list[tuple[bytes, bytes]]] = {}
        """The batch's tag changes to send, by the table partition of their customer."""
        self._positions: dict[TP, int] = {}

    def reading(self, partition: int) -> None:
        """Load the next states from `partition`'s store: the partition of the records handled next."""
        self._read = self._store.reader(partition)

    def load(self, customer_id: str) -> bytes | None:
        """The customer's state as of this batch: its latest result here, else the one stored in the
        partition being read (`reading`)."""
        pending = self._latest.get(customer_id)
        if pending is not None:
            return pending[1]
        return self._read(customer_id.encode())

    def position(self, tp: TP, offset: int) -> None:
        """Remember a processed message: its partition's position is stored with the batch's states."""
        self._positions[tp] = offset + 1

    async def add(self, partition: int, key: bytes | None, produced_at: float, result: Result) -> None:
        """Take a message's result: its dead letter is sent now, its changes and state at `commit`.

        `partition` is the table partition the state belongs to, `key` the message's (a dead letter
        keeps it), `produced_at` its record timestamp in seconds (for the change latency metric)."""
        if result.dead_letter is not None:
            await self._send(self._topics.events_dlq, key, dead_letter_json(result.dead_letter))
            self._metrics.dead_letters.labels(result.dead_letter.error).inc()
        if result.changes:
            self._changes.extend(result.changes)
            self._caused_at.append((produced_at, len(result.changes)))
            outgoing = self._outgoing.setdefault(partition, [])
            outgoing.extend((change.customer_id.encode(), change.to_json()) for change in result.changes)
        if result.customer_id is not None and result.state is not None:
            self._latest[result.customer_id] = (partition, result.state, result.next_check_us)

    async def commit(self) -> dict[TP, int]:
        """Steps 1 and 2 of the protocol (the module's docstring); returns once both are acknowledged,
        with each source partition's position now stored (the offsets step 3 may commit). The
        checkpoint is empty afterwards and can take the next batch."""
        if self._outgoing:  # sent as record batches, one or a few per partition
            self._sends.extend(await send_changes(self._app, self._table, self._topics.tag_changes, self._outgoing))
        if self._sends:
            await asyncio.gather(*self._sends)  # every change acknowledged before any state is written
        acknowledged = time.time()
        if self._changes:
            self._metrics.count_changes(self._changes, self._caused_at, acknowledged)
        records: dict[int, list[tuple[bytes, bytes]]] = {}
        for customer_id, (partition, state, due) in self._latest.items():  # one record per customer per
            records.setdefault(partition, []).append((customer_id.encode(), state))  # batch: its last state
            self._index.put(customer_id, partition, due)  # is all recovery needs
        for tp, next_offset in self._positions.items():
            records.setdefault(tp.partition, []).append(position_record(tp, next_offset))
        if records:  # stored, then durable in the changelog before the messages are acknowledged
            self._store.write(records)
            await send_changelog(self._app, self._table, records)
        positions = dict(self._positions)
        self._sends.clear()
        self._changes.clear()
        self._caused_at.clear()
        self._outgoing.clear()
        self._latest.clear()
        self._positions.clear()
        return positions

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        # Straight to the producer: faust's Topic.send wraps every message in a FutureMessage and a
        # channel round, a cost paid per tag change (docs/performance.md).
        self._sends.append(await self._app.producer.send(topic, key, value, None, None, None))


async def send_changes(
    app: faust.App, table: TableT[bytes, bytes], topic: str, changes: dict[int, list[tuple[bytes, bytes]]]
) -> list[Awaitable[Any]]:
    """Send tag changes grouped by their customer's table partition; returns the batches' futures.

    A customer's table partition is where the producers' default partitioner puts its key among the
    table's partition count (records anywhere else are dead-lettered, core.py), so when the changes
    topic has that count too, that partition is where the same partitioner would put each change: no
    murmur2 per change (~4 µs each in Python, a backfill's whole population misses any cache). A
    changes topic with another count (grown by an operator) is partitioned key by key."""
    partitions = await kafka_producer(app).partitions_for(topic)
    if partitions == set(range(table.partitions or 0)):
        return [future for _, future, _ in await send_partitioned(kafka_producer(app), topic, changes)]
    return await send_records(app, topic, [message for messages in changes.values() for message in messages])


async def send_changelog(
    app: faust.App, table: TableT[bytes, bytes], records: dict[int, list[tuple[bytes, bytes]]]
) -> None:
    """Send values already stored locally to the table's changelog, per partition in record batches,
    and return once Kafka has acknowledged all of them; then record each partition's last offset in
    the store (`mark_persisted`), so recovery reads only what is newer.

    Not faust's `send_changelog` per record: a FutureMessage, producer buffer round and callback per
    record. Not `table[key] = value` at all: that sends through
    faust's producer buffer, and faust's pre-commit flush gives up waiting on that buffer after 0.1 s
    (ProducerBuffer.flush_atmost), so offsets could be committed before the state behind them was
    durable (the crash test lost states that way).
    """
    topic = table.changelog_topic.get_topic_name()
    sent = await send_partitioned(kafka_producer(app), topic, records)
    acknowledged = await asyncio.gather(*(future for _, future, _ in sent))
    last: dict[int, int] = {}
    for (partition, _, count), metadata in zip(sent, acknowledged, strict=True):
        last[partition] = max(last.get(partition, -1), metadata.offset + count - 1)
    for partition, offset in last.items():
        mark_persisted(table, TP(topic, partition), offset)


def dead_letter_json(letter: DeadLetter) -> bytes:
    return letter.model_dump_json().encode()


def _no_partition_chosen(key: bytes) -> bytes | None:
    raise RuntimeError(f"a state ({key[:40]!r}) was loaded before Checkpoint.reading chose its partition")
