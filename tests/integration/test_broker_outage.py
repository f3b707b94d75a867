"""The local broker crashes (scripts/kafka.sh kill) and starts again under a running ingest and tagger.

While it is down ingest is not ready and answers writes 503 at once (not after send_timeout_s),
the tagger does not flood its log, and the broker comes back on the same address with its data.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import infra
from tests.support.ingest_harness import create_topics, ingest_settings, running_ingest, running_tagger
from tests.support.kafka_io import TopicReader

OUTAGE_S = 15.0


def browse(customer: str) -> dict[str, Any]:
    return {
        "type": "browse",
        "event_id": f"e-{uuid.uuid4().hex}",
        "customer_id": customer,
        "occurred_at": "2026-11-23T03:00:00+00:00",
        "product_id": "sku-1",
    }


async def test_while_the_broker_is_down_ingest_is_unready_and_fails_fast_and_the_crashed_broker_keeps_its_data(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    if os.environ.get("TAGSTREAM_TEST_KAFKA_BOOTSTRAP"):
        pytest.skip("stops and starts the broker: needs the one scripts/kafka.sh runs, not an external one")
    settings = ingest_settings(kafka_bootstrap, redis_url, f"outage-{uuid.uuid4().hex[:8]}")
    assert settings.ingest.send_timeout_s == 10.0
    await create_topics(settings)
    before = [browse("sh-0001") for _ in range(5)]
    after = [browse("sh-0002") for _ in range(5)]
    async with running_ingest(settings) as client, running_tagger(settings, tmp_path) as tagger:
        assert (await client.post("/v1/events", json=before)).status_code == 202
        log_size = tagger.log_path.stat().st_size
        stopped = time.monotonic()
        await asyncio.to_thread(infra.kill_kafka)
        try:
            while (await client.http.get("/readyz")).status_code == 200:
                assert time.monotonic() - stopped < 15, "ingest still ready 15 s after the broker stopped"
                await asyncio.sleep(0.2)
            assert (await client.http.get("/readyz")).json()["kafka"] is False
            timings = []
            for _ in range(3):
                started = time.monotonic()
                answer = await client.post("/v1/events", json=[browse("sh-0003")])
                timings.append(time.monotonic() - started)
                assert answer.status_code == 503
                assert answer.headers["Retry-After"] == "5"
                assert "cannot take writes now" in answer.json()["detail"]
            assert max(timings) < 1.0  # send_timeout_s is 10
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            outage_log = tagger.log_path.read_bytes()[log_size:].decode("utf-8", "replace")
        finally:
            assert await asyncio.to_thread(infra.start_kafka) == kafka_bootstrap  # same address
        errors = [line for line in outage_log.splitlines() if "ERROR" in line]
        print(f"tagger log during a {OUTAGE_S:.0f}s outage: {len(outage_log.splitlines())} lines, {len(errors)} ERROR")
        assert len(errors) <= 3 * OUTAGE_S, "\n".join(errors[:20])
        await client.wait_ready(timeout=90)
        assert (await client.post("/v1/events", json=after)).status_code == 202
    async with TopicReader(kafka_bootstrap, settings.topics.events) as reader:
        await reader.until(lambda records: len(records) >= 10, timeout=30)
        on_topic = {event["event_id"] for event in reader.json()}
    assert on_topic == {event["event_id"] for event in before + after}  # what was written before the stop is kept
