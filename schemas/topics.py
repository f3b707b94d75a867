"""Topic names and the messages that only tagstream's own services exchange (dead letters, timers)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.common import SCHEMA_VERSION, Contract, UtcDatetime

EVENTS = "tagstream.events"
TAG_COMMANDS = "tagstream.tag-commands"
TAG_DEFINITIONS = "tagstream.tag-definitions"
TAG_CHANGES = "tagstream.tag-changes"
EVENTS_DLQ = "tagstream.events.dlq"
TAGGER_TICKS = "tagstream.tagger-ticks"
NOTIFICATIONS = "tagstream.notifications"
NOTIFICATIONS_DLQ = "tagstream.notifications.dlq"
TAGGER_QUERIES = "tagstream.tagger-queries"
TAGGER_ANSWERS = "tagstream.tagger-answers"
SYNC_DLQ = "tagstream.sync.dlq"
INGEST_PROBE = "tagstream.ingest-probe"


class TopicNames(BaseModel):
    """Every topic tagstream uses; override one with e.g. TAGSTREAM_TOPICS__EVENTS=shop1.events."""

    events: str = EVENTS
    tag_commands: str = TAG_COMMANDS
    tag_definitions: str = TAG_DEFINITIONS
    tag_changes: str = TAG_CHANGES
    events_dlq: str = EVENTS_DLQ
    tagger_ticks: str = TAGGER_TICKS
    notifications: str = NOTIFICATIONS
    notifications_dlq: str = NOTIFICATIONS_DLQ
    tagger_queries: str = TAGGER_QUERIES
    tagger_answers: str = TAGGER_ANSWERS
    sync_dlq: str = SYNC_DLQ
    ingest_probe: str = INGEST_PROBE
    """Ingest's proof that the brokers take writes again after a failed send (kept an hour, read by none)."""


class DeadLetter(Contract):
    """A message the tagger could not use, with why, and the original bytes so nothing is lost."""

    schema_version: Literal[1] = SCHEMA_VERSION
    reason: str = Field(description="what was wrong, naming the field and value where there is one")
    error: Literal["invalid", "refused", "mismatched_key", "failed"]
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the original key, decoded as UTF-8 with replacement")
    original: str = Field(description="the original value, decoded as UTF-8 with replacement")
    original_base64: str = Field(description="the original value, exactly, base64-encoded")
    failed_at: UtcDatetime


class Tick(Contract):
    """Internal (tagger to itself): advance one customer to `due`, when time made a rule flip."""

    kind: Literal["tick"] = "tick"
    customer_id: str
    until_us: int
    """Advance to this instant (every flip up to it applies at its own instant)."""


class SyncPartition(Contract):
    """Internal: bring every customer of one partition in line with the current tag definitions."""

    kind: Literal["sync"] = "sync"
    partition: int
