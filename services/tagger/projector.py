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
from services.runtime.bitmaps import ID_BUCKET
from services.runtime.history_codec import pack_change
from services.runtime.readmodel import (
    DAILY_BASE_FIELD,
    DAILY_KEEP_DAYS,
    DEFAULT_PREFIX,
    GROUP_PREFIX,
    ID_FIELD,
    LAST_ORDER_FIELD,
    LAST_SEEN_FIELD,
    SEQ_FIELD,
    TAG_PREFIX,
    HeldTag,
    Keys,
    tag_field,
)
from services.tagger.marker import SETTLE


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
        self._apply_script = redis.register_script(_APPLY)
        self._activity_script = redis.register_script(_ACTIVITY)
        self._apply_batch_script = redis.register_script(_APPLY_BATCH)
        self._activity_batch_script = redis.register_script(_ACTIVITY_BATCH)
        self._messages_batch_script = redis.register_script(_MESSAGES_BATCH)

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


# A tag's daily counts (readmodel.py, "Daily counts"): the day's net change of holders; once the
# hash holds more than twice the days kept, the days older than the newest day minus the days kept
# are folded into the base field. That never touches a day a reader shows (the newest day is at
# most today), and the fold changes no prefix sum, so any interleaving of partitions (a rebuild)
# ends in the same counts.
_COUNT_DAY = f"""
local function count_day(key, day, delta)
  redis.call('HINCRBY', key, day, delta)
  if redis.call('HLEN', key) <= {2 * DAILY_KEEP_DAYS + 1} then return end
  local fields = redis.call('HGETALL', key)
  local newest = nil
  for i = 1, #fields, 2 do
    if fields[i] ~= '{DAILY_BASE_FIELD}' then
      local d = tonumber(fields[i])
      if not newest or d > newest then newest = d end
    end
  end
  local folded, old = 0, {{}}
  for i = 1, #fields, 2 do
    if fields[i] ~= '{DAILY_BASE_FIELD}' and tonumber(fields[i]) < newest - {DAILY_KEEP_DAYS} then
      folded = folded + tonumber(fields[i + 1])
      old[#old + 1] = fields[i]
    end
  end
  if #old > 0 then
    redis.call('HINCRBY', key, '{DAILY_BASE_FIELD}', folded)
    redis.call('HDEL', key, unpack(old))
  end
end
"""

# Counters move only when the tag set really changed, so an "added" for a tag already held (or a
# "removed" for one not held, possible after a gap) keeps bitmaps and counts consistent. A customer
# gets a dense id when first tagged: the next value of the counter, recorded in its hash and in the
# id's bucket in the same script. Numbers go to redis.call as strings (string.format '%d'): Lua
# would print large ones in exponent form.
#
# `shared`: the keys and args `Projector._shared` gives once per script (next id, tag members,
# group members, gap count, gap customers; the buckets' key prefix, the history's length).
_APPLY_ONE = (
    _COUNT_DAY
    + f"""
local function dense_id(shared, customer_key, customer)
  local id = redis.call('HGET', customer_key, '{ID_FIELD}')
  if id then return id end
  local n = redis.call('INCR', shared.next_id) - 1
  id = string.format('%d', n)
  redis.call('HSET', customer_key, '{ID_FIELD}', id)
  redis.call('HSET', shared.buckets .. string.format('%d', math.floor(n / {ID_BUCKET})),
    string.format('%d', n % {ID_BUCKET}), customer)
  return id
end

local function apply_one(shared, k, a)
  local customer_key, history_key, bitmap_key, daily_key = k[1], k[2], k[3], k[4]
  local seq, change, customer, group, field = tonumber(a[1]), a[2], a[3], a[4], a[5]
  local held, entry, day = a[6], a[7], a[8]

  local last = tonumber(redis.call('HGET', customer_key, '{SEQ_FIELD}') or '0')
  if seq == last then return 'duplicate' end
  if seq < last then return 'stale' end

  local outcome = 'applied'
  if seq > last + 1 then
    redis.call('INCR', shared.gap_count)
    redis.call('SADD', shared.gap_customers, customer)
    outcome = 'applied-after-gap'
  end
  redis.call('HSET', customer_key, '{SEQ_FIELD}', a[1])

  local tag_key, group_key = '{TAG_PREFIX}' .. field, '{GROUP_PREFIX}' .. group
  if change == 'added' then
    if redis.call('HSET', customer_key, tag_key, held) == 1 then
      redis.call('SETBIT', bitmap_key, dense_id(shared, customer_key, customer), 1)
      redis.call('HINCRBY', shared.tag_members, field, 1)
      count_day(daily_key, day, 1)
      if redis.call('HINCRBY', customer_key, group_key, 1) == 1 then
        redis.call('HINCRBY', shared.group_members, group, 1)
      end
    end
  elseif redis.call('HDEL', customer_key, tag_key) == 1 then
    redis.call('SETBIT', bitmap_key, redis.call('HGET', customer_key, '{ID_FIELD}'), 0)
    if redis.call('HINCRBY', shared.tag_members, field, -1) <= 0 then
      redis.call('HDEL', shared.tag_members, field)
    end
    count_day(daily_key, day, -1)
    if redis.call('HINCRBY', customer_key, group_key, -1) <= 0 then
      redis.call('HDEL', customer_key, group_key)
      if redis.call('HINCRBY', shared.group_members, group, -1) <= 0 then
        redis.call('HDEL', shared.group_members, group)
      end
    end
  end

  redis.call('LPUSH', history_key, entry)
  redis.call('LTRIM', history_key, 0, shared.history_limit - 1)
  return outcome
end

local function shared_from(keys, k, args, a)
  return {{next_id = keys[k], tag_members = keys[k + 1], group_members = keys[k + 2], gap_count = keys[k + 3],
    gap_customers = keys[k + 4], buckets = args[a], history_limit = tonumber(args[a + 1])}}
end
"""
)

