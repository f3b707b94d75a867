"""Projects `tagstream.tag-changes` into the Redis read model (layout in readmodel.py).

Each change is applied by one Lua script, so Redis sees it whole or not at all, and the script
decides by the customer's last applied `seq`: the next seq is applied, a repeat (at-least-once
redelivery) or an older one changes nothing, and a jump is applied and counted as a gap. That makes
applying any prefix of the stream any number of times converge on the same state, which is what lets
the consumer commit offsets lazily and retry freely.

Deployment: single-node Redis (or Sentinel) only. A customer's keys share a hash tag, but the
script also updates the cross-customer tag -> members sets and the counters, which live in other
slots, so it is not Redis Cluster-safe. Moving to Cluster means splitting the write: a per-customer
script that returns what changed, then the member-set updates driven by that (idempotent SADD/SREM).

Callers must apply one customer's changes in seq order and never two of them at once: a later seq
applied first is a gap, and the earlier one then arrives stale and is dropped for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from schemas.tags import TagChanged
from services.tagger.engine.timeutil import to_us
from services.tagger.readmodel import DEFAULT_PREFIX, LAST_ORDER_FIELD, LAST_SEEN_FIELD, HeldTag, Keys, tag_field


class Outcome(StrEnum):
    APPLIED = "applied"
    APPLIED_AFTER_GAP = "applied-after-gap"
    DUPLICATE = "duplicate"
    """Same seq as the last applied change: a redelivery."""
    STALE = "stale"
    """Older than the last applied change: a replay of the past, or a change that arrived after a gap."""


class Projector:
    """Writes tag changes and activity into Redis. Build one per client; it holds no other state."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX, history_limit: int = 200) -> None:
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self._redis = redis
        self._history_limit = history_limit
        self.keys = Keys(key_prefix)
        self._apply_script = redis.register_script(_APPLY)
        self._activity_script = redis.register_script(_ACTIVITY)

    async def apply(self, change: TagChanged) -> Outcome:
        keys, args = self._apply_call(change)
        return _outcome(await self._apply_script(keys, args))

    async def apply_many(self, changes: Iterable[TagChanged]) -> list[Outcome]:
        """Apply in the given order over one round trip (a non-transactional pipeline of scripts).

        If it raises, any part of the batch may have been applied; retrying the whole batch is safe.
        """
        pipe = self._redis.pipeline(transaction=False)
        for change in changes:
            keys, args = self._apply_call(change)
            await self._apply_script(keys, args, client=pipe)
        return [_outcome(reply) for reply in await pipe.execute()]

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
            await self._activity_script([self.keys.activity(customer_id)], args, client=pipe)
        await pipe.execute()

    def _apply_call(self, change: TagChanged) -> tuple[Sequence[str], Sequence[str | int]]:
        customer_id = change.customer_id
        keys = (
            self.keys.seq(customer_id),
            self.keys.tags(customer_id),
            self.keys.groups(customer_id),
            self.keys.history(customer_id),
            self.keys.members(change.group_id, change.tag_id),
            self.keys.group_members,
            self.keys.gap_count,
            self.keys.gap_customers,
        )
        held = HeldTag(added_at=change.occurred_at, source=change.source, group_version=change.group_version)
        args = (
            change.seq,
            change.change,
            customer_id,
            change.group_id,
            tag_field(change.group_id, change.tag_id),
            held.to_json().decode(),
            change.model_dump_json(),
            self._history_limit,
        )
        return keys, args


def _outcome(reply: Any) -> Outcome:
    return Outcome(reply.decode() if isinstance(reply, bytes) else reply)


# Counters move only when the tag set really changed, so an "added" for a tag already held (or a
# "removed" for one not held, possible after a gap) keeps members and counts consistent. Numbers
# go to redis.call as the ARGV strings: Lua would print large ones in exponent form.
_APPLY = """
local seq_key, tags_key, groups_key, history_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local members_key, group_members_key, gap_count_key, gap_customers_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local seq, change, customer, group, field = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local held, message, history_limit = ARGV[6], ARGV[7], tonumber(ARGV[8])

local last = tonumber(redis.call('GET', seq_key) or '0')
if seq == last then return 'duplicate' end
if seq < last then return 'stale' end

local outcome = 'applied'
if seq > last + 1 then
  redis.call('INCR', gap_count_key)
  redis.call('SADD', gap_customers_key, customer)
  outcome = 'applied-after-gap'
end
redis.call('SET', seq_key, ARGV[1])

if change == 'added' then
  if redis.call('HSET', tags_key, field, held) == 1 then
    redis.call('SADD', members_key, customer)
    if redis.call('HINCRBY', groups_key, group, 1) == 1 then
      redis.call('HINCRBY', group_members_key, group, 1)
    end
  end
elseif redis.call('HDEL', tags_key, field) == 1 then
  redis.call('SREM', members_key, customer)
  if redis.call('HINCRBY', groups_key, group, -1) <= 0 then
    redis.call('HDEL', groups_key, group)
    if redis.call('HINCRBY', group_members_key, group, -1) <= 0 then
      redis.call('HDEL', group_members_key, group)
    end
  end
end

redis.call('LPUSH', history_key, message)
redis.call('LTRIM', history_key, 0, history_limit - 1)
return outcome
"""

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
