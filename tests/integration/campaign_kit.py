"""What the campaign integration tests share: the campaign's data (tests/unit/campaign_data.py), an
in-process outbox and an embedded node with the API in front of it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.notifier.ports import Message
from services.runtime.settings import Settings
from services.tagger.engine import ManualClock
from tests.unit.campaign_data import CAMPAIGN, NO_PLAYBOOKS, SEGMENTS, audiences, customers, order

__all__ = ["CAMPAIGN", "NO_PLAYBOOKS", "SEGMENTS", "Outbox", "audiences", "customers", "embedded_node", "order"]


class Outbox:
    """Every provider channel in process: records each message it accepts."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> int:
        self.sent.append(message)
        return 1

    async def close(self) -> None:
        pass

    def keys(self, channel: str) -> Counter[str]:
        return Counter(m.customer_id for m in self.sent if m.channel == channel)


@asynccontextmanager
async def embedded_node(
    data: Path, clock: ManualClock, outbox: Outbox, settings: Settings
) -> AsyncIterator[tuple[EmbeddedNode, httpx.AsyncClient]]:
    """A node over `data` with the first API key of `settings` on every request, and no playbooks
    unless `data/playbooks.yaml` holds some."""
    playbooks = data / "playbooks.yaml"
    if not playbooks.exists():
        playbooks.write_text(NO_PLAYBOOKS)
    providers = {"push": outbox, "sms": outbox, "coupon": outbox}
    node = EmbeddedNode(settings, data, clock, playbooks=playbooks, providers=providers, tick_s=3600)
    app = create_app(settings, clock=clock, adapters=node.adapters())
    key = settings.ingest.api_keys[0].key.get_secret_value()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers) as http:
            yield node, http
