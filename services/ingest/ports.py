"""The narrow ports the HTTP layer talks through, so the embedded mode can plug in in-process versions.

Kafka and Redis implementations live in kafka.py and audiences.py; the customer store is
services/runtime/customers.py (CustomerStore) and tag reads are services/runtime/readmodel.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.notifications import NotificationOutcome
from schemas.queries import CustomerAggregates, PreviewTally
from schemas.tags import TagChanged, TagGroup
from services.runtime.campaigns import CampaignStore
from services.runtime.playbooks import PlaybookStore
from services.runtime.readmodel import HeldTag, TagCount
from services.runtime.reports import OrderActivity, Reports, SendHistory

Record = tuple[bytes, bytes | None]
"""(key, value) of one message; a None value is a tombstone."""


class Throttled(Exception):
    """The producer holds as many unacknowledged bytes as allowed: the client should retry later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the event buffer is full; retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class RecordRefused(ValueError):
    """A record the publisher refuses after the API validated it (the embedded node checks each
    write as its replay will read it): nothing was accepted. Answered 422."""


class Unavailable(Exception):
    """Kafka (or Redis) cannot be reached, or did not acknowledge in time: the write may or may not have
    happened (a retry with the same ids is safe)."""


class Publisher(Protocol):
    async def send(self, topic: str, records: Sequence[Record]) -> None:
        """Return once every record is acknowledged by all in-sync replicas.

        Raises Throttled before sending anything when the buffer is full, Unavailable when the
        broker cannot be reached in time (then some records may have been written: clients retry
        with the same event ids, which the tagger de-duplicates)."""
        ...

    @property
    def ready(self) -> bool: ...

    @property
    def saturated(self) -> bool:
        """The buffer is full already: refuse new work before even reading it."""
        ...


class Definitions(Protocol):
    """The current tag groups, rebuilt from the compacted definitions topic and kept current."""

    @property
    def ready(self) -> bool: ...

    def groups(self) -> Mapping[str, TagGroup]: ...

    def written(self, upserts: Sequence[TagGroup], deletions: Sequence[str]) -> None:
        """This process has just published these: show them now, before the topic reads them back."""
        ...

    def last_version(self, group_id: str) -> int:
        """The highest version of the group seen since start, deleted or not (0: never seen), so a
        re-created group continues its versions."""
        ...


class TagReads(Protocol):
    """The read model (services/runtime/readmodel.py: ReadModel satisfies it)."""

    async def held_tags(self, customer_id: str) -> dict[str, dict[str, HeldTag]]: ...

    async def history(self, customer_id: str, offset: int = 0, limit: int = 50) -> list[TagChanged]: ...

    async def tag_counts(self, tags: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TagCount]:
        """Holders now and the daily deltas of each (group, tag)."""
        ...

    async def unavailable(self) -> str | None:
        """Why reads cannot be trusted now (the read model is missing or rebuilding); None when they can."""
        ...


@dataclass(frozen=True)
class AudienceQuery:
    """Tags as "group/tag"; members of all of `all_of`, at least one of `any_of`, none of `none_of`."""

    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    none_of: tuple[str, ...]


@dataclass(frozen=True)
class AudiencePage:
    count: int
    customer_ids: list[str]
    cursor: str | None
    """Pass back to get the next page; None on the last page."""
    expires_at: datetime


class CursorExpired(Exception):
    """The snapshot an audience cursor points into is gone (older than audience_ttl_s)."""


class Audiences(Protocol):
    async def query(self, query: AudienceQuery, limit: int) -> AudiencePage:
        """Snapshot the audience and return its first page (ids in ascending order, each once)."""
        ...

    async def page(self, cursor: str, limit: int) -> AudiencePage: ...

    def export(self, query: AudienceQuery) -> AsyncIterator[str]:
        """Every customer id of the audience, once each, in ascending order."""
        ...


class TaggerUnavailable(Exception):
    """The tagger did not answer for every partition needed in time (or could not answer at all)."""

    def __init__(self, missing: Sequence[int], waited_s: float, *, reason: str = "") -> None:
        self.missing = list(missing)
        listed = ", ".join(map(str, self.missing[:50])) + (" ..." if len(self.missing) > 50 else "")
        super().__init__(
            reason or f"no tagger worker answered for partitions [{listed}] within {waited_s:g}s; are the workers up?"
        )


class TaggerState(Protocol):
    """What only the tagger's per-customer state can tell (Kafka: its workers, per partition)."""

    async def customer(self, customer_id: str) -> CustomerAggregates | None:
        """The customer's aggregates as the rules read them now; None when the tagger has no state."""
        ...

    async def preview(self, groups: Sequence[TagGroup], sample: int) -> PreviewTally:
        """Who would gain and lose each tag if `groups` were the definitions; changes nothing.
        Raises TaggerUnavailable when some partition went unanswered."""
        ...


class MessageLog(Protocol):
    """Every notification decision per customer, newest first, the last `history_limit` kept."""

    async def messages(self, customer_id: str, offset: int, limit: int) -> list[NotificationOutcome]: ...


@dataclass(frozen=True)
class NotifierAccess:
    """The notifier's stores the campaign, playbook and report routes use (None in Context: no notifier runs)."""

    store: CampaignStore
    playbooks: PlaybookStore
    ledger: SendHistory
    """The send history the preview's caps count."""
    reports: Reports
    activity: OrderActivity
    """Customers' last orders, for conversion."""
