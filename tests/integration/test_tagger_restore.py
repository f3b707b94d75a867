"""The bulk restore of the tagger's table (services/tagger/restore.py) on the real broker and RocksDB:
a store ends with each key's last value in the changelog (tombstones deleting), whether the restore
runs once or is stopped and run again, and never records an offset past what it wrote."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP, TableT

from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.faust_app import customers_table, faust_app
from services.tagger.faust_compat import LocalStore
from services.tagger.restore import ChangelogBatch, ChangelogRestore, Restored, Span, Writer

pytestmark = pytest.mark.integration

PARTITIONS = 3
CUSTOMERS = 3_000
Record = tuple[int, bytes | None, bytes | None]  # partition, key, value (None: a tombstone)


def shop_history() -> Iterator[Record]:
    """A changelog as a shop's leaves it: Shanghai customers written, rewritten and resent, some
    forgotten (tombstones) and some of those back, an empty state, a hostile key, the tagger's
    NUL-prefixed marker (a compacted topic refuses keyless records)."""
    for number in range(CUSTOMERS):
        yield number % PARTITIONS, f"sh-{number:06d}".encode(), f"v1 Asia/Shanghai {number}".encode()
    for number in range(0, CUSTOMERS, 3):
        yield number % PARTITIONS, f"sh-{number:06d}".encode(), f"v2 {number}".encode()
        yield number % PARTITIONS, f"sh-{number:06d}".encode(), f"v2 {number}".encode()  # a resent batch
    for number in range(0, CUSTOMERS, 7):
        yield number % PARTITIONS, f"sh-{number:06d}".encode(), None
    for number in range(0, CUSTOMERS, 21):
        yield number % PARTITIONS, f"sh-{number:06d}".encode(), f"v3 back {number}".encode()
    yield 1, "王小明".encode(), b""
    yield 2, b"'; DROP TABLE customers; --" + b"\xff" * 64, b"hostile"
    yield 0, b"\x00marker:0", b"fingerprint-abc"


def last_values(records: list[Record]) -> dict[int, dict[bytes, bytes]]:
    held: dict[int, dict[bytes, bytes]] = {partition: {} for partition in range(PARTITIONS)}
    for partition, key, value in records:
        if key is None:
            continue
        if value is None:
            held[partition].pop(key, None)
        else:
            held[partition][key] = value
    return held


async def produced(bootstrap: str, topic: str, records: list[Record]) -> list[Record]:
    """The records written to `topic` in order; returns each partition's records in offset order."""
    await ensure_topics(
        KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, replication_factor=1),
        [topic],
        compacted=[topic],
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send(topic, key=key, value=value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return records


def rocksdb_table(datadir: Path) -> TableT[bytes, bytes]:
    settings = Settings(tagger=TaggerSettings(datadir=datadir, store="rocksdb"))
    return customers_table(faust_app(settings), settings)


def held(table: TableT[bytes, bytes]) -> dict[int, dict[bytes, bytes]]:
    found: dict[int, dict[bytes, bytes]] = {partition: {} for partition in range(PARTITIONS)}
    for partition, key, value in LocalStore(table).partition_items(range(PARTITIONS), PARTITIONS):
        found[partition][key] = value
    return found


def persisted(table: TableT[bytes, bytes], topic: str) -> dict[int, int | None]:
    return {partition: table.persisted_offset(TP(topic, partition)) for partition in range(PARTITIONS)}


@dataclass
class Restoring:
    """A shop's changelog on the broker and an empty RocksDB table to restore it into."""

    bootstrap: str
    topic: str
    records: list[Record]
    table: TableT[bytes, bytes]

    def write_to_store(self, tp: TopicPartition, batch: ChangelogBatch) -> None:
        LocalStore(self.table).restore(tp.partition, batch)

    async def restore(
        self, write: Writer | None = None, *, still_ours: Callable[[], bool] = lambda: True, batch_records: int = 20_000
    ) -> Restored:
        """A restore from where faust's recovery would start: after the offset each store holds."""
        spans = {
            TopicPartition(self.topic, partition): Span(start=(offset if offset is not None else -1) + 1)
            for partition, offset in persisted(self.table, self.topic).items()
        }
        restore = ChangelogRestore({"bootstrap_servers": self.bootstrap}, batch_records=batch_records)
        return await restore.run(spans, write or self.write_to_store, still_ours=still_ours, deadline_s=60)


async def restoring(bootstrap: str, tmp_path: Path) -> Restoring:
    topic = f"it-restore-{uuid.uuid4().hex[:8]}-customers-changelog"
    records = await produced(bootstrap, topic, list(shop_history()))
    return Restoring(bootstrap, topic, records, rocksdb_table(tmp_path / "tagger"))


async def test_a_restore_leaves_each_keys_last_value_and_records_the_end_of_each_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    shop = await restoring(kafka_bootstrap, tmp_path)

    restored = await shop.restore()

    assert restored.complete
    assert restored.records == len(shop.records)
    states = held(shop.table)
    assert states == last_values(shop.records)
    assert states[1]["王小明".encode()] == b""  # an empty state is a state
    assert b"sh-000014" not in states[2]  # forgotten
    assert b"sh-000007" not in states[1]
    assert states[0][b"sh-000021"] == b"v3 back 21"  # forgotten, then back
    ends = {
        partition: sum(1 for record in shop.records if record[0] == partition) - 1 for partition in range(PARTITIONS)
    }
    assert persisted(shop.table, shop.topic) == ends


async def test_a_restore_stopped_midway_never_records_an_offset_past_its_data_and_a_second_run_converges(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    shop = await restoring(kafka_bootstrap, tmp_path)
    writes: list[ChangelogBatch] = []

    def write(tp: TopicPartition, batch: ChangelogBatch) -> None:
        shop.write_to_store(tp, batch)
        writes.append(batch)

    # a rebalance after the third write: the fetch under way is written (checked once per fetch, with
    # no await before its writes), nothing after it
    interrupted = await shop.restore(write, still_ours=lambda: len(writes) < 3, batch_records=400)
    assert not interrupted.complete
    assert 3 <= len(writes) < 3 + PARTITIONS
    by_partition: dict[int, list[Record]] = {partition: [] for partition in range(PARTITIONS)}
    for record in shop.records:
        by_partition[record[0]].append(record)
    # each store holds exactly the changelog up to the offset it records, and nothing after it
    for partition, offset in persisted(shop.table, shop.topic).items():
        upto = by_partition[partition][: (offset if offset is not None else -1) + 1]
        assert held(shop.table)[partition] == last_values(upto)[partition], partition

    again = await shop.restore(write, batch_records=400)
    assert again.complete
    assert held(shop.table) == last_values(shop.records)
    assert interrupted.records + again.records == len(shop.records)  # nothing read twice: it went on where it stopped


async def test_a_restore_of_a_store_already_current_reads_and_writes_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    shop = await restoring(kafka_bootstrap, tmp_path)
    await shop.restore()
    writes: list[ChangelogBatch] = []

    again = await shop.restore(lambda tp, batch: writes.append(batch))

    assert again.complete
    assert again.records == 0
    assert writes == []
    assert held(shop.table) == last_values(shop.records)
