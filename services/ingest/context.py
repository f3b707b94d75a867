"""What every request handler shares: settings, ports, metrics, the clock and the API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from schemas.tags import TagGroup
from services.engine.zone import DayZone
from services.ingest.auth import ApiKeys, Caller, Role
from services.ingest.catalog import Limits
from services.ingest.manual import ManualTagging
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import (
    Audiences,
    Definitions,
    MessageLog,
    NotifierAccess,
    Publisher,
    TaggerState,
    TagReads,
)
from services.runtime.clock import Clock
from services.runtime.customers import CustomerStore
from services.runtime.settings import Settings
from services.runtime.zone import day_zone


class ErrorBody(BaseModel):
    """Every error answer: `detail` is a message, or a list of problems (strings or located errors)."""

    detail: str | list[Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
    403: {"model": ErrorBody, "description": "the key's role is not enough"},
    413: {"model": ErrorBody, "description": "the body is over max_body_bytes (refused before it is read)"},
    422: {"model": ErrorBody, "description": "invalid request: every problem, with where it is"},
    503: {"model": ErrorBody, "description": "Kafka or Redis unreachable, or definitions not loaded yet"},
}
"""Answers every authenticated route can give."""


@dataclass
class Context:
    settings: Settings
    clock: Clock
    metrics: IngestMetrics
    keys: ApiKeys
    publisher: Publisher
    definitions: Definitions
    reads: TagReads
    audiences: Audiences
    customers: CustomerStore
    tagger: TaggerState
    messages: MessageLog
    campaigns: NotifierAccess | None = None
    """Campaigns and reports; None where no notifier runs (the embedded mode without playbooks)."""
    definitions_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One definitions change at a time in this process: each is validated against the last."""
    _tagging: tuple[tuple[tuple[str, int], ...], ManualTagging] | None = None

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def zone(self) -> DayZone:
        """The shop's days (the table is built once per process and zone: `day_zone` caches it)."""
        return day_zone(self.settings.shop.timezone)

    def limits(self) -> Limits:
        return Limits.at(self.now(), horizon_days=self.settings.tagger.horizon_days, zone=self.zone)

    def groups(self) -> Mapping[str, TagGroup]:
        """The current definitions; 503 until they are read from the topic."""
        if not self.definitions.ready:
            raise HTTPException(503, "tag definitions are still being read from Kafka; retry shortly")
        return self.definitions.groups()

    def manual_tagging(self) -> ManualTagging:
        """The manual-tagging rules of the current definitions (compiled once per set of versions)."""
        groups = self.groups()
        versions = tuple(sorted((group.id, group.version) for group in groups.values()))
        if self._tagging is None or self._tagging[0] != versions:
            self._tagging = (versions, ManualTagging(groups, self.settings.tagger.horizon_days))
        return self._tagging[1]


def context(request: Request) -> Context:
    found: Context = request.app.state.context
    return found


_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")


def require(role: Role) -> object:
    """A dependency that lets through callers whose key has `role` or a higher one."""

    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        if credentials is None:
            raise HTTPException(
                401, "an API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
            )
        caller = context(request).keys.identify(credentials.credentials)
        if caller is None:
            raise HTTPException(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
        if not caller.may(role):
            raise HTTPException(403, f"this needs the {role} role; the key {caller.name!r} has {caller.role}")
        return caller

    return Depends(check)


Ctx = Annotated[Context, Depends(context)]
