"""The notifier core: tag changes in, scheduled steps stored, due steps decided and delivered.

Every step (immediate ones too) goes through the scheduler: `on_changes` stores them durably, and
only then may the caller commit the consumed offsets; `run_due` claims what is due, asks the pure
policy for a decision and acts on it. Delivery is at-least-once with a stable idempotency key per
step: a replica that dies after the provider accepted a message but before completing the job
leaves it to be claimed again, and the retry carries the same key for the provider to deduplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from schemas.notifications import NotificationOutcome, OutcomeKind, OutcomeReason, TriggerRef
from schemas.tags import TagChanged, TagGroup
from services.notifier.campaigns import CampaignLookup
from services.notifier.messages import address, compose
from services.notifier.metrics import NotifierMetrics
from services.notifier.policy import (
    Campaign,
    Decision,
    Facts,
    Playbook,
    PlaybookSet,
    Policy,
    ScheduledStep,
    SendRecord,
    decide,
    longest_window,
    plan,
)
from services.notifier.ports import Claim, Ledger, Message, OutcomeSink, Provider, Scheduler, TagFacts
from services.runtime.campaigns import CampaignStore
from services.runtime.clock import Clock
from services.runtime.customers import CustomerStore, Profile
from services.runtime.readmodel import ReadModelUnavailable
from services.runtime.reports import ProgramKind, Tally
from services.runtime.resilience import CircuitOpen, GaveUp

log = logging.getLogger("tagstream.notifier")
_READ_MODEL_WAIT = timedelta(seconds=5)

LOCK_RETRY = timedelta(seconds=1)
PAUSED_RECHECK = timedelta(seconds=60)
"""A due step of a paused campaign waits this long before it looks again."""


@dataclass(frozen=True, slots=True)
class Tuning:
    lease: timedelta = timedelta(seconds=30)
    """A claimed job is invisible to other replicas this long; longer than the slowest send with retries."""
    batch: int = 100
    concurrency: int = 12
    """Steps decided and sent at once. Each reads the stores with up to 6 Redis calls in parallel, and
    redis-py's pool refuses a 101st connection rather than waiting, so keep 6 x this well under 100."""
    max_claims: int = 5
    """A job claimed this often without completing (replicas crashing on it) goes to the DLQ."""
    keep_decisions: timedelta = timedelta(days=90)
    """How long a step's decision is remembered for deduplication; longer than any playbook's delays."""
    max_trigger_age: timedelta = timedelta(days=1)
    """A tag change older than this when read (a new consumer group reading the topic's history, a
    long outage) starts nothing: its steps are reported suppressed as `stale`, never sent."""


_STALE = Decision("suppress", detail="the tag change is older than max_trigger_age: nothing is sent for it")


