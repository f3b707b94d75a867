"""The tagger's batch step: fetched source records, in batches, through the pure core and a `Checkpoint`.

The records come from the consumer's hand-over (services/tagger/delivery.py) as aiokafka fetched
them. Per record it only decodes, calls the core (services/tagger/core.py) and hands the result to the
batch's checkpoint (services/tagger/checkpoint.py: changes, then state and changelog, then offsets).
A partition sync message (a definitions change, or a start) backfills the partition's customers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, TableT

from schemas.topics import SyncPartition, TopicNames
from services.engine import Engine
from services.engine.fingerprint import (
    DefinitionChange,
    change_since,
    decode_fingerprint,
    encode_fingerprint,
    fingerprint,
)
from services.tagger.checkpoint import Checkpoint, send_changelog
from services.tagger.core import Incoming, Result, TaggerCore
from services.tagger.delivery import Batch, SourceBatches, SourceRecord
from services.tagger.faust_compat import LocalStore
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics
from services.tagger.offsets import SourceOffsets

log = logging.getLogger(__name__)

_YIELD_EVERY = 250
"""Customers a backfill evaluates between turns of the event loop while a chunk's commit is in flight."""

MARKER_PREFIX = b"\x00definitions:"
"""Table keys of each partition's definitions fingerprint, written once its customers are synced."""


