"""The Kafka benchmarks, run on tiny workloads so they do not rot (their figures are not checked here:
a benchmark is never a timed assertion)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.kafka_rows import drained_within

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(kafka_bootstrap: str, *arguments: str, redis_url: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TAGSTREAM_TEST_KAFKA_BOOTSTRAP=kafka_bootstrap, TAGSTREAM_TEST_REDIS_URL=redis_url)
    return subprocess.run(
        [sys.executable, "-m", *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


async def topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def bench_topics_left(bootstrap: str, before: set[str]) -> set[str]:
    """The `bench-` topics made since `before` still listed after up to 10 s (a deletion reaches the
    broker's metadata a moment after the controller answers)."""
    for _ in range(50):
        left = {name for name in await topics(bootstrap) - before if name.startswith("bench-")}
        if not left:
            return left
        await asyncio.sleep(0.2)
    return left


async def test_the_kafka_benchmark_measures_every_row_and_finds_each_equal_to_replay(kafka_bootstrap: str) -> None:
    # quixstreams is a benchmark-only dependency (the bench extra): its row runs where it is installed
    rows = "tagger,aiokafka,quixstreams" if find_spec("quixstreams") else "tagger,aiokafka"
    before = await topics(kafka_bootstrap)
    done = run_benchmark(
        kafka_bootstrap, "benchmarks.kafka", "--events", "400", "--customers", "40", "--rounds", "1", "--rows", rows
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # its topics (the backlog, every row's, the latency run's) are deleted: a broker left with them
    # serves later runs slower
    assert await bench_topics_left(kafka_bootstrap, before) == set()
    table = done.stdout
    for label in ("`tagstream tagger` (faust-streaming)", "bare aiokafka loop around `TaggerCore`"):
        assert f"| {label} |" in table
    assert "tagger / aiokafka: CPU per event" in table
    assert "1/1 runs |" in table
    assert "NOT EQUAL" not in table
    assert "floor, faust passthrough" in table
    assert "latency at" in table


def test_the_kafka_benchmark_refuses_an_unknown_row(kafka_bootstrap: str) -> None:
    done = run_benchmark(kafka_bootstrap, "benchmarks.kafka", "--rows", "tagger,spark")
    assert done.returncode == 2
    assert "--rows: unknown ['spark']" in done.stderr


async def test_the_scale_benchmark_reports_every_measure_on_a_few_customers(
    kafka_bootstrap: str, redis_url: str
) -> None:
    before = await topics(kafka_bootstrap)
    done = run_benchmark(
        kafka_bootstrap,
        "benchmarks.scale",
        "--customers",
        "120",
        "--events-per-customer",
        "3",
        "--compare-faust-restore",
        redis_url=redis_url,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for measure in (
        "| read model current after the backlog drained | +",
        "| Redis memory per customer |",
        "| changelog records per customer (segment.ms 3600000,",
        "| longest Redis command of that query (Redis blocked) |",
        "| backfill of a new group (",
        "| tagger RSS growth during the backfill | +",
        "| recovery after losing the local disk (start -> ready; faust's recovery alone) |",
        "| recovery after losing the local disk (start -> ready) |",
        "| worker CPU from start to ready |",
        "| bulk restore, as the worker logged it | ",
        "| projector CPU per event (its own process, until current) |",
        "| two workers' CPU per event (both, standby copies kept), vs one worker's |",
        "| standby takeover: one of two workers stopped -> a new order in every partition tagged |",
    ):
        assert measure in done.stdout, measure
    assert await bench_topics_left(kafka_bootstrap, before) == set()


def test_the_campaign_benchmark_decides_every_step_of_a_small_audience(redis_url: str) -> None:
    done = run_benchmark("", "benchmarks.campaigns", "--customers", "300", redis_url=redis_url)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "fan-out: 300 steps scheduled" in done.stdout
    assert "decided 300 of 300 steps" in done.stdout


# How `benchmarks.kafka` times a row's drain: to its last tag change, not to the moment its committed
# offsets were seen (no I/O).
STARTED = 1_800_000_000.0


def test_a_drain_ends_at_the_last_change_sent_before_the_group_was_seen_caught_up() -> None:
    # the tagger commits once a second: seen caught up 0.9 s after its last change
    stamps = [int((STARTED + offset) * 1000) for offset in (0.1, 1.0, 2.1)]
    assert abs(drained_within(STARTED, STARTED + 3.0, stamps) - 2.1) < 1e-3


def test_the_changes_of_the_timers_woken_after_the_drain_are_not_part_of_it() -> None:
    stamps = [int((STARTED + offset) * 1000) for offset in (0.5, 1.5, 4.0, 9.0)]
    assert abs(drained_within(STARTED, STARTED + 2.0, stamps) - 1.5) < 1e-3


def test_a_drain_without_changes_ends_when_the_group_was_seen_caught_up() -> None:
    assert abs(drained_within(STARTED, STARTED + 2.5, []) - 2.5) < 1e-9
    assert drained_within(STARTED, STARTED, []) > 0  # never a zero divisor
