"""Soak: steady shop traffic over HTTP while faults are injected on a schedule, ending with the audit
of the fault tests (tests/support/audit.py: everything compared with `tagstream replay`).

    python -m benchmarks.soak --minutes 6              # the 3-node cluster (scripts/kafka.sh --nodes 3)
    python -m benchmarks.soak --minutes 6 --nodes 1    # the single local broker

The whole shop runs as processes (tagger with projector, ingest, notifier) on a Redis of its own
(append-only, fsync every second, as deployed) and a local push provider. After a warm-up, one fault
at a time, evenly spaced over the traffic (a fault waits for the previous one to recover):

| fault    | injected                                          | repaired after |
| broker   | SIGKILL of the node coordinating the tagger group | 20 s: started again with its data |
| redis    | SIGKILL of redis-server                           | 10 s: started on its append-only file |
| tagger   | SIGKILL                                           | 5 s: started again (the same static member) |
| notifier | SIGKILL                                           | 5 s: started again |
| provider | the push provider answers 500                     | 30 s: answers 200 again |

Recovery time of a fault: from its repair until tags are current again: the tagger has committed
every event that was on the topic at the repair, and a probe order (posted at the repair, retried
until acknowledged) reads back as `value/high` over HTTP. Also reported: the same from the injection
(how long tags lag while the fault lasts), when the repair's probe push reached the provider, and
how many batches ingest refused (503 or no answer) meanwhile. Exit status 0 only when the final
audit finds no mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.support import cluster, infra
from tests.support.redis_server import RedisServer
from tests.support.shop import Shop, close_shop, open_shop
from tests.support.stack import ADMIN
from tests.support.traffic import live_events

WARMUP_S = 30.0
TAIL_S = 45.0
"""Traffic left after the last fault is scheduled."""
RECOVERY_BOUND_S = 300.0
"""A fault not recovered by then is reported as such and the schedule moves on."""
BATCH = 10

T = TypeVar("T")


@dataclass
class Fault:
    name: str
    what: str
    hold_s: float
    inject: Callable[[], Awaitable[None]]
    repair: Callable[[], Awaitable[None]]


@dataclass
class Recovery:
    fault: Fault
    injected_at: float
    during_s: float | None = None
    """from the injection until a probe posted then was current (None: not within the bound)"""
    tags_current_s: float | None = None
    """from the repair until a probe posted then was current"""
    push_s: float | None = None
    """from the repair until that probe's push reached the provider"""
    refused_batches: int = 0
    """batches ingest did not acknowledge (503, no answer) from the injection to the recovery"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=6.0, help="length of the traffic (1 to 120)")
    parser.add_argument("--rate", type=float, default=40.0, help="events per second, in batches of 10 (1 to 2000)")
    parser.add_argument("--customers", type=int, default=2_000, help="distinct customers (1 to 1,000,000)")
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=3, help="Kafka: the cluster or one broker")
    args = parser.parse_args(argv)
    if not (1 <= args.minutes <= 120 and 1 <= args.rate <= 2000 and 1 <= args.customers <= 1_000_000):
        parser.error("--minutes 1..120, --rate 1..2000, --customers 1..1,000,000")
    # the probes' Kafka clients meet the killed broker by design: its connection errors are expected
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started_cluster = args.nodes == 3 and not cluster.cluster_running()
    bootstrap = cluster.start_cluster() if args.nodes == 3 else infra.start_kafka()
    try:
        return asyncio.run(run(bootstrap, args))
    finally:
        if started_cluster:
            cluster.reset_cluster()


async def run(bootstrap: str, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tagstream-soak-") as workdir:
        redis = RedisServer(Path(workdir) / "redis")
        redis.start()
        shop = await open_shop(
            name="soak",
            bootstrap=bootstrap,
            redis_url=redis.url,
            workdir=Path(workdir),
            partitions=6,
            replication_factor=args.nodes,
            group_instance_id="soak-0",
        )
        try:
            return await soak(shop, redis, bootstrap, args)
        finally:
            await close_shop(shop)
            redis.stop()


async def soak(shop: Shop, redis: RedisServer, bootstrap: str, args: argparse.Namespace) -> int:
    seconds = args.minutes * 60
    lines = list(live_events(int(args.rate * seconds), args.customers, seed=41, now=datetime.now(UTC)))
    faults = schedule(shop, redis, bootstrap, args.nodes)
    began = time.monotonic()
    loading = asyncio.create_task(shop.load.run(lines, batches_per_second=args.rate / BATCH))
    recoveries: list[Recovery] = []
    spacing = max(0.0, seconds - WARMUP_S - TAIL_S) / len(faults)
    for number, fault in enumerate(faults):
        await asyncio.sleep(max(0.0, began + WARMUP_S + number * spacing - time.monotonic()))
        print(f"[{time.monotonic() - began:6.1f}s] {fault.name}: {fault.what}", file=sys.stderr)
        recoveries.append(await inject_and_recover(shop, fault, began, number))
    await loading
    print(f"[{time.monotonic() - began:6.1f}s] traffic done; settling", file=sys.stderr)
    await shop.caught_up(timeout=RECOVERY_BOUND_S)
    findings = await shop.audit(settle_s=180.0)
    report(args, shop, recoveries, findings.summary(), findings.problems())
    return 0 if findings.mismatches == 0 else 1


def schedule(shop: Shop, redis: RedisServer, bootstrap: str, nodes: int) -> list[Fault]:
    killed: list[int] = []

    async def kill_broker() -> None:
        if nodes == 1:
            await asyncio.to_thread(infra.kill_kafka)
            return
        killed.append(await cluster.group_coordinator(bootstrap, shop.stack.prefix))
        await asyncio.to_thread(cluster.kill_node, killed[-1])

    async def start_broker() -> None:
        if nodes == 1:
            await asyncio.to_thread(infra.start_kafka)
        else:
            await asyncio.to_thread(cluster.start_node, killed.pop())

    async def provider_fails() -> None:
        shop.provider.failing["push"] = 500

    async def provider_answers() -> None:
        shop.provider.failing.clear()

    tagger, notifier = shop.stack.tagger, shop.stack.notifier
    broker = "SIGKILL of the broker" if nodes == 1 else "SIGKILL of the node coordinating the tagger group"
    return [
        Fault("broker", broker, 20.0, kill_broker, start_broker),
        Fault("redis", "SIGKILL of redis-server", 10.0, _sync(redis.kill), _sync(redis.start)),
        Fault("tagger", "SIGKILL of the tagger", 5.0, _sync(tagger.kill), _sync(tagger.start)),
        Fault("notifier", "SIGKILL of the notifier", 5.0, _sync(notifier.kill), _sync(notifier.start)),
        Fault("provider", "the push provider answers 500", 30.0, provider_fails, provider_answers),
    ]


def _sync(action: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await asyncio.to_thread(action)

    return run


async def inject_and_recover(shop: Shop, fault: Fault, began: float, number: int) -> Recovery:
    acknowledged = shop.load.statuses[202]
    batches = shop.load.statuses.total()
    await fault.inject()
    injected = time.monotonic()
    recovery = Recovery(fault, injected - began)
    during = asyncio.create_task(_bounded(_probe(shop, f"probe-{number}-during")))
    await asyncio.sleep(fault.hold_s)
    await fault.repair()
    after = await _bounded(_probe(shop, f"probe-{number}-after"))
    if after is not None:
        recovery.tags_current_s, recovery.push_s = after
    if (found := await during) is not None:
        recovery.during_s = found[0]
    recovery.refused_batches = shop.load.statuses.total() - batches - (shop.load.statuses[202] - acknowledged)
    return recovery


async def _bounded(probe: Awaitable[tuple[float, float]]) -> tuple[float, float] | None:
    try:
        return await asyncio.wait_for(probe, RECOVERY_BOUND_S)
    except TimeoutError:
        print(f"  a probe was not current within {RECOVERY_BOUND_S:.0f}s", file=sys.stderr)
        return None


async def _probe(shop: Shop, name: str) -> tuple[float, float]:
    """Seconds until tags are current (every event on the topic now committed by the tagger, and a
    probe order posted now reading back as value/high over HTTP), and until the probe's push arrived."""
    since = time.monotonic()
    customer = f"{name}-{uuid.uuid4().hex[:6]}"
    ends = await _retrying(lambda: _end_offsets(shop))
    order = {
        "type": "order_paid",
        "event_id": f"e-{customer}",
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "order_id": f"o-{customer}",
        "amount": "2500.00",
        "currency": "CNY",
        "items": [{"product_id": "p0001", "quantity": 1, "price": "2500.00"}],
    }
    while not 200 <= await shop.load.post([orjson.dumps(order)]) < 300:
        await asyncio.sleep(1.0)  # the same event id again: a retry after a 503 is safe
    pushed = asyncio.create_task(_pushed(shop, customer, since))
    async with httpx.AsyncClient(base_url=shop.stack.ingest.url, timeout=5.0) as client:
        while not (await _tagged(client, customer) and await _retrying(lambda: _committed(shop, ends))):
            await asyncio.sleep(0.5)
    return time.monotonic() - since, await pushed


