"""The operator's views in embedded mode, over the ingest app in process: tag counts with their
daily history in the shop's days, a customer's whole story, and the preview of a rule change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.runtime.clock import ManualClock
from services.runtime.settings import NotifierSettings, Settings, ShopSettings
from tests.support.ingest_harness import CARE, VALUE, Client, cond, ingest_settings, rule, unique

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
        await self.send(customer, "order_paid", order_id=unique("o"), amount=amount, currency="CNY")

    async def browse(self, customer: str) -> None:
        await self.send(customer, "browse", product_id="tea-1")

    async def send(self, customer: str, kind: str, **fields: str) -> None:
        event = {
            "type": kind,
            "event_id": unique("e"),
            "customer_id": customer,
            "occurred_at": self.clock.now().isoformat(),
        } | fields
        response = await self.client.post("/v1/events", json=event)
        assert response.status_code == 202, response.text

    async def later(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        await self.node.tick()


THANKS = """
templates:
  thanks: "感谢您成为${tag}"
playbooks:
  - {id: thanks, trigger: {group: care, tag: buyer}, steps: [{channel: push, template: thanks}]}
  - {id: welcome-vip, trigger: {group: care, tag: vip}, steps: [{channel: push, template: thanks}]}
"""

BROWSING = {
    "id": "browsing",
    "name": "浏览",
    "order": 3,
    "mode": "multi",
    "tagging": "auto",
    "auto_remove": True,
    "tags": [{"id": "keen", "name": "热衷", "rule": rule(cond("browse_count", "gte", 2) | {"window": {"last": "7d"}})}],
}


@asynccontextmanager
async def open_shop(data: Path, clock: ManualClock) -> AsyncIterator[Shop]:
    playbooks = data / "playbooks.yaml"
    playbooks.write_text(THANKS, encoding="utf-8")
    settings = shop_settings().model_copy(update={"notifier": NotifierSettings(quiet_hours=None)})
    node = EmbeddedNode(settings, data, clock, tick_s=3600, playbooks=playbooks)  # log providers: always sent
    app = create_app(node.settings, clock=clock, registry=CollectorRegistry(), adapters=node.adapters())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedded", timeout=30) as http:
            yield Shop(Client(http), clock, node)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with open_shop(tmp_path, ManualClock(START)) as shop:
        for group in (VALUE, CARE, BROWSING):
            assert (await shop.client.post("/v1/groups", "admin", json=group)).status_code == 201
        yield shop


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


async def test_a_customers_whole_story_shows_tags_aggregates_consent_and_to_operators_the_profile(shop: Shop) -> None:
    await shop.order("a", "100")
    await shop.order("a", "0")  # free: an order all the same
    await shop.browse("a")
    await shop.later(timedelta(days=1))
    await shop.browse("a")
    assert (
        await shop.client.put("/v1/customers/a/profile", json={"name": "李雷", "phone": "+86 138 0000 0000"})
    ).status_code == 204
    assert (await shop.client.put("/v1/customers/a/opt-outs/sms")).status_code == 200

    as_viewer = (await shop.client.get("/v1/customers/a")).json()
    as_operator = (await shop.client.get("/v1/customers/a", role="operator")).json()

    assert {g["id"]: [(t["id"], t["name"]) for t in g["tags"]] for g in as_viewer["groups"]} == {
        "value": [("low", "低价值")],
        "care": [("buyer", "买家")],
        "browsing": [("keen", "热衷")],
    }
    aggregates = as_viewer["aggregates"]
    assert (aggregates["order_count"], aggregates["total_spent"], aggregates["avg_order_value"]) == (
        2,
        "100",
        "50.0000",
    )
    assert aggregates["last_order_at"] == "2026-11-20T15:30:00Z"
    assert [(w["metric"], w["window"]["last"], w["count"]) for w in aggregates["windows"]] == [
        ("browse_count", "7d", 2)
    ]
    assert as_viewer["consent"] == {"opted_out": ["sms"]}
    assert (as_viewer["profile"], as_viewer["profile_visible"]) == (None, False)
    assert as_operator["profile"]["name"] == "李雷"
    assert as_operator["profile_visible"] is True


async def test_a_customer_the_shop_never_saw_has_no_tags_and_no_aggregates(shop: Shop) -> None:
    body = (await shop.client.get("/v1/customers/nobody")).json()
    assert (body["groups"], body["aggregates"], body["unavailable"]) == ([], None, [])
    assert (await shop.client.get("/v1/customers/nobody/messages")).json()["messages"] == []
    assert (await shop.client.get("/v1/customers/" + "x" * 300)).status_code == 422


async def test_every_notification_decision_is_listed_newest_first_paged_and_kept_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock(START)
    async with open_shop(tmp_path, clock) as shop:
        assert (await shop.client.post("/v1/groups", "admin", json=CARE)).status_code == 201
        await shop.order("b", "10")  # buyer: thanks
        await shop.later(timedelta(minutes=1))
        vip = {"group_id": "care", "tag_id": "vip", "action": "add", "customer_ids": ["b"]}
        assert (await shop.client.post("/v1/manual-tags", json=vip)).status_code == 202
        await shop.later(timedelta(minutes=1))
        assert (await shop.client.put("/v1/customers/c/opt-outs/push")).status_code == 200
        await shop.order("c", "10")
        await shop.later(timedelta(minutes=1))
        everything = (await shop.client.get("/v1/customers/b/messages")).json()
        newest = (await shop.client.get("/v1/customers/b/messages?limit=1")).json()
        oldest = (await shop.client.get("/v1/customers/b/messages?offset=1&limit=1")).json()
        refused = (await shop.client.get("/v1/customers/c/messages")).json()
    async with open_shop(tmp_path, clock) as restarted:
        again = (await restarted.client.get("/v1/customers/b/messages")).json()

    assert [m["playbook_id"] for m in everything["messages"]] == ["welcome-vip", "thanks"]
    assert everything["messages"][1]["outcome"] == "sent"
    assert (newest["messages"], newest["next_offset"]) == (everything["messages"][:1], 1)
    assert (oldest["messages"], oldest["next_offset"]) == (everything["messages"][1:], None)
    assert [(m["outcome"], m["reason"]) for m in refused["messages"]] == [("suppressed", "consent")]
    assert again == everything


async def test_a_preview_counts_who_would_gain_and_lose_each_tag_and_then_applying_it_does_exactly_that(
    shop: Shop,
) -> None:
    for customer, amount in (
        ("p100", "100"),
        ("p350", "350"),
        ("p360", "360"),
        ("p500", "500"),
        ("p2500", "2500"),
        ("free", "0"),
    ):
        await shop.order(customer, amount)
    draft = VALUE | {
        "tags": [
            {"id": "high", "name": "高价值", "rule": rule(cond("total_spent", "gte", 2000))},
            {"id": "mid", "name": "中价值", "rule": rule(cond("total_spent", "gte", 400))},
            {"id": "low", "name": "低价值", "rule": rule(cond("total_spent", "lt", 400))},
        ]
    }
    before = {c: await shop.client.tags_of(c) for c in ("p350", "p360", "p500")}

    response = await shop.client.post("/v1/groups/value:preview?sample=1", "admin", json=draft)

    assert response.status_code == 200, response.text
    preview = response.json()
    assert (preview["customers"], preview["draft_version"]) == (6, 2)
    impacts = {(i["group_id"], i["tag_id"]): i for i in preview["impacts"]}
    assert {tag: (i["gained"], i["lost"]) for tag, i in impacts.items()} == {
        ("value", "low"): (2, 0),
        ("value", "mid"): (0, 2),
    }
    sample = impacts[("value", "low")]["gained_sample"]
    assert [s["customer_id"] for s in sample] == ["p350"]  # the lowest id
    assert sample[0]["reason"]["conditions"][0]["observed"] == "350"
    assert impacts[("value", "low")]["tag_name"] == "低价值"
    assert {c: await shop.client.tags_of(c) for c in ("p350", "p360", "p500")} == before  # nothing changed

    assert (await shop.client.put("/v1/groups/value", "admin", json=draft)).status_code == 200
    applied: dict[tuple[str, str], list[int]] = {}
    for customer in ("p100", "p350", "p360", "p500", "p2500", "free"):
        history = (await shop.client.get(f"/v1/customers/{customer}/history")).json()["changes"]
        for change in history:
            if change["source"] == "rule_change":
                counts = applied.setdefault((change["group_id"], change["tag_id"]), [0, 0])
                counts[0 if change["change"] == "added" else 1] += 1
    assert {tag: tuple(c) for tag, c in applied.items()} == {
        tag: (i["gained"], i["lost"]) for tag, i in impacts.items()
    }


async def test_a_preview_of_an_invalid_draft_names_every_problem_and_needs_an_admin(shop: Shop) -> None:
    broken = VALUE | {"tags": [{"id": "odd", "name": "怪", "rule": rule(cond("has_tag", "in", ["nosuch/tag"]))}]}
    invalid = await shop.client.post("/v1/groups/value:preview", "admin", json=broken)
    assert invalid.status_code == 422, invalid.text
    assert "nosuch" in str(invalid.json()["detail"])
    mismatch = await shop.client.post("/v1/groups/other:preview", "admin", json=VALUE)
    assert mismatch.status_code == 422
    hostile = await shop.client.post("/v1/groups/" + "x" * 5000 + ":preview", "admin", json=VALUE)
    assert hostile.status_code == 422
    assert len(hostile.text) < 500  # the path is quoted as an excerpt, not echoed whole
    assert (await shop.client.post("/v1/groups/value:preview", "operator", json=VALUE)).status_code == 403


async def test_the_openapi_document_describes_every_view_with_its_role_errors(shop: Shop) -> None:
    paths = (await shop.client.http.get("/openapi.json")).json()["paths"]
    assert set(paths["/v1/tag-counts"]["get"]["responses"]) >= {"200", "401", "403", "422", "503"}
    assert set(paths["/v1/customers/{customer_id}"]["get"]["responses"]) >= {"200", "401", "503"}
    assert set(paths["/v1/customers/{customer_id}/messages"]["get"]["responses"]) >= {"200", "401", "503"}
    assert set(paths["/v1/groups/{group_id}:preview"]["post"]["responses"]) >= {"200", "401", "403", "422", "504"}
