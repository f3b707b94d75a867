"""The notifier service: `build_app(settings)` runs the notifier (composition.py) over Kafka and Redis, with a web port.

Why aiokafka and not faust: the notifier keeps no per-partition state (the scheduler and ledger are
in Redis, shared by every replica), so a plain consumer group that commits after each batch is
durably scheduled is all it needs, without faust's tables, changelogs and worker runtime.

Three loops run until stop: the consumer (tag changes -> scheduled steps, then commit), the
scheduler loop (claim due steps, decide, deliver) and the playbook reloader; aiohttp.web serves
/healthz, /readyz and /metrics. Stopping lets in-flight sends finish before anything closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis

from schemas.notifications import NotificationOutcome
from schemas.tags import TagChanged
from services.notifier.campaigns import CampaignRunner
from services.notifier.composition import NotifierComposition, NotifierPorts
from services.notifier.core import Notifier
from services.notifier.durability import VolatileRedis, require_durable
from services.notifier.ports import Provider
from services.notifier.redis_store import RedisLedger, RedisScheduler, RedisTagFacts
from services.runtime.campaigns import RedisCampaigns
from services.runtime.clock import Clock, SystemClock
from services.runtime.consumers import ConsumerService, dead_letter, pause, rewind
from services.runtime.customers import RedisCustomers
from services.runtime.kafka import ensure_topics, producer_options
from services.runtime.playbooks import RedisPlaybooks
from services.runtime.redis import redis_client
from services.runtime.settings import Settings

log = logging.getLogger("tagstream.notifier")


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    providers: Mapping[str, Provider] | None = None,
    registry: CollectorRegistry | None = None,
) -> NotifierApp:
    """Loads the playbooks (raises PlaybookError when they are bad); opens no connection yet."""
    return NotifierApp(settings, clock or SystemClock(), providers, registry or CollectorRegistry())


class KafkaOutcomes:
    """Outcomes to `tagstream.notifications`, failures also to its DLQ; keyed by customer id."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, dlq: str) -> None:
        self._producer = producer
        self._topic = topic
        self._dlq = dlq

    async def emit(self, outcome: NotificationOutcome) -> None:
        await self._send(self._topic, outcome)

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        await self._send(self._dlq, outcome)

    async def _send(self, topic: str, outcome: NotificationOutcome) -> None:
        await self._producer.send_and_wait(
            topic, key=outcome.customer_id.encode(), value=outcome.model_dump_json().encode()
        )


