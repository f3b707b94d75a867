"""The table's changelog read back into its local store in bulk, before faust's own recovery.

faust restores a table one changelog record at a time (a `Message` and an `Event` per record, the
conductor, then `Recovery._slurp_changelogs` recomputing every partition's remaining count per
record): ~250 µs a record, minutes for a million customers. `ChangelogRestore` reads each partition
from the offset its store holds to the end with a plain aiokafka consumer (no group), in large
fetches, and hands each fetch's records per partition to a writer as one `ChangelogBatch`: the last
value of each key (a tombstone as `None`) and the offset it brings the store to. The writer
(`LocalStore.restore`, services/tagger/faust_compat.py) writes both in one RocksDB write batch, so a
store never records an offset past its data, whatever stops the restore (SIGKILL, a rebalance).
faust's recovery then starts from that offset and finds nothing, or only a tail, left to read.

A restore stops early, leaving the rest to faust, when its owner says the partitions are no longer
its own (a rebalance began: nothing is written after that) or at its deadline (faust's recovery
bounds the step it runs in, see `TaggerRecovery`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

FETCH_PARTITION_BYTES = 4 * 1024 * 1024
"""Per partition and fetch: a restore reads whole partitions, so fewer, larger fetches (aiokafka's 1 MiB
default costs a round trip per ~2,000 states)."""
FETCH_BYTES = 64 * 1024 * 1024
"""Per fetch, over every partition (bounds what one fetch holds in memory)."""
BATCH_RECORDS = 20_000
"""Records one `getmany` hands over, over every partition: one write batch per partition each."""
_POLL_MS = 500


class ChangelogRecord(Protocol):
    """What the restore reads of a changelog record (aiokafka's `ConsumerRecord` has it)."""

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class ChangelogBatch:
    """What a run of one partition's changelog records leaves in its store."""

    changes: dict[bytes, bytes | None]
    """Each key's last value in the run; `None` deletes it (a tombstone)."""
    offset: int
    """The changelog offset the store holds once these are written (faust's persisted offset)."""
    records: int = 0
    """Changelog records read into it."""
    keyless: int = 0
    """Records without a key, skipped: nothing the tagger writes, and nothing a store could hold."""


def fold(records: Iterable[ChangelogRecord], stop: int) -> ChangelogBatch | None:
    """The batch these records (one partition's, in offset order) leave, those at `stop` and after
    left out; None if none is before `stop`."""
    changes: dict[bytes, bytes | None] = {}
    last = -1
    read = 0
    keyless = 0
    for record in records:
        if record.offset >= stop:
            break
        last = record.offset
        read += 1
        if record.key is None:
            keyless += 1
            continue
        changes[record.key] = record.value
    if last < 0:
        return None
    return ChangelogBatch(changes, last, read, keyless)


@dataclass(frozen=True)
class Span:
    """A partition's changelog to restore: from `start` (the first offset the store lacks) up to the
    end, or up to `stop` (exclusive) when the caller must not go past it."""

    start: int
    stop: int | None = None


@dataclass
class Restored:
    """What one restore did: per changelog partition, the offset its store holds now (only those it
    wrote to), and its counts."""

    offsets: dict[TopicPartition, int]
    records: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """The worker process's CPU meanwhile (every thread: faust's consumer thread idles through it)."""
    complete: bool = False
    """Every partition read to its end (else faust's recovery reads the rest)."""


Writer = Callable[[TopicPartition, ChangelogBatch], None]


class ChangelogRestore:
    """Reads changelog partitions into their stores through `write`, one batch per partition and fetch."""

    def __init__(self, client_options: Mapping[str, Any], *, batch_records: int = BATCH_RECORDS) -> None:
        self._client_options = dict(client_options)
        self._batch_records = batch_records

    async def run(
        self,
        spans: Mapping[TopicPartition, Span],
        write: Writer,
        *,
        still_ours: Callable[[], bool],
        deadline_s: float,
    ) -> Restored:
        """Restore `spans`; each write happens only while `still_ours()` holds, and nothing is read
        after `deadline_s` seconds."""
        started, cpu = time.perf_counter(), time.process_time()
        restored = Restored({})
        consumer = AIOKafkaConsumer(
            **self._client_options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
            fetch_max_bytes=FETCH_BYTES,
        )
        await consumer.start()
        try:
            stops = await self._stops(consumer, spans)
            pending = {tp: stop for tp, stop in stops.items() if spans[tp].start < stop}
            if pending:
                consumer.assign(list(pending))
                for tp in pending:
                    consumer.seek(tp, spans[tp].start)
            while pending and still_ours() and time.perf_counter() - started < deadline_s:
                fetched = await consumer.getmany(timeout_ms=_POLL_MS, max_records=self._batch_records)
                read_to_stop = await self._read_to_stop(consumer, pending)
                if not still_ours():  # checked with no await before the writes
                    break
                for tp, records in fetched.items():
                    if tp in pending:
                        self._apply(tp, fold(records, pending[tp]), write, restored)
                for tp in read_to_stop:
                    self._finish(tp, pending.pop(tp), write, restored)
                    consumer.pause(tp)
            restored.complete = not pending
        finally:
            await consumer.stop()
        restored.seconds = time.perf_counter() - started
        restored.cpu_seconds = time.process_time() - cpu
        return restored

    @staticmethod
    async def _stops(consumer: AIOKafkaConsumer, spans: Mapping[TopicPartition, Span]) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(spans))
        stops = {}
        for tp, end in ends.items():
            stop = spans[tp].stop
            stops[tp] = end if stop is None else min(end, stop)
        return stops

    @staticmethod
    def _apply(tp: TopicPartition, batch: ChangelogBatch | None, write: Writer, restored: Restored) -> None:
        if batch is None:
            return
        if batch.keyless:
            log.warning(
                "%s: %d changelog records without a key skipped, up to offset %d", tp, batch.keyless, batch.offset
            )
        write(tp, batch)
        restored.offsets[tp] = batch.offset
        restored.records += batch.records

    @staticmethod
    async def _read_to_stop(consumer: AIOKafkaConsumer, pending: Mapping[TopicPartition, int]) -> list[TopicPartition]:
        """The partitions whose position reached their stop. A compacted log can end in a gap (records
        removed after the last one kept): the position, not the last record, says the end is reached."""
        return [tp for tp, stop in pending.items() if await consumer.position(tp) >= stop]

    @staticmethod
    def _finish(tp: TopicPartition, stop: int, write: Writer, restored: Restored) -> None:
        """The store of a partition read to its stop holds everything before it, gap included."""
        if restored.offsets.get(tp, -1) < stop - 1:
            write(tp, ChangelogBatch({}, stop - 1))
            restored.offsets[tp] = stop - 1
