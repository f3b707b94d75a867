"""End-to-end fixtures: a local provider the started nodes send to (Kafka and Redis: tests/support/fixtures.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.netprobe import free_port
from tests.support.provider import LocalProvider


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
