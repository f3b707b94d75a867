"""The hand-over of fetched source records from the tagger's consumer to its processor, in batches.

The consumer (`TaggerConsumer`, faust_compat.py) offers each fetched list of one source partition's
records as it comes from aiokafka: no faust `Message`/`Event`, stream or per-record acknowledgement.
The processor takes what is queued (up to a batch size) and runs it through a `Checkpoint`; the
partition positions it stores with the states decide what is committed (services/tagger/processing.py).

On a rebalance or stop, `quiesce` drops what is queued (not processed, so not committed: read again by
whoever owns the partition next) and waits for the batch in flight, cancelling it after a bound: a
cancelled batch wrote nothing its changes depend on (the checkpoint's steps each wait for the one
before). So no partition is processed here once its assignment moves.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from faust.types import TP

log = logging.getLogger(__name__)


class SourceRecord(Protocol):
    """What the processor reads of a fetched record (aiokafka's `ConsumerRecord`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch."""
        ...

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Batch = tuple[TP, Sequence[SourceRecord]]
"""One partition's records of one fetch, in offset order."""


class SourceBatches:
    """A queue of fetched batches bounded by its record count, and the batch being processed."""

    def __init__(self, topics: Collection[str], limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the hand-over must hold at least one record, not {limit}")
        self.topics = frozenset(topics)
        """The topics whose records come this way; the rest go through faust's conductor."""
        self.limit = limit
        self._queue: deque[Batch] = deque()
        self._size = 0
        self._filled = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._inflight: asyncio.Task[Any] | None = None
        self._stored: dict[TP, int] = {}

    def stored(self, positions: Mapping[TP, int]) -> None:
        """Positions stored with the states (by a checkpoint), to be committed next (`committable`)."""
        for tp, offset in positions.items():
            self._stored[tp] = max(offset, self._stored.get(tp, offset))

    def committable(self) -> dict[TP, int]:
        """The positions stored since the last call: each partition's offset to commit."""
        positions, self._stored = self._stored, {}
        return positions

    @property
    def size(self) -> int:
        """Records queued, not yet taken."""
        return self._size

    def offer(self, tp: TP, records: Sequence[SourceRecord]) -> bool:
        """Queue one partition's fetched records, unless the queue is full (an empty queue takes any)."""
        if self._size and self._size + len(records) > self.limit:
            self._room.clear()
            return False
        self._queue.append((tp, records))
        self._size += len(records)
        self._filled.set()
        return True

    async def room(self) -> None:
        """Return once a batch has been taken since the queue was found full."""
        await self._room.wait()

    async def take(self, max_records: int, within: float) -> list[Batch]:
        """Queued batches, whole, up to `max_records` records (at least one batch, however large);
        waits for the first, then up to `within` seconds for more while under `max_records`."""
        while not self._queue:
            self._filled.clear()
            await self._filled.wait()
        if self._size < max_records and within > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while self._size < max_records and (left := deadline - loop.time()) > 0:
                self._filled.clear()
                try:
                    await asyncio.wait_for(self._filled.wait(), left)
                except TimeoutError:
                    break
        taken: list[Batch] = []
        count = 0
        while self._queue and (not taken or count + len(self._queue[0][1]) <= max_records):
            tp, records = self._queue.popleft()
            taken.append((tp, records))
            count += len(records)
        self._size -= count
        self._room.set()
        return taken

    def drop(self, tps: Collection[TP] | None = None) -> int:
        """Forget the queued records of these partitions (all when None); returns how many."""
        kept = [batch for batch in self._queue if tps is not None and batch[0] not in tps]
        dropped = self._size - sum(len(records) for _, records in kept)
        self._queue = deque(kept)
        self._size -= dropped
        self._room.set()
        return dropped

    async def run(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run a batch's processing as the batch in flight; False if `quiesce` cancelled it."""
        task = asyncio.ensure_future(work)
        self._inflight = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                return False  # cancelled by `quiesce`, not the caller
            raise
        finally:
            self._inflight = None
        return True

    async def quiesce(self, timeout: float) -> None:
        """Drop what is queued and wait for the batch in flight; cancel it after `timeout` seconds."""
        dropped = self.drop()
        task = self._inflight
        if task is None or task.done():
            if dropped:
                log.info("dropped %d fetched records not yet processed; they are read again", dropped)
            return
        done, _ = await asyncio.wait([task], timeout=timeout)
        if not done:
            log.warning(
                "the batch in flight is not done after %.0fs (TAGSTREAM_TAGGER__REVOKE_WAIT_S): cancelled; its "
                "messages are not committed and will be read again",
                timeout,
            )
            task.cancel()
            await asyncio.wait([task])
        self.drop()  # what the consumer queued while the batch finished
