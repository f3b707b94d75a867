"""Redis SIGKILLed mid-stream and back empty: the read model notices, answers 503 while it rebuilds
itself from tagstream.tag-changes, and ends equal to the fold of that topic (which equals
`tagstream replay` of the events); `tagstream readmodel rebuild` does the same on demand."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from benchmarks.workload import events as generated_events
from services.runtime.readmodel import ReadModel
from tests.support.kafka_io import TopicReader
from tests.support.processes import (
    IngestProcess,
    TaggerProcess,
    ingest_environment,
    produce_at_rate,
    tagger_environment,
    tagger_topics,
    wait_caught_up,
)
from tests.support.redis_server import RedisServer
from tests.support.tag_change_streams import customer_stream, expected_tags, interleave
from tests.support.tag_streams import check_tag_changes, definitions

pytestmark = pytest.mark.asyncio(loop_scope="session")

EVENTS = 6_000
CUSTOMERS = 300
PARTITIONS = 4
RATE = 400.0  # events per second: the stream lasts 15 s
CONVERGE_S = 180.0  # from Redis back (empty) to a whole, correct read model, on a loaded 2-core machine
VIEWER = "viewer-key-0123456789"


@dataclass
class Answer:
    at: float
    status: int
    detail: str


async def test_redis_lost_mid_stream_is_rebuilt_from_tag_changes_while_readers_get_503(
    kafka_bootstrap: str, private_redis: RedisServer, tmp_path: Path
) -> None:
    prefix = f"fault-redis-{uuid.uuid4().hex[:8]}"
    groups = definitions()
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, groups)
    private_redis.start()
    key_prefix = f"{prefix}:"
    env = tagger_environment(
        kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "data", projector="true", group_instance_id="t0"
    )
    env |= {"TAGSTREAM_REDIS__URL": private_redis.url, "TAGSTREAM_REDIS__KEY_PREFIX": key_prefix}
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    viewer = [{"key": VIEWER, "role": "viewer", "name": "viewer"}]
    ingest = IngestProcess(
        ingest_environment(kafka_bootstrap, private_redis.url, prefix, topics, viewer), tmp_path / "ingest.log"
    )
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=19)]
    customer = orjson.loads(lines[0])["customer_id"]
    answers: list[Answer] = []
    redis = aioredis.from_url(private_redis.url)
    reads = ReadModel(redis, key_prefix=key_prefix)

    tagger.start()
    ingest.start()
    try:
        await asyncio.gather(tagger.wait_ready(), ingest.wait_ready())
        await _until(lambda: _ready(reads), 60, "the first read model is built")
        polling = asyncio.create_task(_poll(ingest.url, customer, answers))
        producing = asyncio.create_task(produce_at_rate(kafka_bootstrap, topics["events"], lines, RATE))
        await asyncio.sleep(6.0)

        private_redis.kill()
        private_redis.wipe()
        await asyncio.sleep(3.0)
        private_redis.start()
        back = time.monotonic()

        await producing
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
        async with TopicReader(kafka_bootstrap, topics["tag_changes"]) as reader:
            await reader.drain()
            stream = reader.json()
        _, final = check_tag_changes(stream, lines, groups)  # the topic equals `tagstream replay`
        everyone = {orjson.loads(line)["customer_id"] for line in lines}
        await _until(
            lambda: _equal(reads, everyone, final), CONVERGE_S, "the read model equals the fold of tag-changes"
        )
        converged = time.monotonic() - back
        polling.cancel()
        final_read = httpx.get(f"{ingest.url}/v1/customers/{customer}/tags", headers=_viewer())
        metrics = httpx.get(f"{tagger.url}/metrics").text
    finally:
        ingest.stop()
        tagger.stop()
        await redis.aclose()

    after = [answer for answer in answers if answer.at >= back]
    refusals = [a for a in after if a.status == 503 and ("is missing" in a.detail or "is rebuilding" in a.detail)]
    assert refusals, f"no 503 saying the read model is missing or rebuilding after Redis came back: {after[:5]}"
    assert {answer.status for answer in after} <= {200, 503}
    assert final_read.status_code == 200
    shown = {group["id"]: sorted(tag["id"] for tag in group["tags"]) for group in final_read.json()["groups"]}
    assert shown == final.get(customer, {})
    rebuilds = [line for line in metrics.splitlines() if line.startswith("tagstream_readmodel_rebuilds_total")]
    assert rebuilds, "no tagstream_readmodel_rebuilds_total on the tagger's /metrics"
    assert float(rebuilds[0].split()[-1]) >= 1.0
    print(
        f"\nRedis lost mid-stream: {len(stream)} tag changes, {len(final)} customers; read model whole and "
        f"correct {converged:.1f}s after Redis came back empty; {len(refusals)} reads refused with 503 meanwhile"
    )


async def test_readmodel_rebuild_command_restores_a_wiped_redis_and_a_kept_one_alike(
    kafka_bootstrap: str, private_redis: RedisServer, tmp_path: Path
) -> None:
    """No tagger running: the operator's command alone reads the topics and reports progress."""
    prefix = f"fault-rebuild-{uuid.uuid4().hex[:8]}"
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, definitions())
    rng = random.Random(11)
    streams = {f"c{i}": customer_stream(f"c{i}", rng.randint(1, 20), rng) for i in range(200)}
    await produce_many(
        kafka_bootstrap,
        topics["tag_changes"],
        [(change.customer_id.encode(), change.model_dump_json().encode()) for change in interleave(streams, rng)],
    )
    private_redis.start()
    key_prefix = f"{prefix}:"
    env = tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "data")
    env |= {"TAGSTREAM_REDIS__URL": private_redis.url, "TAGSTREAM_REDIS__KEY_PREFIX": key_prefix}
    redis = aioredis.from_url(private_redis.url)
    reads = ReadModel(redis, key_prefix=key_prefix)
    expected = {customer: tags for customer, stream in streams.items() if (tags := expected_tags(stream))}
    try:
        first = await _rebuild(env)
        assert "rebuilding:" in first or "records in" in first
        assert await _equal(reads, set(streams), expected)

        await redis.sadd(f"{key_prefix}c:{{c1}}:optout", "sms")  # consent is not the projection's
        await redis.hset(f"{key_prefix}r:{{c1}}", "t:ghost/tag", "0 rule 1")  # damage the rebuild must undo
        await _rebuild(env)
        assert await _equal(reads, set(streams), expected)
        assert await redis.smembers(f"{key_prefix}c:{{c1}}:optout") == {b"sms"}

        await redis.flushall()
        await _rebuild(env)
        assert await _equal(reads, set(streams), expected)
        assert (await reads.status()).ready
    finally:
        await redis.aclose()


