"""Attribute, age and source tags through the real broker: profile and source events posted to ingest,
folded by a `tagstream tagger` process, read back over HTTP; a bad one dead-lettered without its value."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.support.ingest_harness import (
    Stack,
    create_topics,
    held,
    ingest_settings,
    running_ingest,
    running_tagger,
    unique,
)
from tests.support.kafka_io import TopicReader, produce
from tests.support.payloads import profile_groups

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = ingest_settings(kafka_bootstrap, redis_url, f"it-profile-{uuid.uuid4().hex[:8]}")
    await create_topics(settings)
    async with running_tagger(settings, tmp_path_factory.mktemp("tagger")), running_ingest(settings) as client:
        for group in profile_groups():
            response = await client.post("/v1/groups", "admin", json=group)
            assert response.status_code == 201, response.text
        yield Stack(settings, client)


def _event(kind: str, customer: str, *, ago: timedelta = timedelta(0), **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": unique("e"),
        "customer_id": customer,
        "occurred_at": (datetime.now(UTC) - ago).isoformat(),
    } | fields


async def test_profile_and_source_events_posted_over_http_become_tags_readable_over_http(stack: Stack) -> None:
    mei = unique("mei")
    twenty_years_ago = date.today().replace(year=date.today().year - 20, day=1)
    events = [
        _event("profile_updated", mei, region="杭州", birth_date=twenty_years_ago.isoformat(), family="married"),
        _event("source_attributed", mei, channel="tmall", ago=timedelta(hours=1)),
        _event("source_attributed", mei, channel="franchise_store", sub_channel="南京路", ago=timedelta(days=3)),
    ]
    response = await stack.client.post("/v1/events", json=events)
    assert response.status_code == 202, response.text
    body = await stack.client.until(f"/v1/customers/{mei}/tags", lambda b: len(held(b)) == 3)
    assert held(body) == {"region": ["east", "omni"], "age_band": ["young"], "source_channel": ["franchise_store"]}

    moved = _event("profile_updated", mei, region="乌鲁木齐")
    assert (await stack.client.post("/v1/events", json=moved)).status_code == 202
    await stack.client.until(f"/v1/customers/{mei}/tags", lambda b: held(b)["region"] == ["not_east", "omni"])
    history = (await stack.client.get(f"/v1/customers/{mei}/history", params={"limit": 2})).json()["changes"]
    explained = [condition for change in history for condition in change["reason"]["conditions"]]
    assert {(condition["name"], condition["observed"]) for condition in explained} == {("region", "(other)")}
    assert "乌鲁木齐" not in orjson.dumps(history).decode()


async def test_a_bad_profile_event_is_refused_with_422_naming_the_field_not_the_value(stack: Stack) -> None:
    response = await stack.client.post("/v1/events", json=_event("profile_updated", "lin", gender="unspecified"))
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "gender"
    assert "unspecified" not in problem["reason"]


async def test_a_bad_profile_event_on_the_topic_is_dead_lettered_naming_the_field_not_the_value(stack: Stack) -> None:
    customer = unique("raw")
    bad = _event("profile_updated", customer, region="秘" * 70)
    settings = stack.settings
    record = (customer.encode(), orjson.dumps(bad), None)
    await produce(settings.kafka.bootstrap_servers, settings.topics.events, [record])
    async with TopicReader(settings.kafka.bootstrap_servers, settings.topics.events_dlq) as reader:
        await reader.until(lambda records: any(record.key == customer.encode() for record in records))
        [letter] = [letter for letter in reader.json() if letter["key"] == customer]
    assert letter["error"] == "invalid"
    assert "region" in letter["reason"]
    assert "秘" not in letter["reason"]
