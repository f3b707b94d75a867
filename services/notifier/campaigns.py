"""Campaigns in the notifier: starting them, fanning their steps out paced, and finding a job's campaign.

The runner is a loop beside the scheduler's (both modes): the replica holding the campaign lease
takes the audience snapshot of each campaign whose start has come, then walks it step by step,
scheduling each step for as many customers as the channel's pace allows (`campaign_rates`, per
second). The cursor moves atomically with the jobs it schedules (CampaignStore.advance), so a
restart, a lost lease or a second replica resumes exactly where the fan-out stopped. From there the
jobs are ordinary scheduled steps: claimed under leases and decided by `decide()` like a playbook's.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from schemas.campaigns import Campaign, CampaignRecord
from schemas.tags import TagGroup
from services.notifier.policy import Pacer, campaign_jobs
from services.runtime.campaigns import CampaignStore
from services.runtime.clock import Clock
from services.runtime.readmodel import ReadModelUnavailable

log = logging.getLogger("tagstream.notifier.campaigns")

_FINAL = frozenset({"done", "cancelled"})
_STATUS_TTL_S = 1.0
"""How long a job's view of its campaign's status is reused: a pause holds sends within a second."""


class CampaignRunner:
    def __init__(
        self,
        store: CampaignStore,
        clock: Clock,
        *,
        rates: Mapping[str, float],
        page: int,
        lease: timedelta,
        definitions: Callable[[], Mapping[str, TagGroup]] | None = None,
    ) -> None:
        """`definitions`: the current tag groups, so a disabled group's tags select nobody (as in
        `POST /v1/audiences/query`); None: the audience as written."""
        self._store = store
        self._clock = clock
        self._pacer = Pacer(rates)
        self._page = page
        self._lease = lease
        self._definitions = definitions
        self._holder = uuid.uuid4().hex
        self._finished: set[str] = set()

    async def run(self) -> int:
        """One round: start what is due and fan out what the pace allows; returns the jobs scheduled."""
        if not await self._store.lease(self._holder, self._lease):
            return 0
        now = self._clock.now()
        self._pacer.refill(now)
        scheduled = 0
        for record in await self._store.all():
            if record.campaign.id in self._finished:
                continue
            if record.status in _FINAL:
                self._finished.add(record.campaign.id)
                continue
            if record.status == "scheduled" and now >= (record.campaign.start_at or record.created_at):
                record = await self._start(record, now) or record
            if record.status == "running":
                scheduled += await self._fan_out(record, now)
        return scheduled

    async def _start(self, record: CampaignRecord, now: datetime) -> CampaignRecord | None:
        audience = record.campaign.audience
        groups = self._definitions() if self._definitions is not None else None
        try:
            started = await self._store.start(
                record.campaign.id, audience.effective(groups) if groups else audience, now
            )
        except ReadModelUnavailable as error:
            log.warning("campaign %s waits for the read model: %s", record.campaign.id, error)
            return None
        if started is not None and started.status == "running":
            log.info("campaign %s started: %d customers", record.campaign.id, started.audience or 0)
        return started

    async def _fan_out(self, record: CampaignRecord, now: datetime) -> int:
        campaign, total = record.campaign, record.audience or 0
        assert record.started_at is not None
        positions = list(record.positions)
        scheduled = 0
        for number, step in enumerate(campaign.steps):
            while positions[number] < total and now >= record.started_at + step.delay:
                allowed = min(self._page, self._pacer.allowance(step.channel))
                if allowed <= 0:
                    break
                position, after, ids = await self._store.pending(campaign.id, number, allowed)
                jobs = campaign_jobs(campaign, number, ids, record.started_at, now)
                if not ids or not await self._store.advance(campaign.id, number, position, after, jobs):
                    break  # paused, cancelled, or another replica moved the cursor: next round re-reads
                self._pacer.spend(step.channel, len(ids))
                positions[number] = position + len(ids)
                scheduled += len(ids)
        if all(position >= total for position in positions):
            await self._store.finish(campaign.id)
            log.info("campaign %s fanned out: %d customers per step", campaign.id, total)
        return scheduled


class CampaignLookup:
    """A job's campaign and its status, re-read at most once a second per campaign."""

    def __init__(self, store: CampaignStore | None) -> None:
        self._store = store
        self._seen: dict[str, tuple[CampaignRecord | None, float]] = {}

    async def find(self, campaign_id: str) -> CampaignRecord | None:
        cached = self._seen.get(campaign_id)
        if cached is not None and time.monotonic() - cached[1] < _STATUS_TTL_S:
            return cached[0]
        record = await self._store.get(campaign_id) if self._store is not None else None
        self._seen[campaign_id] = (record, time.monotonic())
        if len(self._seen) > 4 * 1024:  # campaigns are few; a bound all the same
            self._seen.pop(next(iter(self._seen)))
        return record

    async def campaign(self, campaign_id: str) -> tuple[Campaign | None, bool]:
        """(the campaign, None once cancelled or deleted; whether it is paused)."""
        record = await self.find(campaign_id)
        if record is None or record.status == "cancelled":
            return None, False
        return record.campaign, record.status == "paused"