class Notifier:
    def __init__(
        self,
        playbooks: PlaybookSet | Callable[[], PlaybookSet],
        scheduler: Scheduler,
        ledger: Ledger,
        customers: CustomerStore,
        tags: TagFacts,
        providers: Mapping[str, Provider],
        outcomes: OutcomeSink,
        clock: Clock,
        *,
        policy: Policy | None = None,
        tuning: Tuning | None = None,
        metrics: NotifierMetrics | None = None,
        definitions: Callable[[], Mapping[str, TagGroup]] | None = None,
        campaigns: CampaignStore | None = None,
    ) -> None:
        """`definitions`: the current tag groups, so that messages name groups and tags as the shop
        does (a group or tag it does not know renders as its id). `campaigns`: where campaign steps
        find their campaign (None: campaign steps are cancelled as if it were gone)."""
        self._playbooks = playbooks if callable(playbooks) else (lambda: playbooks)
        self._definitions = definitions
        self.scheduler = scheduler
        self.ledger = ledger
        self.customers = customers
        self.tags = tags
        self.providers = providers
        self.outcomes = outcomes
        self.clock = clock
        self.policy = policy or Policy()
        self.tuning = tuning or Tuning()
        self.metrics = metrics
        self.campaigns = CampaignLookup(campaigns)

    @property
    def playbooks(self) -> PlaybookSet:
        return self._playbooks()

    async def on_changes(self, changes: Iterable[TagChanged]) -> list[ScheduledStep]:
        """Plan and durably schedule every step the changes trigger; idempotent per (step, trigger).

        Steps due later are reported `scheduled` once, when first stored (not on a redelivery).
        """
        playbooks = self.playbooks
        now = self.clock.now()
        jobs: list[ScheduledStep] = []
        stale: list[ScheduledStep] = []
        for change in changes:
            planned = plan(playbooks, change)
            (stale if now - change.occurred_at > self.tuning.max_trigger_age else jobs).extend(planned)
        if stale:
            await asyncio.gather(
                *(self._report(job, "suppressed", _STALE, attempts=0, reason="stale") for job in stale)
            )
            await self._count_targeted(stale)
        if jobs:
            new = await self.scheduler.schedule(jobs)
            await self._count_targeted([job for job in jobs if job.key in new])
            later = [job for job in jobs if job.key in new and job.due_at > now]
            await asyncio.gather(
                *(self._report(job, "scheduled", Decision("defer", until=job.due_at), attempts=0) for job in later)
            )
        return jobs

    async def _count_targeted(self, jobs: list[ScheduledStep]) -> None:
        """Steps planned per playbook and step (a campaign's are its fan-out positions)."""
        counts: dict[tuple[str, int], int] = {}
        for job in jobs:
            counts[(job.playbook_id, job.step)] = counts.get((job.playbook_id, job.step), 0) + 1
        for (playbook_id, step), count in counts.items():
            await self.ledger.tally("playbook", playbook_id, f"{step}|targeted", count)
            if self.metrics is not None:
                self.metrics.targeted.labels("playbook", playbook_id).inc(count)

    async def run_due(self, limit: int | None = None) -> int:
        """Claim the steps due now and handle them; returns how many were claimed.

        Steps for different customers or channels run concurrently; one customer's steps on one
        channel run in turn, so each decision sees the sends before it (caps, one coupon per kind).
        """
        claims = await self.scheduler.claim(self.clock.now(), limit or self.tuning.batch, self.tuning.lease)
        lanes: dict[tuple[str, str], list[Claim]] = {}
        for claim in claims:
            lanes.setdefault((claim.job.customer_id, claim.job.channel), []).append(claim)
        if lanes:
            slots = asyncio.Semaphore(self.tuning.concurrency)
            await asyncio.gather(*(self._run_lane(lane, slots) for lane in lanes.values()))
        return len(claims)

    async def _run_lane(self, claims: list[Claim], slots: asyncio.Semaphore) -> None:
        async with slots:
            for claim in claims:
                await self.handle(claim)

    async def update_backlog(self) -> None:
        if self.metrics is None:
            return
        now = self.clock.now()
        count, oldest = await self.scheduler.backlog(now)
        self.metrics.scheduler_backlog.set(count)
        self.metrics.scheduler_lag.set(0 if oldest is None else max(0.0, (now - oldest).total_seconds()))

    async def handle(self, claim: Claim) -> None:
        job = claim.job
        try:
            await self._handle(claim)
        except ReadModelUnavailable as error:
            # Redis lost its data and the read model is being rebuilt: decide once it is whole again
            log.warning("step %s of playbook %s deferred: %s", job.step, job.playbook_id, error)
            await self.scheduler.defer(claim, self.clock.now() + _READ_MODEL_WAIT)
        except Exception:
            # the lease runs out and another claim retries the job; max_claims bounds the retries
            log.exception("step %s of playbook %s failed; it will be retried", job.step, job.playbook_id)

    async def _handle(self, claim: Claim) -> None:
        job = claim.job
        if claim.claims > self.tuning.max_claims:
            await self._give_up(claim, f"claimed {claim.claims} times without completing", attempts=0, reason="gave_up")
            return
        # Another replica may be deciding a step for this customer and channel right now: the lock
        # makes the cap and coupon checks see its send. Busy: try again in a second.
        if not await self.ledger.lock(job.customer_id, job.channel, job.key, self.tuning.lease):
            await self.scheduler.defer(claim, self.clock.now() + LOCK_RETRY)
            return
        try:
            await self._decide_and_act(claim)
        finally:
            await self.ledger.unlock(job.customer_id, job.channel, job.key)

    async def _decide_and_act(self, claim: Claim) -> None:
        job = claim.job
        playbook: Playbook | Campaign | None
        if job.campaign:
            playbook, paused = await self.campaigns.campaign(job.playbook_id)
            if paused:
                until = self.clock.now() + PAUSED_RECHECK
                if await self.scheduler.defer(claim, until):
                    held = Decision("defer", "", f"campaign {job.playbook_id!r} is paused", until)
                    await self._report(job, "deferred", held, attempts=0, reason="paused")
                return
        else:
            playbook = self.playbooks.get(job.playbook_id)
        profile = await self.customers.profile(job.customer_id)
        facts = await self._facts(job, playbook, profile)
        decision = decide(job, playbook, facts, self.policy)
        if decision.verdict == "defer":
            assert decision.until is not None
            if await self.scheduler.defer(claim, decision.until):
                await self._report(job, "deferred", decision, attempts=0)
            return
        if decision.verdict != "send":
            await self._finish(claim, "cancelled" if decision.verdict == "cancel" else "suppressed", decision, 0)
            return
        assert playbook is not None
        if job.coupon is not None:
            now = self.clock.now()
            holder = await self.ledger.reserve_coupon(
                job.customer_id, job.coupon, job.key, now, now + self.policy.coupon_period
            )
            if holder != job.key:  # another step took the coupon kind between our read and now
                lost = Decision("suppress", "duplicate", f"coupon {job.coupon} was given by another step")
                await self._finish(claim, "suppressed", lost, 0)
                return
        await self._deliver(claim, playbook, profile)

    async def _deliver(self, claim: Claim, playbook: Playbook | Campaign, profile: Profile) -> None:
        job = claim.job
        provider = self.providers.get(job.channel)
        if provider is None:
            await self._give_up(claim, f"no provider configured for {job.channel}", attempts=0)
            return
        message = self._message(job, profile, playbook)
        try:
            attempts = await provider.send(message)
        except CircuitOpen as error:
            until = self.clock.now() + timedelta(seconds=error.retry_after)
            if await self.scheduler.defer(claim, until):
                deferred = Decision("defer", "", f"provider circuit open: {error}", until)
                await self._report(job, "deferred", deferred, attempts=0, reason="circuit_open")
            return
        except GaveUp as error:
            await self._give_up(claim, error.detail, attempts=error.attempts)
            return
        sent = SendRecord(job.channel, job.playbook_id, self.clock.now())
        await self._report(job, "sent", Decision("send"), attempts=attempts)
        tally = self._tally(job, "sent", "", touched="treated")
        await self.ledger.record(job.key, "sent", sent, job.customer_id, self.tuning.keep_decisions, tally)
        await self.scheduler.complete(claim)

    async def _give_up(
        self, claim: Claim, detail: str, *, attempts: int, reason: OutcomeReason = "provider_error"
    ) -> None:
        job = claim.job
        outcome = self._outcome(job, "failed", reason, detail, attempts=attempts)
        await self.outcomes.emit(outcome)
        await self.outcomes.dead_letter(outcome)
        if self.metrics is not None:
            self.metrics.notifications.labels(job.channel, "failed", reason).inc()
            self.metrics.dead_letters.labels(job.channel).inc()
        if job.coupon is not None:
            await self.ledger.release_coupon(job.customer_id, job.coupon, job.key)
        tally = self._tally(job, "failed", reason)
        await self.ledger.record(job.key, "failed", None, job.customer_id, self.tuning.keep_decisions, tally)
        await self.scheduler.complete(claim)
        log.warning("step %s of playbook %s dead-lettered: %s", job.step, job.playbook_id, detail)

    async def _finish(self, claim: Claim, kind: OutcomeKind, decision: Decision, attempts: int) -> None:
        job = claim.job
        await self._report(job, kind, decision, attempts=attempts)
        if decision.reason != "duplicate":  # a duplicate must not overwrite the original decision
            tally = self._tally(job, kind, decision.reason, touched="holdout" if decision.reason == "holdout" else None)
            await self.ledger.record(job.key, kind, None, job.customer_id, self.tuning.keep_decisions, tally)
        await self.scheduler.complete(claim)

    def _tally(
        self, job: ScheduledStep, outcome: str, reason: str, *, touched: Literal["treated", "holdout"] | None = None
    ) -> Tally:
        return Tally(
            kind=_kind(job),
            program_id=job.playbook_id,
            step=job.step,
            outcome=outcome,
            reason=reason,
            customer_id=job.customer_id,
            touched=touched,
            at=self.clock.now(),
        )

    async def _facts(self, job: ScheduledStep, playbook: Playbook | Campaign | None, profile: Profile) -> Facts:
        now = self.clock.now()
        caps = (*self.policy.caps, *(playbook.caps if playbook else ()))
        window = longest_window(cap for cap in caps if cap.channel == job.channel)
        wants_tags = any(c in ("tag_removed", "tag_added") for c in job.cancel_if)
        wants_activity = "customer_returned" in job.cancel_if
        opted_out, decided, history, coupon_holder, tag_held, activity = await asyncio.gather(
            self.customers.opted_out(job.customer_id),
            self.ledger.decided(job.key),
            self.ledger.history(job.customer_id, job.channel, now - window) if window else _none_list(),
            self.ledger.coupon_holder(job.customer_id, job.coupon, now) if job.coupon else _none(),
            self.tags.holds(job.customer_id, job.group_id, job.tag_id) if wants_tags else _none(),
            self.tags.last_activity(job.customer_id) if wants_activity else _none(),
        )
        return Facts(
            now=now,
            opted_out=opted_out,
            reachable=address(job.channel, profile) is not None or job.channel in ("push", "coupon"),
            already_decided=decided,
            coupon_holder=coupon_holder,
            history=history,
            tag_held=tag_held,
            last_activity=activity,
            # an alert's reader is the salesperson, whose day is the shop's, not the customer's
            zone=ZoneInfo(profile.timezone) if profile.timezone and job.channel != "alert" else None,
        )

    def _message(self, job: ScheduledStep, profile: Profile, program: Playbook | Campaign) -> Message:
        templates = program.templates if isinstance(program, Campaign) else self.playbooks.templates
        return compose(job, profile, templates, self._definitions() if self._definitions is not None else None)

    async def _report(
        self,
        job: ScheduledStep,
        kind: OutcomeKind,
        decision: Decision,
        *,
        attempts: int,
        reason: OutcomeReason | None = None,
    ) -> None:
        reason = decision.reason if reason is None else reason
        outcome = self._outcome(job, kind, reason, decision.detail, attempts=attempts, until=decision.until)
        await self.outcomes.emit(outcome)
        if kind == "deferred":  # not final: counted per deferral, not per step
            await self.ledger.tally(_kind(job), job.playbook_id, f"{job.step}|deferred|{reason}")
        if self.metrics is not None:
            self.metrics.notifications.labels(job.channel, kind, reason).inc()
            self.metrics.program_decisions.labels(_kind(job), job.playbook_id, kind, reason).inc()

    def _outcome(
        self,
        job: ScheduledStep,
        kind: OutcomeKind,
        reason: OutcomeReason,
        detail: str,
        *,
        attempts: int,
        until: datetime | None = None,
    ) -> NotificationOutcome:
        return NotificationOutcome(
            outcome=kind,
            reason=reason,
            detail=detail[:500],
            idempotency_key=job.key,
            playbook_id=None if job.campaign else job.playbook_id,
            campaign_id=job.playbook_id if job.campaign else None,
            step=job.step,
            channel=job.channel,
            coupon=job.coupon,
            customer_id=job.customer_id,
            trigger=None
            if job.campaign
            else TriggerRef(
                group_id=job.group_id,
                tag_id=job.tag_id,
                change=job.change,
                seq=job.seq,
                occurred_at=job.triggered_at,
            ),
            due_at=job.due_at,
            decided_at=self.clock.now(),
            deferred_until=until if kind in ("deferred", "scheduled") else None,
            attempts=attempts,
        )


def _kind(job: ScheduledStep) -> ProgramKind:
    return "campaign" if job.campaign else "playbook"


async def _none() -> None:
    return None


async def _none_list() -> list[SendRecord]:
    return []
