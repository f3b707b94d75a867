"""Ingest load test: POST /v1/events in batches of 100 against a running `tagstream ingest`.

    python -m benchmarks.ingest_load                      # find the rate, then 2x it (~2 minutes)
    python -m benchmarks.ingest_load --seconds 5 --start 5

Starts the local broker and Redis with the project scripts (or uses TAGSTREAM_TEST_KAFKA_BOOTSTRAP /
TAGSTREAM_TEST_REDIS_URL), one `tagstream ingest` process (uvicorn, one worker) on fresh topics, and
an open-loop load generator in this process (requests leave on a fixed schedule whatever the answers,
and latency counts from the scheduled instant, so a slow server cannot hide its queueing):

1. baseline: GET /healthz at the same request rates (the HTTP stack with no work behind it);
2. the ladder: batches of 100 events at rising rates (doubling, then bisecting) while p99 < 50 ms;
3. overload: twice the highest rate that kept p99 under 50 ms: counts 202 / 429 / 5xx;
4. the count: every event of every 202 batch must be on the events topic (read back in full).

The producer buffer (`producer_buffer_bytes`, the 429 threshold) is set to --buffer-kib for the run.
Everything runs on this machine's loopback; request loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from tests.support import infra
from tests.support.kafka_io import TopicReader, deleting_new_topics
from tests.support.processes import IngestProcess, ingest_environment

BATCH = 100
TARGET_P99_S = 0.050
KEY = "bench-operator-key-0123456789"
PARTITIONS = 4


@dataclass
class Step:
    rate: float
    """Requests per second."""
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted_ids: list[str] = field(default_factory=list)
    transport_errors: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] if len(self.latencies) > 1 else self.latencies[0]

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500) + self.transport_errors

    def passes(self) -> bool:
        return self.p99 < TARGET_P99_S and self.statuses.get(202, 0) == len(self.latencies)

    def row(self, label: str, events: bool = True) -> str:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        rate = f"{self.rate * BATCH:,.0f}" if events else "-"
        return f"| {label} | {self.rate:,.0f} | {rate} | {self.p50 * 1000:.1f} | {self.p99 * 1000:.1f} | {statuses} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--start", type=float, default=20.0, help="first rate, batches per second")
    parser.add_argument("--max-rate", type=float, default=640.0, help="never go beyond (batches per second)")
    parser.add_argument("--buffer-kib", type=int, default=512, help="producer_buffer_bytes for the run, in KiB")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("TAGSTREAM_TEST_KAFKA_BOOTSTRAP") or infra.start_kafka()
    redis_url = os.environ.get("TAGSTREAM_TEST_REDIS_URL") or infra.start_redis()
    return asyncio.run(deleting_new_topics(bootstrap, "bench-", run(bootstrap, redis_url, args)))


async def run(bootstrap: str, redis_url: str, args: argparse.Namespace) -> int:
    prefix = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    topics = {name: f"{prefix}.{name}" for name in ("events", "tag_commands", "tag_definitions")}
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS, replication_factor=1)
    await ensure_topics(kafka, list(topics.values()), compacted=[topics["tag_definitions"]])
    keys = [{"key": KEY, "role": "operator", "name": "bench"}]
    env = ingest_environment(
        bootstrap, redis_url, prefix, topics, keys, producer_buffer_bytes=str(args.buffer_kib * 1024)
    )
    with tempfile.TemporaryDirectory() as workdir:
        server = IngestProcess(env, Path(workdir) / "ingest.log")
        server.start()
        try:
            await server.wait_ready()
            async with _client(server.url) as client:
                warmup = await load(client, args.start, 3.0)  # connections, caches, the producer's metadata
                steps, best = await ladder(client, args)
                overload = await load(client, best.rate * 2, args.seconds)
                baseline = await load(client, best.rate, args.seconds, health=True)
        finally:
            server.stop()
    accepted = {event_id for step in [warmup, *steps, overload] for event_id in step.accepted_ids}
    on_topic = await events_on_topic(bootstrap, topics["events"])
    report(steps, best, overload, baseline, accepted, on_topic, args)
    ok = accepted <= on_topic and overload.server_errors == 0
    return 0 if ok else 1


async def ladder(client: httpx.AsyncClient, args: argparse.Namespace) -> tuple[list[Step], Step]:
    """From --start, double while p99 < 50 ms (halve first if --start already misses), then bisect
    twice between the best rate and the first that missed."""
    steps: list[Step] = []
    best: Step | None = None
    failed_at: float | None = None
    rate = args.start
    while best is None and rate >= 1:
        step = await _measured(client, rate, args, steps, "ladder")
        if step.passes():
            best = step
        else:
            failed_at = rate
            rate /= 2
    if best is None:
        raise SystemExit("even 1 batch/s missed p99 < 50 ms: is the machine saturated?")
    rate = best.rate * 2
    while failed_at is None and rate <= args.max_rate:
        step = await _measured(client, rate, args, steps, "ladder")
        if step.passes():
            best = step
            rate *= 2
        else:
            failed_at = rate
    for _ in range(2):
        if failed_at is None:
            break
        middle = (best.rate + failed_at) / 2
        step = await _measured(client, middle, args, steps, "bisect")
        if step.passes():
            best = step
        else:
            failed_at = middle
    return steps, best


async def _measured(
    client: httpx.AsyncClient, rate: float, args: argparse.Namespace, steps: list[Step], label: str
) -> Step:
    """One step; a miss is measured once more, because the machine is shared (other processes'
    bursts show up as lone latency spikes): a rate fails only when it misses twice in a row."""
    step = await load(client, rate, args.seconds)
    steps.append(step)
    print(step.row(label), file=sys.stderr)
    if not step.passes() and not step.statuses.keys() - {202}:
        step = await load(client, rate, args.seconds)
        steps.append(step)
        print(step.row(label + ", again"), file=sys.stderr)
    return step


def _client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    return httpx.AsyncClient(base_url=url, limits=limits, headers=headers, timeout=30)


async def load(client: httpx.AsyncClient, rate: float, seconds: float, *, health: bool = False) -> Step:
    """`rate` requests per second for `seconds`, on a fixed schedule (open loop)."""
    count = max(1, int(rate * seconds))
    bodies = [] if health else [_batch_body() for _ in range(count)]
    step = Step(rate)
    started = time.perf_counter()
    tasks = []
    for index in range(count):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body = None if health else bodies[index]
        tasks.append(asyncio.create_task(_one(client, body, due, step)))
    await asyncio.gather(*tasks)
    return step


async def _one(client: httpx.AsyncClient, body: tuple[bytes, list[str]] | None, due: float, step: Step) -> None:
    try:
        if body is None:
            response = await client.get("/healthz")
        else:
            response = await client.post("/v1/events", content=body[0])
    except httpx.HTTPError:
        step.transport_errors += 1
        return
    step.latencies.append(time.perf_counter() - due)
    step.statuses[response.status_code] = step.statuses.get(response.status_code, 0) + 1
    if response.status_code == 202 and body is not None:
        step.accepted_ids.extend(body[1])


def _batch_body() -> tuple[bytes, list[str]]:
    now = datetime.now(UTC).isoformat()
    events: list[dict[str, Any]] = []
    for _ in range(BATCH):
        token = uuid.uuid4().hex
        events.append(
            {
                "type": "order_paid",
                "event_id": f"e-{token}",
                "customer_id": f"c-{token[:5]}",
                "occurred_at": now,
                "order_id": f"o-{token[:12]}",
                "amount": "199.90",
                "currency": "CNY",
                "items": [{"product_id": "p-1", "quantity": 1, "price": "199.90"}],
            }
        )
    return orjson.dumps(events), [event["event_id"] for event in events]


async def events_on_topic(bootstrap: str, topic: str) -> set[str]:
    async with TopicReader(bootstrap, topic) as reader:
        await reader.drain(timeout=300)
        return {orjson.loads(record.value)["event_id"] for record in reader.records}


def report(
    steps: list[Step],
    best: Step,
    overload: Step,
    baseline: Step,
    accepted: set[str],
    on_topic: set[str],
    args: argparse.Namespace,
) -> None:
    print(f"\nbatches of {BATCH} events, {args.seconds:.0f} s per step, producer buffer {args.buffer_kib} KiB")
    print("\n| run | requests/s | events/s | p50 ms | p99 ms | answers |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for step in steps:
        verdict = "best" if step is best else ("p99 ok" if step.passes() else "missed")
        print(step.row(f"ladder ({verdict})"))
    print(baseline.row("baseline: GET /healthz at the best rate", events=False))
    print(overload.row("2x the best rate"))
    ratio = best.p99 / baseline.p99 if baseline.p99 > 0 else float("inf")
    print(
        f"\nhighest rate with p99 < 50 ms: {best.rate:,.0f} batches/s = {best.rate * BATCH:,.0f} events/s "
        f"(p99 {best.p99 * 1000:.1f} ms, {ratio:.1f}x the /healthz p99 at that rate)"
    )
    throttled = overload.statuses.get(429, 0)
    print(
        f"at 2x: {overload.statuses.get(202, 0)} accepted, {throttled} throttled (429), "
        f"{overload.server_errors} server errors (5xx or broken connections)"
    )
    missing = accepted - on_topic
    print(f"accepted events: {len(accepted):,}; on the events topic: {len(on_topic):,}; missing: {len(missing):,}")


if __name__ == "__main__":
    sys.exit(main())
