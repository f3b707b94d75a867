"""The ingest service: the HTTP front door for events, tag definitions, manual tags, and reads.

`create_app(settings)` builds a FastAPI app; its lifespan opens the adapters behind the ports
(Kafka publisher and definitions view, Redis reads, audiences and customer store) and closes them.
Another set of adapters (the embedded mode) can be passed as `adapters`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.excerpt import problems
from services.ingest.api import (
    campaigns,
    counts,
    customer_view,
    customers,
    events,
    groups,
    manual,
    ops,
    playbooks,
    preview,
    reads,
)
from services.ingest.audiences import RedisAudiences
from services.ingest.auth import load_keys
from services.ingest.context import ERRORS, Context
from services.ingest.kafka import KafkaDefinitions, KafkaPublisher
from services.ingest.limits import BodyLimit
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import (
    Audiences,
    Definitions,
    MessageLog,
    NotifierAccess,
    Publisher,
    RecordRefused,
    TaggerState,
    TagReads,
)
from services.ingest.tagger_state import KafkaTaggerState
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import Clock, SystemClock
from services.runtime.customers import CustomerStore, RedisCustomers
from services.runtime.playbooks import RedisPlaybooks
from services.runtime.readmodel import ReadModel
from services.runtime.redis import redis_client
from services.runtime.reports import RedisReports
from services.runtime.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Adapters:
    publisher: Publisher
    definitions: Definitions
    reads: TagReads
    audiences: Audiences
    customers: CustomerStore
    tagger: TaggerState
    messages: MessageLog
    campaigns: NotifierAccess | None = None


AdapterFactory = Callable[[Settings, Clock, IngestMetrics], AbstractAsyncContextManager[Adapters]]


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    adapters: AdapterFactory | None = None,
) -> FastAPI:
    """The app for these settings. Nothing connects until the lifespan starts."""
    clock = clock or SystemClock()
    metrics = IngestMetrics(registry or CollectorRegistry())
    keys = load_keys(settings.ingest)
    if not len(keys):
        log.warning("no API keys configured (TAGSTREAM_INGEST__API_KEYS / _FILE): every API request gets 401")
    open_adapters = adapters or kafka_redis_adapters

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_adapters(settings, clock, metrics) as opened:
            app.state.context = Context(
                settings=settings,
                clock=clock,
                metrics=metrics,
                keys=keys,
                publisher=opened.publisher,
                definitions=opened.definitions,
                reads=opened.reads,
                audiences=opened.audiences,
                customers=opened.customers,
                tagger=opened.tagger,
                messages=opened.messages,
                campaigns=opened.campaigns,
            )
            yield

    app = FastAPI(
        title="tagstream ingest",
        version="1",
        summary="Events, tag definitions, manual tags, and reads of customer tags and audiences.",
        lifespan=lifespan,
    )
    for module in (events, groups, preview, manual, reads, counts, customer_view, customers, campaigns, playbooks):
        app.include_router(module.router, responses=ERRORS)
    app.include_router(ops.router)
    app.add_exception_handler(RedisError, _redis_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(RecordRefused, _refused)
    app.add_middleware(BodyLimit, max_bytes=settings.ingest.max_body_bytes)
    app.add_middleware(_RedMetrics, metrics=metrics)  # outermost: counts the 413s too
    _with_event_schemas(app)
    return app


def _with_event_schemas(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = events.add_event_schemas(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


@asynccontextmanager
async def kafka_redis_adapters(settings: Settings, clock: Clock, metrics: IngestMetrics) -> AsyncIterator[Adapters]:
    """The service's adapters: Kafka for writes and definitions, Redis for reads and consent."""
    topics = settings.topics
    publisher = KafkaPublisher(
        settings.kafka,
        settings.ingest,
        metrics,
        topics=[topics.events, topics.tag_commands, topics.tag_definitions],
        compacted=[topics.tag_definitions],
        probe_topic=topics.ingest_probe,
    )
    definitions = KafkaDefinitions(settings.kafka, settings.topics.tag_definitions)
    redis = redis_client(settings.redis)
    prefix = settings.redis.key_prefix
    read_model = ReadModel(redis, key_prefix=prefix)
    ledger = RedisReports(redis, key_prefix=prefix)
    tagger = KafkaTaggerState(settings, clock)
    await publisher.start()
    await definitions.start()
    await tagger.start()
    try:
        yield Adapters(
            publisher=publisher,
            definitions=definitions,
            reads=read_model,
            audiences=RedisAudiences(redis, read_model.keys, settings.ingest.audience_ttl_s, clock),
            customers=RedisCustomers(redis, prefix),
            tagger=tagger,
            messages=read_model,
            campaigns=NotifierAccess(
                store=RedisCampaigns(redis, key_prefix=prefix),
                playbooks=RedisPlaybooks(redis, key_prefix=prefix),
                ledger=ledger,
                reports=ledger,
                activity=read_model,
            ),
        )
    finally:
        with contextlib.suppress(Exception):
            await tagger.stop()
        with contextlib.suppress(Exception):
            await definitions.stop()
        await publisher.stop()
        await redis.aclose()


async def _redis_unavailable(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"the read model is unavailable: {type(error).__name__}"}, status_code=503)


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 body (`loc`, `msg`, `type`, `input`) with the input cut to an excerpt: its default
    echoes the whole offending value back, however large."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": problems(error.errors())}, status_code=422)


async def _refused(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": [f"refused, nothing accepted: {error}"]}, status_code=422)


class _RedMetrics:
    """Requests, errors and duration per route template (not the raw path: ids would explode labels)."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self._metrics.requests.labels(route, method, str(status)).inc()
            self._metrics.duration.labels(route, method).observe(time.perf_counter() - started)
