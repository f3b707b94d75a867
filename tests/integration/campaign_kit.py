"""What the campaign tests share: a shop's tag groups, the campaign, and its customers."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.notifier.ports import Message
from services.runtime.settings import Settings
from services.tagger.engine import ManualClock

SHANGHAI = ZoneInfo("Asia/Shanghai")

SEGMENTS: dict[str, Any] = {
    "id": "segment",
    "name": "运营分群",
    "mode": "multi",
    "tagging": "manual",
    "tags": [
        {"id": "churn_risk", "name": "可能流失"},
        {"id": "lapsed", "name": "沉睡"},
        {"id": "staff", "name": "员工"},
    ],
}

NO_PLAYBOOKS = "templates: {}\nplaybooks: []\n"

CAMPAIGN: dict[str, Any] = {
    "id": "winback-dec",
    "audience": {"any_of": ["segment/churn_risk", "segment/lapsed"], "none_of": ["segment/staff"]},
    "templates": {"miss-you": "${name|您好}，好久不见！", "last-call": "${name|您好}，优惠券即将过期"},
    "holdout": "10%",
    "steps": [
        {"channel": "coupon", "coupon": "WB-30"},
        {"channel": "push", "template": "miss-you"},
        {"channel": "sms", "template": "last-call", "delay": "3d", "cancel_if": ["customer_returned"]},
    ],
}


def customers(count: int) -> list[str]:
    return [f"沪-{n:05d}" for n in range(count)]


def audiences(ids: list[str]) -> dict[str, list[str]]:
    """Two overlapping audiences (a third of the customers hold both) and a few staff excluded."""
    third = len(ids) // 3
    return {
        "churn_risk": ids[: 2 * third],
        "lapsed": ids[third:],
        "staff": ids[:: max(1, len(ids) // 10)][:5],
    }


def order(customer: str, when: datetime, number: int = 0) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": f"o-{customer}-{number}",
        "customer_id": customer,
        "occurred_at": when.astimezone(SHANGHAI).isoformat(),
        "order_id": f"o-{customer}-{number}",
        "amount": "0",  # a free order is an order: the customer came back
        "currency": "CNY",
    }


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
