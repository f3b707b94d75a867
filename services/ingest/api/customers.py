"""Consent and profile writes the notifier honours on its next decision (operator). Never logged."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from schemas.common import ExternalId
from services.ingest.auth import Caller
from services.ingest.context import Ctx, require
from services.runtime.customers import Profile

router = APIRouter(tags=["customers"])

Operator = Annotated[Caller, require("operator")]
Viewer = Annotated[Caller, require("viewer")]
ChannelOrAll = Literal["push", "sms", "coupon", "*"]


class OptOuts(BaseModel):
    customer_id: str
    opted_out: list[str] = Field(description='channels the customer refuses; "*" means every channel')


@router.put("/v1/customers/{customer_id}/profile", status_code=204)
async def put_profile(customer_id: ExternalId, profile: Profile, ctx: Ctx, caller: Operator) -> Response:
    """Replace the customer's profile (name, phone, email, timezone, locale; owner, external_userid, follow_user)."""
    await ctx.customers.set_profile(customer_id, profile)
    return Response(status_code=204)


@router.get("/v1/customers/{customer_id}/opt-outs", response_model=OptOuts)
async def get_opt_outs(customer_id: ExternalId, ctx: Ctx, caller: Viewer) -> OptOuts:
    return OptOuts(customer_id=customer_id, opted_out=sorted(await ctx.customers.opted_out(customer_id)))


@router.put("/v1/customers/{customer_id}/opt-outs/{channel}", response_model=OptOuts)
async def opt_out(customer_id: ExternalId, channel: ChannelOrAll, ctx: Ctx, caller: Operator) -> OptOuts:
    """The customer refuses `channel` ("*": every channel) from now on."""
    await ctx.customers.opt_out(customer_id, channel)
    return OptOuts(customer_id=customer_id, opted_out=sorted(await ctx.customers.opted_out(customer_id)))


@router.delete("/v1/customers/{customer_id}/opt-outs/{channel}", response_model=OptOuts)
async def opt_in(customer_id: ExternalId, channel: ChannelOrAll, ctx: Ctx, caller: Operator) -> OptOuts:
    """Withdraw an opt-out ("*" withdraws them all)."""
    await ctx.customers.opt_in(customer_id, channel)
    return OptOuts(customer_id=customer_id, opted_out=sorted(await ctx.customers.opted_out(customer_id)))
