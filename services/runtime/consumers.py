"""What the plain aiokafka services (the notifier, the tag sync sink) share around their consumer loop.

Both commit offsets only once a batch's work is done, read the tag definitions whole before they act,
serve /healthz /readyz /metrics on a small aiohttp site, dead-letter records they cannot read, and
live the same life (`ConsumerService`: start, serve until asked to stop, let the work in flight
finish, close): one implementation of each here, so the two cannot drift apart.
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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis

from schemas.tags import TagGroup
from schemas.topics import DeadLetter
from services.runtime.definitions_feed import DefinitionsFeed
from services.runtime.kafka import client_options

if TYPE_CHECKING:
    from services.runtime.settings import Settings


class Service(Protocol):
    def request_stop(self) -> None: ...

    async def run(self) -> None: ...


Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""(ready, the /readyz body)"""


class ConsumerService:
    """The life of a service around one consumer of tag changes: `start()` (the subclass's: it opens
    the clients below and sets `ready`), serve until `request_stop()` (SIGTERM), then `stop()`.

    Stopping lets the work in flight finish first (the loops in `_tasks` watch `_stopping`), so a
    batch being handled is committed or read again, never half done; then it stops reading the
    definitions, leaves the consumer group, and closes the clients, the web site and Redis last.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.definitions = DefinitionsFeed(settings.kafka, settings.topics.tag_definitions, _read_when_needed)
        """The tag groups, read whole from their compacted topic (the service reads `.groups` when it acts)."""
        self.ready = False
        self.port: int | None = None
        self._stopping = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reading: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self._redis: Redis | None = None

    async def start(self) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Start, then serve until `request_stop()` (SIGTERM), then stop gracefully."""
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop taking work, let the work in flight finish, then close every client. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.ready = False
        self.request_stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reading is not None:
            self._reading.cancel()  # reads until cancelled
            await asyncio.gather(self._reading, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._close_outputs()
        if self._producer is not None:
            await self._producer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redis is not None:
            await self._redis.aclose()

    async def _close_outputs(self) -> None:
        """Close what the service sends to besides Kafka (providers, the external system): after the
        consumer has left, before the producer closes."""

    async def _read_definitions(self, name: str) -> None:
        """Start reading the definitions topic and wait until it has been read to its end."""
        self._reading = asyncio.create_task(self.definitions.run(), name=name)
        await definitions_read(self.definitions, self._reading)

    async def _start_consumer(self, group_id: str, **options: Any) -> AIOKafkaConsumer:
        """Join `group_id` on the tag changes; offsets are committed by hand, once a batch is done."""
        self._consumer = AIOKafkaConsumer(
            self.settings.topics.tag_changes,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **options,
            **client_options(self.settings.kafka),
        )
        await self._consumer.start()
        return self._consumer

    async def _serve_status(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._runner, self.port = await serve_status(host, port, registry, self._readiness)

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.ready, {"ready": self.ready}


def _read_when_needed(groups: dict[str, TagGroup]) -> None:
    """The services read the feed's groups when they act (a batch, a message): nothing to do on a change."""


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
