"""A customer's whole story in two reads (viewer): who they are to the rules, and what was sent.

Each part comes from where it is kept: tags from the read model, aggregates from the tagger's state
(Kafka: the worker holding the customer's partition answers over tagstream.tagger-queries), consent
and profile from the customer store, and notification decisions from the message log the projector
keeps from tagstream.notifications. The profile is personal data: only operator and admin keys see
it (viewers get `profile: null`, `profile_visible: false`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from schemas.common import ExternalId
from schemas.notifications import NotificationOutcome
from schemas.queries import CustomerAggregates
from services.ingest.api.reads import READ_MODEL_UNAVAILABLE, GroupTags, Viewer, held_groups, read_model_whole
from services.ingest.context import Ctx
from services.ingest.ports import TaggerUnavailable
from services.runtime.customers import Profile

router = APIRouter(tags=["reads"], dependencies=[Depends(read_model_whole)], responses=READ_MODEL_UNAVAILABLE)


class Consent(BaseModel):
    opted_out: list[str] = Field(description='channels the customer refuses; "*" means every channel')


class CustomerView(BaseModel):
    customer_id: str
    groups: list[GroupTags] = Field(description="tags held, by group, in display order (names and ids)")
    aggregates: CustomerAggregates | None = Field(
        description="what the rules read, now; null when the tagger has no state for the customer (no event "
        "yet) or did not answer in time (then `unavailable` says so)"
    )
    consent: Consent
    profile: Profile | None = Field(description="operator and admin keys only: null for a viewer")
    profile_visible: bool
    unavailable: list[str] = Field(description="parts that could not be read now, and why")


class Messages(BaseModel):
    customer_id: str
    messages: list[NotificationOutcome] = Field(
        description="every decision (sent, suppressed with its reason, deferred until, cancelled, failed), newest first"
    )
    next_offset: int | None


@router.get("/v1/customers/{customer_id}", response_model=CustomerView)
async def customer_view(customer_id: ExternalId, ctx: Ctx, caller: Viewer) -> CustomerView:
    """Tags, aggregates (order count, total spent as decimal text, AOV, points, last order, the
    windowed counts the rules read), consent and, for operators, the profile."""
    unavailable = []
    try:
        aggregates = await ctx.tagger.customer(customer_id)
    except TaggerUnavailable as error:
        aggregates = None
        unavailable.append(f"aggregates: {error}")
    profile_visible = caller.may("operator")
    return CustomerView(
        customer_id=customer_id,
        groups=await held_groups(ctx, customer_id),
        aggregates=aggregates,
        consent=Consent(opted_out=sorted(await ctx.customers.opted_out(customer_id))),
        profile=await ctx.customers.profile(customer_id) if profile_visible else None,
        profile_visible=profile_visible,
        unavailable=unavailable,
    )


@router.get("/v1/customers/{customer_id}/messages", response_model=Messages)
async def customer_messages(
    customer_id: ExternalId,
    ctx: Ctx,
    caller: Viewer,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Messages:
    """The notifier's decisions about the customer, newest first; the last TAGSTREAM_REDIS__HISTORY_LIMIT
    are kept (in Kafka mode, rebuilt from tagstream.notifications for as long as that topic keeps them)."""
    found = await ctx.messages.messages(customer_id, offset, limit + 1)
    more = len(found) > limit
    return Messages(customer_id=customer_id, messages=found[:limit], next_offset=offset + limit if more else None)
