"""A stand-in push/SMS/coupon gateway on loopback, and the signing secret of the nodes that call it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

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
