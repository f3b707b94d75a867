"""Shop traffic for fault runs: live events (dated within the last hour, so playbooks fire) POSTed to
ingest in batches at a steady rate, remembering which events ingest acknowledged."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import httpx
import orjson

from benchmarks.workload import START
from benchmarks.workload import events as generated_events

SPAN = timedelta(hours=1)
"""Sessions start within an hour ending an hour before now: a session lasts at most ~41 minutes, so
no event is dated ahead of the clock, and none is old enough to count as history (1 day)."""


def live_events(count: int, customers: int, *, seed: int, now: datetime, prefix: str = "") -> Iterator[bytes]:
    """The benchmark workload (sessions, refunds, ~1% late, ~2% re-sent) squeezed into the hours before
    `now`; ids get `prefix` so runs sharing a topic never collide."""
    shift = now - 2 * SPAN - START
    for generated in generated_events(count, customers, days=SPAN / timedelta(days=1), seed=seed):
        event = dict(generated)  # a re-sent duplicate is the same dict again: shift each copy once
        at = datetime.fromisoformat(event["occurred_at"]) + shift
        event["occurred_at"] = at.isoformat()
        event["event_id"] = prefix + event["event_id"]
        event["customer_id"] = prefix + event["customer_id"]
        if "order_id" in event:
            event["order_id"] = prefix + event["order_id"]
        yield orjson.dumps(event)


class HttpLoad:
    """POST /v1/events, open loop: a batch is due every 1/rate seconds whatever earlier ones take
    (at most `in_flight` outstanding, as a client's connection pool would hold)."""

    def __init__(
        self, url: str, api_key: str, *, batch: int = 10, in_flight: int = 32, timeout_s: float = 15.0
    ) -> None:
        self.batch = batch
        self.accepted: set[str] = set()
        self.refused: set[str] = set()
        """events of batches answered otherwise: not acknowledged, maybe written (a 503 may have been)"""
        self.statuses: Counter[int] = Counter()
        """status -> batches; 0: no answer (connection refused, timeout)"""
        self._slots = asyncio.Semaphore(in_flight)
        self._client = httpx.AsyncClient(
            base_url=url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=in_flight),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self, lines: Sequence[bytes], batches_per_second: float) -> None:
        started = time.monotonic()
        posts = []
        for number, start in enumerate(range(0, len(lines), self.batch)):
            ahead = started + number / batches_per_second - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await self._slots.acquire()
            posts.append(asyncio.create_task(self._post_released(lines[start : start + self.batch])))
        await asyncio.gather(*posts)

    async def post(self, lines: Sequence[bytes]) -> int:
        """One batch; its status (0: no answer)."""
        ids = [orjson.loads(line)["event_id"] for line in lines]
        try:
            response = await self._client.post("/v1/events", content=b"[" + b",".join(lines) + b"]")
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        self.statuses[status] += 1
        (self.accepted if 200 <= status < 300 else self.refused).update(ids)
        return status

    async def _post_released(self, lines: Sequence[bytes]) -> None:
        try:
            await self.post(lines)
        finally:
            self._slots.release()

    def describe(self) -> str:
        answers = ", ".join(f"{status or 'no answer'}: {count}" for status, count in sorted(self.statuses.items()))
        return f"{len(self.accepted)} events acknowledged, batches by status {{{answers}}}"
