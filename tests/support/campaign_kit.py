"""What the campaign integration and end-to-end tests share: the campaign's data (campaign_data.py), an
in-process outbox and an embedded node with the API in front of it."""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from services.embedded.node import EmbeddedNode
from services.notifier.policy import holdout_draw
from services.notifier.ports import Message
from services.runtime.clock import ManualClock
from services.runtime.customers import Profile, RedisCustomers
from services.runtime.settings import Settings
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.campaign_data import CAMPAIGN, NO_PLAYBOOKS, SEGMENTS, audiences, customers, order
from tests.support.embedded_kit import in_process_node
from tests.support.notifier_kit import tag_changed

__all__ = [
    "CAMPAIGN",
    "NO_PLAYBOOKS",
    "SEGMENTS",
    "Outbox",
    "audiences",
    "customers",
    "eligible",
    "embedded_node",
    "order",
    "seed",
]


class Outbox:
    """Every provider channel in process: records each message it accepts."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> int:
        self.sent.append(message)
        return 1

    async def close(self) -> None:
        pass

    def keys(self, channel: str) -> Counter[str]:
        return Counter(m.customer_id for m in self.sent if m.channel == channel)


def embedded_node(
    data: Path, clock: ManualClock, outbox: Outbox, settings: Settings
) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    """A node over `data` with the first API key of `settings` on every request, and no playbooks
    unless `data/playbooks.yaml` holds some."""
    playbooks = data / "playbooks.yaml"
    if not playbooks.exists():
        playbooks.write_text(NO_PLAYBOOKS)
    providers = {"push": outbox, "sms": outbox, "coupon": outbox}
    return in_process_node(settings, data, clock, playbooks=playbooks, providers=providers)


async def seed(redis: aioredis.Redis, prefix: str, ids: list[str], at: datetime) -> None:
    """The read model as the tagger leaves it for these tags, and every customer's phone."""
    projector, store = Projector(redis, key_prefix=prefix), RedisCustomers(redis, prefix=prefix)
    await Marker(redis, key_prefix=prefix).begin({}, at, reason="a new read model")
    seqs: Counter[str] = Counter()
    for tag, members in audiences(ids).items():
        for customer in members:
            seqs[customer] += 1
            await projector.apply(tag_changed(customer, "segment", tag, at, seq=seqs[customer]))
    for customer in ids:
        await store.set_profile(customer, Profile(phone="+86 138 0000 0000", timezone="Asia/Shanghai"))


def eligible(ids: list[str]) -> tuple[set[str], set[str]]:
    groups = audiences(ids)
    audience = (set(groups["churn_risk"]) | set(groups["lapsed"])) - set(groups["staff"])
    held = {c for c in audience if holdout_draw(c, CAMPAIGN["id"]) < 0.1}
    return audience - held, held
