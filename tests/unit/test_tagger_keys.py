"""A customer's records must all be in the partition its key hashes to: a key-less record, a key that
is not the customer, or the right key on another partition (a producer with another partitioner) is
dead-lettered as `mismatched_key`, naming what is wrong (no I/O)."""

from __future__ import annotations

import orjson
import pytest

from schemas.events import event_adapter
from schemas.topics import TopicNames
from services.engine.timeutil import to_us
from services.runtime.clock import ManualClock
from services.runtime.partitioning import cached_partition_for, partition_for
from services.tagger.core import Incoming, TaggerCore
from tests.support.builders import at, engine, paid, value_tiers

TOPICS = TopicNames()
NOW_US = to_us(at(0))
PARTITIONS = 12
CUSTOMER = "顾客-0042"

# murmur2 of these keys as Kafka's own UtilsTest has them (Java's signed 32-bit results)
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _core(partitions: int | None = PARTITIONS) -> TaggerCore:
    return TaggerCore(engine(value_tiers()), TOPICS, ManualClock(at(0)), partitions=partitions)


def _order(partition: int, key: bytes | None = CUSTOMER.encode()) -> Incoming:
    event = paid(99, customer=CUSTOMER, when=at(0))
    return Incoming(TOPICS.events, partition, 5, key, event_adapter().dump_json(event), NOW_US)


def _command(partition: int) -> Incoming:
    command = {
        "command_id": "cmd-1",
        "customer_id": CUSTOMER,
        "group_id": "value",
        "tag_id": "high",
        "action": "add",
        "actor": "ops@shop",
        "occurred_at": at(0).isoformat(),
    }
    return Incoming(TOPICS.tag_commands, partition, 9, CUSTOMER.encode(), orjson.dumps(command), NOW_US)


@pytest.mark.parametrize(("key", "java"), JAVA_MURMUR2.items())
def test_a_key_lands_where_the_java_producers_default_partitioner_puts_it(key: bytes, java: int) -> None:
    for count in (1, 3, 12, 100):
        assert partition_for(key, count) == (java & 0x7FFFFFFF) % count
        assert cached_partition_for(key, count) == partition_for(key, count)


def test_a_record_on_its_keys_partition_is_applied() -> None:
    home = partition_for(CUSTOMER.encode(), PARTITIONS)
    assert _core().handle(_order(home), {}.get).outcome == "applied"


def test_the_right_key_on_another_partition_is_dead_lettered_naming_both_partitions() -> None:
    home = partition_for(CUSTOMER.encode(), PARTITIONS)
    elsewhere = (home + 5) % PARTITIONS
    for record in (_order(elsewhere), _command(elsewhere)):
        result = _core().handle(record, {}.get)
        assert result.outcome == "mismatched_key"
        assert result.state is None
        assert result.changes == []
        letter = result.dead_letter
        assert letter is not None
        assert (letter.error, letter.partition, letter.offset) == ("mismatched_key", elsewhere, record.offset)
        assert letter.reason == (
            f"message key '{CUSTOMER}' belongs in partition {home} of {PARTITIONS}, not {elsewhere}; produce with "
            "Kafka's default partitioner (murmur2; librdkafka clients: partitioner=murmur2_random)"
        )


def test_a_key_less_record_is_dead_lettered_before_any_partition_is_computed() -> None:
    result = _core().handle(_order(0, key=None), {}.get)
    assert result.outcome == "mismatched_key"
    assert result.dead_letter is not None
    assert result.dead_letter.reason == f"the message has no key; key messages by customer_id ('{CUSTOMER}')"


def test_a_core_told_no_partition_count_checks_no_partition() -> None:
    home = partition_for(CUSTOMER.encode(), PARTITIONS)
    assert _core(partitions=None).handle(_order((home + 1) % PARTITIONS), {}.get).outcome == "applied"
