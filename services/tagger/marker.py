"""The read model's marker (`ts:meta:readmodel`) and its rebuild: begin, reset, settle.

A Redis that lost its data lost the marker with it, so a missing marker means "not whole": readers
refuse (503), and the first projector to notice begins a rebuild by writing the marker in state
`rebuilding` with targets, the end offsets of every partition of tag-changes and events at that
moment. Projectors then re-read each partition from the position stored beside the data in
`ts:meta:offsets` (from the beginning when it is missing too); the batch that brings the last
partition to its target flips the marker to `ready` (`SETTLE`, run by every batch). A reset
(`tagstream readmodel rebuild` on a Redis that kept its data) first pauses the projectors (state
`resetting`), deletes the projection's keys and positions, then drops the marker: the same as a loss.

The marker also names the key layout (`layout`, readmodel.LAYOUT). A marker of another layout (a
read model written by an older version) is `outdated`: readers refuse it, and the first projector to
see it claims the upgrade (`upgrade`: the state `resetting` under the new layout, in one script, so
one projector does it), deletes every key either layout wrote, and drops the marker: a rebuild.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from services.runtime.readmodel import DEFAULT_PREFIX, ID_FIELD, LAYOUT, Keys, ReadModel, ReadModelStatus

_SCAN_BATCH = 1000
_OLD_CUSTOMER_PARTS = ("seq", "tags", "groups", "history", "activity")
"""Layout 1's per-customer keys `c:{<customer>}:<part>`; consent, profiles and the notifier's keys
share the `c:` prefix and are kept."""
_DROPPED = ("h:*", "b:*", "daily:*", "t:*", "c:*:messages", *(f"c:*:{part}" for part in _OLD_CUSTOMER_PARTS))
"""Patterns (under the prefix) of every key a reset deletes whole, in either layout."""

# Shared by BEGIN and the projector's batch scripts: KEYS[1] meta, KEYS[2] offsets; now_ms given.
# Flips `rebuilding` to `ready` once every partition's stored offset reached its target.
SETTLE = """
local function settle(meta_key, offsets_key, now_ms)
  local meta = redis.call('HGETALL', meta_key)
  local state = nil
  local targets = {}
  for i = 1, #meta, 2 do
    if meta[i] == 'state' then
      state = meta[i + 1]
    elseif string.sub(meta[i], 1, 7) == 'target:' then
      targets[string.sub(meta[i], 8)] = tonumber(meta[i + 1])
    end
  end
  if state ~= 'rebuilding' then return state or '' end
  for field, target in pairs(targets) do
    if target > 0 and tonumber(redis.call('HGET', offsets_key, field) or '0') < target then return state end
  end
  redis.call('HSET', meta_key, 'state', 'ready', 'ready_ms', now_ms)
  return 'ready'
end
"""

# KEYS: meta, offsets. ARGV: only_if_missing ('1'/'0'), epoch, now_ms, reason, layout, then (field, target)*.
_BEGIN = (
    SETTLE
    + """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return '' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'rebuilding', 'layout', ARGV[5], 'epoch', ARGV[2], 'started_ms', ARGV[3],
  'reason', ARGV[4])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'target:' .. ARGV[i], ARGV[i + 1])
end
return settle(KEYS[1], KEYS[2], ARGV[3])
"""
)

# KEYS: meta, offsets. ARGV: epoch, now_ms, layout, reason, only_if_outdated ('1'/'0'). Projectors
# pause while the state is `resetting`. With only_if_outdated, does nothing (0) unless a marker of
# another layout is there: that is how one projector claims an upgrade.
_PAUSE = """
if ARGV[5] == '1' then
  local state, layout = unpack(redis.call('HMGET', KEYS[1], 'state', 'layout'))
  if not state or layout == ARGV[3] then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'resetting', 'layout', ARGV[3], 'epoch', ARGV[1], 'started_ms', ARGV[2],
  'reason', ARGV[4])
return 1
"""

# KEYS: customer hashes. Each loses everything but its dense id (kept with the id buckets, so an
# audience snapshot of a running campaign still names the same customers after the rebuild).
_KEEP_IDS = f"""
for i = 1, #KEYS do
  local id = redis.call('HGET', KEYS[i], '{ID_FIELD}')
  redis.call('DEL', KEYS[i])
  if id then redis.call('HSET', KEYS[i], '{ID_FIELD}', id) end
end
return #KEYS
"""


class Marker:
    """Begins, resets and reports rebuilds of the read model under one key prefix."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self.keys = Keys(key_prefix)
        self._reads = ReadModel(redis, key_prefix=key_prefix)
        self._begin = redis.register_script(_BEGIN)
        self._pause = redis.register_script(_PAUSE)
        self._keep_ids = redis.register_script(_KEEP_IDS)

    async def status(self) -> ReadModelStatus:
        return await self._reads.status()

    async def begin(
        self, targets: Mapping[str, int], now: datetime, *, reason: str, only_if_missing: bool = True
    ) -> str | None:
        """Write the marker in state `rebuilding` with these targets (offset fields -> end offsets).

        With `only_if_missing`, a marker already there wins (another projector began first): returns
        None. Otherwise returns the state it left: `ready` at once when every target is already met.
        """
        args: list[str | int] = ["1" if only_if_missing else "0", uuid.uuid4().hex, _ms(now), reason, LAYOUT]
        for field, target in sorted(targets.items()):
            args += [field, target]
        state = _text(await self._begin([self.keys.meta, self.keys.offsets], args))
        return state or None

    async def reset(self, now: datetime) -> int:
        """Pause the projectors, delete the projection's keys and positions, then drop the marker, which
        makes the next projector to look begin a rebuild; returns how many keys were deleted.

        Consent, profiles, audience snapshots, dense ids and the notifier's keys share the prefix and
        are kept. Interrupted, it leaves the marker `resetting` (projectors wait, readers get 503): run
        it again.
        """
        await self._pause([self.keys.meta, self.keys.offsets], [uuid.uuid4().hex, _ms(now), LAYOUT, "reset", "0"])
        return await self._clear()

    async def upgrade(self, now: datetime) -> bool:
        """If the marker is of another layout, claim the upgrade and reset; False when there was nothing
        to upgrade or another projector claimed it first."""
        claimed = await self._pause(
            [self.keys.meta, self.keys.offsets], [uuid.uuid4().hex, _ms(now), LAYOUT, "layout", "1"]
        )
        if not claimed:
            return False
        await self._clear()
        return True

    async def _clear(self) -> int:
        prefix = self.keys.prefix
        deleted = 0
        for pattern in _DROPPED:
            deleted += await self._each_batch(f"{prefix}{pattern}", self._redis.unlink)
        await self._each_batch(f"{prefix}r:*", lambda *keys: self._keep_ids(list(keys)))
        deleted += int(
            await self._redis.unlink(
                self.keys.tag_members, self.keys.group_members, self.keys.gap_count, self.keys.gap_customers
            )
        )
        await self._redis.delete(self.keys.meta)  # missing: the first projector to look begins the rebuild
        return deleted

    async def _each_batch(self, pattern: str, work: Callable[..., Awaitable[Any]]) -> int:
        done = 0
        batch: list[bytes | str] = []
        async for key in self._redis.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                done += int(await work(*batch))
                batch = []
        if batch:
            done += int(await work(*batch))
        return done


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
