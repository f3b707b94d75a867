"""What the notifier decided about each scheduled step: `tagstream.notifications` and its DLQ."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.common import SCHEMA_VERSION, Contract, ExternalId, Identifier, UtcDatetime

OutcomeKind = Literal["scheduled", "sent", "suppressed", "deferred", "failed", "cancelled"]
OutcomeReason = Literal[
    "",
    "consent",
    "unreachable",
    "holdout",
    "duplicate",
    "cap",
    "cancelled",
    "quiet_hours",
    "provider_error",
    "circuit_open",
    "gave_up",
    "stale",
    "paused",
]


class TriggerRef(Contract):
    """The tag change that started the playbook: the customer's `seq` identifies it."""

    group_id: Identifier
    tag_id: Identifier
    change: Literal["added", "removed"]
    seq: int = Field(ge=1)
    occurred_at: UtcDatetime


class NotificationOutcome(Contract):
    """One decision about one step for one customer. Never carries personal data (no phone, no text).

    `idempotency_key` is the same for every retry of the step (and is the provider's Idempotency-Key);
    after a crash a step may be reported twice with the same key, so consumers count distinct keys.
    On `tagstream.notifications.dlq` the outcome is `failed` and `detail` says why. A playbook's step
    names its `playbook_id` and the `trigger`; a campaign's step names its `campaign_id` (no trigger).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    outcome: OutcomeKind
    reason: OutcomeReason = ""
    detail: str = Field(default="", max_length=500)
    idempotency_key: str
    playbook_id: Identifier | None = None
    campaign_id: Identifier | None = None
    step: int = Field(ge=0)
    channel: Literal["push", "sms", "coupon", "alert"]
    coupon: str | None = None
    customer_id: ExternalId
    trigger: TriggerRef | None = None
    due_at: UtcDatetime
    decided_at: UtcDatetime
    deferred_until: UtcDatetime | None = None
    attempts: int = Field(default=0, ge=0, description="provider requests made for this decision")

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        if (self.playbook_id is None) == (self.campaign_id is None):
            raise ValueError("an outcome belongs to a playbook (playbook_id, trigger) or a campaign (campaign_id)")
        if (self.trigger is None) != (self.playbook_id is None):
            raise ValueError("a playbook's outcome names its trigger; a campaign's has none")
        return self
