"""What the sync sink needs from the outside: an adapter to the external system and a memory of seqs.

An adapter acknowledges a batch by returning (the external system took every change it did not
reject); it raises `Unavailable` when it could not get an answer that decides the batch, and the
sink then commits nothing and reads the batch again later.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas.tags import TagChanged, TagGroup


class Unavailable(Exception):
    """The external system did not decide the batch (unreachable, 5xx, rate limits past every attempt,
    credentials refused): nothing is committed, the batch is read again after a pause."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """One tag change to apply, with the group as currently defined (the external side knows names)."""

    change: TagChanged
    group: TagGroup
    tag_name: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A customer's whole state for a resync: the tags held in `groups` (the synced ones) at `seq`."""

    customer_id: str
    seq: int
    held: frozenset[tuple[str, str]]
    """(group id, tag id) pairs"""
    groups: Sequence[TagGroup]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A change (or a snapshot) the external system refused for good, and why (its errcode or status)."""

    customer_id: str
    seq: int
    reason: str


@dataclass(slots=True)
class Applied:
    rejected: list[Rejected] = field(default_factory=list)
    no_contact: int = 0
    """Changes of customers the external system cannot be told about (no external contact in the profile)."""


class Adapter(Protocol):
    name: str

    async def apply(self, changes: Sequence[Outbound]) -> Applied:
        """Apply the changes in order; raises Unavailable when the batch was not decided."""
        ...

    async def replace(self, snapshots: Sequence[Snapshot]) -> Applied:
        """Make each customer's external tags in the snapshot's groups exactly the held ones."""
        ...

    async def close(self) -> None: ...


class AppliedSeqs(Protocol):
    """The last seq applied externally per customer: a redelivered change (seq not above it) is skipped."""

    async def get(self, customer_ids: Collection[str]) -> dict[str, int]: ...

    async def advance(self, seqs: Mapping[str, int]) -> None:
        """Raise each customer's seq to the given one (never lowers it)."""
        ...
