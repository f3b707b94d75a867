"""`tagstream run --embedded`'s HTTP API in process (the node's adapters in the ingest app): the same
shop semantics as the Kafka services (tests/integration/shop_semantics.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.tagger.engine import SystemClock
from tests.integration.ingest_harness import CARE, VALUE, Client, ingest_settings
from tests.integration.shop_semantics import (
    a_manual_removal_sticks_until_cleared,
    free_orders_count_and_other_currencies_are_refused,
    resent_batches_count_once,
)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = ingest_settings("127.0.0.1:1", "redis://127.0.0.1:1/0", "embedded")  # neither is used
    node = EmbeddedNode(settings, tmp_path, SystemClock())
    app = create_app(settings, registry=CollectorRegistry(), adapters=node.adapters())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedded", timeout=30) as http:
            client = Client(http)
            for group in (VALUE, CARE):
                assert (await client.post("/v1/groups", "admin", json=group)).status_code == 201
            yield client


async def test_a_resent_batch_of_browses_and_orders_counts_once(client: Client) -> None:
    await resent_batches_count_once(client)


async def test_a_free_order_counts_and_an_order_in_another_currency_is_refused_naming_the_field(client: Client) -> None:
    await free_orders_count_and_other_currencies_are_refused(client)


async def test_a_rule_tag_removed_by_hand_stays_removed_until_cleared(client: Client) -> None:
    await a_manual_removal_sticks_until_cleared(client)
