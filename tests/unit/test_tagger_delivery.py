"""The hand-over between the tagger's consumer and its processor (services/tagger/delivery.py): bounded,
batched, and quiet before a partition's assignment moves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from faust.types import TP

from services.tagger.delivery import SourceBatches

EVENTS_0 = TP("events", 0)
EVENTS_1 = TP("events", 1)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int = 1_780_000_000_000
    key: bytes | None = b"c-1"
    value: bytes | None = b"{}"


def fetched(tp: TP, first: int, count: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, offset) for offset in range(first, first + count)]


def test_the_hand_over_refuses_a_batch_past_its_bound_but_always_takes_one_into_an_empty_queue() -> None:
    batches = SourceBatches(["events"], limit=5)
    assert batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 8))  # larger than the bound, but the queue was empty
    assert not batches.offer(EVENTS_1, fetched(EVENTS_1, 0, 1))
    assert batches.size == 8


async def test_a_take_returns_whole_fetches_up_to_the_batch_size_and_makes_room() -> None:
    batches = SourceBatches(["events"], limit=10)
    batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 4))
    batches.offer(EVENTS_1, fetched(EVENTS_1, 0, 4))
    assert not batches.offer(EVENTS_0, fetched(EVENTS_0, 4, 4))
    room = asyncio.ensure_future(batches.room())
    taken = await batches.take(max_records=6, within=0)
    assert [(tp, [r.offset for r in records]) for tp, records in taken] == [(EVENTS_0, [0, 1, 2, 3])]
    await asyncio.wait_for(room, 1)
    assert batches.offer(EVENTS_0, fetched(EVENTS_0, 4, 4))
    taken = await batches.take(max_records=6, within=0)
    assert [tp for tp, _ in taken] == [EVENTS_1]


async def test_a_take_waits_for_the_first_fetch_then_briefly_for_more() -> None:
    batches = SourceBatches(["events"], limit=100)
    taking = asyncio.ensure_future(batches.take(max_records=10, within=0.5))
    await asyncio.sleep(0.01)
    assert not taking.done()
    batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 3))
    await asyncio.sleep(0.01)
    batches.offer(EVENTS_1, fetched(EVENTS_1, 0, 7))  # fills the batch: no need to wait out `within`
    taken = await asyncio.wait_for(taking, 0.3)
    assert sum(len(records) for _, records in taken) == 10


def test_stored_positions_are_committed_once_each_at_the_highest_offset() -> None:
    batches = SourceBatches(["events"], limit=100)
    batches.stored({EVENTS_0: 5, EVENTS_1: 3})
    batches.stored({EVENTS_0: 9})
    batches.stored({EVENTS_0: 7})  # a batch processed again after a failed send never moves a position back
    assert batches.committable() == {EVENTS_0: 9, EVENTS_1: 3}
    assert batches.committable() == {}


def test_dropping_a_partition_keeps_the_other_partitions_records_in_order() -> None:
    batches = SourceBatches(["events"], limit=100)
    batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 2))
    batches.offer(EVENTS_1, fetched(EVENTS_1, 0, 3))
    batches.offer(EVENTS_0, fetched(EVENTS_0, 2, 2))
    assert batches.drop([EVENTS_0]) == 4
    assert batches.size == 3


async def test_a_revocation_waits_for_the_batch_in_flight_to_store_its_positions_and_drops_the_queue() -> None:
    batches = SourceBatches(["events"], limit=100)
    batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 5))
    taken = await batches.take(max_records=5, within=0)
    batches.offer(EVENTS_0, fetched(EVENTS_0, 5, 5))  # fetched meanwhile: never processed here
    release = asyncio.Event()

    async def process() -> None:
        await release.wait()  # the checkpoint waiting on Kafka
        batches.stored({tp: records[-1].offset + 1 for tp, records in taken})

    running = asyncio.ensure_future(batches.run(process()))
    await asyncio.sleep(0)
    quiescing = asyncio.ensure_future(batches.quiesce(timeout=5))
    await asyncio.sleep(0.01)
    assert not quiescing.done()  # the assignment may not move while the batch is in flight
    release.set()
    await asyncio.wait_for(quiescing, 1)
    assert await running is True
    assert batches.committable() == {EVENTS_0: 5}
    assert batches.size == 0


async def test_a_revocation_cancels_a_batch_in_flight_past_the_limit_and_it_stores_nothing() -> None:
    batches = SourceBatches(["events"], limit=100)
    batches.offer(EVENTS_0, fetched(EVENTS_0, 0, 5))
    taken = await batches.take(max_records=5, within=0)

    async def process() -> None:
        await asyncio.Event().wait()  # a send that never completes (a dead leader)
        batches.stored({tp: records[-1].offset + 1 for tp, records in taken})

    running = asyncio.ensure_future(batches.run(process()))
    await asyncio.sleep(0)
    await asyncio.wait_for(batches.quiesce(timeout=0.05), 1)
    assert await running is False  # abandoned, not crashed: the processor takes the next batch
    assert batches.committable() == {}


async def test_the_processor_being_stopped_is_not_taken_for_an_abandoned_batch() -> None:
    batches = SourceBatches(["events"], limit=100)
    started = asyncio.Event()

    async def process() -> None:
        started.set()
        await asyncio.Event().wait()

    running = asyncio.ensure_future(batches.run(process()))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


def test_a_hand_over_with_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        SourceBatches(["events"], limit=0)
