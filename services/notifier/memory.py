"""In-memory stores behind the notifier's ports: real stores for one process (embedded mode, unit tests)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.notifications import NotificationOutcome
from services.notifier.policy import ScheduledStep, SendRecord
from services.notifier.ports import Claim


@dataclass(slots=True)
class _Entry:
    job: ScheduledStep
    score: datetime
    token: str | None = None
    claims: int = 0


class MemoryScheduler:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    async def schedule(self, jobs: Sequence[ScheduledStep]) -> set[str]:
        new = set()
        for job in jobs:
            if job.key not in self._entries:
                self._entries[job.key] = _Entry(job, job.due_at)
                new.add(job.key)
        return new

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        due = sorted((e for e in self._entries.values() if e.score <= now), key=lambda e: (e.score, e.job.key))
        claims = []
        for entry in due[:limit]:
            entry.score = now + lease
            entry.token = uuid.uuid4().hex
            entry.claims += 1
            claims.append(Claim(entry.job, entry.token, entry.claims))
        return claims

    async def complete(self, claim: Claim) -> bool:
        entry = self._entries.get(claim.job.key)
        if entry is None or entry.token != claim.token:
            return False
        del self._entries[claim.job.key]
        return True

    async def defer(self, claim: Claim, until: datetime) -> bool:
        entry = self._entries.get(claim.job.key)
        if entry is None or entry.token != claim.token:
            return False
        entry.score, entry.token, entry.claims = until, None, 0
        return True

    async def backlog(self, now: datetime) -> tuple[int, datetime | None]:
        due = [entry.score for entry in self._entries.values() if entry.score <= now]
        return len(due), min(due, default=None)

    def pending(self) -> list[ScheduledStep]:
        """Every stored job, in due order (for the embedded mode's status and tests)."""
        return [e.job for e in sorted(self._entries.values(), key=lambda e: e.score)]


class MemoryLedger:
    def __init__(self) -> None:
        self._decided: dict[str, tuple[str, datetime | None]] = {}
        self._sent: dict[tuple[str, str], list[SendRecord]] = {}
        self._coupons: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._locks: dict[tuple[str, str], str] = {}

    async def decided(self, key: str) -> bool:
        return key in self._decided

    async def history(self, customer_id: str, channel: str, since: datetime) -> list[SendRecord]:
        return [record for record in self._sent.get((customer_id, channel), []) if record.at > since]

    async def coupon_holder(self, customer_id: str, coupon: str, now: datetime) -> str | None:
        held = self._coupons.get((customer_id, coupon))
        return held[0] if held is not None and held[1] > now else None

    async def reserve_coupon(self, customer_id: str, coupon: str, key: str, now: datetime, until: datetime) -> str:
        holder = await self.coupon_holder(customer_id, coupon, now)
        if holder is None:
            self._coupons[(customer_id, coupon)] = (key, until)
            return key
        return holder

    async def release_coupon(self, customer_id: str, coupon: str, key: str) -> None:
        held = self._coupons.get((customer_id, coupon))
        if held is not None and held[0] == key:
            del self._coupons[(customer_id, coupon)]

    async def lock(self, customer_id: str, channel: str, holder: str, ttl: timedelta) -> bool:
        # one process: holders always unlock (in a finally), so no expiry is needed
        return self._locks.setdefault((customer_id, channel), holder) == holder

    async def unlock(self, customer_id: str, channel: str, holder: str) -> None:
        if self._locks.get((customer_id, channel)) == holder:
            del self._locks[(customer_id, channel)]

    async def record(self, key: str, outcome: str, sent: SendRecord | None, customer_id: str, keep: timedelta) -> None:
        self._decided[key] = (outcome, None)
        if sent is not None:
            self._sent.setdefault((customer_id, sent.channel), []).append(sent)


class MemoryTagFacts:
    """Tag holdings and activity set directly (embedded mode: fed by the engine's changes)."""

    def __init__(self) -> None:
        self._tags: dict[str, set[tuple[str, str]]] = {}
        self._activity: dict[str, datetime] = {}

    def apply(self, customer_id: str, group_id: str, tag_id: str, change: str) -> None:
        held = self._tags.setdefault(customer_id, set())
        if change == "added":
            held.add((group_id, tag_id))
        else:
            held.discard((group_id, tag_id))

    def saw(self, customer_id: str, at: datetime) -> None:
        previous = self._activity.get(customer_id)
        if previous is None or at > previous:
            self._activity[customer_id] = at

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        held = self._tags.get(customer_id)
        return None if held is None else (group_id, tag_id) in held

    async def last_activity(self, customer_id: str) -> datetime | None:
        return self._activity.get(customer_id)


class MemoryOutcomes:
    def __init__(self) -> None:
        self.outcomes: list[NotificationOutcome] = []
        self.dead_letters: list[NotificationOutcome] = []

    async def emit(self, outcome: NotificationOutcome) -> None:
        self.outcomes.append(outcome)

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        self.dead_letters.append(outcome)
