"""Reads from the Redis read model (viewer): a customer's tags, their history, and audiences."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from schemas.common import ExternalId
from schemas.tags import ChangeSource, TagChanged, TagGroup
from services.ingest import catalog
from services.ingest.audiences import InvalidCursor
from services.ingest.auth import Caller
from services.ingest.context import Ctx, ErrorBody, require
from services.ingest.ports import AudiencePage, AudienceQuery, CursorExpired

Viewer = Annotated[Caller, require("viewer")]


async def read_model_whole(ctx: Ctx, caller: Viewer) -> None:
    """Every read here waits for a whole read model: after Redis lost its data, an empty or half-rebuilt
    one would answer wrong tags and audiences as if they were true. After the key check (`caller`), so
    an unauthenticated request gets its 401, not the read model's state."""
    reason = await ctx.reads.unavailable()
    if reason is not None:
        raise HTTPException(503, reason, headers={"Retry-After": "5"})


READ_MODEL_UNAVAILABLE: dict[int | str, dict[str, object]] = {
    503: {
        "model": ErrorBody,
        "description": "Redis unreachable, or the read model is missing or rebuilding (Redis lost its data): "
        "the detail says which and how far; retry after Retry-After",
    }
}

router = APIRouter(tags=["reads"], dependencies=[Depends(read_model_whole)], responses=READ_MODEL_UNAVAILABLE)

TagRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*/[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=129)]


class HeldTagView(BaseModel):
    id: str
    name: str
    added_at: datetime
    source: ChangeSource


class GroupTags(BaseModel):
    id: str
    name: str
    mode: str
    tags: list[HeldTagView] = Field(description="in the group's tag order")


class CustomerTags(BaseModel):
    customer_id: str
    groups: list[GroupTags] = Field(description="in display order; disabled and deleted groups are hidden")


class History(BaseModel):
    customer_id: str
    changes: list[TagChanged] = Field(description="newest first, each with its reason")
    next_offset: int | None


@router.get("/v1/customers/{customer_id}/tags", response_model=CustomerTags)
async def customer_tags(customer_id: ExternalId, ctx: Ctx, caller: Viewer) -> CustomerTags:
    return CustomerTags(customer_id=customer_id, groups=await held_groups(ctx, customer_id))


async def held_groups(ctx: Ctx, customer_id: str) -> list[GroupTags]:
    """The customer's tags by group, in display and tag order; disabled and deleted groups hidden."""
    held = await ctx.reads.held_tags(customer_id)
    groups = []
    for group in catalog.display_order(ctx.groups()):
        tags = held.get(group.id)
        if group.disabled or not tags:
            continue
        shown = [
            HeldTagView(id=tag.id, name=tag.name, added_at=tags[tag.id].added_at, source=tags[tag.id].source)
            for tag in group.ordered_tags()
            if tag.id in tags
        ]
        if shown:
            groups.append(GroupTags(id=group.id, name=group.name, mode=group.mode, tags=shown))
    return groups


@router.get("/v1/customers/{customer_id}/history", response_model=History)
async def customer_history(
    customer_id: ExternalId,
    ctx: Ctx,
    caller: Viewer,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> History:
    changes = await ctx.reads.history(customer_id, offset, limit + 1)
    more = len(changes) > limit
    return History(customer_id=customer_id, changes=changes[:limit], next_offset=offset + limit if more else None)


class AudienceRequest(BaseModel):
    all_of: list[TagRef] = Field(
        default_factory=list, max_length=50, description='"group/tag" the customer holds all of'
    )
    any_of: list[TagRef] = Field(default_factory=list, max_length=50, description="...at least one of")
    none_of: list[TagRef] = Field(default_factory=list, max_length=50, description="...none of")
    limit: int = Field(default=1000, ge=1, le=10_000)
    cursor: str | None = Field(default=None, max_length=2000, description="from a previous page: the next page")


class AudienceResponse(BaseModel):
    count: int = Field(description="customers in the audience (each once)")
    customer_ids: list[str] = Field(description="this page, in the snapshot's order (fixed over its pages)")
    cursor: str | None = Field(description="send back for the next page; null on the last")
    expires_at: datetime = Field(description="the cursor works until then")


@router.post("/v1/audiences/query", response_model=AudienceResponse)
async def audience_query(body: AudienceRequest, ctx: Ctx, caller: Viewer) -> AudienceResponse:
    """Customers holding all of `all_of`, any of `any_of` and none of `none_of` (disabled groups' tags
    count as held by nobody), counted and paged by cursor over one snapshot."""
    limit = min(body.limit, ctx.settings.ingest.audience_page_max)
    try:
        if body.cursor is not None:
            page = await ctx.audiences.page(body.cursor, limit)
        else:
            query = effective_query(body, ctx.groups())
            page = await ctx.audiences.query(query, limit) if query is not None else _empty(ctx)
    except InvalidCursor as error:
        raise HTTPException(422, str(error)) from None
    except CursorExpired as error:
        raise HTTPException(410, str(error)) from None
    return AudienceResponse(
        count=page.count, customer_ids=page.customer_ids, cursor=page.cursor, expires_at=page.expires_at
    )


@router.post(
    "/v1/audiences/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "customer_id per line"}},
)
async def audience_export(body: AudienceRequest, ctx: Ctx, caller: Viewer) -> StreamingResponse:
    """The whole audience as CSV (`customer_id` header, one id per line), streamed. An id starting with
    `= + - @`, a tab or a carriage return is written with a leading `'` so that a spreadsheet shows it
    as text instead of running it as a formula."""
    query = effective_query(body, ctx.groups())

    async def lines() -> AsyncIterator[bytes]:
        yield b"customer_id\r\n"
        if query is None:
            return
        async for customer_id in ctx.audiences.export(query):
            yield csv_cell(customer_id).encode() + b"\r\n"

    return StreamingResponse(
        lines(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="audience.csv"'}
    )


def effective_query(body: AudienceRequest, groups: Mapping[str, TagGroup]) -> AudienceQuery | None:
    """The query over enabled groups' tags; None when it can only be empty. 422 for unknown tags."""
    unknown = [
        ref
        for ref in (*body.all_of, *body.any_of, *body.none_of)
        if (group := groups.get(ref.split("/", 1)[0])) is None or ref.split("/", 1)[1] not in {t.id for t in group.tags}
    ]
    if unknown:
        raise HTTPException(422, f"unknown tags {sorted(set(unknown))}: write them as group_id/tag_id")
    if not body.all_of and not body.any_of:
        raise HTTPException(422, "all_of or any_of: select at least one tag (none_of alone selects everyone else)")

    def enabled(refs: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ref for ref in refs if not groups[ref.split("/", 1)[0]].disabled))

    all_of, any_of, none_of = enabled(body.all_of), enabled(body.any_of), enabled(body.none_of)
    if len(all_of) < len(set(body.all_of)) or (body.any_of and not any_of):
        return None  # a disabled group's tag is held by nobody
    if not all_of and not any_of:
        return None
    return AudienceQuery(all_of=all_of, any_of=any_of, none_of=none_of)


def _empty(ctx: Ctx) -> AudiencePage:
    return AudiencePage(count=0, customer_ids=[], cursor=None, expires_at=ctx.now())


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Cells a spreadsheet would run as a formula (OWASP, "CSV Injection"): `=1+1`, `+cmd|' /C calc'!A0`."""


def csv_cell(value: str) -> str:
    if value.startswith(_FORMULA_STARTS):
        value = "'" + value  # OWASP's rule: the quote makes it text, and Excel does not show it
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
