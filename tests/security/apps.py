"""The two HTTP apps the security tests attack: the ingest service's and the embedded node's.

Both are `create_app`: the service's with its Kafka/Redis adapters (its lifespan is not started, so
anything answered proves that no adapter was needed to answer it), the node's over a real data
directory with its lifespan running. Requests go through httpx's ASGI transport, which hands the
app the body chunk by chunk as the client produces it, as a server would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.embedded.node import EmbeddedNode
from services.ingest.app import create_app
from services.runtime.clock import SystemClock
from services.runtime.settings import ApiKey, IngestSettings, Settings

ADMIN = "admin-key-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}


def node_settings(**ingest: Any) -> Settings:
    keys = [
        ApiKey(key=ADMIN, role="admin", name="admin@shop"),  # type: ignore[arg-type]
        ApiKey(key=OPERATOR, role="operator", name="ops@shop"),  # type: ignore[arg-type]
    ]
    return Settings(ingest=IngestSettings(api_keys=keys, **ingest))


def service_app(**ingest: Any) -> FastAPI:
    """`tagstream ingest`'s app, lifespan not started."""
    return create_app(node_settings(**ingest), registry=CollectorRegistry())


@asynccontextmanager
async def embedded_node(
    data_dir: Path, *, skip_bad_journal_lines: bool = False, **ingest: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """`tagstream run`'s app over `data_dir`, running, and a client for it."""
    settings = node_settings(**ingest)
    clock = SystemClock()
    node = EmbeddedNode(settings, data_dir, clock, skip_bad_journal_lines=skip_bad_journal_lines)
    app = create_app(settings, clock=clock, registry=CollectorRegistry(), adapters=node.adapters())
    async with app.router.lifespan_context(app), client(app) as http:
        yield http


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tagstream", timeout=60)


def write_routes(app: FastAPI, *, with_body: bool = False) -> list[tuple[str, str]]:
    """(method, path) of every route that may take a body (`with_body`: that declares one), path
    parameters filled in: read from the app's OpenAPI document, which lists every route however
    routers are nested."""
    found = [
        (method.upper(), path.replace("{channel}", "sms").replace("{customer_id}", "c1").replace("{group_id}", "value"))
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if method in ("post", "put", "patch", "delete") and (not with_body or "requestBody" in operation)
    ]
    assert ("POST", "/v1/events") in found, found  # the document is read right
    assert ("PUT", "/v1/customers/c1/profile") in found, found
    return found


async def until_ready(url: str, running: Callable[[], bool], log: Path, timeout: float = 60.0) -> None:
    """Wait for a child `tagstream` process's /readyz; its log in the failure when it dies or never answers."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert running(), log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.2)
