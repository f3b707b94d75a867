"""The tagger's work in one process: events, commands and definitions in; tag changes out.

Same engine as the Kafka tagger (services/tagger/engine), driven by `Replay`'s clock and timers; the
tag changes land in the in-memory read model and go to listeners (the embedded notifier), in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime

from schemas.events import CustomerEvent, OrderPaid
from schemas.tags import TagChanged, TagCommand, TagGroup
from services.embedded.readmodel import MemoryReadModel
from services.tagger.engine import Engine, RuleBook
from services.tagger.engine.aggregates import DEFAULT_HORIZON_DAYS
from services.tagger.engine.changes import Change
from services.tagger.engine.fingerprint import DefinitionChange
from services.tagger.engine.zone import UTC_ZONE, DayZone
from services.tagger.replay import Replay

Listener = Callable[[list[TagChanged]], Awaitable[object]]


class EmbeddedTagger:
    """Call from one asyncio task at a time; each call returns once every listener has the changes."""

    def __init__(
        self,
        groups: Iterable[TagGroup] = (),
        *,
        readmodel: MemoryReadModel | None = None,
        horizon_days: int = DEFAULT_HORIZON_DAYS,
        zone: DayZone = UTC_ZONE,
    ) -> None:
        self.readmodel = readmodel or MemoryReadModel()
        self.groups: dict[str, TagGroup] = {group.id: group for group in groups}
        self._horizon_days = horizon_days
        self._zone = zone
        self._pending: list[Change] = []
        self.replay = Replay(Engine(self._compile(self.groups)), on_change=self._pending.append)
        self._listeners: list[Listener] = []
        self.changes = 0

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def event(self, event: CustomerEvent) -> list[TagChanged]:
        self.replay.apply(event)
        last_order = event.occurred_at if isinstance(event, OrderPaid) else None
        self.readmodel.record_activity_now(event.customer_id, last_order, event.occurred_at)
        return await self._flush()

    async def command(self, command: TagCommand) -> list[TagChanged]:
        """Raises CommandRefused (nothing changes) when the group does not allow manual tagging."""
        self.replay.apply_command(command)
        return await self._flush()

    async def define(self, groups: Mapping[str, TagGroup], now: datetime) -> DefinitionChange:
        """Replace the whole set of tag groups; raises DefinitionError (nothing changes) when invalid."""
        rulebook = self._compile(groups)
        change = self.replay.load(rulebook, now)
        self.groups = dict(groups)
        await self._flush()
        return change

    async def advance(self, now: datetime) -> list[TagChanged]:
        self.replay.advance_to(now)
        return await self._flush()

    def _compile(self, groups: Mapping[str, TagGroup]) -> RuleBook:
        return RuleBook.compile(list(groups.values()), horizon_days=self._horizon_days, zone=self._zone)

    async def _flush(self) -> list[TagChanged]:
        if not self._pending:
            return []
        messages = [change.to_message() for change in self._pending]
        self._pending.clear()
        self.changes += len(messages)
        await self.readmodel.apply_many(messages)
        for listener in self._listeners:
            await listener(messages)
        return messages
