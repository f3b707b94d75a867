"""The sink's one step: a batch of tag changes in, the external system told, the seqs recorded.

Order matters for "nothing lost, repeats harmless": the adapter's ack first, then the applied seqs,
then (the caller, app.py) the Kafka offsets. A crash before the ack re-reads the batch; a crash
after it re-reads changes whose seqs are recorded (skipped) or, when the seqs were not written yet,
applies them again, which marking a tag already marked makes harmless.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis

from schemas.tags import TagChanged, TagGroup
from services.runtime.resilience import Backoff
from services.sync.metrics import SyncMetrics
from services.sync.plan import plan
from services.sync.ports import Adapter, Applied, AppliedSeqs, Unavailable

T = TypeVar("T")


class SyncSink:
    def __init__(
        self,
        adapter: Adapter,
        applied: AppliedSeqs,
        definitions: Callable[[], Mapping[str, TagGroup]],
        metrics: SyncMetrics,
    ) -> None:
        self.adapter = adapter
        self.applied = applied
        self._definitions = definitions
        self.metrics = metrics

    async def handle(self, changes: Sequence[TagChanged]) -> Applied:
        """Apply one batch (in record order); returns what the external system refused for good, for the
        caller to dead-letter. Raises Unavailable: nothing was recorded, the batch must be read again."""
        last = await self.applied.get({change.customer_id for change in changes})
        planned = plan(changes, last, self._definitions())
        result = await self.adapter.apply(planned.outbound) if planned.outbound else Applied()
        await self.applied.advance(planned.done)
        for why, count in planned.skipped.items():
            self.metrics.counted(why, count)
        self.metrics.counted("no_contact", result.no_contact)
        self.metrics.counted("dead_lettered", len(result.rejected))
        self.metrics.counted("applied", len(planned.outbound) - result.no_contact - len(result.rejected))
        return result


class Retry(Exception):
    """A failed request a later attempt may fix; `kind` is its SyncMetrics error kind."""

    def __init__(self, detail: str, kind: str = "retried") -> None:
        super().__init__(detail)
        self.detail = detail
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Retrying:
    """Runs a request up to `backoff.attempts` times, sleeping with full jitter between tries."""

    backoff: Backoff
    metrics: SyncMetrics
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    async def __call__(self, request: Callable[[], Awaitable[T]], what: str) -> T:
        """The request's answer; raises Unavailable (naming `what` and the last failure) after the last try."""
        detail = ""
        for attempt in range(self.backoff.attempts):
            if attempt:
                await self.sleep(self.backoff.delay(attempt - 1, self.rng))
            try:
                return await request()
            except Retry as failure:
                detail = failure.detail
                self.metrics.error(failure.kind)
        self.metrics.error("unavailable")
        raise Unavailable(f"{what}: {detail} (after {self.backoff.attempts} attempts)")


class RedisAppliedSeqs:
    """`ts:c:{<customer>}:sync:<sink>` -> last applied seq, beside the customer's read-model keys.

    Redis may be lost (it is a projection): the sink then only repeats changes after its committed
    offsets, which are harmless, and `tagstream sync resync` restores the seqs with the tags.
    """

    def __init__(self, redis: Redis, *, key_prefix: str, sink: str) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._sink = sink

    def key(self, customer_id: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:sync:{self._sink}"

    async def get(self, customer_ids: Collection[str]) -> dict[str, int]:
        ids = list(customer_ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in ids:
                pipe.get(self.key(customer_id))
            values = await pipe.execute()
        return {customer_id: int(value) for customer_id, value in zip(ids, values, strict=True) if value is not None}

    async def advance(self, seqs: Mapping[str, int]) -> None:
        if not seqs:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, seq in seqs.items():
                pipe.eval(_RAISE, 1, self.key(customer_id), seq)
            await pipe.execute()


# Never lower a seq: a resync and the running sink may both write one customer's.
_RAISE = (
    "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end"
)


class MemoryAppliedSeqs:
    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}

    async def get(self, customer_ids: Collection[str]) -> dict[str, int]:
        return {customer_id: self.seqs[customer_id] for customer_id in customer_ids if customer_id in self.seqs}

    async def advance(self, seqs: Mapping[str, int]) -> None:
        for customer_id, seq in seqs.items():
            self.seqs[customer_id] = max(seq, self.seqs.get(customer_id, 0))
