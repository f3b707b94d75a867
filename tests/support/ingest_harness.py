"""The ingest app in process over the real broker and Redis, with a real tagger worker beside it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from schemas.topics import TopicNames
from services.ingest.app import create_app
from services.runtime.kafka import ensure_topics
from services.runtime.settings import ApiKey, IngestSettings, KafkaSettings, RedisSettings, Settings
from tests.support.processes import TAGGER_TOPICS, TaggerProcess, tagger_environment

KEYS = {
    "viewer": "viewer-key-0123456789abcdef",
    "operator": "operator-key-0123456789abcdef",
    "admin": "admin-key-0123456789abcdef",
}
PARTITIONS = 3


def topic_names(prefix: str) -> TopicNames:
    return TopicNames(**{name: f"{prefix}.{name}" for name in TopicNames.model_fields})


def ingest_settings(kafka_bootstrap: str, redis_url: str, prefix: str, **ingest: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, replication_factor=1),
        redis=RedisSettings(url=redis_url, key_prefix=f"{prefix}:"),
        topics=topic_names(prefix),
        ingest=IngestSettings(
            api_keys=[ApiKey(key=key, role=role, name=f"{role}@test") for role, key in KEYS.items()],
            **ingest,
        ),
    )


async def create_topics(settings: Settings) -> None:
    topics = settings.topics
    await ensure_topics(
        settings.kafka,
        [getattr(topics, name) for name in TAGGER_TOPICS],
        compacted=[topics.tag_definitions],
    )


@asynccontextmanager
async def running_ingest(settings: Settings, *, wait_ready: bool = True) -> AsyncIterator[Client]:
    """The app with its lifespan running, and an HTTP client for it (no network in between)."""
    app = create_app(settings, registry=CollectorRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=30) as http:
            client = Client(http)
            if wait_ready:
                await client.wait_ready()
            yield client


@asynccontextmanager
async def running_tagger(settings: Settings, datadir: Path) -> AsyncIterator[TaggerProcess]:
    """`tagstream tagger` (memory store, projector on) on the same topics and Redis prefix."""
    topics = {name: getattr(settings.topics, name) for name in TopicNames.model_fields}
    env = tagger_environment(
        settings.kafka.bootstrap_servers,
        f"{settings.redis.key_prefix.rstrip(':')}-tagger",
        topics,
        PARTITIONS,
        datadir,
        store="memory",
        projector="true",
        batch_within_s="0.02",
        timer_interval_s="0.2",
    )
    env["TAGSTREAM_REDIS__URL"] = settings.redis.url
    env["TAGSTREAM_REDIS__KEY_PREFIX"] = settings.redis.key_prefix
    tagger = TaggerProcess(env, datadir / "tagger.log")
    tagger.start()
    try:
        await tagger.wait_ready()
        yield tagger
    finally:
        tagger.stop()


class Stack:
    """Ingest in process and a tagger beside it, on one set of topics: the settings and a client."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client


class Client:
    """HTTP calls as a role: `client.as_("admin").post(...)`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    def headers(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {KEYS.get(role, role)}"}

    async def get(self, path: str, role: str | None = "viewer", **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.headers(role) | kwargs.pop("headers", {}), **kwargs)

    async def post(self, path: str, role: str | None = "operator", **kwargs: Any) -> httpx.Response:
        return await self.http.post(path, headers=self.headers(role) | kwargs.pop("headers", {}), **kwargs)

    async def put(self, path: str, role: str | None = "operator", **kwargs: Any) -> httpx.Response:
        return await self.http.put(path, headers=self.headers(role) | kwargs.pop("headers", {}), **kwargs)

    async def delete(self, path: str, role: str | None = "operator", **kwargs: Any) -> httpx.Response:
        return await self.http.delete(path, headers=self.headers(role) | kwargs.pop("headers", {}), **kwargs)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "ingest did not become ready"
            await asyncio.sleep(0.1)

    async def until(self, path: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """GET `path` as a viewer until `done(body)`: the tagger works asynchronously."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.get(path)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if done(body):
                return body
            assert time.monotonic() < deadline, f"timed out waiting on {path}; last: {body}"
            await asyncio.sleep(0.1)

    async def tags_of(self, customer_id: str) -> dict[str, list[str]]:
        response = await self.get(f"/v1/customers/{customer_id}/tags")
        assert response.status_code == 200, response.text
        return held(response.json())


def held(body: dict[str, Any]) -> dict[str, list[str]]:
    return {group["id"]: [tag["id"] for tag in group["tags"]] for group in body["groups"]}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def paid(customer: str, amount: str, *, order: str | None = None) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": unique("e"),
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "order_id": order or unique("o"),
        "amount": amount,
        "currency": "CNY",
    }


def browse(customer: str) -> dict[str, Any]:
    return {
        "type": "browse",
        "event_id": unique("e"),
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "product_id": "p1",
    }


def cond(metric: str, op: str, value: Any) -> dict[str, Any]:
    return {"metric": metric, "op": op, "value": value}


def rule(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {"match": "all", "conditions": list(conditions)}


VALUE = {
    "id": "value",
    "name": "会员贡献价值",
    "order": 1,
    "mode": "exclusive",
    "tagging": "auto",
    "auto_remove": True,
    "tags": [
        {"id": "high", "name": "高价值", "rule": rule(cond("total_spent", "gte", 2000))},
        {"id": "mid", "name": "中价值", "rule": rule(cond("total_spent", "gte", 300))},
        {"id": "low", "name": "低价值", "rule": rule(cond("total_spent", "lt", 300))},
    ],
}
CARE = {
    "id": "care",
    "name": "客户关怀",
    "order": 2,
    "mode": "multi",
    "tagging": "both",
    "tags": [
        {"id": "vip", "name": "贵宾"},
        {"id": "buyer", "name": "买家", "rule": rule(cond("order_count", "gte", 1))},
    ],
}
SEGMENT = {
    "id": "segment",
    "name": "人群",
    "order": 3,
    "mode": "multi",
    "tagging": "manual",
    "tags": [{"id": "a", "name": "甲"}, {"id": "b", "name": "乙"}, {"id": "c", "name": "丙"}],
}
