"""Campaigns: a one-off send to a tag audience, with a playbook's steps and safeguards.

The audience (all_of / any_of / none_of over "group/tag") is evaluated once, when the campaign
starts; every customer of that snapshot gets each step once (one idempotency key per campaign, step
and customer, however many of the selected tags they hold). Steps are decided by the notifier like
a playbook's: consent, holdout, one coupon kind per period, caps, quiet hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import Identifier, UtcDatetime
from schemas.limits import MAX_AUDIENCE_TAGS, MAX_CAMPAIGN_CAPS, MAX_CAMPAIGN_TEMPLATES, MAX_STEPS, MAX_TEMPLATE_LENGTH
from schemas.playbooks import CapRule, Duration, Fraction, Step
from schemas.tags import TagGroup
from schemas.templates import check_template

TagRef = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*/[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=129),
]
"""A tag as "group_id/tag_id"."""

_TRIGGER_PLACEHOLDERS = ("group", "tag", "group_id", "tag_id")
"""A campaign has no trigger tag: these placeholders would have nothing to say."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Audience(_Model):
    """Customers holding all of `all_of`, at least one of `any_of` and none of `none_of`."""

    all_of: tuple[TagRef, ...] = Field(default=(), max_length=MAX_AUDIENCE_TAGS)
    any_of: tuple[TagRef, ...] = Field(default=(), max_length=MAX_AUDIENCE_TAGS)
    none_of: tuple[TagRef, ...] = Field(default=(), max_length=MAX_AUDIENCE_TAGS)

    @model_validator(mode="after")
    def _selects(self) -> Self:
        if not self.all_of and not self.any_of:
            raise ValueError("select at least one tag in all_of or any_of (none_of alone selects everyone else)")
        return self

    def refs(self) -> tuple[str, ...]:
        return (*self.all_of, *self.any_of, *self.none_of)

    def unknown(self, groups: Mapping[str, TagGroup]) -> list[str]:
        """The referenced tags the definitions do not have."""
        missing = []
        for ref in dict.fromkeys(self.refs()):
            group_id, tag_id = ref.split("/", 1)
            group = groups.get(group_id)
            if group is None or tag_id not in {tag.id for tag in group.tags}:
                missing.append(ref)
        return missing

    def effective(self, groups: Mapping[str, TagGroup]) -> Audience | None:
        """The audience over enabled groups only (a disabled group's tag is held by nobody), as
        `POST /v1/audiences/query` counts it; None when it can only be empty. A group these
        definitions do not know yet (a notifier still reading the topic) counts as enabled: the API
        refused unknown tags when the campaign was created."""

        def enabled(refs: tuple[str, ...]) -> tuple[str, ...]:
            disabled = {r for r in refs if (group := groups.get(r.split("/", 1)[0])) is not None and group.disabled}
            return tuple(dict.fromkeys(r for r in refs if r not in disabled))

        all_of, any_of, none_of = enabled(self.all_of), enabled(self.any_of), enabled(self.none_of)
        if len(all_of) < len(set(self.all_of)) or (self.any_of and not any_of):
            return None
        return Audience(all_of=all_of, any_of=any_of, none_of=none_of)


class Campaign(_Model):
    """What `POST /v1/campaigns` and `tagstream campaigns create -f` take (schemas/json/campaign.json)."""

    id: Identifier
    audience: Audience
    templates: dict[Identifier, Annotated[str, Field(max_length=MAX_TEMPLATE_LENGTH)]] = Field(
        default_factory=dict, max_length=MAX_CAMPAIGN_TEMPLATES
    )
    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)
    holdout: Fraction = Decimal(0)
    caps: tuple[CapRule, ...] = Field(
        default=(), max_length=MAX_CAMPAIGN_CAPS, description="caps counting only this campaign's sends"
    )
    start_at: UtcDatetime | None = Field(default=None, description="when the audience is taken; none: now")
    conversion_window: Duration = Field(
        default=timedelta(days=7), description="an order this long after a customer's first send converts"
    )

    @property
    def disabled(self) -> bool:
        """Never: a campaign stops by being paused or cancelled (its status), not by its definition."""
        return False

    @property
    def quiet_hours(self) -> bool | None:
        """Unset: a campaign's steps are held as the notifier's quiet_channels say (a playbook can override)."""
        return None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for number, step in enumerate(self.steps):
            if set(step.cancel_if) - {"customer_returned"}:
                raise ValueError(
                    f"steps[{number}].cancel_if: a campaign has no trigger tag; only customer_returned applies"
                )
            if step.template is not None and step.template not in self.templates:
                raise ValueError(
                    f"steps[{number}].template: no template {step.template!r} "
                    f"(have: {', '.join(sorted(self.templates)) or 'none'})"
                )
        for name, text in self.templates.items():
            check_template(name, text)
            used = [p for p in _TRIGGER_PLACEHOLDERS if "${" + p + "}" in text or "${" + p + "|" in text]
            if used:
                raise ValueError(f"template {name!r}: a campaign has no trigger tag, so no ${{{used[0]}}}")
        if self.conversion_window <= timedelta(0):
            raise ValueError(f"conversion_window must be positive, got {self.conversion_window}")
        return self


CampaignStatus = Literal["scheduled", "running", "paused", "cancelled", "done"]
"""scheduled (waiting for start_at) -> running -> done when every step is fanned out; paused and
resumed at will; cancelled for good (steps not yet sent are cancelled when they come due)."""

TRANSITIONS: dict[str, tuple[frozenset[str], CampaignStatus]] = {
    "pause": (frozenset({"scheduled", "running"}), "paused"),
    "resume": (frozenset({"paused"}), "running"),
    "cancel": (frozenset({"scheduled", "running", "paused"}), "cancelled"),
}
"""Operator action -> (statuses it applies to, the status after)."""


class CampaignRecord(_Model):
    """A campaign and where it stands."""

    campaign: Campaign
    status: CampaignStatus
    created_at: UtcDatetime
    started_at: UtcDatetime | None = Field(default=None, description="when the audience was taken")
    audience: int | None = Field(default=None, ge=0, description="customers in the audience snapshot")
    positions: tuple[int, ...] = Field(default=(), description="per step: customers fanned out so far")

    def resumed_status(self) -> CampaignStatus:
        """`resume` returns a paused campaign to scheduled when its audience was never taken."""
        return "running" if self.started_at is not None else "scheduled"