class NotifierApp(ConsumerService):
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        providers: Mapping[str, Provider] | None,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(settings)
        self.clock = clock
        self.composition = NotifierComposition(settings, registry, providers=providers)
        self.metrics = self.composition.metrics
        self.playbooks = self.composition.playbooks
        self._wake = asyncio.Event()
        self.notifier: Notifier | None = None
        self.campaigns: CampaignRunner | None = None

    async def start(self) -> None:
        settings, topics = self.settings, self.settings.topics
        await ensure_topics(
            settings.kafka,
            [topics.tag_changes, topics.notifications, topics.notifications_dlq, topics.tag_definitions],
            compacted=[topics.tag_definitions],
            # tag changes as the tagger creates them, whichever service starts first; failed sends kept
            # for repair, like every dead-letter topic
            kept_forever=[topics.tag_changes, topics.notifications_dlq],
        )
        self._redis = redis_client(settings.redis)
        await self._check_durable(self._redis)
        prefix = settings.redis.key_prefix
        self._producer = AIOKafkaProducer(**producer_options(settings.kafka), linger_ms=5)
        await self._producer.start()
        ports = NotifierPorts(
            scheduler=RedisScheduler(self._redis, key_prefix=prefix),
            ledger=RedisLedger(self._redis, key_prefix=prefix),
            customers=RedisCustomers(self._redis, prefix=prefix),
            tags=RedisTagFacts(self._redis, key_prefix=prefix),
            outcomes=KafkaOutcomes(self._producer, topics.notifications, topics.notifications_dlq),
            definitions=lambda: self.definitions.groups,
            campaigns=RedisCampaigns(self._redis, key_prefix=prefix),
        )
        self.notifier = self.composition.notifier(ports, self.clock)
        self.campaigns = self.composition.campaign_runner(ports, self.clock)
        await self.playbooks.follow(RedisPlaybooks(self._redis, key_prefix=prefix))
        await self._start_consumer(settings.notifier.group_id)
        await self._serve_status(settings.notifier.web_host, settings.notifier.web_port, self.metrics.registry)
        # before any send: a message sent earlier would name tags by their ids
        await self._read_definitions("notifier-definitions")
        self._tasks = [
            asyncio.create_task(self._consume(), name="notifier-consume"),
            asyncio.create_task(self._deliver(), name="notifier-deliver"),
            asyncio.create_task(self._fan_out(), name="notifier-campaigns"),
            asyncio.create_task(self.composition.watch_playbooks(self._stopping), name="notifier-reload"),
        ]
        self.ready = True
        log.info("notifier started: %d playbooks, web on port %s", len(self.playbooks.current.playbooks), self.port)

    def request_stop(self) -> None:
        super().request_stop()
        self._wake.set()

    async def _check_durable(self, redis: Redis) -> None:
        """Refuse a Redis that would lose pending steps on a restart (durability.py), unless allowed."""
        if self.settings.notifier.allow_volatile_redis:
            log.warning("allow_volatile_redis: a Redis restart without persistence loses pending steps")
            return
        try:
            log.info("Redis persistence: %s", await require_durable(redis))
        except VolatileRedis:
            await redis.aclose()
            raise

    async def _close_outputs(self) -> None:
        await self.composition.close()

    async def _consume(self) -> None:
        assert self._consumer is not None
        assert self.notifier is not None
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=300, max_records=500)
                changes: list[TagChanged] = []
                for records in batch.values():
                    for record in records:
                        change = await self._decode(record)
                        if change is not None:
                            changes.append(change)
                if changes:
                    await self.notifier.on_changes(changes)
                    self._wake.set()
                if batch:
                    await self._consumer.commit()  # only now: every step is durably scheduled
            except Exception:
                log.exception("consuming tag changes failed; re-reading from the last commit")
                await rewind(self._consumer)
                await pause(self._stopping, 1.0)

    async def _decode(self, record: ConsumerRecord[Any, Any]) -> TagChanged | None:
        try:
            return TagChanged.model_validate_json(record.value or b"")
        except ValidationError as error:
            reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
            await self._dead_letter_record(record, reason[:1000])
            return None

    async def _dead_letter_record(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        assert self._producer is not None
        self.metrics.invalid_changes.inc()
        letter = dead_letter(record, f"not a TagChanged: {reason}", "invalid", self.clock.now())
        await self._producer.send_and_wait(
            self.settings.topics.notifications_dlq, key=record.key, value=letter.model_dump_json().encode()
        )

    async def _deliver(self) -> None:
        assert self.notifier is not None
        interval = self.settings.notifier.poll_interval_s
        last_gauges = 0.0
        while not self._stopping.is_set():
            claimed = 0
            try:
                claimed = await self.notifier.run_due()  # returns only when its sends are done
                if time.monotonic() - last_gauges > 1.0:
                    last_gauges = time.monotonic()
                    await self.notifier.update_backlog()
            except Exception:
                log.exception("the scheduler loop failed; retrying")
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)

    async def _fan_out(self) -> None:
        """Start due campaigns and schedule their steps at the configured pace (campaigns.py)."""
        assert self.campaigns is not None
        while not self._stopping.is_set():
            try:
                if await self.campaigns.run():
                    self._wake.set()
            except Exception:
                log.exception("the campaign loop failed; retrying")
            await pause(self._stopping, self.settings.notifier.campaign_interval_s)

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        body: dict[str, Any] = {"ready": self.ready, "playbooks": len(self.playbooks.current.playbooks)}
        if self.ready and self._redis is not None:
            try:
                await self._redis.ping()
            except Exception as error:
                body.update(ready=False, redis=type(error).__name__)
        return body["ready"], body
