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

A change's history entry names its head in the head table (history_codec.py): the projector keeps
the numbers it was given (at most MAX_HEADS), asks the table (`INTERN`) for the heads it has not
seen before writing the entries that name them, and every change script checks that the table is
still of the generation those numbers came from.

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

import uuid
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
from services.runtime.change_records import ChangeRecord, change_record
from services.runtime.history_codec import INLINE, MAX_HEAD_BYTES
from services.runtime.readmodel import (
    DEFAULT_PREFIX,
    LAST_ORDER_FIELD,
    LAST_SEEN_FIELD,
    MAX_HEADS,
    Keys,
    held_value,
    tag_field,
)
from services.tagger.projector_scripts import (
    ACTIVITY,
    ACTIVITY_BATCH,
    APPLY,
    APPLY_BATCH,
    INTERN,
    MESSAGES_BATCH,
)

_RENEWED_TRIES = 3
"""Batches written again after the head table was renewed under them (a Redis that lost its data)."""


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


class HeadTableRenewed(RuntimeError):
    """The head table was renewed again and again while a batch was written (Redis losing its data repeatedly)."""


class Projector:
    """Writes tag changes and activity into Redis. Build one per client; it holds no other state than
    the head numbers it was given (history_codec.py)."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        history_limit: int = 200,
        zone: DayZone = UTC_ZONE,
        max_heads: int = MAX_HEADS,
    ) -> None:
        """`zone`: the shop's, whose local days the daily tag counts are kept in; `max_heads`: how many
        heads the head table may keep (past that, entries carry their head)."""
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        if not 0 <= max_heads <= MAX_HEADS:
            raise ValueError(f"max_heads must be within [0, {MAX_HEADS}], got {max_heads}")
        self._redis = redis
        self._history_limit = history_limit
        self._zone = zone
        self._max_heads = max_heads
        self.keys = Keys(key_prefix)
        self._numbers: dict[bytes, int] = {}
        """Head -> its number in the table of `_generation`."""
        self._generation = ""
        self._apply_script = redis.register_script(APPLY)
        self._activity_script = redis.register_script(ACTIVITY)
        self._apply_batch_script = redis.register_script(APPLY_BATCH)
        self._activity_batch_script = redis.register_script(ACTIVITY_BATCH)
        self._messages_batch_script = redis.register_script(MESSAGES_BATCH)
        self._intern_script = redis.register_script(INTERN)

    async def apply(self, change: TagChanged | ChangeRecord, record: bytes | None = None) -> ProjectionOutcome:
        """`record`: the JSON `change` was validated from (its history entry is cut from it)."""
        return (await self.apply_many([change], [record]))[0]

    async def apply_many(
        self, changes: Sequence[TagChanged | ChangeRecord], records: Sequence[bytes | None] | None = None
    ) -> list[ProjectionOutcome]:
        """Apply in the given order, each change by its own script, over one round trip (a
        non-transactional pipeline).

        If it raises, any part of the batch may have been applied; retrying the whole batch is safe.
        """
        pieces = _change_records(changes, records)
        for _ in range(_RENEWED_TRIES):
            numbers = await self._numbers_of(pieces)
            pipe = self._redis.pipeline(transaction=False)
            keys, args = self._shared()
            for piece, number in zip(pieces, numbers, strict=True):
                await self._apply_script(keys, [*args, *self._run_args([piece], [number])], client=pipe)
            replies = await pipe.execute()
            if not any(_renewed(reply) for reply in replies):
                return [_OUTCOMES[reply[0]] for reply in replies]
            self._numbers.clear()
        raise HeadTableRenewed(f"the head table was renewed {_RENEWED_TRIES} times while changes were applied")

    async def apply_batch(
        self,
        position: Position,
        changes: Sequence[TagChanged | ChangeRecord],
        now: datetime,
        records: Sequence[bytes | None] | None = None,
    ) -> BatchResult:
        """Apply one partition's consecutive records (the changes decoded from them, and the records'
        JSON when given) at that position, atomically."""
        pieces = _change_records(changes, records)
        for _ in range(_RENEWED_TRIES):
            numbers = await self._numbers_of(pieces)
            shared_keys, shared_args = self._shared()
            keys: list[str] = [self.keys.meta, self.keys.offsets, *shared_keys]
            args = [*_position_args(position, now), *shared_args, *self._run_args(pieces, numbers)]
            reply = await self._apply_batch_script(keys, args)
            if _renewed(reply):
                self._numbers.clear()
                continue
            result = _batch_result(reply)
            if result.kind == "ok":
                return BatchResult("ok", state=result.state, outcomes=[_OUTCOMES[item] for item in reply[2:]])
            return result
        raise HeadTableRenewed(f"the head table was renewed {_RENEWED_TRIES} times while a batch was applied")

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

    def _shared(self) -> tuple[list[str], list[str | int | bytes]]:
        """The keys and args every change script needs once (projector_scripts.py, `shared_from`)."""
        keys = self.keys
        names = [*_pieces(keys.customer), *_pieces(keys.history), keys.bitmap("", "")[:-1], keys.daily("", "")[:-1]]
        counters = [keys.next_id, keys.tag_members, keys.group_members, keys.gap_count, keys.gap_customers]
        return [*counters, keys.heads], [keys.id_buckets, self._history_limit, self._generation, *names]

    def _run_args(self, changes: Sequence[ChangeRecord], numbers: Sequence[int]) -> list[str | int | bytes]:
        """Runs of one customer's consecutive changes: the customer, how many, then an arg per change
        (projector_scripts.py, `apply_run`): one arg, not six, as redis-py encodes each arg apart. A
        change with the instant and cause of the one before it in its run gets an entry without them
        (format 3)."""
        args: list[str | int | bytes] = []
        customer, count_at, previous = None, 0, None
        day = self._zone.day
        for change, number in zip(changes, numbers, strict=True):
            occurrence, middle = change.occurrence, change.middle
            us = occurrence.occurred_us
            if occurrence.customer_id != customer:
                customer, previous = occurrence.customer_id, None
                count_at = len(args) + 1
                args += [customer, 0]
            args[count_at] = int(args[count_at]) + 1
            held = held_value(us, middle.source, middle.group_version)
            field = tag_field(middle.group_id, middle.tag_id)
            event = (us, occurrence.caused_by)
            entry = change.entry(number, same_event=event == previous)
            args.append(f"{change.seq} {middle.change} {day(us)} {held} {field}\n".encode() + entry)
            previous = event
        return args

    async def _numbers_of(self, changes: Sequence[ChangeRecord]) -> list[int]:
        """The number the head table gave each change's head (INLINE: its entry carries it)."""
        numbers = self._numbers
        for _ in range(_RENEWED_TRIES):
            unseen = list({change.head: None for change in changes if change.head not in numbers})
            if not unseen:
                return [numbers[change.head] for change in changes]
            await self._intern(unseen)  # a renewed table forgets the numbers held: ask again
        raise HeadTableRenewed(f"the head table was renewed {_RENEWED_TRIES} times while heads were numbered")

    async def _intern(self, heads: list[bytes]) -> None:
        kept = [head for head in heads if len(head) <= MAX_HEAD_BYTES and self._max_heads > 0]
        if kept:
            reply = await self._intern_script(
                [self.keys.heads, self.keys.head_numbers], [uuid.uuid4().hex, self._max_heads, *kept]
            )
            generation = _text(reply[0])
            if generation != self._generation:
                self._numbers.clear()
                self._generation = generation
            self._numbers.update(zip(kept, (int(number) for number in reply[1:]), strict=True))
        for head in heads:
            if len(head) > MAX_HEAD_BYTES or self._max_heads == 0:
                self._numbers[head] = INLINE
        if len(self._numbers) > 2 * MAX_HEADS:  # inline heads are remembered too: keep it bounded
            self._numbers.clear()


def _change_records(
    changes: Sequence[TagChanged | ChangeRecord], records: Sequence[bytes | None] | None
) -> list[ChangeRecord]:
    """The changes in the pieces the read model writes (a model is split from its record when given)."""
    if records is None:
        records = [None] * len(changes)
    return [
        change if isinstance(change, ChangeRecord) else change_record(change, record)
        for change, record in zip(changes, records, strict=True)
    ]


def _pieces(name: Any) -> list[str]:
    """A per-customer key's name around the customer id, e.g. `ts:r:{` and `}`."""
    before, after = name("\x00").split("\x00")
    return [before, after]


def _renewed(reply: Any) -> bool:
    return _text(reply[0]) == "heads"


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


_OUTCOMES: dict[Any, ProjectionOutcome] = {
    key: outcome for outcome in ProjectionOutcome for key in (outcome.value, outcome.value.encode())
}
"""A script's reply per change, as the client hands it (bytes, or text when it decodes responses)."""
