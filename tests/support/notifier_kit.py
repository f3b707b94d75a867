"""What the notifier's integration tests share: a real HTTP provider server, settings, tag changes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from schemas.tags import Reason, TagChanged
from schemas.topics import TopicNames
from services.runtime.settings import KafkaSettings, NotifierSettings, RedisSettings, Settings
from tests.support.netprobe import free_port

SIGNING_SECRET = "notifier-test-signing-secret-0123456789"


@dataclass
class Request:
    channel: str
    key: str
    body: dict[str, Any]
    status: int
    authorization: str | None = None


@dataclass
class ProviderServer:
    """push/SMS/coupon providers on one local port: POST /push, /sms, /coupon; records every request.

    `failing[channel] = 500` makes a channel answer 500. `delivered()` counts distinct Idempotency-Keys
    that were answered 2xx: what a deduplicating provider would deliver.
    """

    failing: dict[str, int] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    """channel -> seconds to wait before answering"""
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> ProviderServer:
        app = web.Application()
        app.router.add_post("/{channel}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{channel}"

    async def _handle(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        status = self.failing.get(channel, 200)
        body = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        self.requests.append(Request(channel, key, body, status, request.headers.get("Authorization")))
        if channel in self.slow:
            await asyncio.sleep(self.slow[channel])
        return web.json_response({"ok": status < 300}, status=status)

    def delivered(self, channel: str | None = None) -> set[str]:
        return {r.key for r in self.requests if r.status < 300 and (channel is None or r.channel == channel)}

    def of(self, channel: str) -> list[Request]:
        return [r for r in self.requests if r.channel == channel]

    def duplicates(self) -> int:
        """Requests beyond the first 2xx one per key: redeliveries a provider must deduplicate."""
        counts = Counter(r.key for r in self.requests if r.status < 300)
        return sum(count - 1 for count in counts.values())


def unique_topics() -> TopicNames:
    run = uuid.uuid4().hex[:8]
    return TopicNames(
        tag_changes=f"nt-{run}.tag-changes",
        notifications=f"nt-{run}.notifications",
        notifications_dlq=f"nt-{run}.notifications.dlq",
    )


def notifier_settings(
    bootstrap: str,
    redis_url: str,
    playbooks: Path,
    providers: ProviderServer,
    *,
    topics: TopicNames | None = None,
    prefix: str | None = None,
    **notifier: Any,
) -> Settings:
    options: dict[str, Any] = {
        "playbooks_file": playbooks,
        "group_id": f"nt-{uuid.uuid4().hex[:8]}",
        "web_host": "127.0.0.1",
        "web_port": free_port(),
        "push_url": providers.url("push"),
        "sms_url": providers.url("sms"),
        "coupon_url": providers.url("coupon"),
        "signing_secret": SIGNING_SECRET,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "provider_attempts": 3,
        "poll_interval_s": 0.05,
        "reload_interval_s": 0.1,
        "caps": (),
        "quiet_hours": None,
    }
    options.update(notifier)
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=2, replication_factor=1),
        redis=RedisSettings(url=redis_url, key_prefix=prefix or f"nt-{uuid.uuid4().hex[:8]}:"),
        topics=topics or unique_topics(),
        notifier=NotifierSettings(**options),
    )


def tag_changed(customer: str, group: str, tag: str, at: datetime, seq: int = 1, change: str = "added") -> TagChanged:
    return TagChanged(
        customer_id=customer,
        group_id=group,
        tag_id=tag,
        change=change,
        source="rule",
        reason=Reason(summary=f"{change} {group}/{tag}"),
        group_version=1,
        occurred_at=at,
        seq=seq,
    )


def record(change: TagChanged) -> tuple[bytes, bytes, None]:
    return change.customer_id.encode(), change.model_dump_json().encode(), None


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
