"""A tagger worker that lost its local disk restores its table from the changelog (in bulk, before
faust's recovery: services/tagger/restore.py), also when killed in the middle of that restore, and
goes on tagging exactly as `tagstream replay` does."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import rocksdict
from aiokafka import AIOKafkaProducer

from benchmarks.workload import events as generated_events
from services.runtime.partitioning import partition_for
from tests.support.kafka_io import TopicReader
from tests.support.processes import TaggerProcess, produce_at_rate, tagger_environment, tagger_topics, wait_caught_up
from tests.support.tag_streams import check_tag_changes, definitions

pytestmark = [pytest.mark.integration, pytest.mark.crash]

PARTITIONS = 4
CUSTOMERS = 20_000
EVENTS = 48_000
KILLS = 2
WALS = "**/customers-*.db/*.log"
RESTORE_BATCH = 200
"""Records per restore batch: small, so that the restore writes many batches and a kill lands between them."""
OFFSET_KEY = b"__faust\0offset__"


async def test_a_worker_that_lost_its_disk_and_was_killed_mid_restore_holds_the_changelogs_states_and_tags_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"it-lost-disk-{uuid.uuid4().hex[:8]}"
    groups = definitions()
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, groups)
    changelog = f"{prefix}-customers-changelog"
    datadir = tmp_path / "data"
    # one pod restarted under its name (static membership): no rebalance waits out the killed one
    env = tagger_environment(
        kafka_bootstrap,
        prefix,
        topics,
        PARTITIONS,
        datadir,
        restore_batch_records=str(RESTORE_BATCH),
        group_instance_id=f"{prefix}-0",
        session_timeout_s="20",
    )
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=17)]
    first, rest = lines[: EVENTS * 3 // 4], lines[EVENTS * 3 // 4 :]
    erased = orjson.loads(first[0])["customer_id"]  # an operator erases one customer (a tombstone)
    starts = iter(range(100))

    def worker() -> TaggerProcess:
        return TaggerProcess(env, tmp_path / f"tagger-{next(starts)}.log")

    tagger = worker()
    tagger.start()
    try:
        await tagger.wait_ready()
        await produce_at_rate(kafka_bootstrap, topics["events"], first, per_second=20_000)
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
    finally:
        tagger.stop()
    await _tombstone(kafka_bootstrap, changelog, erased.encode())

    shutil.rmtree(datadir)
    interrupted = []
    for _ in range(KILLS):
        tagger = worker()
        tagger.start()
        await _until_a_batch_written(tagger, datadir, before=set(datadir.glob(WALS)))
        tagger.kill()
        interrupted.append(_persisted_offsets(datadir))
    tagger = worker()
    tagger.start()
    try:
        await tagger.wait_ready()
    finally:
        tagger.stop()
    restores = [
        line.split("] ")[-1]
        for path in sorted(tmp_path.glob("tagger-*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if "changelog records of" in line
    ]

    expected, ends = await _changelog_last_values(kafka_bootstrap, changelog)
    held, offsets = _local_store(datadir)
    assert offsets == {partition: end - 1 for partition, end in ends.items()}
    assert held == expected  # byte for byte, markers and positions (NUL-prefixed keys) included
    assert erased.encode() not in held[partition_for(erased.encode(), PARTITIONS)]

    tagger = worker()
    tagger.start()
    try:
        await tagger.wait_ready()
        rest = [line for line in rest if orjson.loads(line)["customer_id"] != erased]
        await produce_at_rate(kafka_bootstrap, topics["events"], rest, per_second=20_000)
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
    finally:
        tagger.stop()

    async with TopicReader(kafka_bootstrap, topics["tag_changes"]) as reader:
        await reader.drain()
        stream = [change for change in reader.json() if change["customer_id"] != erased]
    kept = [line for line in first + rest if orjson.loads(line)["customer_id"] != erased]
    repeats, final = check_tag_changes(stream, kept, groups)
    print(
        f"\nlost disk: {sum(len(states) for states in held.values())} states restored; partitions' restored offsets "
        f"when killed: {interrupted} (of {[end - 1 for end in ends.values()]}); restores logged: {restores}; "
        f"{len(final)} customers tagged as replay, {repeats} identical repeats"
    )


async def _tombstone(bootstrap: str, changelog: str, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(changelog, key=key, value=None, partition=partition_for(key, PARTITIONS))
    finally:
        await producer.stop()


async def _until_a_batch_written(
    tagger: TaggerProcess, datadir: Path, before: set[Path], timeout: float = 120.0
) -> None:
    """Until this start's restore has written a batch: a RocksDB write-ahead log not there `before`
    (each open starts a new one) holds something. File metadata only: opening the databases to look
    takes longer than the restore."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert tagger.process is not None
        assert tagger.process.poll() is None, f"the tagger exited; see {tagger.log_path}"
        for wal in set(datadir.glob(WALS)) - before:
            with contextlib.suppress(FileNotFoundError):  # RocksDB replaces its logs
                if wal.stat().st_size > 0:
                    return
        await asyncio.sleep(0.001)
    raise AssertionError(f"no restore batch written within {timeout}s; see {tagger.log_path}")


async def _changelog_last_values(
    bootstrap: str, changelog: str
) -> tuple[dict[int, dict[bytes, bytes]], dict[int, int]]:
    """Each changelog partition's last value per key (tombstones deleting), and its end offsets."""
    async with TopicReader(bootstrap, changelog) as reader:
        records = await reader.drain()
        ends = {tp.partition: end for tp, end in (await reader.end_offsets()).items()}
    last: dict[int, dict[bytes, bytes]] = {partition: {} for partition in ends}
    for record in records:
        if record.value is None:
            last[record.partition].pop(record.key, None)
        else:
            last[record.partition][record.key] = record.value
    return last, ends


def _local_store(datadir: Path) -> tuple[dict[int, dict[bytes, bytes]], dict[int, int]]:
    """Each partition's RocksDB: its records (faust's offset left out) and the offset it records."""
    held: dict[int, dict[bytes, bytes]] = {}
    offsets: dict[int, int] = {}
    for partition, db in _databases(datadir):
        held[partition] = {key: value for key, value in db.items() if key != OFFSET_KEY}
        offsets[partition] = int(db[OFFSET_KEY])
    return held, offsets


def _persisted_offsets(datadir: Path) -> dict[int, int | None]:
    """The offset each partition's RocksDB records (None: none yet), read after a kill."""
    offsets: dict[int, int | None] = {}
    for partition, db in _databases(datadir):
        found = db.get(OFFSET_KEY)
        offsets[partition] = int(found) if found is not None else None
    return dict(sorted(offsets.items()))


def _databases(datadir: Path) -> Iterator[tuple[int, rocksdict.Rdict]]:
    """Each partition's RocksDB under `datadir`, opened read-only while it is looked at."""
    for path in datadir.glob("**/customers-*.db"):
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
        )
        try:
            yield int(path.stem.rsplit("-", 1)[1]), db
        finally:
            db.close()