async def _pushed(shop: Shop, customer: str, since: float) -> float:
    while not any(r.body.get("customer_id") == customer and r.status < 300 for r in shop.provider.requests):
        await asyncio.sleep(0.5)
    return time.monotonic() - since


async def _tagged(client: httpx.AsyncClient, customer: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        answer = await client.get(f"/v1/customers/{customer}/tags", headers={"Authorization": f"Bearer {ADMIN}"})
        if answer.status_code == 200:
            groups = {group["id"]: [tag["id"] for tag in group["tags"]] for group in answer.json()["groups"]}
            return "high" in groups.get("value", [])
    return False


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Kafka admin calls while a broker is still coming back: retried, each bounded."""
    while True:
        try:
            return await asyncio.wait_for(call(), 20.0)
        except Exception as error:  # any client error here means "not yet"
            print(f"  (retrying: {type(error).__name__})", file=sys.stderr)
            await asyncio.sleep(1.0)


async def _end_offsets(shop: Shop) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=shop.system.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(shop.system.topics["events"], p) for p in range(shop.partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _committed(shop: Shop, ends: dict[TopicPartition, int]) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=shop.system.bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(shop.stack.prefix)
    finally:
        await admin.close()
    return all(committed.get(tp) is not None and committed[tp].offset >= end for tp, end in ends.items())


def report(args: argparse.Namespace, shop: Shop, recoveries: list[Recovery], summary: str, problems: list[str]) -> None:
    command = f"python -m benchmarks.soak --minutes {args.minutes:g} --rate {args.rate:g} --nodes {args.nodes}"
    print(f"\n{command}  ({os.cpu_count()} cores)")
    print(f"traffic: {shop.load.describe()}")
    print(
        "\n| fault | injected at | repaired after | batches refused | tags current after injection "
        "| tags current after repair | probe push delivered after repair |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in recoveries:
        print(
            f"| {r.fault.name}: {r.fault.what} | {r.injected_at:.0f} s | {r.fault.hold_s:.0f} s "
            f"| {r.refused_batches} | {_seconds(r.during_s)} | {_seconds(r.tags_current_s)} | {_seconds(r.push_s)} |"
        )
    print(f"\naudit: {summary}")
    for problem in problems:
        print(f"  {problem}")


def _seconds(value: float | None) -> str:
    return "not recovered" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    raise SystemExit(main())
