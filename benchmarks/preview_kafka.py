"""`python -m benchmarks.preview --kafka`: one tagger worker previews a rule change end to end.

The worker and ingest are the integration test's (tests/integration/test_customer_views_kafka.py):
the `value` tiers defined, customers of one order each, the draft moving the `mid` bound.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from services.runtime.settings import Settings
from tests.integration.test_customer_views_kafka import (
    AMOUNTS,
    DRAFT,
    PARTITIONS,
    app_id,
    cpu_seconds,
    order,
    settings_for,
    start_workers,
)
from tests.support.ingest_harness import VALUE, create_topics, running_ingest, unique
from tests.support.processes import wait_caught_up

_IN_FLIGHT = 20_000
"""Orders awaited at once while loading: bounds the loader's memory, keeps the producer's batches full."""


async def preview_seconds(
    kafka_bootstrap: str, redis_url: str, workdir: Path, customers: int
) -> tuple[float, float, float, int]:
    """Seconds to load the customers, then how long `POST /v1/groups/value:preview` takes with one
    worker (RocksDB) holding them: wall seconds, the worker process's CPU seconds meanwhile (a shared
    machine's wall clock counts others' work too), and how many customers it evaluated."""
    settings = settings_for(kafka_bootstrap, redis_url, unique("views"), preview_timeout_s=900.0)
    await create_topics(settings)
    async with running_ingest(settings) as client:
        assert (await client.post("/v1/groups", "admin", json=VALUE)).status_code == 201
        # no projector: the preview reads the worker's table, and the read model would slow the load
        workers = await start_workers(settings, workdir, 1, projector=False)
        try:
            started = time.monotonic()
            await load_quickly(settings, customers)
            loading = time.monotonic() - started
            print(f"{customers:,} customers loaded in {loading:.0f} s; previewing", file=sys.stderr)
            cpu_before, started = cpu_seconds(workers[0]), time.monotonic()
            response = await client.post("/v1/groups/value:preview", "admin", json=DRAFT, timeout=900)
            seconds, cpu = time.monotonic() - started, cpu_seconds(workers[0]) - cpu_before
        finally:
            for worker in workers:
                worker.stop()
    assert response.status_code == 200, response.text[:300]
    return loading, seconds, cpu, response.json()["customers"]


async def load_quickly(settings: Settings, customers: int) -> None:
    """One order each (amounts cycling through the test's), produced as fast as the broker takes
    them, until the worker has committed them all."""
    bootstrap, events = settings.kafka.bootstrap_servers, settings.topics.events
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        pending = []
        for number in range(customers):
            customer = f"c{number:07d}"
            line = order(customer, AMOUNTS[number % len(AMOUNTS)])
            pending.append(await producer.send(events, key=customer.encode(), value=line))
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    await wait_caught_up(bootstrap, app_id(settings), events, PARTITIONS, timeout=max(180.0, customers / 100))
