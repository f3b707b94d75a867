"""Timer wake-ups survive a broker that does not take them: a customer handed out by the index whose tick
Kafka refused is woken again at the next timer run, never forgotten until its next event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from prometheus_client import CollectorRegistry

from services.engine.timeutil import to_us
from services.tagger.app import Tagger
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Ticks:
    """The ticks topic: refuses the keys in `refused` (the ack fails), raises on send once `broken`."""

    def __init__(self, refused: set[bytes] | None = None, broken_after: int | None = None) -> None:
        self.refused = refused or set()
        self.broken_after = broken_after
        self.acked: list[bytes] = []

    async def send(self, *, key: bytes, value: bytes, force: bool) -> asyncio.Future[None]:
        if self.broken_after is not None and len(self.acked) >= self.broken_after:
            raise KafkaTimeoutError()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if key in self.refused:
            future.set_exception(NotLeaderForPartitionError())
        else:
            future.set_result(None)
            self.acked.append(key)
        return future


class FakeTagger:
    """What `Tagger._wake_due_customers` touches."""

    def __init__(self, ticks: Ticks) -> None:
        self.recovered = True
        self.clock = type("Clock", (), {"now": staticmethod(lambda: NOW)})()
        self.index = CustomerIndex()
        self.ticks_topic = ticks
        self.metrics = TaggerMetrics(CollectorRegistry())

    def _active_partitions(self) -> set[int]:
        return {0}


def _due(tagger: FakeTagger, *customers: str) -> None:
    for customer in customers:
        tagger.index.put(customer, 0, to_us(NOW) - 1)


async def test_a_wake_up_kafka_refused_is_sent_again_at_the_next_run() -> None:
    tagger = FakeTagger(Ticks(refused={b"c2"}))
    _due(tagger, "c1", "c2", "c3")
    await Tagger._wake_due_customers(cast(Any, tagger))
    assert sorted(tagger.ticks_topic.acked) == [b"c1", b"c3"]
    tagger.ticks_topic.refused = set()
    await Tagger._wake_due_customers(cast(Any, tagger))
    assert sorted(tagger.ticks_topic.acked) == [b"c1", b"c2", b"c3"]


async def test_wake_ups_not_sent_because_the_producer_failed_are_kept_and_the_timer_survives() -> None:
    tagger = FakeTagger(Ticks(broken_after=1))
    _due(tagger, "c1", "c2", "c3")
    await Tagger._wake_due_customers(cast(Any, tagger))  # does not raise: the timer keeps running
    assert len(tagger.ticks_topic.acked) == 1
    tagger.ticks_topic.broken_after = None
    await Tagger._wake_due_customers(cast(Any, tagger))
    assert sorted(tagger.ticks_topic.acked) == [b"c1", b"c2", b"c3"]


def test_a_restored_wake_up_does_not_override_a_later_schedule() -> None:
    index = CustomerIndex()
    index.put("c1", 0, 100)
    assert index.pop_due(100, {0}) == [("c1", 100)]
    index.put("c1", 0, 500)  # the customer's next event moved the wake-up while its tick was in flight
    index.restore("c1", 100)
    assert index.pop_due(400, {0}) == []
    assert index.pop_due(500, {0}) == [("c1", 500)]


def test_a_wake_up_of_a_customer_whose_partition_left_is_not_restored() -> None:
    index = CustomerIndex()
    index.put("c1", 0, 100)
    index.pop_due(100, {0})
    index.drop_partitions({0})
    index.restore("c1", 100)
    assert index.pending() == 0


def test_a_partition_that_comes_back_wakes_its_customers_again() -> None:
    index = CustomerIndex()
    index.put("c1", 0, 100)
    index.put("c2", 1, 100)
    assert index.pop_due(100, {1}) == [("c2", 100)]  # partition 0 revoked, not yet dropped
    index.put("c1", 0, 100)  # it comes back: recovery puts its customers again, same wake-up
    assert index.pop_due(100, {0, 1}) == [("c1", 100)]


async def test_the_timer_backlog_counts_the_wake_ups_of_this_run_and_those_still_due() -> None:
    tagger = FakeTagger(Ticks(refused={b"c2"}))
    _due(tagger, "c1", "c2", "c3")
    tagger.index.put("c4", 0, to_us(NOW) + 1)  # not due yet
    await Tagger._wake_due_customers(cast(Any, tagger))
    assert _backlog(tagger) == 4  # three woken, one of them still due
    tagger.ticks_topic.refused = set()
    await Tagger._wake_due_customers(cast(Any, tagger))
    assert _backlog(tagger) == 1


def _backlog(tagger: FakeTagger) -> float:
    (metric,) = tagger.metrics.timer_backlog.collect()
    return metric.samples[0].value
