"""Fanning a campaign out: its steps' jobs per customer, paced per channel (schemas/campaigns.py is the model)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from math import floor

from schemas.campaigns import Campaign
from schemas.playbooks import ScheduledStep
from services.runtime.step_keys import campaign_step_key


def campaign_jobs(
    campaign: Campaign, step: int, customer_ids: Iterable[str], started_at: datetime, now: datetime
) -> list[ScheduledStep]:
    """One job per customer for step `step`, due now (fan-out runs when the step's delay has passed)."""
    spec = campaign.steps[step]
    return [
        ScheduledStep(
            key=campaign_step_key(campaign.id, step, customer_id),
            playbook_id=campaign.id,
            campaign=True,
            step=step,
            channel=spec.channel,
            template=spec.template,
            coupon=spec.coupon,
            cancel_if=spec.cancel_if,
            customer_id=customer_id,
            group_id="",
            tag_id="",
            change="added",
            seq=0,
            triggered_at=started_at,
            due_at=max(now, started_at + spec.delay),
        )
        for customer_id in customer_ids
    ]


def step_starts(campaign: Campaign, started_at: datetime) -> list[datetime]:
    return [started_at + step.delay for step in campaign.steps]


class Pacer:
    """Sends per second and channel across every campaign this replica fans out: a token bucket
    holding at most one second of sends, so a pause (or a slow round) never releases a burst."""

    def __init__(self, rates: Mapping[str, float]) -> None:
        self._rates = dict(rates)
        self._tokens = dict.fromkeys(self._rates, 0.0)
        self._at: datetime | None = None

    def refill(self, now: datetime) -> None:
        elapsed = 1.0 if self._at is None else max(0.0, (now - self._at).total_seconds())
        self._at = now
        for channel, rate in self._rates.items():
            self._tokens[channel] = min(rate, self._tokens[channel] + rate * elapsed)

    def allowance(self, channel: str) -> int:
        return floor(self._tokens.get(channel, 0.0))

    def spend(self, channel: str, count: int) -> None:
        self._tokens[channel] = self._tokens.get(channel, 0.0) - count


def remaining(positions: Sequence[int], audience: int) -> bool:
    """Whether some step has customers left to fan out."""
    return any(position < audience for position in positions)
