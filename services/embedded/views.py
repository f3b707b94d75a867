"""What the ingest app reads from the embedded node beyond the read model: the tagger's aggregates,
previews of definition changes (services/engine/lookup.py, as the Kafka workers run them), and
each customer's message log."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from schemas.notifications import NotificationOutcome
from schemas.queries import CustomerAggregates, PreviewTally
from schemas.tags import TagGroup
from services.embedded.journal import Entry
from services.embedded.pipeline import EmbeddedTagger
from services.engine.codec import encode
from services.engine.lookup import Preview, aggregates_of
from services.engine.timeutil import to_us
from services.runtime.clock import Clock


class _Node(Protocol):
    clock: Clock
    tagger: EmbeddedTagger

    @property
    def lock(self) -> asyncio.Lock: ...

    def journaled(self, entry: Entry) -> None: ...


class EmbeddedState:
    """The TaggerState port (services/ingest/ports.py) over the node's in-process states."""

    def __init__(self, node: _Node) -> None:
        self._node = node

    async def customer(self, customer_id: str) -> CustomerAggregates | None:
        replay = self._node.tagger.replay
        state = replay.states.get(customer_id)
        if state is None:
            return None
        return aggregates_of(state, replay.engine.rulebook, to_us(self._node.clock.now()))

    async def preview(self, groups: Sequence[TagGroup], sample: int) -> PreviewTally:
        async with self._node.lock:  # no write lands halfway through: one instant, every customer
            replay = self._node.tagger.replay
            # Compiled as the node compiles definitions it applies (no `today`: EmbeddedTagger._compile).
            preview = Preview(replay.engine.rulebook, groups, sample=sample)
            now_us = to_us(self._node.clock.now())
            for state in replay.states.values():
                preview.add(encode(state), now_us)
            return preview.tally()


class MemoryMessages:
    """Each customer's notification decisions, newest first, the last `limit` kept, journaled so a
    restart shows them again (the services keep them in Redis from tagstream.notifications)."""

    KINDS = ("outcome",)

    def __init__(self, node: _Node, limit: int) -> None:
        self._node = node
        self._limit = limit
        self._logs: dict[str, deque[NotificationOutcome]] = {}

    def record(self, outcome: NotificationOutcome) -> None:
        self._node.journaled({"k": "outcome", "o": outcome.model_dump(mode="json")})
        self._keep(outcome)

    async def redo(self, entry: Entry) -> None:
        self._keep(NotificationOutcome.model_validate(entry["o"]))

    async def messages(self, customer_id: str, offset: int, limit: int) -> list[NotificationOutcome]:
        newest_first = list(reversed(self._logs.get(customer_id, ())))
        return newest_first[offset : offset + limit]

    def _keep(self, outcome: NotificationOutcome) -> None:
        log = self._logs.setdefault(outcome.customer_id, deque(maxlen=self._limit))
        log.append(outcome)
