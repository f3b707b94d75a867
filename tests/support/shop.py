"""A whole shop for fault runs: the services stack of the end-to-end tests (tagger with projector,
ingest, notifier) on the real broker and a Redis, a local push provider whose answers a test can
turn to 500, the tag definitions of the tagger's crash tests and push playbooks on `value/high`
and `lifecycle/first` (most customers who order get one)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.runtime.definitions_feed import definition_record
from services.runtime.kafka import ensure_topics
from services.runtime.settings import KafkaSettings
from tests.support.audit import Findings, System, audit
from tests.support.kafka_io import produce
from tests.support.notifier_kit import ProviderServer
from tests.support.processes import ServiceProcess, wait_caught_up
from tests.support.stack import OPERATOR, Stack, services_stack
from tests.support.tag_streams import definitions
from tests.support.traffic import HttpLoad

PLAYBOOKS = """
templates:
  thanks: "Thank you ${name|for shopping with us}!"
  first-order: "Thanks for your first order, ${name|friend}"
playbooks:
  - id: big-spender
    trigger: {group: value, tag: high, on: added}
    steps:
      - {channel: push, template: thanks}
  - id: first-order
    trigger: {group: lifecycle, tag: first, on: added}
    steps:
      - {channel: push, template: first-order}
"""


@dataclass
class Shop:
    stack: Stack
    provider: ProviderServer
    system: System
    load: HttpLoad
    partitions: int

    @property
    def services(self) -> list[ServiceProcess]:
        return [self.stack.tagger, self.stack.ingest, self.stack.notifier]

    def deliveries(self) -> Counter[str]:
        """Idempotency key -> requests the provider answered 2xx."""
        return Counter(request.key for request in self.provider.requests if request.status < 300)

    async def caught_up(self, timeout: float = 180.0) -> None:
        """Until the tagger has committed every event on the topic."""
        await wait_caught_up(
            self.system.bootstrap, self.stack.prefix, self.system.topics["events"], self.partitions, timeout=timeout
        )

    async def audit(self, settle_s: float = 90.0) -> Findings:
        return await audit(self.system, self.load.accepted, self.deliveries, settle_s=settle_s)


async def open_shop(
    *,
    name: str,
    bootstrap: str,
    redis_url: str,
    workdir: Path,
    partitions: int = 4,
    replication_factor: int = 1,
    groups: Sequence[Any] | None = None,
    **tagger: str,
) -> Shop:
    """Everything created and started, ready; `groups` (default: the crash tests' definitions) published
    first. Close with `close_shop` whatever happens."""
    provider = await ProviderServer().start()
    stack = services_stack(
        name=name,
        kafka=bootstrap,
        redis_url=redis_url,
        workdir=workdir,
        partitions=partitions,
        playbooks=PLAYBOOKS,
        push_url=provider.url("push"),
        replication_factor=replication_factor,
        tagger_settings=tagger,
    )
    groups = list(definitions() if groups is None else groups)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, partitions=partitions, replication_factor=replication_factor)
    await ensure_topics(kafka, [stack.topics["tag_definitions"]], compacted=[stack.topics["tag_definitions"]])
    await produce(bootstrap, stack.topics["tag_definitions"], [(*definition_record(g), None) for g in groups])
    system = System(bootstrap, stack.topics, redis_url, f"{stack.prefix}:", groups, PLAYBOOKS)
    shop = Shop(stack, provider, system, HttpLoad(stack.ingest.url, OPERATOR), partitions)
    for service in shop.services:
        service.start()
    try:
        await asyncio.gather(*(service.wait_ready() for service in shop.services))
    except BaseException:
        await close_shop(shop)
        raise
    return shop


async def close_shop(shop: Shop) -> None:
    for service in reversed(shop.services):
        await asyncio.to_thread(service.stop)
    await shop.load.close()
    await shop.provider.stop()
