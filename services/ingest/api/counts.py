"""How many customers hold each tag now, and at the end of each of the shop's last days (viewer).

The counts come from the read model (services/tagger/readmodel.py, "Daily counts"): the member set's
size now, and the per-day deltas the projector keeps in the shop's local days, so a trend can be
drawn over the last `DAILY_KEEP_DAYS` days. Both survive a rebuild of the read model unchanged.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.ingest import catalog
from services.ingest.api.reads import READ_MODEL_UNAVAILABLE, Viewer, read_model_whole
from services.ingest.context import Ctx
from services.runtime.readmodel import DAILY_KEEP_DAYS

router = APIRouter(tags=["reads"], dependencies=[Depends(read_model_whole)], responses=READ_MODEL_UNAVAILABLE)


class DayCount(BaseModel):
    date: dt.date = Field(description="a local date of the shop (TAGSTREAM_SHOP__TIMEZONE)")
    count: int = Field(description="customers holding the tag at the end of that day (today: now)")


class TagCountView(BaseModel):
    id: str
    name: str
    count: int = Field(description="customers holding the tag now")
    history: list[DayCount] = Field(description="oldest first, one entry per day, today last")


class GroupCounts(BaseModel):
    id: str
    name: str
    disabled: bool = Field(description="a disabled group's tags are kept but hidden from other reads")
    tags: list[TagCountView] = Field(description="in the group's tag order")


class TagCounts(BaseModel):
    today: dt.date = Field(description="the shop's local date now")
    timezone: str
    groups: list[GroupCounts] = Field(description="in display order")


@router.get("/v1/tag-counts", response_model=TagCounts)
async def tag_counts(
    ctx: Ctx,
    caller: Viewer,
    days: Annotated[int, Query(ge=1, le=DAILY_KEEP_DAYS, description="days of history, today included")] = 30,
) -> TagCounts:
    """Holders of every defined tag now, with a daily history of those counts in the shop's local days."""
    groups = catalog.display_order(ctx.groups())
    today = ctx.zone.date_of(ctx.now())
    first = today - dt.timedelta(days=days - 1)
    refs = [(group.id, tag.id) for group in groups for tag in group.ordered_tags()]
    counts = await ctx.reads.tag_counts(refs)
    views = []
    for group in groups:
        tags = []
        for tag in group.ordered_tags():
            found = counts[(group.id, tag.id)]
            history = [DayCount(date=day, count=count) for day, count in found.daily.counts(first, today)]
            # Today's entry is the count now: the member set, whatever the clock says of today's deltas.
            history[-1] = DayCount(date=today, count=found.holders)
            tags.append(TagCountView(id=tag.id, name=tag.name, count=found.holders, history=history))
        views.append(GroupCounts(id=group.id, name=group.name, disabled=group.disabled, tags=tags))
    return TagCounts(today=today, timezone=ctx.settings.shop.timezone, groups=views)
