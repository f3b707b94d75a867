"""One request-size limit for every route, enforced before a body is read, parsed or authenticated.

FastAPI reads and parses a JSON body before it runs the route's dependencies (the API key check), so
without this a large body to any route is held in memory, then parsed, before its 401. This pure
ASGI middleware, outside everything else, answers 413 at once when Content-Length is over the limit,
and otherwise counts the chunks as the app pulls them, stopping at the first byte over the limit
(chunked uploads declare no length). Whatever the route, no more than the limit is ever buffered.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from `receive` at the first chunk over the limit; an HTTPException, so the app's own
    handler answers 413 (FastAPI lets HTTPExceptions from body reading through unchanged)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _reason(limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await _refuse(send, self._max)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise BodyTooLarge(self._max)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:  # a streaming route answered before reading on: nothing else can be said now
                raise
            await _refuse(send, self._max)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = orjson.dumps({"detail": _reason(limit)})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # Connection: close, as the unread rest of the body cannot be skipped cheaply.
    await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _reason(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes (TAGSTREAM_INGEST__MAX_BODY_BYTES)"
