"""Projects `tagstream.tag-changes` into the Redis read model (layout in readmodel.py).

Each change is applied by one Lua script, so Redis sees it whole or not at all, and the script
decides by the customer's last applied `seq`: the next seq is applied, a repeat (at-least-once
redelivery) or an older one changes nothing, and a jump is applied and counted as a gap. That makes
applying any prefix of the stream any number of times converge on the same state, which is what lets
the consumer commit offsets lazily and retry freely.

Deployment: single-node Redis (or Sentinel) only. A customer's keys share a hash tag, but the
script also updates the cross-customer tag bitmaps, the dense-id buckets (named inside the script,
from the id it gives) and the counters, which live in other slots, so it is not Redis Cluster-safe.
Moving to Cluster means splitting the write: a per-customer script that returns what changed, then
the bitmap updates driven by that (idempotent SETBIT).

Callers must apply one customer's changes in seq order and never two of them at once: a later seq
applied first is a gap, and the earlier one then arrives stale and is dropped for good.

`apply_batch` and `record_activity_batch` also keep the read model's position: a batch of a
partition is applied only when it starts at or before the offset stored for that partition in
`ts:meta:offsets`, and moves that offset to the batch's end in the same script. So Redis always
holds the fold of a prefix of each partition, whoever writes and however often: a Redis that lost
its data (or came back from an older snapshot) answers `behind` with the offset to re-read from,
and any number of projectors re-reading concurrently converge on the fold of the whole stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from redis.asyncio import Redis

from schemas.notifications import NotificationOutcome
from schemas.tags import TagChanged
from services.engine.timeutil import to_us
from services.engine.zone import UTC_ZONE, DayZone
from services.runtime.history_codec import pack_change
from services.runtime.readmodel import (
    DEFAULT_PREFIX,
    LAST_ORDER_FIELD,
    LAST_SEEN_FIELD,
    HeldTag,
    Keys,
    tag_field,
)
from services.tagger.projector_scripts import ACTIVITY, ACTIVITY_BATCH, APPLY, APPLY_BATCH, MESSAGES_BATCH


class ProjectionOutcome(StrEnum):
    APPLIED = "applied"
    APPLIED_AFTER_GAP = "applied-after-gap"
    DUPLICATE = "duplicate"
    """Same seq as the last applied change: a redelivery."""
    STALE = "stale"
    """Older than the last applied change: a replay of the past, or a change that arrived after a gap."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a batch sits in its partition: `field` names the partition (readmodel.offset_field)."""

    field: str
    first: int
    next: int
    from_start: bool = False
    """The batch was read from the partition's beginning: accepted when no offset is stored."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    kind: Literal["ok", "behind", "paused"]
    """`behind`: Redis lacks records before this batch (re-read from `stored`, or from the beginning
    when None); `paused`: a reset is deleting the projection (retry later). Neither wrote anything."""
    stored: int | None = None
    state: str = ""
    """The marker's state after the batch ("" when missing)."""
    outcomes: list[ProjectionOutcome] = field(default_factory=list)


