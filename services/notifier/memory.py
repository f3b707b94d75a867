"""In-memory stores behind the notifier's ports: real stores for one process (embedded mode, unit tests)."""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.campaigns import Audience, CampaignRecord, CampaignStatus
from schemas.limits import MAX_CAMPAIGNS
from schemas.notifications import NotificationOutcome
from schemas.playbooks import PlaybookSet, ScheduledStep
from services.notifier.policy import SendRecord
from services.notifier.ports import Claim
from services.runtime.campaigns import CampaignsFull
from services.runtime.playbooks import StoredPlaybooks
from services.runtime.reports import ProgramKind, Tally


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
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._touches: dict[tuple[str, str], dict[str, tuple[str, datetime]]] = {}

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

    async def record(
        self,
        key: str,
        outcome: str,
        sent: SendRecord | None,
        customer_id: str,
        keep: timedelta,
        tally: Tally | None = None,
    ) -> None:
        first = key not in self._decided
        self._decided[key] = (outcome, None)
        if sent is not None:
            self._sent.setdefault((customer_id, sent.channel), []).append(sent)
        if tally is not None and first:
            self._count(tally.kind, tally.program_id, tally.field, 1)
            if tally.touched is not None:
                touches = self._touches.setdefault((tally.kind, tally.program_id), {})
                touches.setdefault(tally.customer_id, (tally.touched, tally.at))

    async def tally(self, kind: ProgramKind, program_id: str, field: str, count: int = 1) -> None:
        self._count(kind, program_id, field, count)

    def _count(self, kind: ProgramKind, program_id: str, field: str, count: int) -> None:
        counts = self._counts.setdefault((kind, program_id), {})
        counts[field] = counts.get(field, 0) + count

    # the Reports port: the ledger counts, so it answers
    async def counts(self, kind: ProgramKind, program_id: str) -> dict[str, int]:
        return dict(self._counts.get((kind, program_id), {}))

    async def touches(self, kind: ProgramKind, program_id: str) -> AsyncIterator[tuple[str, str, datetime]]:
        for customer_id, (touched, at) in list(self._touches.get((kind, program_id), {}).items()):
            yield customer_id, touched, at


class MemoryCampaigns:
    """Campaigns in memory; `members` evaluates an audience over the mode's read model."""

    def __init__(self, scheduler: MemoryScheduler, members: Callable[[Audience], list[str]]) -> None:
        self._scheduler = scheduler
        self._members = members
        self._records: dict[str, CampaignRecord] = {}
        self._used: set[str] = set()
        """Every id ever created: a deleted campaign's step keys and report stay, so its id is not reused."""
        self._snapshots: dict[str, list[str]] = {}
        self._after: dict[tuple[str, int], str] = {}

    async def create(self, record: CampaignRecord) -> bool:
        if record.campaign.id in self._used:
            return False
        if len(self._records) >= MAX_CAMPAIGNS:
            raise CampaignsFull(f"{MAX_CAMPAIGNS} campaigns are kept already")
        self._records[record.campaign.id] = record
        self._used.add(record.campaign.id)
        return True

    async def get(self, campaign_id: str) -> CampaignRecord | None:
        return self._records.get(campaign_id)

    async def all(self) -> list[CampaignRecord]:
        return sorted(self._records.values(), key=lambda record: (record.created_at, record.campaign.id))

    async def transition(self, campaign_id: str, allowed: frozenset[str], to: CampaignStatus) -> CampaignRecord | None:
        record = self._records.get(campaign_id)
        if record is not None and record.status in allowed:
            status = record.resumed_status() if to == "running" else to
            record = self._records[campaign_id] = record.model_copy(update={"status": status})
        return record

    async def start(self, campaign_id: str, audience: Audience | None, at: datetime) -> CampaignRecord | None:
        record = self._records.get(campaign_id)
        if record is None or record.status != "scheduled":
            return record
        return self.started(campaign_id, [] if audience is None else self._members(audience), at)

    def started(self, campaign_id: str, members: list[str], at: datetime) -> CampaignRecord:
        record = self._records[campaign_id]
        self._snapshots[campaign_id] = sorted(members)
        steps = len(record.campaign.steps)
        update = {"status": "running", "started_at": at, "audience": len(members), "positions": (0,) * steps}
        record = self._records[campaign_id] = record.model_copy(update=update)
        return record

    async def pending(self, campaign_id: str, step: int, limit: int) -> tuple[int, str | None, list[str]]:
        record = self._records[campaign_id]
        after = self._after.get((campaign_id, step))
        ids = self._snapshots.get(campaign_id, [])
        start = 0 if after is None else bisect_right(ids, after)
        return record.positions[step], after, ids[start : start + limit]

    async def advance(
        self, campaign_id: str, step: int, position: int, after: str | None, jobs: Sequence[ScheduledStep]
    ) -> bool:
        record = self._records.get(campaign_id)
        if record is None or record.status != "running" or record.positions[step] != position:
            return False
        if self._after.get((campaign_id, step)) != after or not jobs:
            return False
        await self._scheduler.schedule(jobs)
        self.moved(campaign_id, step, len(jobs), jobs[-1].customer_id)
        return True

    def moved(self, campaign_id: str, step: int, count: int, last: str) -> None:
        record = self._records[campaign_id]
        positions = list(record.positions)
        positions[step] += count
        self._records[campaign_id] = record.model_copy(update={"positions": tuple(positions)})
        self._after[(campaign_id, step)] = last

    async def finish(self, campaign_id: str) -> None:
        record = self._records.get(campaign_id)
        if record is not None and record.status == "running":
            self._records[campaign_id] = record.model_copy(update={"status": "done"})
            self._snapshots.pop(campaign_id, None)

    async def delete(self, campaign_id: str) -> bool:
        record = self._records.get(campaign_id)
        if record is None or record.status not in ("done", "cancelled"):
            return False
        del self._records[campaign_id]
        self._snapshots.pop(campaign_id, None)
        for step in range(len(record.campaign.steps)):
            self._after.pop((campaign_id, step), None)
        return True

    async def lease(self, holder: str, ttl: timedelta) -> bool:
        return True  # one process


class MemoryPlaybooks:
    def __init__(self) -> None:
        self.stored: StoredPlaybooks | None = None

    async def current(self) -> StoredPlaybooks | None:
        return self.stored

    async def replace(
        self, playbooks: PlaybookSet, expected_version: int, at: datetime, actor: str
    ) -> StoredPlaybooks | None:
        if (self.stored.version if self.stored is not None else 0) != expected_version:
            return None
        self.stored = StoredPlaybooks(expected_version + 1, playbooks, at, actor)
        return self.stored


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
