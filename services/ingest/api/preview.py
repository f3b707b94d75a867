"""The impact of a rule change before it goes live (admin): who would gain and lose each tag.

The draft is validated exactly as a PUT (or, for a new group, a POST) would validate it, then every
existing customer is evaluated against the resulting definitions where the state is — the tagger
workers, each for its partitions (services/tagger/queries.py), or the embedded node in process —
by the same backfill that applying it runs. Nothing is published, sent or stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from schemas.excerpt import excerpt
from schemas.queries import MAX_SAMPLE, Sample
from schemas.tags import TagGroup
from services.ingest import catalog
from services.ingest.api.groups import Admin
from services.ingest.context import Ctx, ErrorBody
from services.ingest.ports import TaggerUnavailable

router = APIRouter(tags=["tag groups"])


class TagImpactView(BaseModel):
    group_id: str
    tag_id: str
    tag_name: str = Field(description="in the draft, or as defined now for a tag the draft removes")
    gained: int = Field(description="customers who would get the tag")
    lost: int = Field(description="customers who would lose it")
    gained_sample: list[Sample] = Field(description="the lowest customer ids, with the values that decide it")
    lost_sample: list[Sample]


class PreviewView(BaseModel):
    group_id: str
    draft_version: int = Field(description="the version applying the draft would give the group")
    customers: int = Field(description="customers evaluated (every customer the tagger holds)")
    impacts: list[TagImpactView] = Field(description="every tag someone would gain or lose, by group and tag id")


@router.post(
    "/v1/groups/{group_id}:preview",
    response_model=PreviewView,
    responses={
        422: {"model": ErrorBody, "description": "the draft would be invalid: every problem"},
        504: {"model": ErrorBody, "description": "some partitions went unanswered: the detail names them"},
    },
)
async def preview_group(
    group_id: str,
    draft: TagGroup,
    ctx: Ctx,
    caller: Admin,
    sample: Annotated[int, Query(ge=0, le=MAX_SAMPLE, description="customer ids shown per tag and direction")] = 5,
) -> PreviewView:
    """Evaluate a draft definition of the group (the body a PUT would take; a new id previews a create)
    on the real current state of every customer, and count who would gain and lose each tag."""
    groups = ctx.groups()
    try:
        if group_id in groups:
            change = catalog.replace(groups, group_id, draft, ctx.limits())
        elif draft.id != group_id:
            raise catalog.InvalidDefinitions(
                [f"id: the body's id {draft.id!r} differs from the path's {excerpt(group_id)}"]
            )
        else:
            change = catalog.create(groups, draft, ctx.limits(), last_version=ctx.definitions.last_version(group_id))
    except catalog.CatalogError as error:
        raise HTTPException(422, error.problems) from None
    drafted = {**groups, **{group.id: group for group in change.upserts}}
    try:
        tally = await ctx.tagger.preview(list(drafted.values()), sample)
    except TaggerUnavailable as error:
        raise HTTPException(504, str(error)) from None
    names = {(g.id, t.id): t.name for g in (*groups.values(), *change.upserts) for t in g.tags}
    return PreviewView(
        group_id=group_id,
        draft_version=drafted[group_id].version,
        customers=tally.customers,
        impacts=[
            TagImpactView(
                tag_name=names.get((i.group_id, i.tag_id), i.tag_id), **i.model_dump(exclude={"schema_version"})
            )
            for i in tally.impacts
        ],
    )
