"""Schemathesis against the running service's own OpenAPI: no generated request may get a 5xx.

Bounded for the suite (10 examples per operation, fixed seed, ~15 s). A longer run by hand:
    schemathesis run http://127.0.0.1:8080/openapi.json -H "Authorization: Bearer $ADMIN_KEY" \\
        --checks not_a_server_error -n 200
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas.topics import TopicNames
from services.tagger.marker import Marker
from tests.support.ingest_harness import KEYS, PARTITIONS, create_topics, ingest_settings
from tests.support.processes import IngestProcess, TaggerProcess, ingest_environment, tagger_environment

pytestmark = pytest.mark.integration


async def test_fuzzing_every_operation_from_the_openapi_finds_no_server_error(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"it-fuzz-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(kafka_bootstrap, redis_url, prefix)
    await create_topics(settings)
    await _read_model_built(redis_url, f"{prefix}:")
    topics = {name: getattr(settings.topics, name) for name in TopicNames.model_fields}
    keys = [{"key": key, "role": role, "name": role} for role, key in KEYS.items()]
    environment = ingest_environment(kafka_bootstrap, redis_url, prefix, topics, keys)
    environment["TAGSTREAM_KAFKA__PARTITIONS"] = str(PARTITIONS)
    server = IngestProcess(environment, tmp_path / "ingest.log")
    # A worker answers the routes that ask the tagger (a customer's aggregates, previews): without one
    # they wait out their timeouts, and a preview ends in 504 by design.
    datadir = tmp_path / "tagger"
    datadir.mkdir()
    tagger_env = tagger_environment(kafka_bootstrap, f"{prefix}-tagger", topics, PARTITIONS, datadir, store="memory")
    tagger = TaggerProcess(tagger_env, datadir / "tagger.log")
    tagger.start()
    server.start()
    try:
        await asyncio.gather(server.wait_ready(), tagger.wait_ready())
        schemathesis = Path(sys.executable).parent / "schemathesis"
        command = [
            str(schemathesis),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEYS['admin']}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-shrink",
            "--request-timeout",
            "20",
        ]
        run = await asyncio.to_thread(  # in tmp_path: schemathesis keeps a cache folder where it runs
            subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    finally:
        server.stop()
        tagger.stop()
    log = (tmp_path / "ingest.log").read_text()
    assert run.returncode == 0, run.stdout[-5000:]
    assert "generated" in run.stdout
    assert "failed" not in run.stdout.split("SUMMARY")[-1]
    assert "Traceback" not in log, log[-5000:]


async def _read_model_built(redis_url: str, key_prefix: str) -> None:
    """No tagger runs here: mark the (empty) read model whole, or every read would be a 503 by design."""
    redis = aioredis.from_url(redis_url)
    try:
        await Marker(redis, key_prefix=key_prefix).begin({}, datetime.now(UTC), reason="an empty read model")
    finally:
        await redis.aclose()
