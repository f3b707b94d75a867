"""A due step made into the message its provider receives: the template rendered for the customer.

Groups and tags are named as the definitions name them now (a rename shows in the next message); one
the definitions no longer know renders as its id. A campaign's step has no trigger tag (its
templates may not ask for one).
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.tags import TagGroup
from services.notifier.policy import ScheduledStep, render
from services.notifier.ports import Message
from services.runtime.customers import Profile


def compose(
    job: ScheduledStep, profile: Profile, templates: Mapping[str, str], groups: Mapping[str, TagGroup] | None
) -> Message:
    text = None
    template = templates.get(job.template) if job.template is not None else None
    if template is not None:
        group_name, tag_name = _names(groups or {}, job.group_id, job.tag_id)
        context = {
            "name": profile.name,
            "customer_id": job.customer_id,
            "group": group_name,
            "tag": tag_name,
            "group_id": job.group_id,
            "tag_id": job.tag_id,
            "coupon": job.coupon,
            "playbook": job.playbook_id,
        }
        text = render(template, context)
    return Message(
        idempotency_key=job.key,
        channel=job.channel,
        customer_id=job.customer_id,
        playbook_id=None if job.campaign else job.playbook_id,
        campaign_id=job.playbook_id if job.campaign else None,
        step=job.step,
        template=job.template,
        text=text,
        coupon=job.coupon,
        to=address(job.channel, profile),
    )


def address(channel: str, profile: Profile) -> str | None:
    """Where the channel's message goes: the customer's phone for SMS, the salesperson for an alert."""
    if channel == "sms":
        return profile.phone
    if channel == "alert":
        return profile.owner
    return None


def _names(groups: Mapping[str, TagGroup], group_id: str, tag_id: str) -> tuple[str, str]:
    group = groups.get(group_id)
    if group is None:
        return group_id, tag_id
    tag_name = next((tag.name for tag in group.tags if tag.id == tag_id), tag_id)
    return group.name, tag_name
