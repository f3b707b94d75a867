"""The operator's views in embedded mode, over the ingest app in process: tag counts with their
daily history in the shop's days, a customer's whole story, and the preview of a rule change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.runtime.settings import Settings, ShopSettings
from services.tagger.engine import ManualClock
from tests.integration.ingest_harness import VALUE, Client, ingest_settings, unique

# 23:30 in Shanghai on 2026-11-20: an hour later it is the 21st there, still the 20th in UTC.
START = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def shop_settings() -> Settings:
    settings = ingest_settings("127.0.0.1:1", "redis://127.0.0.1:1/0", "embedded")  # neither is used
    return settings.model_copy(update={"shop": ShopSettings(timezone="Asia/Shanghai")})


class Shop:
    def __init__(self, client: Client, clock: ManualClock, node: EmbeddedNode) -> None:
        self.client = client
        self.clock = clock
        self.node = node

    async def order(self, customer: str, amount: str) -> None:
        event = {
            "type": "order_paid",
            "event_id": unique("e"),
            "customer_id": customer,
            "occurred_at": self.clock.now().isoformat(),
            "order_id": unique("o"),
            "amount": amount,
            "currency": "CNY",
        }
        response = await self.client.post("/v1/events", json=event)
        assert response.status_code == 202, response.text

    async def later(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        await self.node.tick()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    clock = ManualClock(START)
    node = EmbeddedNode(shop_settings(), tmp_path, clock, tick_s=3600)
    app = create_app(node.settings, clock=clock, registry=CollectorRegistry(), adapters=node.adapters())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedded", timeout=30) as http:
            client = Client(http)
            assert (await client.post("/v1/groups", "admin", json=VALUE)).status_code == 201
            yield Shop(client, clock, node)


def counts_of(body: dict[str, Any], group: str) -> dict[str, list[tuple[str, int]]]:
    found = next(g for g in body["groups"] if g["id"] == group)
    return {tag["id"]: [(day["date"], day["count"]) for day in tag["history"]] for tag in found["tags"]}


async def test_tag_counts_show_holders_now_and_at_the_end_of_each_shop_day(shop: Shop) -> None:
    await shop.order("a", "100")  # low, on the 20th in Shanghai
    await shop.later(timedelta(hours=1))  # the 21st in Shanghai, still the 20th in UTC
    await shop.order("a", "250")  # 350: mid, no longer low
    await shop.order("b", "500")  # mid
    await shop.order("free", "0")  # a free order counts: low
    await shop.later(timedelta(days=2))

    response = await shop.client.get("/v1/tag-counts?days=4")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["today"], body["timezone"]) == ("2026-11-23", "Asia/Shanghai")
    assert counts_of(body, "value") == {
        "high": [("2026-11-20", 0), ("2026-11-21", 0), ("2026-11-22", 0), ("2026-11-23", 0)],
        "mid": [("2026-11-20", 0), ("2026-11-21", 2), ("2026-11-22", 2), ("2026-11-23", 2)],
        "low": [("2026-11-20", 1), ("2026-11-21", 1), ("2026-11-22", 1), ("2026-11-23", 1)],
    }
    assert [tag["count"] for tag in body["groups"][0]["tags"]] == [0, 2, 1]


async def test_tag_counts_refuse_more_history_than_kept_naming_the_parameter_and_need_a_key(shop: Shop) -> None:
    too_long = await shop.client.get("/v1/tag-counts?days=91")
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["query", "days"]
    assert (await shop.client.get("/v1/tag-counts", role=None)).status_code == 401
