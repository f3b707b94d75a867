"""Tag groups: create, replace, read, list, reorder, disable/enable, delete (admin writes, viewer reads).

Each change is validated as the tagger compiles definitions, published to the compacted definitions
topic (acknowledged by Kafka before the answer) and bumps the version of every group it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas.common import Identifier
from schemas.limits import MAX_GROUPS
from schemas.tags import TagGroup
from services.ingest import catalog
from services.ingest.auth import Caller
from services.ingest.context import Context, Ctx, ErrorBody, require
from services.ingest.ports import Record, Throttled, Unavailable
from services.runtime.definitions_feed import definition_record, deletion_record

router = APIRouter(tags=["tag groups"])

Viewer = Annotated[Caller, require("viewer")]
Admin = Annotated[Caller, require("admin")]


class GroupList(BaseModel):
    groups: list[TagGroup] = Field(description="in display order (order, then id)")


class Reorder(BaseModel):
    group_ids: list[Identifier] = Field(
        max_length=MAX_GROUPS, description="every group id once, in the wanted display order"
    )


_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"description": "no such group"},
    409: {"description": "the group already exists"},
    422: {"model": ErrorBody, "description": "the definitions would be invalid: every problem"},
    503: {"description": "Kafka unreachable or definitions not loaded yet"},
}


@router.get("/v1/groups", response_model=GroupList)
async def list_groups(ctx: Ctx, caller: Viewer) -> GroupList:
    return GroupList(groups=catalog.display_order(ctx.groups()))


@router.get("/v1/groups/{group_id}", response_model=TagGroup, responses={404: {"description": "no such group"}})
async def get_group(group_id: str, ctx: Ctx, caller: Viewer) -> TagGroup:
    group = ctx.groups().get(group_id)
    if group is None:
        raise HTTPException(404, f"no tag group {group_id!r}")
    return group


@router.post("/v1/groups", status_code=201, response_model=TagGroup, responses=_ERRORS)
async def create_group(group: TagGroup, ctx: Ctx, caller: Admin) -> TagGroup | JSONResponse:
    """Create a group (version 1, or one past a deleted group's); the tagger backfills its customers."""
    last = ctx.definitions.last_version(group.id)
    failed = await _change(ctx, lambda groups: catalog.create(groups, group, ctx.limits(), last_version=last))
    return failed or ctx.groups()[group.id]


@router.put("/v1/groups/{group_id}", response_model=TagGroup, responses=_ERRORS)
async def replace_group(group_id: str, group: TagGroup, ctx: Ctx, caller: Admin) -> TagGroup | JSONResponse:
    """Replace a group's definition (version + 1); the tagger re-evaluates its customers."""
    failed = await _change(ctx, lambda groups: catalog.replace(groups, group_id, group, ctx.limits()))
    return failed or ctx.groups()[group_id]


@router.post("/v1/groups/{group_id}/disable", response_model=TagGroup, responses=_ERRORS)
async def disable_group(group_id: str, ctx: Ctx, caller: Admin) -> TagGroup | JSONResponse:
    """Hide a group and stop evaluating it; its customers keep their tags (nothing is removed)."""
    failed = await _change(ctx, lambda groups: catalog.set_disabled(groups, group_id, True, ctx.limits()))
    return failed or ctx.groups()[group_id]


@router.post("/v1/groups/{group_id}/enable", response_model=TagGroup, responses=_ERRORS)
async def enable_group(group_id: str, ctx: Ctx, caller: Admin) -> TagGroup | JSONResponse:
    failed = await _change(ctx, lambda groups: catalog.set_disabled(groups, group_id, False, ctx.limits()))
    return failed or ctx.groups()[group_id]


@router.post("/v1/groups:reorder", response_model=GroupList, responses=_ERRORS)
async def reorder_groups(body: Reorder, ctx: Ctx, caller: Admin) -> GroupList | JSONResponse:
    """Set the display order of all groups at once (order = position; changed groups get version + 1)."""
    failed = await _change(ctx, lambda groups: catalog.reorder(groups, body.group_ids, ctx.limits()))
    return failed or GroupList(groups=catalog.display_order(ctx.groups()))


@router.delete("/v1/groups/{group_id}", status_code=204, responses=_ERRORS)
async def delete_group(group_id: str, ctx: Ctx, caller: Admin) -> Response:
    """Delete a group (refused while other groups' rules refer to it)."""
    failed = await _change(ctx, lambda groups: catalog.delete(groups, group_id, ctx.limits()))
    return failed or Response(status_code=204)


async def _change(ctx: Context, plan: Callable[[Mapping[str, TagGroup]], catalog.CatalogUpdate]) -> JSONResponse | None:
    """Plan a change on the current groups and publish it; None when done, else the error answer."""
    async with ctx.definitions_lock:
        try:
            change = plan(ctx.groups())
        except catalog.CatalogError as error:
            return JSONResponse({"detail": error.problems}, status_code=error.status)
        return await publish_change(ctx, change)


async def publish_change(ctx: Context, change: catalog.CatalogUpdate) -> JSONResponse | None:
    """Publish a definitions change; None once Kafka acknowledged it, else the error answer."""
    if change.empty:
        return None
    records: list[Record] = [definition_record(group) for group in change.upserts]
    records += [deletion_record(group_id) for group_id in change.deletions]
    try:
        await ctx.publisher.send(ctx.settings.topics.tag_definitions, records)
    except (Throttled, Unavailable) as error:
        return JSONResponse({"detail": [str(error)]}, status_code=503)
    ctx.definitions.written(change.upserts, change.deletions)
    return None
