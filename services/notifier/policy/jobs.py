"""Scheduled steps: what a tag change turns into, one job per playbook step, stored until due."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.common import UtcDatetime
from schemas.tags import TagChanged
from services.notifier.policy.keys import step_key
from services.notifier.policy.playbooks import CancelCondition, Channel, PlaybookSet


class ScheduledStep(BaseModel):
    """A snapshot of the step as it was when triggered, so editing a playbook never changes a scheduled one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    playbook_id: str
    """The playbook's id, or the campaign's when `campaign` is set (holdout, caps and keys use it)."""
    campaign: bool = False
    step: int
    channel: Channel
    template: str | None
    coupon: str | None
    cancel_if: tuple[CancelCondition, ...]
    customer_id: str
    group_id: str
    tag_id: str
    change: Literal["added", "removed"]
    seq: int
    triggered_at: UtcDatetime
    due_at: UtcDatetime


def plan(playbooks: PlaybookSet, change: TagChanged) -> list[ScheduledStep]:
    """Every step of every playbook the change triggers, due at the change's time plus the step's delay."""
    return [
        ScheduledStep(
            key=step_key(playbook.id, number, change.customer_id, change.seq),
            playbook_id=playbook.id,
            step=number,
            channel=step.channel,
            template=step.template,
            coupon=step.coupon,
            cancel_if=step.cancel_if,
            customer_id=change.customer_id,
            group_id=change.group_id,
            tag_id=change.tag_id,
            change=change.change,
            seq=change.seq,
            triggered_at=change.occurred_at,
            due_at=change.occurred_at + step.delay,
        )
        for playbook in playbooks.matching(change)
        for number, step in enumerate(playbook.steps)
    ]
