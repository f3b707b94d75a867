"""Playbooks over HTTP: list, get, validate (viewer) and replace (admin), versioned.

The set replaced here takes over from the notifier's playbooks file in both modes; every notifier
replica picks up a newer version at its next check (`reload_interval_s`), without a restart. The
validation is `tagstream notifier --check`'s (the same model: every problem reported at once, with
the playbook and field named) plus the definitions: a trigger naming a group or tag they do not
have is refused, as it would never fire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, Field

from schemas.common import Identifier
from schemas.limits import MAX_VERSION
from schemas.playbooks import Playbook, PlaybookError, PlaybookSet, parse_playbooks, unknown_triggers
from services.ingest.auth import Caller
from services.ingest.context import Context, Ctx, ErrorBody, require
from services.runtime.playbooks import PlaybookStore, StoredPlaybooks

router = APIRouter(tags=["playbooks"])

Viewer = Annotated[Caller, require("viewer")]
Admin = Annotated[Caller, require("admin")]

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "no such playbook"},
    409: {"model": ErrorBody, "description": "`version` is not the current one: read it and try again"},
    422: {"model": ErrorBody, "description": "the playbooks are invalid: every problem"},
    503: {"model": ErrorBody, "description": "no notifier runs here (embedded mode without playbooks), or Redis"},
}


class PlaybooksView(BaseModel):
    version: int = Field(description="0: none replaced over the API yet (the notifier's file is in force)")
    updated_at: datetime | None
    updated_by: str | None
    templates: dict[str, str]
    playbooks: list[Playbook]


class Validation(BaseModel):
    valid: bool
    problems: list[str] = Field(description="every problem found, each naming the playbook and field")


class Replace(BaseModel):
    version: int = Field(ge=0, le=MAX_VERSION, description="the version being replaced (GET /v1/playbooks)")
    templates: dict[str, Any] = Field(default_factory=dict)
    playbooks: list[Any] = Field(default_factory=list)


@router.get("/v1/playbooks", response_model=PlaybooksView, responses=_ERRORS)
async def list_playbooks(ctx: Ctx, caller: Viewer) -> PlaybooksView:
    """The set replaced over the API, with its version (none yet: version 0 and no playbooks)."""
    return _view(await _store(ctx).current())


@router.get("/v1/playbooks/{playbook_id}", response_model=Playbook, responses=_ERRORS)
async def get_playbook(playbook_id: Identifier, ctx: Ctx, caller: Viewer) -> Playbook:
    stored = await _store(ctx).current()
    found = stored.playbooks.get(playbook_id) if stored is not None else None
    if found is None:
        raise HTTPException(404, f"no playbook {playbook_id!r}")
    return found


@router.post("/v1/playbooks:validate", response_model=Validation, responses=_ERRORS)
async def validate_playbooks(ctx: Ctx, caller: Viewer, document: Annotated[dict[str, Any], Body()]) -> Validation:
    """Check a set (`templates`, `playbooks`) without storing it."""
    problems = _problems(ctx, document)[1]
    return Validation(valid=not problems, problems=problems)


@router.put("/v1/playbooks", response_model=PlaybooksView, responses=_ERRORS)
async def replace_playbooks(body: Replace, ctx: Ctx, caller: Admin) -> PlaybooksView:
    """Replace the whole set (version + 1); steps already scheduled keep the step they were planned with,
    and a removed or disabled playbook's pending steps are cancelled when they come due."""
    store = _store(ctx)
    playbooks, problems = _problems(ctx, {"templates": body.templates, "playbooks": body.playbooks})
    if playbooks is None or problems:
        raise HTTPException(422, problems)
    stored = await store.replace(playbooks, body.version, ctx.now(), caller.name)
    if stored is None:
        current = await store.current()
        raise HTTPException(409, f"version {body.version} is not current: the playbooks are at {_version(current)}")
    return _view(stored)


def _problems(ctx: Context, document: dict[str, Any]) -> tuple[PlaybookSet | None, list[str]]:
    try:
        playbooks = parse_playbooks(document, "playbooks")
    except PlaybookError as error:
        return None, error.problems
    return playbooks, unknown_triggers(playbooks, ctx.groups())


def _store(ctx: Context) -> PlaybookStore:
    if ctx.campaigns is None:
        raise HTTPException(503, "no notifier runs here: playbooks need one (tagstream run --playbooks)")
    return ctx.campaigns.playbooks


def _version(stored: StoredPlaybooks | None) -> int:
    return stored.version if stored is not None else 0


def _view(stored: StoredPlaybooks | None) -> PlaybooksView:
    if stored is None:
        return PlaybooksView(version=0, updated_at=None, updated_by=None, templates={}, playbooks=[])
    return PlaybooksView(
        version=stored.version,
        updated_at=stored.updated_at,
        updated_by=stored.actor,
        templates=dict(stored.playbooks.templates),
        playbooks=list(stored.playbooks.playbooks),
    )