class BatchProcessor:
    """Processes the agent's batches; what it shares with the rest of the worker is passed in."""

    def __init__(
        self,
        *,
        app: faust.App,
        table: TableT[bytes, bytes],
        topics: TopicNames,
        core: TaggerCore,
        engine: Engine,
        metrics: TaggerMetrics,
        index: CustomerIndex,
        offsets: SourceOffsets,
        batches: SourceBatches | None = None,
        backfill_chunk: int = 2_000,
        backfill_pause_s: float = 0.0,
    ) -> None:
        self.app = app
        self.table = table
        self.topics = topics
        self.core = core
        self.engine = engine
        self.metrics = metrics
        self.index = index
        self.offsets = offsets
        self.batches = batches
        self.backfill_chunk = backfill_chunk
        self.backfill_pause_s = backfill_pause_s

    async def run(self, batches: SourceBatches, size: int, within: float) -> None:
        """Process what the consumer hands over (services/tagger/delivery.py) until the worker stops:
        up to `size` records at a time, waiting up to `within` seconds to fill a batch."""
        inbound = self.app.monitor.stream_inbound_time
        while True:
            taken = await batches.take(size, within)
            now = time.monotonic()
            for tp, _ in taken:
                inbound[tp] = now  # faust's slow-processing warnings read when each partition last moved
            await batches.run(self._process_and_store(taken, batches))

    async def _process_and_store(self, taken: Sequence[Batch], batches: SourceBatches) -> None:
        batches.stored(await self.process_or_abandon(taken))

    async def process_or_abandon(self, batches: Sequence[Batch]) -> dict[TP, int]:
        """`_process`, again after a Kafka send failed; abandoned (nothing stored) once a rebalance or a
        stop is under way. Returns each partition's position stored with the states (what may be
        committed).

        A send fails when a leader died and the producer's metadata stayed stale past its request
        timeout. Processing the batch again is safe: its states were not written, and the engine
        repeats the same changes under the same seq. An abandoned batch is not committed: whoever owns
        its partitions next reads it again.
        """
        delay = 0.1
        while True:
            try:
                return await self._process(batches)
            except KafkaError as error:
                if self.app.rebalancing or self.app.should_stop:
                    log.warning(
                        "leaving %d messages unprocessed, to be read again (a rebalance or stop is under way): %r",
                        sum(len(records) for _, records in batches),
                        error,
                    )
                    return {}
                log.warning("processing a batch failed (%r); again in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _process(self, batches: Sequence[Batch]) -> dict[TP, int]:
        """Process fetched records through a `Checkpoint`; returns the positions it stored.

        A partition where records were skipped (services/tagger/offsets.py) is sought back to the
        first missing offset, and the rest of its records here dropped, to be read again in order.
        """
        checkpoint = self._checkpoint()
        stored: dict[TP, int] = {}
        rewinding: set[TP] = set()
        outcomes: Tally[tuple[str, str]] = Tally()
        seconds = 0.0
        for tp, records in batches:
            if tp in rewinding:
                continue
            checkpoint.reading(tp.partition)
            for record in records:
                expected = self.offsets.skipped(tp, record.offset)
                if expected is not None:
                    rewinding.add(tp)
                    await self.rewind(tp, expected)
                    break
                started = time.perf_counter()
                result = self._handle(record, checkpoint)
                seconds += time.perf_counter() - started
                outcomes[result.kind, result.outcome] += 1
                self.offsets.processed(tp, record.offset)
                checkpoint.position(tp, record.offset)
                if result.sync is not None:
                    stored.update(await checkpoint.commit())
                    checkpoint = self._checkpoint()
                    await self._sync(record, result.sync)
                    checkpoint.reading(tp.partition)
                    continue
                await checkpoint.add(record.partition, record.key, record.timestamp / 1000.0, result)
        stored.update(await checkpoint.commit())
        self.metrics.count_batch(outcomes, seconds)
        return stored

    async def rewind(self, tp: TP, offset: int) -> None:
        """Read a partition again from `offset`: nothing fetched after it before the seek is processed."""
        await self.app.consumer.seek(tp, offset)
        if self.batches is not None:
            self.batches.drop([tp])

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self.app, self.table, self.topics, self.metrics, self.index)

    def _handle(self, record: SourceRecord, checkpoint: Checkpoint) -> Result:
        incoming = Incoming(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            # the arithmetic faust's messages carried (seconds as a float), so that a change repeated
            # after an upgrade is the same to the microsecond
            timestamp_us=int(record.timestamp / 1000.0 * 1_000_000),
        )
        try:
            return self.core.handle(incoming, checkpoint.load)
        except Exception as error:  # a bug must not stall the partition: dead-letter the message
            log.exception("failed to process %s[%d]@%d", record.topic, record.partition, record.offset)
            return self.core.failed(incoming, error)

    async def _sync(self, record: SourceRecord, sync: SyncPartition) -> None:
        """Backfill one partition's customers to the current definitions, then mark it done."""
        partition = record.partition
        produced_at = record.timestamp / 1000.0
        stored = LocalStore(self.table).reader(partition)(marker_key(partition))
        change = change_since(decode_fingerprint(stored) if stored else {}, self.engine.rulebook)
        now_us = int(produced_at * 1_000_000)
        if not change.empty:
            started = time.perf_counter()
            customers = self.index.customers(partition)
            self.metrics.backfill_remaining.inc(len(customers))
            await self._backfill(partition, record.key, produced_at, customers, change, now_us)
            self.metrics.backfill_seconds.observe(time.perf_counter() - started)
            log.info("partition %d: backfilled %d customers for %s", partition, len(customers), change)
        await send_changelog(self.app, self.table, self.mark_synced([partition]))

    async def _backfill(
        self,
        partition: int,
        key: bytes | None,
        produced_at: float,
        customers: Sequence[str],
        change: DefinitionChange,
        now_us: int,
    ) -> None:
        """Re-evaluate `customers` in chunks of `backfill_chunk`, one commit per chunk (checkpoint.py).

        A chunk is evaluated while the previous one's commit waits for its acknowledgements: the
        evaluation is CPU, the commit mostly waits for the broker, and each customer is in one chunk
        only, so no chunk reads what another writes. Commits still run one at a time and in order, and
        at most two chunks' states are held."""
        in_flight: tuple[asyncio.Task[dict[TP, int]], int] | None = None
        try:
            for start in range(0, len(customers), self.backfill_chunk):
                chunk = customers[start : start + self.backfill_chunk]
                checkpoint = self._checkpoint()
                checkpoint.reading(partition)
                for done, customer_id in enumerate(chunk, 1):
                    current = checkpoint.load(customer_id)
                    if current is not None:
                        state, changes, due = self.core.backfill(current, change, now_us)
                        result = Result("applied", "backfill", customer_id, state, due, changes)
                        await checkpoint.add(partition, key, produced_at, result)
                    if in_flight is not None and done % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # the producer's sender and the commit in flight move on
                if in_flight is not None:
                    await self._counted(*in_flight)
                in_flight = (asyncio.ensure_future(checkpoint.commit()), len(chunk))
                if self.backfill_pause_s:
                    await asyncio.sleep(self.backfill_pause_s)
            if in_flight is not None:
                await self._counted(*in_flight)
                in_flight = None
        finally:
            if in_flight is not None:  # an error or a cancellation (a rebalance): no commit runs on behind it
                in_flight[0].cancel()

    async def _counted(self, commit: asyncio.Task[dict[TP, int]], customers: int) -> None:
        """Wait for a backfill chunk's commit, then count its customers done."""
        await commit
        self.metrics.backfill_customers.inc(customers)
        self.metrics.backfill_remaining.dec(customers)

    def mark_synced(self, partitions: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """Record in the local store, at once, that every customer state in these partitions agrees
        with the definitions in force (a later sync re-evaluates only what changed since); returns the
        records for the changelog (`send_changelog`)."""
        value = encode_fingerprint(fingerprint(self.engine.rulebook))
        records = {partition: [(marker_key(partition), value)] for partition in sorted(partitions)}
        LocalStore(self.table).write(records)
        return records


def marker_key(partition: int) -> bytes:
    """The table key of a partition's definitions fingerprint."""
    return MARKER_PREFIX + str(partition).encode()
