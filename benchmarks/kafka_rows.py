"""One measured row of `benchmarks.kafka`: a worker draining the shared backlog, then checked.

Every row gets its own topics (ticks, tag changes, DLQ, definitions), consumer group, RocksDB
directory and clock file, and reads the one events topic all rows share. CPU and time count from
the worker's ready signal to its group's offsets committed at the end of the backlog; then the
clock moves to the workload's last instant, the worker's timers wake whoever is due (as the
replay's end does), and its tag-change topic is held against the replay.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.clock import FileClock
from benchmarks.replay_check import Check, Expected, check
from tests.support.kafka_io import TopicReader
from tests.support.processes import tagger_environment, tagger_topics, wait_caught_up

ROWS = ("tagger", "quixstreams", "aiokafka")
MODULES = {
    "tagger": "benchmarks.tagger_worker",
    "quixstreams": "benchmarks.peers.quix_worker",
    "aiokafka": "benchmarks.peers.aiokafka_worker",
}
LABELS = {
    "tagger": "`tagstream tagger` (faust-streaming)",
    "quixstreams": "quixstreams app around `TaggerCore`",
    "aiokafka": "bare aiokafka loop around `TaggerCore`",
}


@dataclass(frozen=True)
class Backlog:
    """What every row drains: the shared events topic and the instants the workload spans."""

    bootstrap: str
    topic: str
    partitions: int
    events: int
    first: datetime
    last: datetime
    groups: list[object]
    settings: dict[str, str]
    """TAGSTREAM_* variables every worker gets on top of its topics (the shop's zone, history age)."""
    checkout: Path = Path(__file__).resolve().parents[1]
    """Where the workers run from (its `.venv` unless it is this checkout): another checkout compares
    an older tagger with this one on the same backlog, harness and replay."""


@dataclass(frozen=True)
class RowRun:
    row: str
    events_per_s: float
    cpu_s: float
    events: int
    check: Check

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events

    @property
    def changes_per_event(self) -> float:
        return self.check.changes / self.events


@dataclass
class Launched:
    worker: Worker
    group: str
    topics: dict[str, str]
    clock: Path


async def launch(row: str, backlog: Backlog, workdir: Path, events_topic: str | None = None) -> Launched:
    """A row's worker, ready, on its own topics and `events_topic` (default: the shared backlog)."""
    prefix, topics, env, clock = await prepare(row, backlog, workdir, events_topic)
    worker = Worker(row, env, clock, workdir / f"{prefix}.log", backlog.checkout)
    await worker.start()
    return Launched(worker, prefix, topics, clock)


async def prepare(
    row: str, backlog: Backlog, workdir: Path, events_topic: str | None = None
) -> tuple[str, dict[str, str], dict[str, str], Path]:
    """A row's topics, clock file and environment (group, RocksDB directory, web port), its tagger
    warmed; nothing running: (group, topics, env, clock)."""
    prefix = f"bench-{row[:5]}-{uuid.uuid4().hex[:6]}"
    topics = await tagger_topics(backlog.bootstrap, prefix, backlog.partitions, backlog.groups)
    clock = workdir / f"{prefix}.clock"
    FileClock.set(clock, backlog.first)
    env = tagger_environment(backlog.bootstrap, prefix, topics, backlog.partitions, workdir / prefix)
    env.update(backlog.settings)
    if row == "tagger":
        # A first start over a backlog re-evaluates the customers it processed before its partition
        # sync arrives, at the wall time: a worker that ran before (on an empty stream) has its
        # partitions synced, as one that resumes after an outage.
        warm = Worker(row, env, clock, workdir / f"{prefix}-warm.log", backlog.checkout)
        await warm.start()
        await _settled(
            backlog.bootstrap, prefix, topics["tagger_ticks"], backlog.partitions, warm, quiet=1.0, every=True
        )
        warm.stop()
    topics["events"] = env["TAGSTREAM_TOPICS__EVENTS"] = events_topic or backlog.topic
    return prefix, topics, env, clock


async def measure_row(row: str, backlog: Backlog, expected: Expected, workdir: Path) -> RowRun:
    """A row's run over the backlog: its events/s from the start to its last tag change of the drain
    (`drained_within`), its CPU per event until the group had committed the backlog's end."""
    launched = await launch(row, backlog, workdir)
    worker, topics = launched.worker, launched.topics
    try:
        started, cpu = time.time(), worker.cpu_seconds()
        await wait_caught_up(backlog.bootstrap, launched.group, backlog.topic, backlog.partitions, timeout=1800)
        caught_up, cpu = time.time(), worker.cpu_seconds() - cpu
        FileClock.set(launched.clock, backlog.last)
        await _settled(backlog.bootstrap, launched.group, topics["tagger_ticks"], backlog.partitions, worker)
    finally:
        worker.stop()
    async with TopicReader(backlog.bootstrap, topics["tag_changes"]) as reader:
        records = await reader.drain(timeout=300)
    verdict = check([record.value for record in records], expected)
    seconds = drained_within(started, caught_up, [record.timestamp for record in records])
    return RowRun(row, backlog.events / seconds, cpu, backlog.events, verdict)


def drained_within(started: float, caught_up: float, change_stamps: Sequence[int]) -> float:
    """Seconds from `started` to the last tag change sent before the group was seen `caught_up` (epoch
    seconds; stamps in epoch ms, set by the worker's producer).

    Not to `caught_up` itself: the tagger commits offsets once a second (faust's commit interval) and
    the probe looks every 0.2 s, so a 2 s drain could read as 3.2 s, and a row that commits per batch
    would gain on it. The last change comes within a few events of the last event (the workload makes
    ~3.6 changes per event); the changes of the timers the clock's move wakes come after `caught_up`."""
    seconds = (stamp / 1000 for stamp in change_stamps)
    last = max((at for at in seconds if at <= caught_up), default=caught_up)
    return max(last - started, 1e-3)


class Worker:
    """A row's worker process: started, ready, measured by its process CPU, stopped with SIGTERM."""

    def __init__(
        self, row: str, env: dict[str, str], clock: Path, log: Path, checkout: Path = Backlog.checkout
    ) -> None:
        self.row = row
        self.checkout = checkout
        self.env = env
        self._clock = clock
        self._log = log
        self._ready = log.with_suffix(".ready")
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 180.0) -> None:
        self._ready.unlink(missing_ok=True)
        arguments = [str(self._clock)] if self.row == "tagger" else [str(self._clock), str(self._ready)]
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                [python_of(self.checkout), "-m", MODULES[self.row], *arguments],
                cwd=self.checkout,
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._is_ready):
            if self.process.poll() is not None:
                raise AssertionError(f"the {self.row} worker exited with {self.process.returncode}; see {self._log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the {self.row} worker was not ready after {timeout:.0f}s; see {self._log}")
            await asyncio.sleep(0.02)  # CPU counts from here: a late look would leave work uncounted

    def _is_ready(self) -> bool:
        if self.row != "tagger":
            return self._ready.exists()
        url = f"http://127.0.0.1:{self.env['TAGSTREAM_TAGGER__WEB_PORT']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


async def _settled(
    bootstrap: str, group: str, ticks: str, partitions: int, worker: Worker, *, quiet: float = 3.0, every: bool = False
) -> None:
    """Until the worker has sent and processed the wake-ups the clock's move made due: its ticks
    topic has not grown for `quiet` seconds and the group has committed all of it (`every`: and
    each partition holds something, as after the tagger's partition syncs)."""
    tps = [TopicPartition(ticks, partition) for partition in range(partitions)]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await probe.start()
    await admin.start()
    try:
        deadline = time.monotonic() + 600
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            assert worker.alive, f"the {worker.row} worker exited while its timers ran"
            ends = await probe.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            if ends != last:
                last, since = ends, time.monotonic()
            caught_up = all(
                (ends[tp] == 0 and not every)
                or (committed.get(tp) is not None and committed[tp].offset >= ends[tp] > 0)
                for tp in tps
            )
            if caught_up and time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{group}: wake-ups still coming after 600 s")
    finally:
        await probe.stop()
        await admin.close()


def python_of(checkout: Path) -> str:
    """This interpreter for this checkout, else the other checkout's own venv."""
    if checkout == Backlog.checkout:
        return sys.executable
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"--workers-from: no {python}")
    return str(python)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
