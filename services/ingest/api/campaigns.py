"""Campaigns (admin writes, viewer reads) and the reports of campaigns and playbooks.

A campaign is stored where the notifier keeps its state (Redis; the embedded node's journal) and
run by the notifier: the audience is taken at `start_at` (or now), then each step is fanned out at
the configured pace and decided like a playbook's step (docs/notifier.md "Campaigns").
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from schemas.campaigns import TRANSITIONS, Campaign, CampaignRecord
from schemas.common import Identifier
from schemas.durations import parse_duration
from schemas.limits import MAX_DURATION
from schemas.playbooks import CapRule
from services.ingest.auth import Caller
from services.ingest.context import Context, Ctx, ErrorBody, require
from services.ingest.ports import AudienceQuery, NotifierAccess
from services.runtime.campaigns import CampaignsFull
from services.runtime.caps import exceeded_cap, longest_window
from services.runtime.reports import Report, conversion, step_reports
from services.runtime.step_keys import in_holdout

router = APIRouter(tags=["campaigns"])

Viewer = Annotated[Caller, require("viewer")]
Admin = Annotated[Caller, require("admin")]

PREVIEW_EXAMINED = 2_000
"""Customers whose consent, address and caps the preview reads one by one (the counts are exact)."""

_AT_ONCE = 16
"""Customers read at once: each takes up to 2 + steps Redis connections, of redis-py's pool of 100."""

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "no such campaign"},
    409: {"model": ErrorBody, "description": "the id is taken, the status does not allow it, or too many campaigns"},
    503: {"model": ErrorBody, "description": "no notifier runs here (embedded mode without playbooks), or Redis"},
}


class CampaignList(BaseModel):
    campaigns: list[CampaignRecord] = Field(description="oldest first")


class StepPreview(BaseModel):
    step: int
    channel: str
    consent: int = Field(description="examined customers who opted out of the channel (or of all)")
    unreachable: int = Field(description="examined customers without an address on the channel (SMS: no phone)")
    cap: int = Field(description="examined customers a frequency cap would hold back now")


class Preview(BaseModel):
    audience: int = Field(description="customers the audience selects now (each once)")
    holdout: int = Field(description="of them, in the campaign's control group")
    examined: int = Field(description=f"customers outside the holdout checked below (the first {PREVIEW_EXAMINED})")
    steps: list[StepPreview]


@router.post("/v1/campaigns", status_code=201, response_model=CampaignRecord, responses=_ERRORS)
async def create_campaign(campaign: Campaign, ctx: Ctx, caller: Admin) -> CampaignRecord:
    """Schedule a campaign: its audience is taken at `start_at` (none: at once) and each step sent then
    plus its delay, paced. Tags the definitions do not have are refused, all of them named."""
    access = _access(ctx)
    _check_audience(ctx, campaign)
    now = ctx.now()
    if campaign.start_at is not None and campaign.start_at > now + MAX_DURATION:
        raise HTTPException(422, f"start_at: at most {MAX_DURATION.days}d ahead, got {campaign.start_at.isoformat()}")
    record = CampaignRecord(
        campaign=campaign.model_copy(update={"start_at": campaign.start_at or now}), status="scheduled", created_at=now
    )
    try:
        created = await access.store.create(record)
    except CampaignsFull as error:
        raise HTTPException(409, f"{error}: delete done or cancelled ones first") from None
    if not created:
        raise HTTPException(
            409,
            f"campaign id {campaign.id!r} is taken (never reused: a deleted campaign's sends and report keep it)",
        )
    return record


@router.get("/v1/campaigns", response_model=CampaignList, responses=_ERRORS)
async def list_campaigns(ctx: Ctx, caller: Viewer) -> CampaignList:
    return CampaignList(campaigns=await _access(ctx).store.all())


@router.get("/v1/campaigns/{campaign_id}", response_model=CampaignRecord, responses=_ERRORS)
async def get_campaign(campaign_id: Identifier, ctx: Ctx, caller: Viewer) -> CampaignRecord:
    return await _record(_access(ctx), campaign_id)


@router.post("/v1/campaigns/{campaign_id}/{action}", response_model=CampaignRecord, responses=_ERRORS)
async def change_campaign(
    campaign_id: Identifier, action: Literal["pause", "resume", "cancel"], ctx: Ctx, caller: Admin
) -> CampaignRecord:
    """pause (no step is fanned out or sent until resumed; due steps wait), resume, or cancel (for
    good: steps not yet sent are reported cancelled)."""
    access = _access(ctx)
    allowed, to = TRANSITIONS[action]
    record = await access.store.transition(campaign_id, allowed, to)
    if record is None:
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    # repeating an action is fine (pausing a paused campaign); a resumed one never started is scheduled
    if record.status != to and not (action == "resume" and record.status == "scheduled"):
        raise HTTPException(409, f"cannot {action} campaign {campaign_id!r}: it is {record.status}")
    return record


@router.delete("/v1/campaigns/{campaign_id}", status_code=204, responses=_ERRORS)
async def delete_campaign(campaign_id: Identifier, ctx: Ctx, caller: Admin) -> Response:
    """Forget a done or cancelled campaign; its id stays taken (its sends are remembered by it)."""
    access = _access(ctx)
    record = await _record(access, campaign_id)
    if not await access.store.delete(campaign_id):
        raise HTTPException(409, f"campaign {campaign_id!r} is {record.status}: cancel it first")
    return Response(status_code=204)


