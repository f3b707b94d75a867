"""`tagstream projector`: the read model kept by a process of its own, on the real broker and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas.topics import TopicNames
from services.runtime.readmodel import ReadModel
from tests.support.kafka_io import produce
from tests.support.netprobe import free_port
from tests.support.tag_change_streams import changed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_the_projector_process_keeps_the_read_model_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, redis_url: str, redis_client: aioredis.Redis, redis_prefix: str, tmp_path: Path
) -> None:
    prefix = f"projector-{uuid.uuid4().hex[:8]}"
    topics = {name: f"{prefix}.{name}" for name in TopicNames.model_fields}
    port = free_port()
    env = dict(os.environ)
    env.update({f"TAGSTREAM_TOPICS__{name.upper()}": topic for name, topic in topics.items()})
    env.update(
        {
            "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TAGSTREAM_KAFKA__PARTITIONS": "2",
            "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
            "TAGSTREAM_REDIS__URL": redis_url,
            "TAGSTREAM_REDIS__KEY_PREFIX": redis_prefix,
            "TAGSTREAM_TAGGER__APP_ID": prefix,
            "TAGSTREAM_TAGGER__WEB_HOST": "127.0.0.1",
            "TAGSTREAM_TAGGER__PROJECTOR_WEB_PORT": str(port),
            "TAGSTREAM_TAGGER__SESSION_TIMEOUT_S": "6",
        }
    )
    changes = [
        changed("c1", 1, "tier", "gold"),
        changed("c2", 1, "tier", "silver"),
        changed("c1", 2, "tier", "gold", "removed"),
        changed("c1", 3, "tier", "platinum"),
    ]
    with open(tmp_path / "projector.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "projector", "--log-level", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await _until(lambda: _get(port, "/readyz")[0] == 200, "ready", process)
        await produce(
            kafka_bootstrap,
            topics["tag_changes"],
            [(change.customer_id.encode(), change.model_dump_json().encode(), None) for change in changes],
        )
        reads = ReadModel(redis_client, key_prefix=redis_prefix)
        expected = {"c1": {"tier": ["platinum"]}, "c2": {"tier": ["silver"]}}
        deadline = time.monotonic() + 60
        while {customer: await reads.current_tags(customer) for customer in expected} != expected:
            assert time.monotonic() < deadline, f"the read model never held {expected}; see {tmp_path}/projector.log"
            assert process.poll() is None, (tmp_path / "projector.log").read_text()[-2000:]
            await asyncio.sleep(0.2)
        status, metrics = _get(port, "/metrics")
        assert status == 200
        assert 'tagstream_projector_changes_total{outcome="applied"} 4.0' in metrics
        assert "tagstream_events_processed_total" not in metrics  # the projector's series only
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _until(check: object, what: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        assert process.poll() is None, f"the projector exited ({process.returncode}) before it was {what}"
        assert time.monotonic() < deadline, f"the projector was not {what} after {timeout:.0f}s"
        await asyncio.sleep(0.2)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
