"""Campaigns: a one-off send to a tag audience, with a playbook's steps and safeguards.

The audience (all_of / any_of / none_of over "group/tag") is evaluated once, when the campaign
starts; every customer of that snapshot gets each step once (one idempotency key per campaign, step
and customer, however many of the selected tags they hold). Steps are decided by the same
`decide()` as a playbook's: consent, holdout, one coupon kind per period, caps, quiet hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from math import floor
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.common import Identifier, UtcDatetime
from schemas.excerpt import describe_validation_error, excerpt
from schemas.limits import MAX_AUDIENCE_TAGS, MAX_CAMPAIGN_CAPS, MAX_CAMPAIGN_TEMPLATES, MAX_STEPS, MAX_TEMPLATE_LENGTH
from schemas.tags import TagGroup
from services.notifier.policy.jobs import ScheduledStep
from services.notifier.policy.keys import campaign_step_key
from services.notifier.policy.playbooks import CapRule, Duration, Fraction, PlaybookError, Step
from services.notifier.policy.templates import check_template
from services.runtime.user_yaml import UserYamlError, load_user_yaml

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


def load_campaign(text: str, source: str = "<campaign>") -> Campaign:
    """A campaign file (YAML or JSON); PlaybookError naming the source and every problem."""
    try:
        document: Any = load_user_yaml(text)
    except UserYamlError as error:
        raise PlaybookError(f"{source}: {error}") from None
    if not isinstance(document, dict):
        raise PlaybookError(f"{source}: expected a mapping with id, audience and steps, got {excerpt(document)}")
    try:
        return Campaign.model_validate(document)
    except ValidationError as error:
        raise PlaybookError(f"{source}: {describe_validation_error(error)}") from None


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


class CampaignsFull(Exception):
    """MAX_CAMPAIGNS are kept: a new one is refused (HTTP 409) rather than the store growing without bound."""
