"""What the plain aiokafka services (the notifier, the tag sync sink) share around their consumer loop.

Both commit offsets only once a batch's work is done, read the tag definitions whole before they act,
serve /healthz /readyz /metrics on a small aiohttp site, and dead-letter records they cannot read:
one implementation of each here, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas.topics import DeadLetter

if TYPE_CHECKING:
    from services.runtime.definitions_feed import DefinitionsFeed


class Service(Protocol):
    def request_stop(self) -> None: ...

    async def run(self) -> None: ...


Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""(ready, the /readyz body)"""


async def rewind(consumer: AIOKafkaConsumer) -> None:
    """Seek every assigned partition back to its committed offset (the beginning when none): the batch
    that failed is read again, nothing after the last commit is skipped."""
    for tp in consumer.assignment():
        with contextlib.suppress(Exception):
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)


async def definitions_read(feed: DefinitionsFeed, reading: asyncio.Task[None]) -> None:
    """Wait until the feed has read the definitions topic to its end; raise the feed's error if it failed."""
    ready = asyncio.create_task(feed.ready.wait())
    await asyncio.wait({ready, reading}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        reading.result()  # the feed failed (the broker is unreachable): raise its error


def dead_letter(
    record: ConsumerRecord[Any, Any],
    reason: str,
    error: Literal["invalid", "refused", "mismatched_key", "failed"],
    at: datetime,
) -> DeadLetter:
    """A DeadLetter keeping the record's bytes exactly (base64) and as text, with why."""
    raw: bytes = record.value or b""
    return DeadLetter(
        reason=reason[:1000],
        error=error,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="replace") if record.key is not None else None,
        original=raw.decode(errors="replace"),
        original_base64=base64.b64encode(raw).decode(),
        failed_at=at,
    )


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def serve_status(
    host: str, port: int, registry: CollectorRegistry, readiness: Readiness
) -> tuple[web.AppRunner, int]:
    """/healthz (alive), /readyz (`readiness`, 503 when not ready) and /metrics; returns the runner (to
    clean up) and the port it listens on (the one asked for, or the one picked for port 0)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, body = await readiness()
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


def run_until_signalled(service: Service) -> None:
    """Run the service in a new event loop until SIGTERM or SIGINT asks it to stop (gracefully)."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, service.request_stop)
        await service.run()

    asyncio.run(serve())
