"""The one decision, taken when a step comes due: send, suppress (and why), defer, or cancel.

Order (each is recorded): cancel conditions, consent, holdout, deduplication, frequency caps, quiet
hours. A step deferred by quiet hours comes back at the window's end and is decided afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from schemas.campaigns import Campaign
from schemas.playbooks import CapRule, Playbook, ScheduledStep
from services.notifier.policy.cancel import cancel_reason
from services.notifier.policy.quiet import QuietHours
from services.runtime.caps import SendRecord, exceeded_cap
from services.runtime.step_keys import in_holdout

Verdict = Literal["send", "suppress", "defer", "cancel"]
Reason = Literal["", "consent", "unreachable", "holdout", "duplicate", "cap", "cancelled", "quiet_hours"]


@dataclass(frozen=True, slots=True)
class Policy:
    """The notifier-wide rules (from settings); playbooks add their own caps and holdouts."""

    caps: tuple[CapRule, ...] = ()
    quiet_hours: QuietHours | None = None
    quiet_channels: frozenset[str] = frozenset({"push", "sms"})
    coupon_period: timedelta = timedelta(days=30)
    default_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


@dataclass(frozen=True, slots=True)
class Facts:
    """What the stores said about the customer when the step came due."""

    now: datetime
    opted_out: frozenset[str] = frozenset()
    reachable: bool = True
    """Whether the channel has an address for the customer (a phone number for SMS, an owner for alerts)."""
    already_decided: bool = False
    """A final decision for this very step key exists: a redelivered trigger or a retried job."""
    coupon_holder: str | None = None
    """The step key that already holds this coupon kind for the customer within the coupon period."""
    history: Sequence[SendRecord] = ()
    tag_held: bool | None = None
    last_activity: datetime | None = None
    zone: ZoneInfo | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason = ""
    detail: str = ""
    until: datetime | None = None


SEND = Decision("send")


def decide(job: ScheduledStep, playbook: Playbook | Campaign | None, facts: Facts, policy: Policy) -> Decision:
    """`playbook`: the step's playbook or campaign as it is now; None when removed (or cancelled)."""
    if playbook is None or playbook.disabled:
        if job.campaign:
            return Decision("cancel", "cancelled", f"campaign {job.playbook_id!r} was cancelled")
        return Decision("cancel", "cancelled", f"playbook {job.playbook_id!r} was removed or disabled")
    why = cancel_reason(
        job.cancel_if, tag_held=facts.tag_held, last_activity=facts.last_activity, triggered_at=job.triggered_at
    )
    if why is not None:
        return Decision("cancel", "cancelled", why)
    if "*" in facts.opted_out or job.channel in facts.opted_out:
        return Decision("suppress", "consent", f"the customer opted out of {job.channel}")
    if not facts.reachable:
        return Decision("suppress", "unreachable", f"no {job.channel} address for the customer")
    if in_holdout(job.customer_id, playbook):
        return Decision("suppress", "holdout", f"in the {playbook.holdout:.2%} control group of {playbook.id!r}")
    if facts.already_decided:
        return Decision("suppress", "duplicate", "this step was already decided for this trigger")
    if job.coupon is not None and facts.coupon_holder not in (None, job.key):
        return Decision(
            "suppress", "duplicate", f"coupon {job.coupon} was already given within {_days(policy.coupon_period)}"
        )
    broken = exceeded_cap(
        job.channel,
        job.playbook_id,
        facts.history,
        facts.now,
        global_caps=policy.caps,
        playbook_caps=playbook.caps,
    )
    if broken is not None:
        rule, scope = broken
        return Decision("suppress", "cap", f"{scope} cap of {rule.limit} {rule.channel} per {_days(rule.window)}")
    held = playbook.quiet_hours if playbook.quiet_hours is not None else job.channel in policy.quiet_channels
    if policy.quiet_hours is not None and held:
        zone = facts.zone or policy.default_zone
        until = policy.quiet_hours.ends_after(facts.now, zone)
        if until is not None:
            return Decision("defer", "quiet_hours", f"quiet hours {policy.quiet_hours} in {zone.key}", until)
    return SEND


def _days(window: timedelta) -> str:
    if window % timedelta(days=1) == timedelta(0):
        return f"{window.days}d"
    return f"{int(window.total_seconds())}s"
