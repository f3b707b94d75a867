"""The tagger's batch reads and writes of its table's local store (`LocalStore`, `Checkpoint.load`) see
what faust's own reads and recovery see: a RocksDB store on disk and the memory store, no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from faust.types import TP, TableT
from prometheus_client import CollectorRegistry

from schemas.topics import TopicNames
from services.runtime.settings import Settings, TaggerSettings
from services.tagger.checkpoint import Checkpoint
from services.tagger.core import Result
from services.tagger.faust_app import customers_table, faust_app
from services.tagger.faust_compat import LocalStore
from services.tagger.index import CustomerIndex
from services.tagger.metrics import TaggerMetrics

Store = Literal["rocksdb", "memory"]
STORES: tuple[Store, ...] = ("rocksdb", "memory")
# Shanghai customers, one of them never seen, and ids a hostile client could send
CUSTOMERS = ["sh-000123", "sh-000456", "王小明", "x" * 300, "sh-new-customer"]


def tagger_table(tmp_path: Path, store: Store) -> TableT[bytes, bytes]:
    settings = Settings(tagger=TaggerSettings(datadir=tmp_path / "tagger", store=store))
    return customers_table(faust_app(settings), settings)


def checkpoint_of(table: TableT[bytes, bytes]) -> Checkpoint:
    app = table.app
    return Checkpoint(app, table, TopicNames(), TaggerMetrics(CollectorRegistry()), CustomerIndex())  # type: ignore[arg-type]


def recover(table: TableT[bytes, bytes], partition: int, records: list[tuple[bytes, bytes]]) -> None:
    """Write records the way faust's recovery does: a batch of changelog events."""
    changelog = TP(table.changelog_topic.get_topic_name(), partition)
    events = [
        SimpleNamespace(
            key=key,
            value=value,
            message=SimpleNamespace(tp=changelog, offset=offset, partition=partition, key=key, value=value),
        )
        for offset, (key, value) in enumerate(records)
    ]
    table.data.apply_changelog_batch(events, to_key=lambda key: key, to_value=lambda value: value)


@pytest.mark.parametrize("store", STORES)
def test_a_partitions_reader_sees_what_faust_reads_for_states_written_by_the_batch_and_by_recovery(
    tmp_path: Path, store: Store
) -> None:
    table = tagger_table(tmp_path, store)
    recover(table, 1, [(b"sh-000123", b"recovered"), (b"\x00position:events:1", b"42")])
    LocalStore(table).write({1: [("王小明".encode(), b"written"), (b"x" * 300, b"")], 3: [(b"sh-000456", b"p3")]})

    read = LocalStore(table).reader(1)
    for customer_id in CUSTOMERS:
        key = customer_id.encode()
        if key != b"sh-000456":  # partition 3's
            assert read(key) == table.get(key), customer_id
    assert read(b"\x00position:events:1") == b"42"
    assert read(b"sh-000123") == b"recovered"
    assert read(b"x" * 300) == b""  # an empty value is a value, not a miss
    assert read(b"sh-new-customer") is None
    assert LocalStore(table).reader(3)(b"sh-000456") == table.get(b"sh-000456") == b"p3"


def test_a_partitions_reader_does_not_see_states_of_other_partitions_in_rocksdb(tmp_path: Path) -> None:
    table = tagger_table(tmp_path, "rocksdb")
    LocalStore(table).write({3: [(b"sh-000456", b"p3")]})
    assert LocalStore(table).reader(0)(b"sh-000456") is None
    assert table.get(b"sh-000456") == b"p3"  # faust's read asks every partition's database


def test_a_write_replaces_earlier_values_and_leaves_the_changelog_offset_recovery_reads(tmp_path: Path) -> None:
    table = tagger_table(tmp_path, "rocksdb")
    recover(table, 2, [(b"sh-000123", b"old"), (b"sh-000456", b"kept")])
    changelog = TP(table.changelog_topic.get_topic_name(), 2)
    persisted = table.data.persisted_offset(changelog)
    assert persisted == 1

    LocalStore(table).write({2: [(b"sh-000123", b"new"), (b"sh-000123", b"newest")]})

    read = LocalStore(table).reader(2)
    assert (read(b"sh-000123"), read(b"sh-000456")) == (b"newest", b"kept")
    assert table.data.persisted_offset(changelog) == persisted


@pytest.mark.parametrize("store", STORES)
def test_a_checkpoint_loads_its_own_results_first_then_what_the_partition_holds(tmp_path: Path, store: Store) -> None:
    table = tagger_table(tmp_path, store)
    LocalStore(table).write({1: [(b"sh-000123", b"stored-123"), (b"sh-000456", b"stored-456")]})
    checkpoint = checkpoint_of(table)
    checkpoint.reading(1)
    stored = {customer_id: LocalStore(table).reader(1)(customer_id.encode()) for customer_id in CUSTOMERS}

    pending: dict[str, bytes] = {}
    for step, customer_id in enumerate(["sh-000123", "sh-new-customer", "sh-000123", "王小明"]):
        state = f"{customer_id}@{step}".encode()
        checkpoint_add(checkpoint, 1, customer_id, state)
        pending[customer_id] = state
        for anyone in CUSTOMERS:
            assert checkpoint.load(anyone) == pending.get(anyone, stored[anyone]), (step, anyone)
    assert checkpoint.load("sh-000456") == b"stored-456"


def test_a_checkpoint_refuses_to_load_before_it_knows_the_partition(tmp_path: Path) -> None:
    checkpoint = checkpoint_of(tagger_table(tmp_path, "rocksdb"))
    with pytest.raises(RuntimeError, match=r"b'sh-000123'.*Checkpoint.reading"):
        checkpoint.load("sh-000123")


def test_a_revoked_partition_reopens_once_no_batch_holds_its_database(tmp_path: Path) -> None:
    """faust drops a revoked partition's database without closing it: RocksDB's lock goes with the last
    reference, so a reader kept past its batch would stop the partition from coming back."""
    table = tagger_table(tmp_path, "rocksdb")
    LocalStore(table).write({2: [(b"sh-000123", b"state")]})
    changelog = TP(table.changelog_topic.get_topic_name(), 2)

    kept = LocalStore(table).reader(2)
    table.data.revoke_partitions(table, {changelog})
    with pytest.raises(Exception, match=r"(?i)lock"):
        LocalStore(table).reader(2)
    del kept

    table.data.revoke_partitions(table, {changelog})
    assert LocalStore(table).reader(2)(b"sh-000123") == b"state"


def checkpoint_add(checkpoint: Checkpoint, partition: int, customer_id: str, state: bytes) -> None:
    """`Checkpoint.add` of a result with no change or dead letter (nothing is sent)."""
    result = Result("applied", "order_paid", customer_id, state, None, [])
    asyncio.run(checkpoint.add(partition, customer_id.encode(), 0.0, result))