class Projector:
    """Writes tag changes and activity into Redis. Build one per client; it holds no other state."""

    def __init__(
        self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX, history_limit: int = 200, zone: DayZone = UTC_ZONE
    ) -> None:
        """`zone`: the shop's, whose local days the daily tag counts are kept in."""
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self._redis = redis
        self._history_limit = history_limit
        self._zone = zone
        self.keys = Keys(key_prefix)
        self._apply_script = redis.register_script(APPLY)
        self._activity_script = redis.register_script(ACTIVITY)
        self._apply_batch_script = redis.register_script(APPLY_BATCH)
        self._activity_batch_script = redis.register_script(ACTIVITY_BATCH)
        self._messages_batch_script = redis.register_script(MESSAGES_BATCH)

    async def apply(self, change: TagChanged) -> ProjectionOutcome:
        keys, args = self._shared()
        change_keys, change_args = self._apply_call(change)
        return _outcome(await self._apply_script([*keys, *change_keys], [*args, *change_args]))

    async def apply_many(self, changes: Iterable[TagChanged]) -> list[ProjectionOutcome]:
        """Apply in the given order over one round trip (a non-transactional pipeline of scripts).

        If it raises, any part of the batch may have been applied; retrying the whole batch is safe.
        """
        pipe = self._redis.pipeline(transaction=False)
        keys, args = self._shared()
        for change in changes:
            change_keys, change_args = self._apply_call(change)
            await self._apply_script([*keys, *change_keys], [*args, *change_args], client=pipe)
        return [_outcome(reply) for reply in await pipe.execute()]

    async def apply_batch(self, position: Position, changes: Sequence[TagChanged], now: datetime) -> BatchResult:
        """Apply one partition's consecutive records (the changes decoded from them) at that position, atomically."""
        shared_keys, shared_args = self._shared()
        keys: list[str] = [self.keys.meta, self.keys.offsets, *shared_keys]
        args: list[str | int | bytes] = [*_position_args(position, now), *shared_args]
        for change in changes:
            change_keys, change_args = self._apply_call(change)
            keys += change_keys
            args += change_args
        reply = await self._apply_batch_script(keys, args)
        result = _batch_result(reply)
        if result.kind == "ok":
            return BatchResult("ok", state=result.state, outcomes=[_outcome(item) for item in reply[2:]])
        return result

    async def record_activity_batch(
        self, position: Position, activity: Iterable[tuple[str, datetime | None, datetime]], now: datetime
    ) -> BatchResult:
        """`record_activity_many` for one partition's consecutive events, keeping its position."""
        keys: list[str] = [self.keys.meta, self.keys.offsets]
        args: list[str | int] = _position_args(position, now)
        for customer_id, last_order_at, last_seen_at in activity:
            keys.append(self.keys.customer(customer_id))
            args += [to_us(last_seen_at), "" if last_order_at is None else to_us(last_order_at)]
        return _batch_result(await self._activity_batch_script(keys, args))

    async def record_activity(self, customer_id: str, last_order_at: datetime | None, last_seen_at: datetime) -> None:
        """Move the customer's last order / last seen instants forward; an older value is ignored."""
        await self.record_activity_many([(customer_id, last_order_at, last_seen_at)])

    async def record_activity_many(self, activity: Iterable[tuple[str, datetime | None, datetime]]) -> None:
        """`record_activity` for many customers over one round trip; safe to retry whole."""
        pipe = self._redis.pipeline(transaction=False)
        for customer_id, last_order_at, last_seen_at in activity:
            args: list[str | int] = [LAST_SEEN_FIELD, to_us(last_seen_at)]
            if last_order_at is not None:
                args += [LAST_ORDER_FIELD, to_us(last_order_at)]
            await self._activity_script([self.keys.customer(customer_id)], args, client=pipe)
        await pipe.execute()

    async def record_messages_batch(
        self, position: Position, outcomes: Sequence[NotificationOutcome], now: datetime
    ) -> BatchResult:
        """One partition's consecutive notification decisions into each customer's message log, keeping
        its position. A log is a sorted set by decision instant (an exact redelivery is the same member,
        so re-reading adds nothing), trimmed to the newest `history_limit`."""
        keys: list[str] = [self.keys.meta, self.keys.offsets]
        args: list[str | int] = _position_args(position, now)
        for outcome in outcomes:
            keys.append(self.keys.messages(outcome.customer_id))
            args += [to_us(outcome.decided_at), outcome.model_dump_json()]
        args.append(self._history_limit)
        return _batch_result(await self._messages_batch_script(keys, args))

    def _shared(self) -> tuple[list[str], list[str | int]]:
        """The keys and args every change's script needs once: the dense-id counter and buckets, the
        counters and gap records, and how long a history is."""
        keys = [
            self.keys.next_id,
            self.keys.tag_members,
            self.keys.group_members,
            self.keys.gap_count,
            self.keys.gap_customers,
        ]
        return keys, [self.keys.id_buckets, self._history_limit]

    def _apply_call(self, change: TagChanged) -> tuple[list[str], list[str | int | bytes]]:
        customer_id = change.customer_id
        keys = [
            self.keys.customer(customer_id),
            self.keys.history(customer_id),
            self.keys.bitmap(change.group_id, change.tag_id),
            self.keys.daily(change.group_id, change.tag_id),
        ]
        held = HeldTag(added_at=change.occurred_at, source=change.source, group_version=change.group_version)
        args: list[str | int | bytes] = [
            change.seq,
            change.change,
            customer_id,
            change.group_id,
            tag_field(change.group_id, change.tag_id),
            held.packed(),
            pack_change(change),
            self._zone.day(to_us(change.occurred_at)),
        ]
        return keys, args


def _position_args(position: Position, now: datetime) -> list[str | int]:
    flag = "1" if position.from_start else "0"
    return [position.field, position.first, position.next, flag, int(now.timestamp() * 1000)]


def _batch_result(reply: Any) -> BatchResult:
    kind, detail = _text(reply[0]), _text(reply[1])
    if kind == "behind":
        return BatchResult("behind", stored=int(detail) if detail else None)
    if kind == "paused":
        return BatchResult("paused")
    return BatchResult("ok", state=detail)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _outcome(reply: Any) -> ProjectionOutcome:
    return ProjectionOutcome(reply.decode() if isinstance(reply, bytes) else reply)
