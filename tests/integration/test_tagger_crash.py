"""Crash test: SIGKILL the tagger at random points while 50,000 events stream in.

The tag-change stream must end up gapless per customer, never hold two different changes under one
seq, and its final tags must equal `tagstream replay` of the same events. Identical repeats are
allowed (at-least-once delivery) and are counted and reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.workload import events as generated_events
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from services.tagger.engine import Engine, RuleBook
from services.tagger.feed import definition_record
from services.tagger.replay import Replay
from tests.integration.kafka_io import TopicReader, produce
from tests.unit.builders import cond, group, order_bands, value_tiers

pytestmark = pytest.mark.integration

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TaggerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = int(env["TAGSTREAM_TAGGER__WEB_PORT"])

    def start(self) -> None:
        tagstream = Path(sys.executable).parent / "tagstream"
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                [str(tagstream), "tagger", "--log-level", "info"],
                env=self._env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"tagger exited with {self.process.returncode}; see {self._log}")
            if await asyncio.to_thread(self._ready):
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"tagger not ready after {timeout}s; see {self._log}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


async def produce_slowly(bootstrap: str, topic: str, lines: list[bytes], seconds: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        chunk = 500
        pause = seconds / (len(lines) / chunk)
        for start in range(0, len(lines), chunk):
            futures = []
            for line in lines[start : start + chunk]:
                key = orjson.loads(line)["customer_id"].encode()
                futures.append(await producer.send(topic, key=key, value=line))
            await asyncio.gather(*futures)
            await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def wait_caught_up(bootstrap: str, group_id: str, topic: str, timeout: float = 180.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(group_id)
            if all(committed.get(tp) is not None and committed[tp].offset >= ends[tp] for tp in tps):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"tagger did not catch up on {topic} within {timeout}s")
    finally:
        await admin.close()


async def test_sigkill_during_a_stream_loses_nothing_and_never_reuses_a_seq(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    prefix = f"it-crash-{uuid.uuid4().hex[:8]}"
    topics = {
        name: f"{prefix}.{name}"
        for name in ("events", "tag_commands", "tag_definitions", "tag_changes", "events_dlq", "tagger_ticks")
    }
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, replication_factor=1)
    await ensure_topics(kafka, list(topics.values()), compacted=[topics["tag_definitions"]])
    groups = definitions()
    await produce(kafka_bootstrap, topics["tag_definitions"], [(*definition_record(g), None) for g in groups])

    env = dict(os.environ)
    env.update({f"TAGSTREAM_TOPICS__{name.upper()}": value for name, value in topics.items()})
    env.update(
        {
            "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TAGSTREAM_KAFKA__PARTITIONS": str(PARTITIONS),
            "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
            "TAGSTREAM_TAGGER__APP_ID": prefix,
            "TAGSTREAM_TAGGER__STORE": "rocksdb",
            "TAGSTREAM_TAGGER__DATADIR": str(tmp_path / "data"),
            "TAGSTREAM_TAGGER__WEB_PORT": str(free_port()),
            "TAGSTREAM_TAGGER__WEB_HOST": "127.0.0.1",
            "TAGSTREAM_TAGGER__PROJECTOR": "false",
            "TAGSTREAM_TAGGER__STANDBY_REPLICAS": "0",
            "TAGSTREAM_TAGGER__SESSION_TIMEOUT_S": "6",
        }
    )
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=99)]

    tagger.start()
    try:
        await tagger.wait_ready()
        producing = asyncio.create_task(produce_slowly(kafka_bootstrap, topics["events"], lines, seconds=20))
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            tagger.kill()
            tagger.start()
            await tagger.wait_ready()
        await producing
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"])
    finally:
        tagger.stop()

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