@router.post("/v1/campaigns:preview", response_model=Preview, responses=_ERRORS)
async def preview_campaign(campaign: Campaign, ctx: Ctx, caller: Viewer) -> Preview:
    """Who the campaign would reach if it started now: the audience, the holdout, and among the first
    customers outside it how many consent, a missing address or a cap would suppress per step."""
    access = _access(ctx)
    _check_audience(ctx, campaign)
    reason = await ctx.reads.unavailable()
    if reason is not None:  # an empty or half-rebuilt read model would count the wrong audience
        raise HTTPException(503, reason, headers={"Retry-After": "5"})
    audience = campaign.audience.effective(ctx.groups())
    size, held = 0, 0
    examined: list[str] = []
    if audience is not None:
        query = AudienceQuery(all_of=audience.all_of, any_of=audience.any_of, none_of=audience.none_of)
        async for customer_id in ctx.audiences.export(query):
            size += 1
            if in_holdout(customer_id, campaign):
                held += 1
            elif len(examined) < PREVIEW_EXAMINED:
                examined.append(customer_id)
    counts: Counter[tuple[int, str]] = Counter()
    for start in range(0, len(examined), _AT_ONCE):
        chunk = examined[start : start + _AT_ONCE]
        found = await asyncio.gather(*(_suppressions(ctx, access, campaign, c) for c in chunk))
        for suppressions in found:
            counts.update(suppressions)
    return Preview(
        audience=size,
        holdout=held,
        examined=len(examined),
        steps=[
            StepPreview(
                step=number,
                channel=step.channel,
                consent=counts[(number, "consent")],
                unreachable=counts[(number, "unreachable")],
                cap=counts[(number, "cap")],
            )
            for number, step in enumerate(campaign.steps)
        ],
    )


@router.get("/v1/campaigns/{campaign_id}/report", response_model=Report, responses=_ERRORS)
async def campaign_report(campaign_id: Identifier, ctx: Ctx, caller: Viewer) -> Report:
    """Per step: targeted, held out, sent, suppressed by reason, deferred, cancelled, failed; and the
    conversion of treated customers vs the holdout within the campaign's `conversion_window`."""
    access = _access(ctx)
    record = await _record(access, campaign_id)
    campaign = record.campaign
    counts = await access.reports.counts("campaign", campaign_id)
    positions = record.positions or (0,) * len(campaign.steps)
    return Report(
        kind="campaign",
        id=campaign_id,
        steps=step_reports(counts, [step.channel for step in campaign.steps], positions),
        conversion=await conversion(
            access.reports, access.activity, "campaign", campaign_id, campaign.conversion_window
        ),
    )


@router.get("/v1/playbooks/{playbook_id}/report", response_model=Report, responses=_ERRORS)
async def playbook_report(
    playbook_id: Identifier,
    ctx: Ctx,
    caller: Viewer,
    window: Annotated[str, Query(max_length=16, description="conversion window, e.g. 7d (at most 366d)")] = "7d",
) -> Report:
    """The same report for a playbook, over every trigger since its first (steps as recorded)."""
    access = _access(ctx)
    try:
        span = parse_duration(window)
    except ValueError as error:
        raise HTTPException(422, f"window: {error}") from None
    if span <= timedelta(0):
        raise HTTPException(422, f"window: must be positive, got {window!r}")
    counts = await access.reports.counts("playbook", playbook_id)
    steps = sorted({int(field.split("|", 1)[0]) for field in counts})
    if not steps:
        raise HTTPException(404, f"nothing recorded for playbook {playbook_id!r}")
    return Report(
        kind="playbook",
        id=playbook_id,
        steps=step_reports(counts, [None for _ in range(steps[-1] + 1)]),
        conversion=await conversion(access.reports, access.activity, "playbook", playbook_id, span),
    )


def _access(ctx: Context) -> NotifierAccess:
    if ctx.campaigns is None:
        raise HTTPException(503, "no notifier runs here: campaigns need one (tagstream run --playbooks)")
    return ctx.campaigns


async def _record(access: NotifierAccess, campaign_id: str) -> CampaignRecord:
    record = await access.store.get(campaign_id)
    if record is None:
        raise HTTPException(404, f"no campaign {campaign_id!r}")
    return record


def _check_audience(ctx: Context, campaign: Campaign) -> None:
    unknown = campaign.audience.unknown(ctx.groups())
    if unknown:
        raise HTTPException(422, f"audience: unknown tags {unknown}: write them as group_id/tag_id")


async def _suppressions(
    ctx: Context, access: NotifierAccess, campaign: Campaign, customer_id: str
) -> list[tuple[int, str]]:
    """(step, reason) for each step consent, a missing address or a cap would suppress now."""
    now = ctx.now()
    global_caps = tuple(CapRule.from_setting(text) for text in ctx.settings.notifier.caps)
    opted_out, profile = await asyncio.gather(ctx.customers.opted_out(customer_id), ctx.customers.profile(customer_id))
    found = []
    for number, step in enumerate(campaign.steps):
        caps = [cap for cap in (*global_caps, *campaign.caps) if cap.channel == step.channel]
        if "*" in opted_out or step.channel in opted_out:
            found.append((number, "consent"))
        elif step.channel == "sms" and profile.phone is None:
            found.append((number, "unreachable"))
        elif caps:
            history = await access.ledger.history(customer_id, step.channel, now - longest_window(caps))
            broken = exceeded_cap(
                step.channel, campaign.id, history, now, global_caps=global_caps, playbook_caps=campaign.caps
            )
            if broken is not None:
                found.append((number, "cap"))
    return found
