"""An embedded node served in-process: the real `EmbeddedNode` and ingest app, reached over an ASGI
transport (no socket), on a manual clock. Nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.notifier.ports import Provider
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings


@asynccontextmanager
async def in_process_node(
    settings: Settings,
    data: Path,
    clock: ManualClock,
    *,
    playbooks: Path | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> AsyncIterator[tuple[EmbeddedNode, httpx.AsyncClient]]:
    """A node over `data` whose client sends the first API key of `settings` on every request; timers
    run only when the test calls `node.tick()` (the node's own tick is an hour)."""
    node = EmbeddedNode(settings, data, clock, playbooks=playbooks, providers=providers, tick_s=3600)
    app = create_app(settings, clock=clock, adapters=node.adapters())
    key = settings.ingest.api_keys[0].key.get_secret_value()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=headers) as http:
            yield node, http


async def held_tags(http: httpx.AsyncClient, customer: str) -> set[str]:
    """The customer's tags as `group/tag`, from GET /v1/customers/{id}/tags."""
    answer = (await http.get(f"/v1/customers/{customer}/tags")).json()
    return {f"{group['id']}/{tag['id']}" for group in answer["groups"] for tag in group["tags"]}
