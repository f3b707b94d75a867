"""The tagger's batch step: a batch of source messages through the pure core and a `Checkpoint`.

Per message it only decodes, calls the core (services/tagger/core.py) and hands the result to the
batch's checkpoint (services/tagger/checkpoint.py: changes, then state and changelog, then offsets).
A partition sync message (a definitions change, or a start) backfills the partition's customers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, EventT, TableT

from schemas.topics import SyncPartition, TopicNames
from services.engine import Engine
from services.engine.fingerprint import change_since, decode_fingerprint, encode_fingerprint, fingerprint
from services.tagger.checkpoint import Checkpoint, send_changelog
from services.tagger.core import Incoming, Result, TaggerCore
from services.tagger.faust_compat import store_locally
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics
from services.tagger.offsets import SourceOffsets

log = logging.getLogger(__name__)

MARKER_PREFIX = b"\x00definitions:"
"""Table keys of each partition's definitions fingerprint, written once its customers are synced."""
_BACKFILL_CHUNK = 200


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
        self.backfill_pause_s = backfill_pause_s

    async def process_or_abandon(self, events: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
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
        """Process a batch through a `Checkpoint`; returns the events that were processed (and may be
        acknowledged).

        A partition where faust skipped messages (services/tagger/offsets.py) is sought back to the
        first missing offset and the rest of its batch left unacknowledged, to be read again in order.
        """
        checkpoint = self._checkpoint()
        processed: list[EventT[bytes]] = []
        rewinding: set[TP] = set()
        for event in events:
            message = event.message
            tp = message.tp
            if tp in rewinding:
                continue
            expected = self.offsets.skipped(tp, message.offset)
            if expected is not None:
                rewinding.add(tp)
                await self.app.consumer.seek(tp, expected)
                continue
            result = self._handle(message, checkpoint)
            self.offsets.processed(tp, message.offset)
            checkpoint.position(tp, message.offset)
            processed.append(event)
            if result.sync is not None:
                await checkpoint.commit()
                checkpoint = self._checkpoint()
                await self._sync(message, result.sync)
                continue
            await checkpoint.add(message.partition, message.key, message.timestamp, result)
        await checkpoint.commit()
        return processed

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self.app, self.table, self.topics, self.metrics, self.index)

    def _handle(self, message: Any, checkpoint: Checkpoint) -> Result:
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
            result = self.core.handle(incoming, checkpoint.load)
        except Exception as error:  # a bug must not stall the partition: dead-letter the message
            log.exception("failed to process %s[%d]@%d", message.topic, message.partition, message.offset)
            result = self.core.failed(incoming, error)
        self.metrics.count_message(result.kind, result.outcome, time.perf_counter() - started)
        return result

    async def _sync(self, message: Any, sync: SyncPartition) -> None:
        """Backfill one partition's customers to the current definitions, then mark it done."""
        partition = message.partition
        stored = self.table.get(marker_key(partition))
        change = change_since(decode_fingerprint(stored) if stored else {}, self.engine.rulebook)
        now_us = int(message.timestamp * 1_000_000)
        if not change.empty:
            started = time.perf_counter()
            customers = self.index.customers(partition)
            self.metrics.backfill_remaining.inc(len(customers))
            for start in range(0, len(customers), _BACKFILL_CHUNK):
                checkpoint = self._checkpoint()
                for customer_id in customers[start : start + _BACKFILL_CHUNK]:
                    current = checkpoint.load(customer_id)
                    if current is None:
                        continue
                    state, changes, due = self.core.backfill(current, change, now_us)
                    result = Result("applied", "backfill", customer_id, state, due, changes)
                    await checkpoint.add(partition, message.key, message.timestamp, result)
                await checkpoint.commit()
                done = min(_BACKFILL_CHUNK, len(customers) - start)
                self.metrics.backfill_customers.inc(done)
                self.metrics.backfill_remaining.dec(done)
                if self.backfill_pause_s:
                    await asyncio.sleep(self.backfill_pause_s)
            self.metrics.backfill_seconds.observe(time.perf_counter() - started)
            log.info("partition %d: backfilled %d customers for %s", partition, len(customers), change)
        await send_changelog(self.app, self.table, self.mark_synced([partition]))

    def mark_synced(self, partitions: Iterable[int]) -> dict[int, list[tuple[bytes, bytes]]]:
        """Record in the local store, at once, that every customer state in these partitions agrees
        with the definitions in force (a later sync re-evaluates only what changed since); returns the
        records for the changelog (`send_changelog`)."""
        value = encode_fingerprint(fingerprint(self.engine.rulebook))
        records: dict[int, list[tuple[bytes, bytes]]] = {}
        for partition in sorted(partitions):
            marker = marker_key(partition)
            store_locally(self.table, partition, marker, value)
            records[partition] = [(marker, value)]
        return records


def marker_key(partition: int) -> bytes:
    """The table key of a partition's definitions fingerprint."""
    return MARKER_PREFIX + str(partition).encode()
