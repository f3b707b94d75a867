"""Crash test: SIGKILL the tagger at random points while 50,000 events stream in.

The tag-change stream must end up gapless per customer, never hold two different changes under one
seq, and its final tags must equal `tagstream replay` of the same events. Identical repeats are
allowed (at-least-once delivery) and are counted and reported.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import orjson
import pytest
import rocksdict

from benchmarks.workload import events as generated_events
from tests.support.kafka_io import TopicReader
from tests.support.processes import (
    TaggerProcess,
    produce_at_rate,
    tagger_environment,
    tagger_topics,
    wait_caught_up,
)
from tests.support.tag_streams import check_tag_changes, definitions

pytestmark = [pytest.mark.integration, pytest.mark.crash]

EVENTS = 50_000
CUSTOMERS = 2_000
PARTITIONS = 4
KILLS = 3


async def test_sigkill_during_a_stream_loses_nothing_and_never_reuses_a_seq(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    prefix = f"it-crash-{uuid.uuid4().hex[:8]}"
    groups = definitions()
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, groups)

    env = tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "data")
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=99)]

    tagger.start()
    try:
        await tagger.wait_ready()
        producing = asyncio.create_task(
            produce_at_rate(kafka_bootstrap, topics["events"], lines, per_second=EVENTS / 20)
        )
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            tagger.kill()
            tagger.start()
            await tagger.wait_ready()
        await producing
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
    finally:
        tagger.stop()

    # Each partition's RocksDB knows it holds its changelog up to the end: a restart re-reads nothing.
    changelog = f"{prefix}-customers-changelog"
    async with TopicReader(kafka_bootstrap, changelog) as reader:
        ends = {tp.partition: end for tp, end in (await reader.end_offsets()).items()}
    assert _persisted_offsets(tmp_path / "data") == {partition: end - 1 for partition, end in ends.items()}

    async with TopicReader(kafka_bootstrap, topics["tag_changes"], isolation_level="read_committed") as reader:
        await reader.drain()
        stream = reader.json()

    repeats, final = check_tag_changes(stream, lines, groups)
    print(
        f"\ncrash test: {len(stream)} tag changes for {len(final)} customers, {KILLS} SIGKILLs, "
        f"{repeats} identical repeats ({repeats / max(1, len(stream)):.2%})"
    )


def _persisted_offsets(datadir: Path) -> dict[int, int]:
    """The changelog offset faust's RocksDB store records as applied, per table partition."""
    offsets = {}
    for path in datadir.glob("**/customers-*.db"):
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
        )
        try:
            offsets[int(path.stem.rsplit("-", 1)[1])] = int(db[b"__faust\0offset__"])
        finally:
            db.close()
    return offsets
