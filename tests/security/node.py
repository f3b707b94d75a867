"""An embedded node (`tagstream run`) in this process, spoken to over httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.runtime.clock import ManualClock
from services.runtime.settings import IngestSettings, Settings

ADMIN = "admin-key-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef"
NOW = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)


def node_settings() -> Settings:
    keys = [
        {"key": ADMIN, "role": "admin", "name": "admin@shop"},
        {"key": OPERATOR, "role": "operator", "name": "ops@shop"},
    ]
    return Settings(ingest=IngestSettings.model_validate({"api_keys": keys}))


@dataclass
class Running:
    node: EmbeddedNode
    http: httpx.AsyncClient

    async def post(self, path: str, body: Any, key: str = ADMIN) -> httpx.Response:
        return await self.http.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


@asynccontextmanager
async def running_node(
    data_dir: Path, *, clock: ManualClock | None = None, skip_bad_journal_lines: bool = False
) -> AsyncIterator[Running]:
    """Started (journal replayed) on entry, stopped on exit; raises JournalError as the start does."""
    settings = node_settings()
    clock = clock or ManualClock(NOW)
    node = EmbeddedNode(settings, data_dir, clock, tick_s=3600, skip_bad_journal_lines=skip_bad_journal_lines)
    app = create_app(settings, clock=clock, adapters=node.adapters())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        yield Running(node, http)


def group(rule: dict[str, Any], group_id: str = "g") -> dict[str, Any]:
    return {
        "id": group_id,
        "name": "测试",
        "mode": "multi",
        "tagging": "both",
        "tags": [{"id": "t", "name": "标签", "rule": rule}],
    }


def count_rule(value: Any, depth: int = 1) -> dict[str, Any]:
    rule: dict[str, Any] = {"match": "all", "conditions": [{"metric": "order_count", "op": "gte", "value": value}]}
    for _ in range(depth - 1):
        rule = {"match": "all", "conditions": [rule]}
    return rule


def order(customer_id: str, event_id: str, amount: str = "99.00", **fields: Any) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": event_id,
        "customer_id": customer_id,
        "occurred_at": "2026-11-23T16:20:00+08:00",
        "order_id": f"o-{event_id}",
        "amount": amount,
        "currency": "CNY",
    } | fields
