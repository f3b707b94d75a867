"""Kafka benchmark: the tagger beside its peers, each driving the project's `TaggerCore`, on one backlog.

    python -m benchmarks.kafka                                  # 30,000 events, 3,000 customers, 3 rounds
    python -m benchmarks.kafka --events 20000 --rounds 5
    python -m benchmarks.kafka --rows tagger,aiokafka --no-floors --no-latency

The quixstreams row needs the `bench` extra, in an environment of its own (quixstreams pins an older
pydantic: docs/performance.md). Measures the engine
build this checkout imports and prints which (`scripts/compile-engine.sh` first: the compiled engine
the image ships); a stale compiled build is refused. Starts the local broker with scripts/kafka.sh
(or uses TAGSTREAM_TEST_KAFKA_BOOTSTRAP).

The workload (benchmarks/workload.py, 20 groups / 100 tags, the shop in Asia/Shanghai) is produced
once to one topic, each record stamped with its arrival in the shop's time (`arrivals`), and every
worker's clock set to the workload's first instant (benchmarks/clock.py): windows, recency bands and
time flips work on the workload's own dates. Rows, in the same run, rotating their order each round:

- tagger: one `tagstream tagger` worker (faust-streaming, RocksDB);
- quixstreams: a quixstreams application around the same core (benchmarks/peers/quix_worker.py);
- aiokafka: a bare aiokafka loop around the same core (benchmarks/peers/aiokafka_worker.py);

all at-least-once with the tagger's order (changes acknowledged, then states in RocksDB and a
changelog, then offsets), 4 partitions. Per row: events/s and CPU per event of the worker process
(from ready to its offsets committed at the end of the backlog), tag changes per event, and a check
of its tag changes and final tags against `tagstream replay` of the same events (after the clock is
moved to the workload's end and the worker's timers fire). Then, once: two floors (an aiokafka
consume → produce passthrough, and benchmarks/faust_passthrough.py: the tagger's faust app with no
engine or state), and the tagger's event → tag change latency at half its median rate.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.kafka_rows import LABELS, ROWS, Backlog, RowRun, cpu_seconds, launch, measure_row
from benchmarks.peers.common import PeerWorker
from benchmarks.replay_check import replay
from benchmarks.workload import arrivals, rules
from benchmarks.workload import events as generated_events
from schemas.tags import TagGroupSet
from services.runtime.clock import ManualClock
from services.runtime.engine_build import engine_build
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings, load_settings
from services.tagger.core import Incoming
from services.tagger.replay import no_cyclic_gc
from tests.support import infra
from tests.support.kafka_io import TopicReader, deleting_new_topics
from tests.support.netprobe import free_port
from tests.support.processes import produce_at_rate, wait_caught_up

PARTITIONS = 4
TIMEZONE = "Asia/Shanghai"
SETTINGS = {
    "TAGSTREAM_SHOP__TIMEZONE": TIMEZONE,
    "TAGSTREAM_SHOP__CURRENCY": "CNY",
    # the workload's late events arrive up to ~17 days after their date; the replay counts them live
    "TAGSTREAM_TAGGER__HISTORY_AGE": "30d",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every row, order rotated (default 3)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--no-floors", dest="floors", action="store_false", help="skip the passthrough rows")
    parser.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency run")
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="events/s of the latency run (default: half the tagger's median rate): two checkouts "
        "(--workers-from) compared at one rate",
    )
    parser.add_argument(
        "--workers-from",
        type=Path,
        help="run the rows' workers from another checkout (with its own .venv): an older tagger on this "
        "harness, workload and replay check",
    )
    args = parser.parse_args(argv)
    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown or not rows:
        parser.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")
    if not 1 <= args.rounds <= 20 or not 1 <= args.customers <= args.events <= 10_000_000:
        parser.error("--rounds must be 1-20, and 1 <= --customers <= --events <= 10,000,000")
    if args.latency_rate is not None and not 1 <= args.latency_rate <= 1_000_000:
        parser.error("--latency-rate must be 1-1,000,000 events/s")
    if "quixstreams" in rows and not _installed("quixstreams"):
        parser.exit(2, "the quixstreams row needs the bench extra, in its own venv (docs/performance.md)\n")
    build = engine_build()
    if build.stale:
        parser.exit(2, f"refusing to measure a stale build: engine {build.describe()}\n")
    bootstrap = os.environ.get("TAGSTREAM_TEST_KAFKA_BOOTSTRAP") or infra.start_kafka()
    return asyncio.run(deleting_new_topics(bootstrap, "bench-", run(bootstrap, args, rows)))


async def run(bootstrap: str, args: argparse.Namespace, rows: list[str]) -> int:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as directory:
        workdir = Path(directory)
        backlog, lines = await _backlog(bootstrap, args.events, args.customers, workdir)
        if args.workers_from is not None:
            backlog = dataclasses.replace(backlog, checkout=args.workers_from.resolve())
        print(f"replaying {args.events:,} events with `tagstream replay`...", file=sys.stderr)
        expected = replay(workdir / "events.jsonl", workdir / "rules.yaml", workdir, timezone=TIMEZONE, currency="CNY")
        runs: list[RowRun] = []
        for number in range(args.rounds):
            order = rows[number % len(rows) :] + rows[: number % len(rows)]
            for row in order:
                found = await measure_row(row, backlog, expected, workdir)
                runs.append(found)
                print(
                    f"round {number + 1}, {row}: {found.events_per_s:,.0f} events/s, "
                    f"{found.cpu_us_per_event:.0f} µs CPU/event, {found.check.describe()}",
                    file=sys.stderr,
                )
        floors = await _floors(backlog, lines) if args.floors else []
        latency = (
            await _latency(backlog, lines, workdir, runs, args.latency_rate)
            if args.latency and "tagger" in rows
            else None
        )
    _report(args, rows, runs, floors, latency, expected.change_count, load)
    return 0 if all(found.check.ok for found in runs) else 1


async def _backlog(bootstrap: str, count: int, customers: int, workdir: Path) -> tuple[Backlog, list[bytes]]:
    """The workload as a file (for the replay) and as one stamped events topic (for every row).

    The topic keeps its records forever: Kafka's time retention goes by record timestamps, and these
    are months old, so with the default 7 days the broker deletes the backlog while it is read."""
    stamped = list(arrivals(generated_events(count, customers, seed=5)))
    lines = [orjson.dumps(event) for event, _ in stamped]
    (workdir / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    groups = TagGroupSet.model_validate(rules()).groups
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules(), allow_unicode=True, sort_keys=False))
    topic = f"bench-events-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, replication_factor=1)
    await ensure_topics(kafka, [topic], kept_forever=[topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, key=event["customer_id"].encode(), value=line, timestamp_ms=stamp)
            for (event, stamp), line in zip(stamped, lines, strict=True)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    first, last = (datetime.fromtimestamp(stamped[index][1] / 1000, UTC) for index in (0, -1))
    backlog = Backlog(bootstrap, topic, PARTITIONS, count, first, last, list(groups), SETTINGS)
    return backlog, lines


def _report(
    args: argparse.Namespace,
    rows: list[str],
    runs: list[RowRun],
    floors: list[tuple[str, float, float]],
    latency: Latency | None,
    replay_changes: int,
    load: tuple[float, float, float],
) -> None:
    print(
        f"\nworkload: {args.events:,} events, {args.customers:,} customers, 20 groups / 100 tags, {PARTITIONS} "
        f"partitions, shop in {TIMEZONE}; replay: {replay_changes:,} tag changes "
        f"({replay_changes / args.events:.2f} per event)"
    )
    print(f"engine: {engine_build().describe()}; rounds: {args.rounds}, row order rotated")
    if args.workers_from is not None:
        head = subprocess.run(
            ["git", "-C", str(args.workers_from), "rev-parse", "--short", "HEAD"], capture_output=True
        )
        print(f"workers from {args.workers_from} at {head.stdout.decode().strip() or 'an unknown commit'}")
    print(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("\n| worker | events/s (median, range) | CPU per event (median, range) | tag changes per event | = replay |")
    print("| --- | ---: | ---: | ---: | --- |")
    medians: dict[str, tuple[float, float]] = {}
    for row in rows:
        mine = [found for found in runs if found.row == row]
        rates = [found.events_per_s for found in mine]
        cpus = [found.cpu_us_per_event for found in mine]
        medians[row] = (statistics.median(rates), statistics.median(cpus))
        equal = sum(found.check.ok for found in mine)
        print(
            f"| {LABELS[row]} | {medians[row][0]:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | "
            f"{medians[row][1]:.0f} µs ({min(cpus):.0f}–{max(cpus):.0f}) | {mine[0].changes_per_event:.2f} | "
            f"{equal}/{len(mine)} runs |"
        )
    for row in ("aiokafka", "quixstreams"):
        if "tagger" in medians and row in medians:
            print(
                f"tagger / {row}: CPU per event {medians['tagger'][1] / medians[row][1]:.2f}x, "
                f"events/s {medians['tagger'][0] / medians[row][0]:.2f}x"
            )
    for label, rate, cpu in floors:
        print(f"floor, {label}: {rate:,.0f} events/s, {cpu:.0f} µs CPU per event")
    if latency is not None:
        print(
            f"tagger event -> tag change latency at {latency.rate:,.0f} events/s "
            f"({'set' if args.latency_rate else 'half its median rate'}; sent at "
            f"{latency.sent_rate:,.0f}/s), {latency.changes:,} changes: p50 {latency.p50 * 1000:.0f} ms, "
            f"p99 {latency.p99 * 1000:.0f} ms, max {latency.longest * 1000:.0f} ms; "
            f"second half of the run: p50 {latency.later_p50 * 1000:.0f} ms, p99 {latency.later_p99 * 1000:.0f} ms"
        )
    for found in runs:
        if not found.check.ok:
            print(f"NOT EQUAL TO REPLAY: {found.row}: {found.check.describe()}; {found.check.problems}")


async def _floors(backlog: Backlog, lines: list[bytes]) -> list[tuple[str, float, float]]:
    passthrough = await _aiokafka_passthrough(backlog)
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as directory:
        faust = await _faust_passthrough(backlog, Path(directory))
    return [
        ("`TaggerCore` alone (no Kafka: records in memory, states in a dict, changes as JSON)", *_core_alone(lines)),
        ("aiokafka consume -> produce (acks=all)", *passthrough),
        ("faust passthrough (the tagger's faust app, no engine or state)", *faust),
    ]


def _core_alone(lines: list[bytes]) -> tuple[float, float]:
    """What every row pays before Kafka: the core on each record, in this process."""
    os.environ.update(SETTINGS)  # the workers' shop: zone, currency, history age
    try:
        stamped = list(arrivals(orjson.loads(line) for line in lines))
        clock = ManualClock(datetime.fromtimestamp(stamped[0][1] / 1000, UTC))
        worker = PeerWorker(load_settings(), clock, Path(os.devnull))
    finally:
        for name in SETTINGS:
            os.environ.pop(name, None)
    core, topic = worker.core(), worker.settings.topics.events
    states: dict[str, bytes] = {}
    keys = [event["customer_id"].encode() for event, _ in stamped]
    started, cpu = time.perf_counter(), time.process_time()
    for offset, (line, key, (_, stamp)) in enumerate(zip(lines, keys, stamped, strict=True)):
        incoming = Incoming(topic, 0, offset, key, line, stamp * 1000)
        result = core.handle(incoming, states.get)
        for change in result.changes:
            change.to_json()
        if result.customer_id is not None and result.state is not None:
            states[result.customer_id] = result.state
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(lines) / seconds, cpu * 1e6 / len(lines)


async def _aiokafka_passthrough(backlog: Backlog) -> tuple[float, float]:
    """Events/s and CPU µs per event of a consume -> produce loop in this process."""
    group = f"bench-pass-{uuid.uuid4().hex[:6]}"
    sink = f"{group}.out"
    await ensure_topics(_kafka(backlog), [sink])
    consumer = AIOKafkaConsumer(
        backlog.topic,
        bootstrap_servers=backlog.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=backlog.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        done, started, cpu = 0, 0.0, 0.0
        while done < backlog.events:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not done and batch:
                started, cpu = time.perf_counter(), time.process_time()
            futures = [
                await producer.send(sink, key=record.key, value=record.value)
                for records in batch.values()
                for record in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return backlog.events / seconds, cpu * 1e6 / backlog.events
    finally:
        await consumer.stop()
        await producer.stop()


async def _faust_passthrough(backlog: Backlog, workdir: Path) -> tuple[float, float]:
    """benchmarks/faust_passthrough.py in its own process, from its first forwarded event to its
    offsets committed at the end (start-up excluded, as the rows' is)."""
    group = f"bench-faust-{uuid.uuid4().hex[:6]}"
    sink = f"{group}.out"
    await ensure_topics(_kafka(backlog), [sink])
    log = workdir / f"{group}.log"
    arguments = [backlog.bootstrap, group, backlog.topic, sink, str(PARTITIONS), str(workdir / group)]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.faust_passthrough", *arguments, str(free_port())],
            cwd=Path(__file__).resolve().parents[1],
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
        )
    try:
        probe = AIOKafkaConsumer(bootstrap_servers=backlog.bootstrap, group_id=None)
        await probe.start()
        try:
            sink_partitions = [TopicPartition(sink, partition) for partition in range(PARTITIONS)]
            deadline = time.monotonic() + 120
            while not (forwarded := sum((await probe.end_offsets(sink_partitions)).values())):
                assert process.poll() is None, f"faust passthrough exited; see {log}"
                assert time.monotonic() < deadline, "faust passthrough forwarded nothing in 120 s"
                await asyncio.sleep(0.02)
        finally:
            await probe.stop()
        started, cpu = time.perf_counter(), cpu_seconds(process.pid)
        await wait_caught_up(backlog.bootstrap, group, backlog.topic, PARTITIONS, timeout=1800)
        measured = backlog.events - forwarded
        if measured <= 0:  # a backlog this small is forwarded whole before the first probe answers
            print(f"faust passthrough: all {backlog.events} events forwarded before the first probe; not measured")
            return math.nan, math.nan
        return measured / (time.perf_counter() - started), (cpu_seconds(process.pid) - cpu) * 1e6 / measured
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Event -> tag change latency of a paced run, in seconds; `later_*` over the changes of events
    sent in the run's second half (a start-up transient would show in the whole run's tail only)."""

    rate: float
    sent_rate: float
    p50: float
    p99: float
    longest: float
    later_p50: float
    later_p99: float
    changes: int


async def _latency(
    backlog: Backlog, lines: list[bytes], workdir: Path, runs: list[RowRun], rate: float | None
) -> Latency:
    """The workload sent at `rate` (by default half the tagger's median rate) to a ready tagger; for
    each tag change the time from its event's send to the change's record timestamp (set when the
    tagger sends it)."""
    if rate is None:
        rate = statistics.median(found.events_per_s for found in runs if found.row == "tagger") / 2
    events_topic = f"bench-latency-{uuid.uuid4().hex[:6]}"
    await ensure_topics(_kafka(backlog), [events_topic], kept_forever=[events_topic])  # see _backlog
    launched = await launch("tagger", backlog, workdir, events_topic)
    events = [orjson.loads(line) for line in lines]
    stamps = [stamp for _, stamp in arrivals(events)]
    causes = [(event["customer_id"], event["event_id"]) for event in events]
    sent_at = [0.0] * len(lines)

    def remember(number: int, at: float) -> None:
        sent_at[number] = at

    try:
        # the harness's own full collections would stall its sends and read as the tagger's latency
        with no_cyclic_gc():
            started = time.time()
            await produce_at_rate(backlog.bootstrap, events_topic, lines, rate, on_sent=remember, stamps=stamps)
            finished = time.time()
        await wait_caught_up(backlog.bootstrap, launched.group, events_topic, PARTITIONS, timeout=1800)
    finally:
        launched.worker.stop()
    # By customer and id, every send: the workload's history loaded late reuses the ids of other events
    # (another customer's, or an earlier one of the same customer), and a change belongs to the latest
    # send of its cause before it (one paired with an earlier send read ~1 s).
    sent: dict[tuple[str, str], list[float]] = {}
    for event_key, at in zip(causes, sent_at, strict=True):
        sent.setdefault(event_key, []).append(at)
    halfway = (started + finished) / 2
    async with TopicReader(backlog.bootstrap, launched.topics["tag_changes"]) as reader:
        await reader.drain()
        latencies, later = [], []
        for record in reader.records:
            change = orjson.loads(record.value)
            sends = sent.get((change["customer_id"], change.get("caused_by")))
            if sends:
                at = record.timestamp / 1000
                cause = max((send for send in sends if send <= at), default=sends[0])
                latency = max(0.0, at - cause)
                latencies.append(latency)
                if cause >= halfway:
                    later.append(latency)
    whole = statistics.quantiles(latencies, n=100)
    second = statistics.quantiles(later, n=100) if len(later) > 1 else whole  # a tiny run
    return Latency(
        rate=rate,
        sent_rate=len(lines) / (finished - started),
        p50=whole[49],
        p99=whole[98],
        longest=max(latencies),
        later_p50=second[49],
        later_p99=second[98],
        changes=len(latencies),
    )


def _kafka(backlog: Backlog) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=backlog.bootstrap, partitions=PARTITIONS, replication_factor=1)


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
