"""The read model in process: what the Redis projector and `ReadModel` keep, for the embedded mode.

Same rules as the Redis Lua script (services/tagger/projector.py): a change is applied by the
customer's last seq (the next one applied, a repeat or an older one ignored, a jump applied and
counted as a gap), counters move only when the tag set really changed, history is newest first and
capped, activity instants only move forward. tests/integration/test_readmodel_parity.py holds the two
to the same answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas.tags import TagChanged
from services.engine.timeutil import to_us
from services.engine.zone import UTC_ZONE, DayZone
from services.runtime.readmodel import DAILY_KEEP_DAYS, Activity, DailyDeltas, HeldTag, TagCount
from services.tagger.projector import ProjectionOutcome


@dataclass
class _Customer:
    seq: int = 0
    tags: dict[tuple[str, str], HeldTag] = field(default_factory=dict)
    history: list[TagChanged] = field(default_factory=list)
    """Oldest first (the reverse of Redis' list), so appending is cheap."""
    last_order_at: datetime | None = None
    last_seen_at: datetime | None = None


class MemoryReadModel:
    """Projector and reads in one object; one asyncio task at a time (no locking needed)."""

    def __init__(self, *, history_limit: int = 200, zone: DayZone = UTC_ZONE) -> None:
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self._history_limit = history_limit
        self._zone = zone
        self._daily: dict[tuple[str, str], _Daily] = {}
        self._customers: dict[str, _Customer] = {}
        self._members: dict[tuple[str, str], set[str]] = {}
        self._group_members: dict[str, int] = {}
        self._gap_customers: set[str] = set()
        self._gaps = 0

    # -- writes (the projector's side) ---------------------------------------------------------------

    def apply_now(self, change: TagChanged) -> ProjectionOutcome:
        customer = self._customers.setdefault(change.customer_id, _Customer())
        if change.seq == customer.seq:
            return ProjectionOutcome.DUPLICATE
        if change.seq < customer.seq:
            return ProjectionOutcome.STALE
        outcome = ProjectionOutcome.APPLIED
        if change.seq > customer.seq + 1:
            self._gaps += 1
            self._gap_customers.add(change.customer_id)
            outcome = ProjectionOutcome.APPLIED_AFTER_GAP
        customer.seq = change.seq
        key = (change.group_id, change.tag_id)
        if change.change == "added":
            if key not in customer.tags:
                self._members.setdefault(key, set()).add(change.customer_id)
                self._count_day(key, change, 1)
                if not _holds_group(customer, change.group_id):
                    self._group_members[change.group_id] = self._group_members.get(change.group_id, 0) + 1
            customer.tags[key] = HeldTag(change.occurred_at, change.source, change.group_version)
        elif customer.tags.pop(key, None) is not None:
            self._members[key].discard(change.customer_id)
            self._count_day(key, change, -1)
            if not _holds_group(customer, change.group_id):
                remaining = self._group_members[change.group_id] - 1
                if remaining > 0:
                    self._group_members[change.group_id] = remaining
                else:
                    del self._group_members[change.group_id]
        customer.history.append(change)
        if len(customer.history) > self._history_limit:
            del customer.history[: len(customer.history) - self._history_limit]
        return outcome

    def _count_day(self, key: tuple[str, str], change: TagChanged, delta: int) -> None:
        self._daily.setdefault(key, _Daily()).count(self._zone.day(to_us(change.occurred_at)), delta)

    async def apply(self, change: TagChanged) -> ProjectionOutcome:
        return self.apply_now(change)

    async def apply_many(self, changes: Iterable[TagChanged]) -> list[ProjectionOutcome]:
        return [self.apply_now(change) for change in changes]

    def record_activity_now(self, customer_id: str, last_order_at: datetime | None, last_seen_at: datetime) -> None:
        customer = self._customers.setdefault(customer_id, _Customer())
        if customer.last_seen_at is None or last_seen_at > customer.last_seen_at:
            customer.last_seen_at = last_seen_at
        if last_order_at is not None and (customer.last_order_at is None or last_order_at > customer.last_order_at):
            customer.last_order_at = last_order_at

    async def record_activity(self, customer_id: str, last_order_at: datetime | None, last_seen_at: datetime) -> None:
        self.record_activity_now(customer_id, last_order_at, last_seen_at)

    async def record_activity_many(self, activity: Iterable[tuple[str, datetime | None, datetime]]) -> None:
        for customer_id, last_order_at, last_seen_at in activity:
            self.record_activity_now(customer_id, last_order_at, last_seen_at)

    # -- reads (ReadModel's interface) ----------------------------------------------------------------

    async def current_tags(self, customer_id: str) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for group_id, tag_id in self._tags(customer_id):
            grouped.setdefault(group_id, []).append(tag_id)
        return {group_id: sorted(tags) for group_id, tags in sorted(grouped.items())}

    async def held_tags(self, customer_id: str) -> dict[str, dict[str, HeldTag]]:
        grouped: dict[str, dict[str, HeldTag]] = {}
        for (group_id, tag_id), held in self._tags(customer_id).items():
            grouped.setdefault(group_id, {})[tag_id] = held
        return grouped

    async def unavailable(self) -> str | None:
        return None  # in process: rebuilt from the journal before the API serves

    async def history(self, customer_id: str, offset: int = 0, limit: int = 50) -> list[TagChanged]:
        if offset < 0 or limit < 1:
            raise ValueError(f"history needs offset >= 0 and limit >= 1, got offset={offset} limit={limit}")
        customer = self._customers.get(customer_id)
        newest_first = list(reversed(customer.history)) if customer else []
        return newest_first[offset : offset + limit]

    async def last_seq(self, customer_id: str) -> int:
        customer = self._customers.get(customer_id)
        return customer.seq if customer else 0

    async def members(self, group_id: str, tag_id: str, *, batch: int = 1000) -> AsyncIterator[str]:
        for member in list(self._members.get((group_id, tag_id), ())):
            yield member

    def member_ids(self, group_id: str, tag_id: str) -> frozenset[str]:
        return frozenset(self._members.get((group_id, tag_id), ()))

    async def member_count(self, group_id: str, tag_id: str) -> int:
        return len(self._members.get((group_id, tag_id), ()))

    async def tag_counts(self, tags: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TagCount]:
        counts = {}
        for tag in tags:
            daily = self._daily.get(tag, _Daily())
            counts[tag] = TagCount(len(self._members.get(tag, ())), DailyDeltas(daily.base, dict(daily.days)))
        return counts

    async def group_member_count(self, group_id: str) -> int:
        return self._group_members.get(group_id, 0)

    async def activity(self, customer_id: str) -> Activity | None:
        customer = self._customers.get(customer_id)
        if customer is None or customer.last_seen_at is None:
            return None
        return Activity(last_order_at=customer.last_order_at, last_seen_at=customer.last_seen_at)

    async def gaps(self) -> int:
        return self._gaps

    async def customers_with_gaps(self) -> AsyncIterator[str]:
        for customer_id in sorted(self._gap_customers):
            yield customer_id

    def _tags(self, customer_id: str) -> dict[tuple[str, str], HeldTag]:
        customer = self._customers.get(customer_id)
        return customer.tags if customer else {}


@dataclass
class _Daily:
    """A tag's daily counts, folded as the projector's Lua script folds them (projector.py)."""

    base: int = 0
    days: dict[int, int] = field(default_factory=dict)
    folded: bool = False
    """Whether the base field exists (Redis counts it in the hash's length)."""

    def count(self, day: int, delta: int) -> None:
        self.days[day] = self.days.get(day, 0) + delta
        if len(self.days) + self.folded <= 2 * DAILY_KEEP_DAYS + 1:
            return
        oldest_kept = max(self.days) - DAILY_KEEP_DAYS
        old = [day for day in self.days if day < oldest_kept]
        if old:
            self.base += sum(self.days.pop(day) for day in old)
            self.folded = True


def _holds_group(customer: _Customer, group_id: str) -> bool:
    return any(held_group == group_id for held_group, _ in customer.tags)


class ReadModelFacts:
    """The notifier's TagFacts (services/notifier/ports.py) over the in-memory read model."""

    def __init__(self, readmodel: MemoryReadModel) -> None:
        self._readmodel = readmodel

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        if not await self._readmodel.last_seq(customer_id):
            return None  # like the Redis facts: a customer without any tag change is unknown
        return tag_id in (await self._readmodel.current_tags(customer_id)).get(group_id, [])

    async def last_activity(self, customer_id: str) -> datetime | None:
        activity = await self._readmodel.activity(customer_id)
        return None if activity is None else activity.latest
