"""`tagstream projector`: the read model's projection (projection.py) in a process of its own.

A tagger worker projects in its own process by default (`TAGSTREAM_TAGGER__PROJECTOR`). Applying a
tag change to Redis costs the client about as much CPU as the tagger spends making it, so at a large
shop's full rate a worker that also projects falls behind on both; run apart, the projection has a
core of its own and scales on its own (the chart's `projector.enabled`, which turns the workers'
projection off). Both can run at once: they share one consumer group and split the partitions, and
every batch lands in Redis with its position, atomically, so whoever applies a batch twice applies
it once (docs/readmodel.md).

Stopping cancels the batch in flight: nothing of it is half applied (one script per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.runtime.clock import Clock, SystemClock
from services.runtime.consumers import serve_status
from services.runtime.kafka import ensure_topics
from services.runtime.readmodel import ReadModelStatus
from services.runtime.redis import redis_client
from services.runtime.settings import Settings
from services.tagger.metrics import ReadModelMetrics
from services.tagger.projection import workers_projection

log = logging.getLogger("tagstream.projector")

RESTART_PAUSE_S = 5.0
"""After the projection failed (Redis or Kafka away): the pause before it starts again."""


def build_projector(
    settings: Settings, *, clock: Clock | None = None, registry: CollectorRegistry | None = None
) -> ProjectorService:
    """Opens no connection yet (`run` does)."""
    return ProjectorService(settings, clock or SystemClock(), registry or CollectorRegistry())


class ProjectorService:
    def __init__(self, settings: Settings, clock: Clock, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = ReadModelMetrics(registry)
        self.port: int | None = None
        self.ready = False
        self.status: ReadModelStatus | None = None
        """The read model's state as the projection last saw it (the /readyz body)."""
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Project until `request_stop()` (SIGTERM); restart the projection after a failure."""
        settings, topics = self.settings, self.settings.topics
        await ensure_topics(
            settings.kafka,
            [topics.tag_changes, topics.events, topics.notifications],
            kept_forever=[topics.tag_changes],
        )
        self._runner, self.port = await serve_status(
            settings.tagger.web_host, settings.tagger.projector_web_port, self.metrics.registry, self._readiness
        )
        log.info("projector started, web on port %s", self.port)
        # What start-up built (modules, pydantic's validators) lives as long as the process: frozen,
        # it is no longer walked by every full collection, which validating a batch's changes
        # triggers (benchmarks.projector: ~8 µs of a change's CPU).
        gc.collect()
        gc.freeze()
        try:
            while not self._stopping.is_set():
                failed = await self._project_until_stopped()
                if failed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), RESTART_PAUSE_S)
        finally:
            self.ready = False
            await self._runner.cleanup()

    async def _project_until_stopped(self) -> bool:
        """One projection, until it fails (True) or the service stops (False)."""
        redis = redis_client(self.settings.redis)
        projection = workers_projection(self.settings, redis, self.clock, self.metrics, self._progress)
        running = asyncio.create_task(projection.run(), name="projection")
        stopping = asyncio.create_task(self._stopping.wait())
        self.ready = True
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                error = running.exception()
                log.error("the read model's projection failed (%r); restarting it in %.0f s", error, RESTART_PAUSE_S)
                self.ready = False
                return True
            return False
        finally:
            for task in (running, stopping):
                task.cancel()
            await asyncio.gather(running, stopping, return_exceptions=True)
            await redis.aclose()

    def _progress(self, status: ReadModelStatus) -> None:
        self.status = status

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"ready": self.ready}
        if self.status is not None:
            body["read_model"] = self.status.state
        return self.ready, body
