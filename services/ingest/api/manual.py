"""Manual tags (operator): add or remove one tag for one or many customers, and the CSV import."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from schemas.common import ExternalId, Identifier, UtcDatetime
from schemas.tags import TagCommand
from services.ingest.auth import Caller
from services.ingest.context import Context, Ctx, require
from services.ingest.manual import MAX_REPORTED_ERRORS, ImportFileError, command_id, plan_import
from services.ingest.ports import Throttled, Unavailable

router = APIRouter(tags=["manual tags"])

Operator = Annotated[Caller, require("operator")]
_CHUNK = 500


class ManualTags(BaseModel):
    group_id: Identifier
    tag_id: Identifier
    action: Literal["add", "remove", "clear"] = Field(
        description="remove of a rule's tag in a `both` group sticks until `clear` (the rules decide again) or add"
    )
    customer_ids: list[ExternalId] = Field(min_length=1, max_length=1000)
    expires_at: UtcDatetime | None = Field(default=None, description="a manual add lapses at this instant")
    request_id: ExternalId | None = Field(
        default=None, description="retrying with the same request_id resends the same commands"
    )


class Published(BaseModel):
    commands: int
    command_ids: list[str]


class RowProblem(BaseModel):
    row: int = Field(description="line number in the file; the header is line 1")
    customer_id: str | None
    reason: str


class ImportSummary(BaseModel):
    rows: int
    rows_ok: int
    rows_failed: int
    commands: int = Field(description="add commands published (or that would be, on a dry run)")
    dry_run: bool
    errors: list[RowProblem] = Field(description=f"the first {MAX_REPORTED_ERRORS} bad rows")
    errors_omitted: int = Field(description="bad rows beyond those listed (counted in rows_failed)")


@router.post(
    "/v1/manual-tags",
    status_code=202,
    response_model=Published,
    responses={
        404: {"description": "no such group or tag"},
        409: {"description": "the group does not allow manual tagging (auto-only or disabled)"},
        503: {"description": "Kafka unreachable"},
    },
)
async def manual_tags(body: ManualTags, ctx: Ctx, caller: Operator) -> Published | JSONResponse:
    """One tag added to or removed from each listed customer, as tag commands the tagger applies."""
    groups = ctx.groups()
    group = groups.get(body.group_id)
    if group is None or body.tag_id not in {tag.id for tag in group.tags}:
        raise HTTPException(404, f"no tag {body.group_id}/{body.tag_id}")
    request_id = body.request_id or uuid.uuid4().hex
    commands = [
        TagCommand(
            command_id=command_id("manual", customer_id, body.group_id, body.tag_id, f"{body.action}:{request_id}"),
            customer_id=customer_id,
            group_id=body.group_id,
            tag_id=body.tag_id,
            action=body.action,
            actor=caller.name,
            expires_at=body.expires_at,
            occurred_at=ctx.now(),
        )
        for customer_id in dict.fromkeys(body.customer_ids)
    ]
    refusal = ctx.manual_tagging().refusal(commands[0])  # the rules depend on the group, not the customer
    if refusal is not None:
        raise HTTPException(409, refusal)
    failed = await publish_commands(ctx, commands)
    return failed or Published(commands=len(commands), command_ids=[command.command_id for command in commands])


@router.post(
    "/v1/manual-tags/import",
    response_model=ImportSummary,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}, "example": "customer_id,tags\nc1,会员等级-金卡\n"}},
        }
    },
    responses={413: {"description": "file over max_body_bytes"}, 422: {"description": "not a readable CSV file"}},
)
async def import_tags(
    request: Request, ctx: Ctx, caller: Operator, dry_run: Annotated[bool, Query()] = False
) -> ImportSummary | JSONResponse:
    """`customer_id,tags` rows, tags written `组名-标签名` and separated by `;`. Good rows are applied
    (re-running the same file changes nothing more); bad rows are reported with their line and reason."""
    data = await request.body()  # at most max_body_bytes: services/ingest/limits.py
    try:
        # a large file takes seconds of CPU: in a thread, so the event loop keeps answering meanwhile
        plan = await asyncio.to_thread(plan_import, data, ctx.manual_tagging(), actor=caller.name, now=ctx.now())
    except ImportFileError as error:
        raise HTTPException(422, str(error)) from None
    if not dry_run:
        failed = await publish_commands(ctx, plan.commands)
        if failed is not None:
            return failed
    return ImportSummary(
        rows=plan.rows,
        rows_ok=plan.rows_ok,
        rows_failed=plan.rows_failed,
        commands=len(plan.commands),
        dry_run=dry_run,
        errors=[RowProblem(row=e.row, customer_id=e.customer_id, reason=e.reason) for e in plan.errors],
        errors_omitted=plan.errors_omitted,
    )


async def publish_commands(ctx: Context, commands: list[TagCommand]) -> JSONResponse | None:
    """Publish on the tag-commands topic keyed by customer; None once all are acknowledged."""
    topic = ctx.settings.topics.tag_commands
    try:
        for start in range(0, len(commands), _CHUNK):
            chunk = commands[start : start + _CHUNK]
            await ctx.publisher.send(
                topic, [(command.customer_id.encode(), command.model_dump_json().encode()) for command in chunk]
            )
    except Throttled as throttled:
        return JSONResponse(
            {"detail": str(throttled)}, status_code=429, headers={"Retry-After": str(throttled.retry_after_s)}
        )
    except Unavailable as unavailable:
        return JSONResponse({"detail": str(unavailable)}, status_code=503)
    return None
