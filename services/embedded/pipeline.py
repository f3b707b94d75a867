"""The tagger's work in one process: events, commands and definitions in; tag changes out.

Same engine as the Kafka tagger (services/engine), driven by `Replay`'s clock and timers; the
tag changes land in the in-memory read model and go to listeners (the embedded notifier), in order.
Counted into the Kafka tagger's metrics (services/tagger/metrics.py) once `count_into` is called.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime

from schemas.events import CustomerEvent, OrderPaid
from schemas.tags import ChangeSource, TagChanged, TagCommand, TagGroup
from services.embedded.readmodel import MemoryReadModel
from services.engine import CommandRefused, DefinitionError, Engine, RuleBook
from services.engine.aggregates import DEFAULT_HORIZON_DAYS
from services.engine.changes import TagChange
from services.engine.fingerprint import DefinitionChange
from services.engine.zone import UTC_ZONE, DayZone
from services.tagger.metrics import TaggerMetrics
from services.tagger.replay import Replay

Listener = Callable[[list[TagChanged]], Awaitable[object]]

log = logging.getLogger("tagstream.embedded")


class EmbeddedTagger:
    """Call from one asyncio task at a time; each call returns once every listener has the changes."""

    def __init__(
        self,
        groups: Iterable[TagGroup] = (),
        *,
        readmodel: MemoryReadModel | None = None,
        horizon_days: int = DEFAULT_HORIZON_DAYS,
        currency: str | None = None,
        zone: DayZone = UTC_ZONE,
    ) -> None:
        """`currency`: the shop's; the API refuses orders in another one, and so does this (a journal
        written before the shop's currency was set, or edited by hand)."""
        self.readmodel = readmodel or MemoryReadModel()
        self.groups: dict[str, TagGroup] = {group.id: group for group in groups}
        self._horizon_days = horizon_days
        self._zone = zone
        self._pending: list[TagChange] = []
        self.replay = Replay(
            Engine(self._compile(self.groups)), on_change=self._pending.append, on_reject=_refused, currency=currency
        )
        self._listeners: list[Listener] = []
        self.changes = 0
        self.metrics: TaggerMetrics | None = None
        """None: nothing is counted (the demo; the node while it replays its journal)."""
        self._taken_at = 0.0
        """Wall time (epoch s) the current message was taken: where its changes' latency starts."""
        self._woken = 0

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def count_into(self, metrics: TaggerMetrics) -> None:
        """Count every message, change and time-based wake-up from now on, as the Kafka tagger does."""
        self.metrics = metrics
        self._woken = self.replay.summary.timer_wakeups
        metrics.definitions_groups.set(len(self.groups))
        metrics.timer_scheduled.set_function(self._scheduled)

    async def event(self, event: CustomerEvent, now: datetime, source: ChangeSource = "rule") -> list[TagChanged]:
        """One event arriving at `now` (the node's clock, never the event's own date: see arrival.py);
        its changes carry `source`."""
        started = self._take()
        duplicates = self.replay.engine.duplicates
        self.replay.apply_at(event, now, source)
        self._count(event.type, "duplicate" if self.replay.engine.duplicates != duplicates else "applied", started)
        last_order = event.occurred_at if isinstance(event, OrderPaid) else None
        self.readmodel.record_activity_now(event.customer_id, last_order, event.occurred_at)
        return await self._flush()

    async def command(self, command: TagCommand) -> list[TagChanged]:
        """Raises CommandRefused (nothing changes) when the group does not allow manual tagging."""
        started = self._take()
        try:
            self.replay.apply_command(command)
        except CommandRefused:
            self._count("command", "refused", started)
            raise
        self._count("command", "applied", started)
        return await self._flush()

    async def define(self, groups: Mapping[str, TagGroup], now: datetime) -> DefinitionChange:
        """Replace the whole set of tag groups; raises DefinitionError (nothing changes) when invalid."""
        started = self._take()
        try:
            rulebook = self._compile(groups)
        except DefinitionError:
            if self.metrics is not None:
                self.metrics.definitions_errors.inc()
            raise
        change = self.replay.load(rulebook, now)
        self.groups = dict(groups)
        if self.metrics is not None:
            self.metrics.definitions_groups.set(len(rulebook.groups))
            if not change.empty:  # every customer was re-evaluated, before this returns
                self.metrics.backfill_customers.inc(len(self.replay.states))
                self.metrics.backfill_seconds.observe(time.perf_counter() - started)
        await self._flush()
        return change

    async def advance(self, now: datetime) -> list[TagChanged]:
        self._take()
        self.replay.advance_to(now)
        return await self._flush()

    def _compile(self, groups: Mapping[str, TagGroup]) -> RuleBook:
        return RuleBook.compile(list(groups.values()), horizon_days=self._horizon_days, zone=self._zone)

    async def _flush(self) -> list[TagChanged]:
        self._count_wakeups()
        if not self._pending:
            return []
        pending = list(self._pending)
        messages = [change.to_message() for change in pending]
        self._pending.clear()
        self.changes += len(messages)
        outcomes = await self.readmodel.apply_many(messages)
        for listener in self._listeners:
            await listener(messages)
        if self.metrics is not None:
            self.metrics.count_projected(outcomes)
            self.metrics.count_changes(pending, [(self._taken_at, len(pending))], time.time())
        return messages

    def _take(self) -> float:
        self._taken_at = time.time()
        return time.perf_counter()

    def _count(self, kind: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.count_message(kind, outcome, time.perf_counter() - started)

    def _count_wakeups(self) -> None:
        """Time-based re-evaluations fired by `Replay` (between events, or when time is advanced),
        counted like the Kafka tagger's tick messages."""
        woken = self.replay.summary.timer_wakeups
        if self.metrics is not None and woken > self._woken:
            self.metrics.ticks.inc(woken - self._woken)
            self.metrics.messages.labels("tick", "tick").inc(woken - self._woken)
        self._woken = woken

    def _scheduled(self) -> float:
        """Customers with a time-based re-evaluation ahead (read when /metrics is scraped)."""
        return sum(1 for state in self.replay.states.values() if state.next_at is not None)


def _refused(_: int, reason: str) -> None:
    log.error("embedded: skipping an event the shop refuses: %s", reason)
