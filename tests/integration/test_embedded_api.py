"""`tagstream run`'s HTTP API in process (the node's adapters in the ingest app): the same
shop semantics as the Kafka services (tests/integration/shop_semantics.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.notifier.ports import Message
from services.runtime.clock import SystemClock
from services.runtime.settings import NotifierSettings, Settings
from tests.integration.shop_semantics import (
    a_manual_removal_sticks_until_cleared,
    free_orders_count_and_other_currencies_are_refused,
    resent_batches_count_once,
)
from tests.support.ingest_harness import CARE, VALUE, Client, ingest_settings, paid


@asynccontextmanager
async def serving(node: EmbeddedNode) -> AsyncIterator[Client]:
    app = create_app(node.settings, registry=CollectorRegistry(), adapters=node.adapters())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedded", timeout=30) as http:
            yield Client(http)


def settings() -> Settings:
    return ingest_settings("127.0.0.1:1", "redis://127.0.0.1:1/0", "embedded")  # neither is used


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    async with serving(EmbeddedNode(settings(), tmp_path, SystemClock())) as client:
        for group in (VALUE, CARE):
            assert (await client.post("/v1/groups", "admin", json=group)).status_code == 201
        yield client


class Recorded:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> int:
        self.messages.append(message)
        return 1

    async def close(self) -> None:
        return None


THANKS = """
templates:
  thanks: "${name|您好}，感谢您成为${tag}（${group}）"
playbooks:
  - {id: thanks, trigger: {group: care, tag: buyer}, steps: [{channel: push, template: thanks}]}
"""


async def test_an_embedded_message_names_the_tag_and_greets_a_customer_without_a_profile(tmp_path: Path) -> None:
    push = Recorded()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(THANKS, encoding="utf-8")
    quiet_free = settings().model_copy(update={"notifier": NotifierSettings(quiet_hours=None)})  # may run at night
    node = EmbeddedNode(quiet_free, tmp_path, SystemClock(), playbooks=playbooks, providers={"push": push})
    async with serving(node) as client:
        assert (await client.post("/v1/groups", "admin", json=CARE)).status_code == 201
        assert (await client.put("/v1/customers/named/profile", json={"name": "李雷"})).status_code == 204
        for customer in ("named", "anonymous"):
            assert (await client.post("/v1/events", json=paid(customer, "10"))).status_code == 202
        await node.tick()
    assert {m.customer_id: m.text for m in push.messages} == {
        "named": "李雷，感谢您成为买家（客户关怀）",
        "anonymous": "您好，感谢您成为买家（客户关怀）",
    }


async def test_a_resent_batch_of_browses_and_orders_counts_once(client: Client) -> None:
    await resent_batches_count_once(client)


async def test_a_free_order_counts_and_an_order_in_another_currency_is_refused_naming_the_field(client: Client) -> None:
    await free_orders_count_and_other_currencies_are_refused(client)


async def test_a_rule_tag_removed_by_hand_stays_removed_until_cleared(client: Client) -> None:
    await a_manual_removal_sticks_until_cleared(client)
