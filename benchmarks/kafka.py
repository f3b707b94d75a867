"""Kafka benchmark: one tagger worker against a raw aiokafka consume -> produce passthrough.

    python -m benchmarks.kafka                     # 50,000 events, 5,000 customers, 20 groups / 100 tags
    python -m benchmarks.kafka --events 20000

Measures the engine build this checkout imports and prints which: pure Python by default;
`scripts/compile-engine.sh` first measures the mypyc-compiled engine the container image ships
(`--clean` goes back). A stale compiled build (sources edited since) is refused.

Starts the local broker with scripts/kafka.sh (or uses TAGSTREAM_TEST_KAFKA_BOOTSTRAP) and measures,
in the same run on the same broker:
- passthrough: an aiokafka consumer group reading the events and producing each one to another
  topic (acks=all), committing as it goes: the ceiling for any consume-process-produce service;
- faust passthrough: benchmarks/faust_passthrough.py, the tagger minus its engine and state (its
  own faust app, consumer, batches and record-batch sender), forwarding each event: the floor any
  faust-based worker pays per event before doing work of its own;
- tagger throughput: a backlog of the same events drained by one `tagstream tagger` process
  (RocksDB store, 4 partitions), from ready to offsets committed;
- CPU per event of each (the passthrough's process, the workers' processes): on a machine whose cores
  the broker and other work share, events per CPU-second compares the two with less noise than
  events per second;
- tagger latency at 50% of that throughput: events produced at that rate, and for each tag change
  the time from the event's send to the change's record timestamp (p50 / p99).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.workload import events as generated_events
from benchmarks.workload import rules
from schemas.tags import TagGroupSet
from services.runtime.engine_build import engine_build
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from tests.support import infra
from tests.support.kafka_io import TopicReader, produce
from tests.support.netprobe import free_port
from tests.support.processes import (
    TaggerProcess,
    produce_at_rate,
    tagger_environment,
    tagger_topics,
    wait_caught_up,
)

PARTITIONS = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args(argv)
    build = engine_build()
    if build.stale:
        parser.exit(2, f"refusing to measure a stale build: engine {build.describe()}\n")
    bootstrap = os.environ.get("TAGSTREAM_TEST_KAFKA_BOOTSTRAP") or infra.start_kafka()
    return asyncio.run(run(bootstrap, args.events, args.customers))


async def run(bootstrap: str, count: int, customers: int) -> int:
    lines = [orjson.dumps(event) for event in generated_events(count, customers, seed=5)]
    passthrough, passthrough_cpu = await measure_passthrough(bootstrap, lines)
    print(f"passthrough (aiokafka consume -> produce, acks=all): {passthrough:,.0f} events/s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as workdir:
        floor, floor_cpu, floor_events = await measure_faust_passthrough(bootstrap, lines, Path(workdir))
        print(f"faust passthrough: {floor:,.0f} events/s", file=sys.stderr)
        throughput, tagger_cpu = await measure_tagger_throughput(bootstrap, lines, Path(workdir))
        print(f"tagger throughput: {throughput:,.0f} events/s", file=sys.stderr)
        rate = throughput / 2
        p50, p99, changes = await measure_tagger_latency(bootstrap, lines, Path(workdir), rate)
    print(f"\nworkload: {count:,} events, {customers:,} customers, 20 groups / 100 tags, {PARTITIONS} partitions")
    print(f"engine: {engine_build().describe()}")
    print("\n| run | events/s | vs passthrough | CPU per event | events per CPU-second | vs passthrough |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| aiokafka passthrough (consume -> produce, acks=all) | {passthrough:,.0f} | 1.00x | "
        f"{passthrough_cpu * 1e6 / count:.0f} µs | {count / passthrough_cpu:,.0f} | 1.00x |"
    )
    print(
        f"| faust passthrough (the tagger minus engine and state) | {floor:,.0f} | {floor / passthrough:.2f}x | "
        f"{floor_cpu * 1e6 / floor_events:.0f} µs | {floor_events / floor_cpu:,.0f} | "
        f"{(passthrough_cpu / count) / (floor_cpu / floor_events):.2f}x |"
    )
    print(
        f"| tagger, one worker (RocksDB) | {throughput:,.0f} | {throughput / passthrough:.2f}x | "
        f"{tagger_cpu * 1e6 / count:.0f} µs | {count / tagger_cpu:,.0f} | {passthrough_cpu / tagger_cpu:.2f}x |"
    )
    print(
        f"\nevent -> tag change latency at {rate:,.0f} events/s (50% of the tagger's rate), "
        f"{changes:,} changes: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    return 0


async def measure_passthrough(bootstrap: str, lines: list[bytes]) -> tuple[float, float]:
    """Events/s and the CPU seconds this process spent (the passthrough runs in it)."""
    prefix = f"bench-pass-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, replication_factor=1)
    source, sink = f"{prefix}.in", f"{prefix}.out"
    await ensure_topics(kafka, [source, sink])
    await produce(bootstrap, source, [(orjson.loads(line)["customer_id"].encode(), line, None) for line in lines])
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=prefix, auto_offset_reset="earliest", enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        done = 0
        started = None
        while done < len(lines):
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if started is None and batch:
                started, cpu = time.perf_counter(), time.process_time()
            futures = [
                await producer.send(sink, key=record.key, value=record.value)
                for records in batch.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        assert started is not None
        return len(lines) / (time.perf_counter() - started), time.process_time() - cpu
    finally:
        await consumer.stop()
        await producer.stop()


async def measure_faust_passthrough(bootstrap: str, lines: list[bytes], workdir: Path) -> tuple[float, float, int]:
    """The faust floor (benchmarks/faust_passthrough.py) in its own process: events/s, CPU seconds and
    events measured, from its first forwarded batch to its offsets committed at the end (startup
    excluded, as the tagger's is)."""
    prefix = f"bench-faust-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, replication_factor=1)
    source, sink = f"{prefix}.in", f"{prefix}.out"
    await ensure_topics(kafka, [source, sink])
    await produce(bootstrap, source, [(orjson.loads(line)["customer_id"].encode(), line, None) for line in lines])
    with open(workdir / f"{prefix}.log", "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.faust_passthrough",
                bootstrap,
                prefix,
                source,
                sink,
                str(PARTITIONS),
                str(workdir / prefix),
                str(free_port()),
            ],
            cwd=Path(__file__).resolve().parents[1],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
    try:
        probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await probe.start()
        try:
            sink_partitions = [TopicPartition(sink, partition) for partition in range(PARTITIONS)]
            deadline = time.monotonic() + 120
            while not (forwarded := sum((await probe.end_offsets(sink_partitions)).values())):
                assert process.poll() is None, f"faust passthrough exited; see {workdir / prefix}.log"
                assert time.monotonic() < deadline, "faust passthrough forwarded nothing in 120 s"
                await asyncio.sleep(0.02)
        finally:
            await probe.stop()
        started, cpu = time.perf_counter(), _cpu_seconds(process.pid)
        await wait_caught_up(bootstrap, prefix, source, PARTITIONS, timeout=1800)
        measured = len(lines) - forwarded
        return measured / (time.perf_counter() - started), _cpu_seconds(process.pid) - cpu, measured
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _tagger_topics(bootstrap: str, prefix: str) -> dict[str, str]:
    return await tagger_topics(bootstrap, prefix, PARTITIONS, TagGroupSet.model_validate(rules()).groups)


async def measure_tagger_throughput(bootstrap: str, lines: list[bytes], workdir: Path) -> tuple[float, float]:
    """Events/s and the CPU seconds the worker process spent draining the backlog."""
    prefix = f"bench-tagger-{uuid.uuid4().hex[:6]}"
    topics = await _tagger_topics(bootstrap, prefix)
    await produce(
        bootstrap, topics["events"], [(orjson.loads(line)["customer_id"].encode(), line, None) for line in lines]
    )
    tagger = TaggerProcess(
        tagger_environment(bootstrap, prefix, topics, PARTITIONS, workdir / prefix), workdir / f"{prefix}.log"
    )
    tagger.start()
    try:
        await tagger.wait_ready()
        assert tagger.process is not None
        started, cpu = time.perf_counter(), _cpu_seconds(tagger.process.pid)
        await wait_caught_up(bootstrap, prefix, topics["events"], PARTITIONS, timeout=1800)
        return len(lines) / (time.perf_counter() - started), _cpu_seconds(tagger.process.pid) - cpu
    finally:
        tagger.stop()


async def measure_tagger_latency(
    bootstrap: str, lines: list[bytes], workdir: Path, rate: float
) -> tuple[float, float, int]:
    prefix = f"bench-latency-{uuid.uuid4().hex[:6]}"
    topics = await _tagger_topics(bootstrap, prefix)
    tagger = TaggerProcess(
        tagger_environment(bootstrap, prefix, topics, PARTITIONS, workdir / prefix), workdir / f"{prefix}.log"
    )
    sent: dict[str, float] = {}

    def remember(line: bytes, at: float) -> None:
        sent.setdefault(orjson.loads(line)["event_id"], at)

    tagger.start()
    try:
        await tagger.wait_ready()
        await produce_at_rate(bootstrap, topics["events"], lines, rate, on_sent=remember)
        await wait_caught_up(bootstrap, prefix, topics["events"], PARTITIONS, timeout=1800)
    finally:
        tagger.stop()
    async with TopicReader(bootstrap, topics["tag_changes"]) as reader:
        await reader.drain()
        latencies = []
        for record in reader.records:
            cause = orjson.loads(record.value).get("caused_by")
            if cause in sent:
                latencies.append(max(0.0, record.timestamp / 1000 - sent[cause]))
    quantiles = statistics.quantiles(latencies, n=100)
    return quantiles[49], quantiles[98], len(latencies)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
