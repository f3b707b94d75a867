"""The bulk restore of the tagger's table (services/tagger/restore.py) on the real broker and RocksDB:
a store ends with each key's last value in the changelog (tombstones deleting), whether the restore
runs once or is stopped and run again, and never records an offset past what it wrote."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP, TableT

from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.faust_app import customers_table, faust_app
from services.tagger.faust_compat import LocalStore
from services.tagger.restore import ChangelogBatch, ChangelogRestore, Span

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


def spans_from(table: TableT[bytes, bytes], topic: str) -> dict[TopicPartition, Span]:
    """Where faust's recovery would start: after the offset the store holds."""
    return {
        TopicPartition(topic, partition): Span(start=(offset if offset is not None else -1) + 1)
        for partition, offset in persisted(table, topic).items()
    }


async def test_a_restore_leaves_each_keys_last_value_and_records_the_end_of_each_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"it-restore-{uuid.uuid4().hex[:8]}-customers-changelog"
    records = await produced(kafka_bootstrap, topic, list(shop_history()))
    table = rocksdb_table(tmp_path / "tagger")
    store = LocalStore(table)

    restored = await ChangelogRestore({"bootstrap_servers": kafka_bootstrap}).run(
        spans_from(table, topic),
        lambda tp, batch: store.restore(tp.partition, batch),
        still_ours=lambda: True,
        deadline_s=60,
    )

    assert restored.complete
    assert restored.records == len(records)
    assert held(table) == last_values(records)
    assert held(table)[1]["王小明".encode()] == b""  # an empty state is a state
    assert b"sh-000014" not in held(table)[2]  # forgotten
    assert b"sh-000007" not in held(table)[1]
    assert held(table)[0][b"sh-000021"] == b"v3 back 21"  # forgotten, then back
    ends = {partition: sum(1 for record in records if record[0] == partition) - 1 for partition in range(PARTITIONS)}
    assert persisted(table, topic) == ends


async def test_a_restore_stopped_midway_never_records_an_offset_past_its_data_and_a_second_run_converges(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"it-restore-{uuid.uuid4().hex[:8]}-customers-changelog"
    records = await produced(kafka_bootstrap, topic, list(shop_history()))
    table = rocksdb_table(tmp_path / "tagger")
    store = LocalStore(table)
    writes: list[ChangelogBatch] = []

    def write(tp: TopicPartition, batch: ChangelogBatch) -> None:
        store.restore(tp.partition, batch)
        writes.append(batch)

    # a rebalance (or a kill) after the third write: nothing more is written
    interrupted = await ChangelogRestore({"bootstrap_servers": kafka_bootstrap}, batch_records=400).run(
        spans_from(table, topic), write, still_ours=lambda: len(writes) < 3, deadline_s=60
    )
    assert not interrupted.complete
    assert len(writes) == 3
    offsets = persisted(table, topic)
    by_partition: dict[int, list[Record]] = {partition: [] for partition in range(PARTITIONS)}
    for record in records:
        by_partition[record[0]].append(record)
    # each store holds exactly the changelog up to the offset it records, and nothing after it
    for partition, offset in offsets.items():
        upto = by_partition[partition][: (offset if offset is not None else -1) + 1]
        assert held(table)[partition] == last_values(upto)[partition], partition

    again = await ChangelogRestore({"bootstrap_servers": kafka_bootstrap}, batch_records=400).run(
        spans_from(table, topic), write, still_ours=lambda: True, deadline_s=60
    )
    assert again.complete
    assert held(table) == last_values(records)
    assert interrupted.records + again.records == len(records)  # nothing read twice: it went on where it stopped


async def test_a_restore_of_a_store_already_current_reads_and_writes_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"it-restore-{uuid.uuid4().hex[:8]}-customers-changelog"
    records = await produced(kafka_bootstrap, topic, list(shop_history()))
    table = rocksdb_table(tmp_path / "tagger")
    store = LocalStore(table)
    restore = ChangelogRestore({"bootstrap_servers": kafka_bootstrap})
    await restore.run(
        spans_from(table, topic), lambda tp, b: store.restore(tp.partition, b), still_ours=lambda: True, deadline_s=60
    )
    writes: list[ChangelogBatch] = []

    again = await restore.run(
        spans_from(table, topic), lambda tp, batch: writes.append(batch), still_ours=lambda: True, deadline_s=60
    )

    assert again.complete
    assert again.records == 0
    assert writes == []
    assert held(table) == last_values(records)
