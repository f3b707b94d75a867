"""The ingest API's reads refuse, with the reason, a read model that is missing or rebuilding."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from services.runtime.readmodel import offset_field
from services.tagger.marker import Marker
from tests.support.ingest_harness import create_topics, ingest_settings, running_ingest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

T0 = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
AUDIENCE = {"any_of": ["value/high"]}


async def test_reads_answer_503_with_the_reason_until_the_read_model_is_whole_and_401_without_a_key(
    kafka_bootstrap: str, redis_url: str
) -> None:
    prefix = f"it-rm-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(kafka_bootstrap, redis_url, prefix)
    await create_topics(settings)
    redis = aioredis.from_url(redis_url)
    marker = Marker(redis, key_prefix=settings.redis.key_prefix)
    try:
        async with running_ingest(settings) as client:
            missing = await client.get("/v1/customers/sh-001/tags")
            assert missing.status_code == 503
            assert missing.headers["Retry-After"] == "5"
            assert "the read model is missing" in missing.json()["detail"]
            assert (await client.get("/v1/customers/sh-001/history")).status_code == 503
            assert (await client.post("/v1/audiences/query", role="viewer", json=AUDIENCE)).status_code == 503
            assert (await client.get("/v1/customers/sh-001/tags", role=None)).status_code == 401

            await marker.begin({offset_field(settings.topics.tag_changes, 0): 8}, T0, reason="marker missing")
            rebuilding = await client.get("/v1/customers/sh-001/history")
            assert rebuilding.status_code == 503
            assert rebuilding.json()["detail"] == (
                "the read model is rebuilding from tagstream.tag-changes: 0 of 8 records applied"
            )

            await marker.begin({}, T0, reason="built", only_if_missing=False)
            whole = await client.get("/v1/customers/sh-001/tags")
            assert whole.status_code == 200
            assert whole.json() == {"customer_id": "sh-001", "groups": []}
    finally:
        await redis.aclose()
