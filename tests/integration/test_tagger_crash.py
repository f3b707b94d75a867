"""Crash test: SIGKILL the tagger at random points while 50,000 events stream in.

The tag-change stream must end up gapless per customer, never hold two different changes under one
seq, and its final tags must equal `tagstream replay` of the same events. Identical repeats are
allowed (at-least-once delivery) and are counted and reported.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict

from benchmarks.workload import events as generated_events
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from services.tagger.engine import Engine, RuleBook
from services.tagger.feed import definition_record
from services.tagger.replay import Replay
from tests.integration.kafka_io import TopicReader, produce
from tests.integration.processes import (
    TAGGER_TOPICS,
    TaggerProcess,
    produce_at_rate,
    tagger_environment,
    wait_caught_up,
)
from tests.unit.builders import cond, group, order_bands, value_tiers

pytestmark = [pytest.mark.integration, pytest.mark.crash]

EVENTS = 50_000
CUSTOMERS = 2_000
PARTITIONS = 4
KILLS = 3


def definitions() -> list[Any]:
    lifecycle = group(
        "lifecycle",
        [
            ("never", [cond("order_count", "eq", 0)]),
            ("repeat", [cond("order_count", "gte", 2)]),
            ("first", [cond("order_count", "gte", 1)]),
        ],
    )
    points = group("points", [("p100", [cond("points_total", "gte", 100)]), ("p10", [cond("points_total", "gte", 10)])])
    interests = group(
        "interests",
        [
            ("cheap", [cond("bought_any", "in", [f"p{n:04d}" for n in range(0, 400)])]),
            ("premium", [cond("bought_any", "in", [f"p{n:04d}" for n in range(1600, 2000)])]),
        ],
        mode="multi",
    )
    vip = group(
        "vip",
        [("important", [cond("has_tag", "eq", "value/high"), cond("has_tag", "eq", "lifecycle/repeat")])],
        mode="multi",
    )
    return [value_tiers(), order_bands(), lifecycle, points, interests, vip]


async def test_sigkill_during_a_stream_loses_nothing_and_never_reuses_a_seq(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    prefix = f"it-crash-{uuid.uuid4().hex[:8]}"
    topics = {name: f"{prefix}.{name}" for name in TAGGER_TOPICS}
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, replication_factor=1)
    await ensure_topics(kafka, list(topics.values()), compacted=[topics["tag_definitions"]])
    groups = definitions()
    await produce(kafka_bootstrap, topics["tag_definitions"], [(*definition_record(g), None) for g in groups])

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

    by_customer: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for change in stream:
        by_customer[change["customer_id"]][change["seq"]].append(change)
    repeats = 0
    final: dict[str, dict[str, list[str]]] = {}
    for customer, by_seq in by_customer.items():
        assert sorted(by_seq) == list(range(1, max(by_seq) + 1)), f"{customer} has a gap: {sorted(by_seq)}"
        held: dict[str, set[str]] = defaultdict(set)
        for seq in sorted(by_seq):
            versions = by_seq[seq]
            distinct = {json.dumps(v, sort_keys=True) for v in versions}
            assert len(distinct) == 1, f"{customer} seq {seq} has different changes: {distinct}"
            repeats += len(versions) - 1
            change = versions[0]
            (held[change["group_id"]].add if change["change"] == "added" else held[change["group_id"]].discard)(
                change["tag_id"]
            )
        final[customer] = {g: sorted(t) for g, t in sorted(held.items()) if t}

    replay = Replay(Engine(RuleBook.compile(groups)))
    replay.feed(lines)
    replay.finish()
    expected = {customer: state.tag_ids() for customer, state in replay.states.items()}
    assert dict(final.items()) == {c: t for c, t in expected.items() if t}
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
