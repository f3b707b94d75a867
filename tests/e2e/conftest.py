"""End-to-end fixtures: the real Kafka broker and Redis of the integration tests, and a local provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.integration.conftest import kafka_bootstrap, redis_url
from tests.integration.processes import free_port

__all__ = ["kafka_bootstrap", "provider", "redis_url"]


SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"
"""TAGSTREAM_NOTIFIER__SIGNING_SECRET of the nodes these tests start: provider requests are signed."""


class LocalProvider:
    """A stand-in push/SMS/coupon gateway: records each request's idempotency key and body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append({"key": request.headers.get("Idempotency-Key"), "body": await request.json()})
        return web.json_response({"accepted": True})


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    found = LocalProvider()
    app = web.Application()
    app.router.add_post("/send", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found.url = f"http://127.0.0.1:{port}/send"
    yield found
    await runner.cleanup()