# KEYS: the 5 shared keys, then the change's 4; ARGV: the 2 shared args, then the change's 8.
_APPLY = (
    _APPLY_ONE
    + """
return apply_one(shared_from(KEYS, 1, ARGV, 1), {KEYS[6], KEYS[7], KEYS[8], KEYS[9]},
  {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]})
"""
)

# ARGV holds field, epoch-microseconds pairs; each field only ever grows.
_ACTIVITY = """
for i = 1, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(ARGV[i + 1]) > tonumber(current) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""


# The position check and update around a batch. KEYS[1] meta, KEYS[2] offsets; ARGV[1..5]: offset
# field, first offset, next offset, from_start, now_ms. The batch's own keys and args follow.
_BATCH_CHECK = """
local meta_key, offsets_key, field = KEYS[1], KEYS[2], ARGV[1]
if redis.call('HGET', meta_key, 'state') == 'resetting' then return {'paused', ''} end
local stored = redis.call('HGET', offsets_key, field)
if stored then
  if tonumber(stored) < tonumber(ARGV[2]) then return {'behind', stored} end
elseif ARGV[4] ~= '1' then
  return {'behind', ''}
end
"""

_BATCH_DONE = """
if not stored or tonumber(stored) < tonumber(ARGV[3]) then redis.call('HSET', offsets_key, field, ARGV[3]) end
local state = settle(meta_key, offsets_key, ARGV[5])
"""

# After the position's keys and args: the 5 shared keys and 2 shared args, then per change its 4
# keys and 8 args, as _APPLY takes them.
_APPLY_BATCH = (
    _APPLY_ONE
    + SETTLE
    + _BATCH_CHECK
    + """
local shared = shared_from(KEYS, 3, ARGV, 6)
local out = {}
local n = 0
for i = 8, #KEYS, 4 do
  local a = 8 + (i - 8) * 2
  n = n + 1
  out[n] = apply_one(shared, {KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]},
    {ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]})
end
"""
    + _BATCH_DONE
    + """
local reply = {'ok', state}
for i = 1, n do reply[i + 2] = out[i] end
return reply
"""
)

# Per customer: its activity key, then last_seen_us and last_order_us ('' for none); each only grows.
_ACTIVITY_BATCH = (
    SETTLE
    + _BATCH_CHECK
    + f"""
local fields = {{'{LAST_SEEN_FIELD}', '{LAST_ORDER_FIELD}'}}
for i = 3, #KEYS do
  local a = 6 + (i - 3) * 2
  for j = 1, 2 do
    local value = ARGV[a + j - 1]
    if value ~= '' then
      local current = redis.call('HGET', KEYS[i], fields[j])
      if not current or tonumber(value) > tonumber(current) then
        redis.call('HSET', KEYS[i], fields[j], value)
      end
    end
  end
end
"""
    + _BATCH_DONE
    + """
return {'ok', state}
"""
)

# Per outcome: its customer's log key, then score (decided_at, µs) and member (the outcome's JSON);
# the last ARGV is how many entries a log keeps.
_MESSAGES_BATCH = (
    SETTLE
    + _BATCH_CHECK
    + """
local keep = tonumber(ARGV[#ARGV])
for i = 3, #KEYS do
  local a = 6 + (i - 3) * 2
  redis.call('ZADD', KEYS[i], ARGV[a], ARGV[a + 1])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(keep + 1))
end
"""
    + _BATCH_DONE
    + """
return {'ok', state}
"""
)
