"""Scale benchmark: one tagger worker with many customers, measured where customer count (not event
count) is what costs.

    python -m benchmarks.scale --customers 100000               # ~5.6 events per customer, 12 partitions
    python -m benchmarks.scale --customers 1000000              # ~910k customers seen in 5.6M events

Every customer asked for owns at least one session of the workload (~6 events), so fewer events than
that per customer reach only part of them (`--events-per-customer 1`: ~18%).

Starts the local broker and Redis (scripts/kafka.sh, scripts/redis.sh) unless TAGSTREAM_TEST_KAFKA_BOOTSTRAP
and TAGSTREAM_TEST_REDIS_URL name running ones. One `tagstream tagger` worker (RocksDB; the read model
kept by `tagstream projector` in a process of its own, or with `--projector worker` in the worker's, as
the chart deploys by default) on the workload's clock (benchmarks/clock.py)
drains a stamped backlog with 19 of the workload's 20 groups; then the 20th group is published.
Measured, in order:

- read model current after the backlog drained: from the worker's offsets committed at the end of
  the backlog to the projector's at the end of the tag changes (`--projector after`: the projector
  starts then, and the time it takes alone is set beside the worker's drain alone: below 1x, a
  projector with a core of its own keeps up with the worker at its full rate);
- Redis memory per customer (`used_memory` growth over the run, per customer);
- changelog records per customer (what a restore reads), with the changelog's segment settings;
- audience `all_of` the two largest tags of two groups: the query's time, and the longest Redis
  command it ran (SLOWLOG: Redis is single-threaded, so that is how long every other client waited);
- backfill of the new group: publish → every customer re-evaluated; and the worker's RSS growth
  meanwhile (sampled every 0.1 s);
- recovery after losing the local disk: the worker stopped, its RocksDB directory deleted, started
  again: start → ready, the worker's CPU meanwhile, and its bulk restore's own count and time
  (`--compare-faust-restore` first measures the same with faust's recovery alone);
- scale-out: two workers in one group (half the partitions each, their own read model, one standby
  copy of each partition as deployed by default) drain the same backlog from the start: their CPU
  per event (both processes, each from its ready signal) against the one worker's above;
- standby takeover: one of the two stopped (SIGTERM, as a rolling update or a drained node does), a
  first order for a new customer in every partition produced at once: until each has its tag change
  from the survivor, which holds the stopped worker's partitions as standby copies.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from benchmarks.audiences import forget, longest_command, timed
from benchmarks.kafka_rows import Backlog, Launched, Worker, cpu_seconds, launch, prepare
from benchmarks.workload import arrivals, rules
from benchmarks.workload import events as generated_events
from schemas.tags import TagGroupSet
from services.ingest.audiences import RedisAudiences
from services.ingest.ports import AudienceQuery
from services.runtime.clock import SystemClock
from services.runtime.definitions_feed import definition_record
from services.runtime.kafka import ensure_topics, partitions_of
from services.runtime.partitioning import partition_for
from services.runtime.readmodel import Keys, ReadModel, offset_field
from services.runtime.settings import KafkaSettings
from tests.support import infra
from tests.support.kafka_io import TopicReader, deleting_new_topics, produce, topic_config
from tests.support.netprobe import free_port
from tests.support.processes import wait_caught_up

PARTITIONS = 12
NEW_GROUP = "category_mix"
"""The group held back and published once the backlog is drained (the 19 -> 20 groups backfill)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--events-per-customer",
        type=float,
        default=5.6,
        help="events produced per customer asked for; below ~6, only part of them appear (a session each)",
    )
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument(
        "--projector",
        choices=["own", "worker", "after"],
        default="own",
        help="the read model kept by `tagstream projector` apart (own), inside the tagger worker, or by "
        "`tagstream projector` started once the worker drained (after: each with the machine to itself)",
    )
    parser.add_argument(
        "--no-two-workers", dest="two_workers", action="store_false", help="skip the two-worker drain of the backlog"
    )
    parser.add_argument(
        "--compare-faust-restore",
        action="store_true",
        help="also measure the recovery with faust's own restore alone (TAGSTREAM_TAGGER__BULK_RESTORE=false), first",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.customers <= 10_000_000 or not 1 <= args.events_per_customer <= 100:
        parser.error("--customers must be 1-10,000,000 and --events-per-customer 1-100")
    if not 1 <= args.partitions <= 256:
        parser.error("--partitions must be 1-256")
    bootstrap = os.environ.get("TAGSTREAM_TEST_KAFKA_BOOTSTRAP") or infra.start_kafka()
    redis_url = os.environ.get("TAGSTREAM_TEST_REDIS_URL") or infra.start_redis()
    return asyncio.run(deleting_new_topics(bootstrap, "bench-", run(bootstrap, redis_url, args)))


async def run(bootstrap: str, redis_url: str, args: argparse.Namespace) -> int:
    load = os.getloadavg()
    count = round(args.customers * args.events_per_customer)
    prefix = f"scale-{uuid.uuid4().hex[:6]}:"
    redis = Redis.from_url(redis_url)
    rows: list[tuple[str, str]] = []

    def record(*found: tuple[str, str]) -> None:  # printed as measured too: a later failure keeps them
        rows.extend(found)
        for name, value in found:
            print(f"{name}: {value}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        workdir = Path(directory)
        backlog, customers = await _backlog(
            bootstrap, count, args.customers, args.partitions, redis_url, prefix, args.projector
        )
        print(f"{count:,} events for {customers:,} customers produced", file=sys.stderr)
        memory_before = await _used_memory(redis)
        launched = await launch("tagger", backlog, workdir)
        worker = launched.worker
        projector = Projector(worker.env, workdir / f"{launched.group}-projector.log")
        try:
            if args.projector == "own":
                await projector.start()
            started, cpu = time.perf_counter(), worker.cpu_seconds()
            projector_cpu = projector.cpu_seconds()
            await wait_caught_up(bootstrap, launched.group, backlog.topic, args.partitions, timeout=7200)
            drained, one_cpu_us = time.perf_counter(), (worker.cpu_seconds() - cpu) * 1e6 / count
            record(("backlog drained (start of the worker excluded)", f"{drained - started:.0f} s"))
            record((f"worker CPU per event while draining (projector: {args.projector})", f"{one_cpu_us:.0f} µs"))
            if args.projector == "after":
                await projector.start()
            await _projected(redis, prefix, bootstrap, [launched.topics["tag_changes"], backlog.topic])
            current = time.perf_counter()
            if args.projector == "after":
                record(
                    (
                        "projector alone: the drained backlog's tag changes and events projected",
                        f"{current - drained:.0f} s ({(current - drained) / (drained - started):.2f}x the drain)",
                    )
                )
            else:
                record(("read model current after the backlog drained", f"+{current - drained:.1f} s"))
            if args.projector != "worker":
                per_event = (projector.cpu_seconds() - projector_cpu) * 1e6 / count
                where = "its own process" if args.projector == "own" else "started after the drain"
                record((f"projector CPU per event ({where}, until current)", f"{per_event:.0f} µs"))
            memory = (await _used_memory(redis) - memory_before) / customers
            record(("Redis memory per customer", f"{memory / 1024:.2f} KiB"))
            record(await _changelog_records(bootstrap, launched.group, customers))
            record(*await _audience(redis, prefix))
            record(*await _backfill(backlog, launched, customers))
            worker.stop()
            if args.compare_faust_restore:
                record(*await _recovery(launched, workdir, bulk=False))
            record(*await _recovery(launched, workdir))
            if args.two_workers:
                record(*await _two_workers(backlog, workdir, one_cpu_us, args.customers))
        finally:
            worker.stop()
            projector.stop()
            await forget(redis, prefix)
            await forget(redis, _second_prefix(prefix))
            await redis.aclose()
    print(
        f"\none tagger worker, RocksDB, {args.partitions} partitions, {customers:,} customers, {count:,} events "
        f"({args.events_per_customer:g} per customer), 19 -> 20 groups"
    )
    print(f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("\n| measure | value |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


async def _backlog(
    bootstrap: str, count: int, customers: int, partitions: int, redis_url: str, prefix: str, projector: str
) -> tuple[Backlog, int]:
    groups = [group for group in TagGroupSet.model_validate(rules()).groups if group.id != NEW_GROUP]
    topic = f"bench-scale-events-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=partitions, replication_factor=1)
    await ensure_topics(kafka, [topic], kept_forever=[topic])  # months-old timestamps: see benchmarks.kafka
    seen, first, last = await _produce(bootstrap, topic, count, customers)
    settings = {
        "TAGSTREAM_SHOP__TIMEZONE": "Asia/Shanghai",
        "TAGSTREAM_TAGGER__HISTORY_AGE": "30d",
        "TAGSTREAM_TAGGER__PROJECTOR": "true" if projector == "worker" else "false",
        "TAGSTREAM_REDIS__URL": redis_url,
        "TAGSTREAM_REDIS__KEY_PREFIX": prefix,
    }
    start, end = (datetime.fromtimestamp(stamp / 1000, UTC) for stamp in (first, last))
    return Backlog(bootstrap, topic, partitions, count, start, end, list(groups), settings), len(seen)


async def _produce(bootstrap: str, topic: str, count: int, customers: int) -> tuple[set[str], int, int]:
    """The stamped workload into `topic`: the customers seen, the first and last stamps (epoch ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    seen: set[str] = set()
    first = last = 0
    await producer.start()
    try:
        pending = []
        for event, stamp in arrivals(generated_events(count, customers, seed=11)):
            seen.add(event["customer_id"])
            first, last = first or stamp, stamp
            key = event["customer_id"].encode()
            pending.append(await producer.send(topic, key=key, value=orjson.dumps(event), timestamp_ms=stamp))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return seen, first, last


async def _projected(redis: Redis, prefix: str, bootstrap: str, topics: list[str], timeout: float = 7200) -> None:
    """Until the read model's positions (kept in Redis beside its data, not as Kafka commits) reach the
    end of every partition of `topics` (the tag changes, and the events it records activity from)."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for topic in topics for p in await partitions_of(kafka, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    model = ReadModel(redis, key_prefix=prefix)
    deadline = time.monotonic() + timeout
    while True:
        offsets = (await model.status()).offsets or {}
        behind = sum(max(0, end - offsets.get(offset_field(tp.topic, tp.partition), 0)) for tp, end in ends.items())
        if not behind:
            return
        assert time.monotonic() < deadline, f"the read model is still {behind:,} records behind after {timeout:.0f} s"
        await asyncio.sleep(0.1)


async def _used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def _changelog_records(bootstrap: str, group: str, customers: int) -> tuple[str, str]:
    topic = f"{group}-customers-changelog"
    partitions = await partitions_of(KafkaSettings(bootstrap_servers=bootstrap), topic)
    tps = [TopicPartition(topic, partition) for partition in partitions]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    records = sum(ends[tp] - starts[tp] for tp in tps)
    names = ("segment.ms", "segment.bytes", "min.cleanable.dirty.ratio")
    described = ", ".join([f"{name} {(await topic_config(bootstrap, topic, name))[0]}" for name in names])
    return f"changelog records per customer ({described})", f"{records / customers:.2f}"


async def _audience(redis: Redis, prefix: str) -> list[tuple[str, str]]:
    """`all_of` the largest tags of the two largest groups, as the ingest API runs it."""
    keys = Keys(prefix)
    sizes = {_text(name): int(size) for name, size in (await redis.hgetall(keys.tag_members)).items()}
    largest: dict[str, tuple[int, str]] = {}
    for name, size in sizes.items():
        group = name.split("/", 1)[0]
        largest[group] = max(largest.get(group, (0, "")), (size, name))
    (first_size, first), (second_size, second) = sorted(largest.values(), reverse=True)[:2]
    audiences = RedisAudiences(redis, keys, 60, SystemClock())
    query = AudienceQuery(all_of=(first, second), any_of=(), none_of=())
    timings = []
    longest = 0.0
    for _ in range(5):
        (page, took), slowest = await longest_command(redis, lambda: timed(audiences.query(query, 100)))
        timings.append(took)
        longest = max(longest, slowest)
    name = f"audience all_of {first} ({first_size:,}) and {second} ({second_size:,}): {page.count:,} members"
    return [
        (f"{name}, median of 5", f"{statistics.median(timings) * 1000:.0f} ms"),
        ("longest Redis command of that query (Redis blocked)", f"{longest:.1f} ms"),
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _backfill(backlog: Backlog, launched: Launched, customers: int) -> list[tuple[str, str]]:
    """Publish the held-back group; until every customer is re-evaluated, sampling the worker's RSS."""
    worker = launched.worker
    before = _metrics(launched)
    rss_before = peak = _rss_bytes(worker)
    [group] = [group for group in TagGroupSet.model_validate(rules()).groups if group.id == NEW_GROUP]
    started = time.perf_counter()
    await produce(backlog.bootstrap, launched.topics["tag_definitions"], [(*definition_record(group), None)])
    deadline = started + 7200
    polls = 0
    while True:
        peak = max(peak, _rss_bytes(worker))
        polls += 1
        if polls % 5 == 0:  # a scrape costs the worker ~10 ms: every 0.5 s, the RSS every 0.1 s
            try:
                now = _metrics(launched)
            except (TimeoutError, urllib.error.URLError):  # a worker busy on a loaded machine: the next poll
                continue
            done = now["tagstream_backfill_customers_total"] - before["tagstream_backfill_customers_total"]
            if done >= customers and now["tagstream_backfill_remaining"] == 0:
                break
            assert time.perf_counter() < deadline, f"backfill not done after 2 h ({done:,.0f} customers)"
        assert worker.alive, "the worker exited during the backfill"
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - started
    return [
        (f"backfill of a new group ({customers:,} customers re-evaluated)", f"{seconds:.1f} s"),
        ("tagger RSS growth during the backfill", f"+{(peak - rss_before) / 2**20:.0f} MiB"),
    ]


async def _recovery(launched: Launched, workdir: Path, *, bulk: bool = True) -> list[tuple[str, str]]:
    """The stopped worker's local state deleted, then start -> ready (the table restored from its
    changelog): the time, the worker's CPU meanwhile, and what its bulk restore logged (records, time)."""
    env = dict(launched.worker.env)
    env["TAGSTREAM_TAGGER__BULK_RESTORE"] = "true" if bulk else "false"
    env["TAGSTREAM_BENCH_LOG_LEVEL"] = "INFO"  # the bulk restore's line: records, time
    shutil.rmtree(env["TAGSTREAM_TAGGER__DATADIR"])
    how = "" if bulk else "; faust's recovery alone"
    log = workdir / f"{launched.group}-recovery-{'bulk' if bulk else 'faust'}.log"
    worker = Worker("tagger", env, launched.clock, log)
    started = time.perf_counter()
    try:
        await worker.start(timeout=3600)
        seconds, cpu = time.perf_counter() - started, worker.cpu_seconds()
    finally:
        worker.stop()
    rows = [
        (f"recovery after losing the local disk (start -> ready{how})", f"{seconds:.0f} s"),
        (f"worker CPU from start to ready{how}", f"{cpu:.1f} s"),
    ]
    restored = [line for line in log.read_text(errors="replace").splitlines() if "changelog records of" in line]
    if restored:  # "restored N active changelog records of P partitions in S s (U µs a record)"
        rows.append(("bulk restore, as the worker logged it", restored[-1].split("restored ", 1)[1]))
    return rows


async def _two_workers(backlog: Backlog, workdir: Path, one_cpu_us: float, customers: int) -> list[tuple[str, str]]:
    """Two workers of one group, both ready on an empty events topic, then the same workload produced
    into it; CPU counts in each from then until the group has committed the end. They join while idle:
    two workers rebalancing over a full fetch buffer crash (aiokafka's Fetcher.fetched_records KeyError,
    reported)."""
    prefix = _second_prefix(backlog.settings["TAGSTREAM_REDIS__KEY_PREFIX"])
    topic = f"{backlog.topic}-two"
    await ensure_topics(_kafka(backlog), [topic], kept_forever=[topic])
    settings = backlog.settings | {"TAGSTREAM_REDIS__KEY_PREFIX": prefix}
    own = dataclasses.replace(backlog, topic=topic, settings=settings)
    group, topics, env, clock = await prepare("tagger", own, workdir)
    workers = []
    for number in range(2):
        datadir = Path(env["TAGSTREAM_TAGGER__DATADIR"]) / f"worker-{number}"
        mine = env | {
            "TAGSTREAM_TAGGER__DATADIR": str(datadir),
            "TAGSTREAM_TAGGER__WEB_PORT": str(free_port()),
            "TAGSTREAM_TAGGER__STANDBY_REPLICAS": "1",
        }
        workers.append(Worker("tagger", mine, clock, workdir / f"{group}-{number}.log"))
    try:
        await asyncio.gather(*(worker.start() for worker in workers))
        await asyncio.sleep(10)  # the group settles (one rebalance per joining worker) before any record
        cpu = [worker.cpu_seconds() for worker in workers]
        started = time.perf_counter()
        await _produce(own.bootstrap, topic, own.events, customers)
        caught_up = asyncio.create_task(wait_caught_up(own.bootstrap, group, topic, own.partitions, timeout=7200))
        while not caught_up.done():
            assert all(worker.alive for worker in workers), f"a worker exited; see {workdir}/{group}-*.log"
            await asyncio.sleep(1)
        await caught_up
        seconds = time.perf_counter() - started
        used = [worker.cpu_seconds() - before for worker, before in zip(workers, cpu, strict=True)]
        await asyncio.sleep(5)  # the standby copies read the last changelog records
        takeover = await _takeover(own, topic, topics["tag_changes"], workers[1])
    finally:
        for worker in workers:
            worker.stop()
    per_event = sum(used) * 1e6 / own.events
    shares = " / ".join(f"{share / sum(used):.0%}" for share in used)
    return [
        (f"two workers drain it, produced while they run (CPU shares {shares})", f"{seconds:.0f} s"),
        (
            "two workers' CPU per event (both, standby copies kept), vs one worker's",
            # a few customers' drain can round to no CPU tick at all
            f"{per_event:.0f} µs ({per_event / one_cpu_us:.2f}x)" if one_cpu_us else f"{per_event:.0f} µs",
        ),
        ("standby takeover: one of two workers stopped -> a new order in every partition tagged", f"{takeover:.1f} s"),
    ]


async def _takeover(backlog: Backlog, topic: str, changes_topic: str, stopping: Worker) -> float:
    """Stop `stopping`, produce a first order for a new customer in every partition (stamped just after
    the backlog), and time until each customer's first tag change is on the changes topic."""
    customers: dict[int, str] = {}
    while len(customers) < backlog.partitions:
        customer = f"takeover-{uuid.uuid4().hex[:8]}"
        customers.setdefault(partition_for(customer.encode(), backlog.partitions), customer)
    stamp = int(backlog.last.timestamp() * 1000) + 1000
    occurred = datetime.fromtimestamp(stamp / 1000, UTC).isoformat().replace("+00:00", "Z")
    records = [
        (customer.encode(), orjson.dumps(_first_order(customer, occurred)), stamp) for customer in customers.values()
    ]
    async with TopicReader(backlog.bootstrap, changes_topic) as reader:
        await reader.drain(timeout=600)
        started = time.perf_counter()
        stopping.stop()
        await produce(backlog.bootstrap, topic, records)
        waiting = {customer.encode() for customer in customers.values()}
        await reader.until(lambda seen: waiting <= {record.key for record in seen}, timeout=600)
    return time.perf_counter() - started


def _first_order(customer: str, occurred_at: str) -> dict[str, object]:
    return {
        "type": "order_paid",
        "event_id": f"{customer}-order",
        "customer_id": customer,
        "occurred_at": occurred_at,
        "order_id": f"{customer}-o1",
        "amount": "88.00",
        "currency": "CNY",
        "items": [{"product_id": "p1", "quantity": 1, "price": "88.00"}],
        "points_earned": 8,
    }


class Projector:
    """`tagstream projector` on a worker's settings (its topics, Redis prefix and app id)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env | {"TAGSTREAM_TAGGER__PROJECTOR_WEB_PORT": str(free_port())}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 120.0) -> None:
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "projector", "--log-level", "warning"],
                env=self._env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        url = f"http://127.0.0.1:{self._env['TAGSTREAM_TAGGER__PROJECTOR_WEB_PORT']}/readyz"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert self.process.poll() is None, f"the projector exited; see {self._log}"
            assert time.monotonic() < deadline, f"the projector was not ready after {timeout:.0f} s; see {self._log}"
            await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        return 0.0 if self.process is None else cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def _kafka(backlog: Backlog) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=backlog.bootstrap, partitions=backlog.partitions, replication_factor=1)


def _second_prefix(prefix: str) -> str:
    return f"{prefix.rstrip(':')}-two:"


def _metrics(launched: Launched) -> dict[str, float]:
    port = launched.worker.env["TAGSTREAM_TAGGER__WEB_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {"tagstream_backfill_customers_total": 0.0, "tagstream_backfill_remaining": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found


def _rss_bytes(worker: Worker) -> int:
    assert worker.process is not None
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


if __name__ == "__main__":
    sys.exit(main())
