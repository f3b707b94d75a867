"""The services as real processes, and the Kafka plumbing around them (crash test, end-to-end, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.runtime.definitions_feed import definition_record
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from tests.support.kafka_io import produce
from tests.support.netprobe import free_port

TAGGER_TOPICS = ("events", "tag_commands", "tag_definitions", "tag_changes", "events_dlq", "tagger_ticks")


async def tagger_topics(bootstrap: str, prefix: str, partitions: int, groups: Sequence[Any]) -> dict[str, str]:
    """A tagger's topics named `<prefix>.<name>`, created, with `groups` published as its definitions."""
    topics = {name: f"{prefix}.{name}" for name in TAGGER_TOPICS}
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=partitions, replication_factor=1)
    await ensure_topics(kafka, list(topics.values()), compacted=[topics["tag_definitions"]])
    await produce(bootstrap, topics["tag_definitions"], [(*definition_record(group), None) for group in groups])
    return topics


def tagger_environment(
    bootstrap: str, prefix: str, topics: dict[str, str], partitions: int, datadir: Path, **tagger: str
) -> dict[str, str]:
    """TAGSTREAM_* variables for a worker on these topics (rocksdb store, no projector, no standby)."""
    env = dict(os.environ)
    env.update({f"TAGSTREAM_TOPICS__{name.upper()}": value for name, value in topics.items()})
    env.update(
        {
            "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TAGSTREAM_KAFKA__PARTITIONS": str(partitions),
            "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
            "TAGSTREAM_TAGGER__APP_ID": prefix,
            "TAGSTREAM_TAGGER__STORE": "rocksdb",
            "TAGSTREAM_TAGGER__DATADIR": str(datadir),
            "TAGSTREAM_TAGGER__WEB_PORT": str(free_port()),
            "TAGSTREAM_TAGGER__WEB_HOST": "127.0.0.1",
            "TAGSTREAM_TAGGER__PROJECTOR": "false",
            "TAGSTREAM_TAGGER__STANDBY_REPLICAS": "0",
            "TAGSTREAM_TAGGER__SESSION_TIMEOUT_S": "6",
        }
    )
    env.update({f"TAGSTREAM_TAGGER__{name.upper()}": value for name, value in tagger.items()})
    return env


async def produce_at_rate(
    bootstrap: str,
    topic: str,
    lines: list[bytes],
    per_second: float,
    on_sent: Callable[[int, float], None] | None = None,
    stamps: Sequence[int] | None = None,
) -> None:
    """Keyed by customer_id, in chunks of 1% of a second's worth, each acknowledged by all replicas;
    each chunk is sent as `tagstream ingest` sends a request's events (linger 0: the records appended
    before the loop yields go in one batch, with no wait after that);
    `stamps` (epoch ms, one per line) are the record timestamps, the produce time otherwise.
    `on_sent(index, at)` hears each line's send (epoch seconds). The keys are read before the first
    send, so the paced loop does no more than send."""
    keys = [orjson.loads(line)["customer_id"].encode() for line in lines]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        chunk = max(1, int(per_second / 100))
        started = time.monotonic()
        for start in range(0, len(lines), chunk):
            futures = []
            for number in range(start, min(start + chunk, len(lines))):
                stamp = stamps[number] if stamps is not None else None
                futures.append(await producer.send(topic, key=keys[number], value=lines[number], timestamp_ms=stamp))
                if on_sent is not None:
                    on_sent(number, time.time())
            await asyncio.gather(*futures)
            ahead = (start + chunk) / per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def wait_caught_up(bootstrap: str, group_id: str, topic: str, partitions: int, timeout: float = 180.0) -> None:
    """Until the group has committed the end offset of every partition of the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, partition) for partition in range(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(group_id)
            if all(committed.get(tp) is not None and committed[tp].offset >= ends[tp] for tp in tps):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"group {group_id} did not catch up on {topic} within {timeout}s")
    finally:
        await admin.close()


def ingest_environment(
    bootstrap: str, redis_url: str, prefix: str, topics: dict[str, str], api_keys: list[dict[str, str]], **ingest: str
) -> dict[str, str]:
    """TAGSTREAM_* variables for `tagstream ingest` on these topics and Redis prefix, on a free port."""
    env = dict(os.environ)
    env.update({f"TAGSTREAM_TOPICS__{name.upper()}": value for name, value in topics.items()})
    env.update(
        {
            "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
            "TAGSTREAM_REDIS__URL": redis_url,
            "TAGSTREAM_REDIS__KEY_PREFIX": f"{prefix}:",
            "TAGSTREAM_INGEST__HOST": "127.0.0.1",
            "TAGSTREAM_INGEST__PORT": str(free_port()),
            "TAGSTREAM_INGEST__API_KEYS": orjson.dumps(api_keys).decode(),
        }
    )
    env.update({f"TAGSTREAM_INGEST__{name.upper()}": value for name, value in ingest.items()})
    return env


def notifier_environment(settings: dict[str, str]) -> dict[str, str]:
    """TAGSTREAM_* variables from `{"KAFKA__BOOTSTRAP_SERVERS": ..., "NOTIFIER__LEASE_S": ...}`."""
    env = dict(os.environ)
    env.update({f"TAGSTREAM_{name.upper()}": value for name, value in settings.items()})
    return env


class ServiceProcess:
    """`tagstream <command>` in a child process, logging to a file; ready when its /readyz says so."""

    name = "service"
    arguments: tuple[str, ...] = ()
    port_variable = ""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = int(env[self.port_variable])
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._log

    def start(self) -> None:
        tagstream = Path(sys.executable).parent / "tagstream"
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                [str(tagstream), self.name, *self.arguments],
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
                raise AssertionError(f"{self.name} exited with {self.process.returncode}; see {self._log}")
            if await asyncio.to_thread(self._ready):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout}s; see {self._log}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM (graceful: in-flight work finishes), then the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


class TaggerProcess(ServiceProcess):
    name = "tagger"
    arguments = ("--log-level", "info")
    port_variable = "TAGSTREAM_TAGGER__WEB_PORT"


class IngestProcess(ServiceProcess):
    name = "ingest"
    arguments = ("--no-access-log", "--log-level", "warning")
    port_variable = "TAGSTREAM_INGEST__PORT"


class NotifierProcess(ServiceProcess):
    name = "notifier"
    arguments = ("--log-level", "warning")
    port_variable = "TAGSTREAM_NOTIFIER__WEB_PORT"


class SyncProcess(ServiceProcess):
    name = "sync"
    arguments = ("--log-level", "warning")
    port_variable = "TAGSTREAM_SYNC__WEB_PORT"


class EmbeddedProcess(ServiceProcess):
    """`tagstream run`: the ingest API with everything else in one process."""

    name = "run"
    port_variable = "TAGSTREAM_INGEST__PORT"

    def __init__(self, env: dict[str, str], log: Path, *, data_dir: Path, playbooks: Path) -> None:
        super().__init__(env, log)
        self.arguments = ("--data-dir", str(data_dir), "--playbooks", str(playbooks))