async def produce_many(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Keyed records, all in flight at once, each acknowledged by all replicas (order per key kept)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=key, value=value) for key, value in records])
    finally:
        await producer.stop()


async def _rebuild(env: dict[str, str]) -> str:
    tagstream = Path(sys.executable).parent / "tagstream"
    result = await asyncio.to_thread(
        subprocess.run,
        [str(tagstream), "readmodel", "rebuild", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready (epoch" in result.stdout, result.stdout
    return result.stdout


async def _poll(url: str, customer: str, answers: list[Answer]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
        while True:
            try:
                response = await http.get(f"/v1/customers/{customer}/tags", headers=_viewer())
                detail = response.json().get("detail", "") if response.status_code != 200 else ""
                answers.append(Answer(time.monotonic(), response.status_code, str(detail)))
            except httpx.HTTPError as error:
                answers.append(Answer(time.monotonic(), 0, repr(error)))
            await asyncio.sleep(0.05)


def _viewer() -> dict[str, str]:
    return {"Authorization": f"Bearer {VIEWER}"}


async def _ready(reads: ReadModel) -> bool:
    return (await reads.status()).ready


async def _equal(reads: ReadModel, customers: set[str], expected: dict[str, dict[str, list[str]]]) -> bool:
    """Whole, and every customer's tags as expected (customers without tags included)."""
    if not (await reads.status()).ready:
        return False
    for customer in customers:
        if await reads.current_tags(customer) != expected.get(customer, {}):
            return False
    return True


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():  # type: ignore[operator]
                return
        except (OSError, aioredis.ConnectionError):
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")
