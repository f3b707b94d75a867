"""Scheduled steps: what a tag change turns into, one job per playbook step, stored until due."""

from __future__ import annotations

from schemas.playbooks import PlaybookSet, ScheduledStep
from schemas.tags import TagChanged
from services.runtime.step_keys import step_key


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
