"""Campaigns where the notifier keeps its state: records, audience snapshots and fan-out cursors.

The ingest API creates, lists and moves campaigns; the notifier takes the audience and fans the steps
out into its scheduler's keys. `MemoryCampaigns` (services/notifier/memory.py) is the same store in
one process, for the embedded mode.

Key layout (prefix `ts:` by default):

    ts:cp:all                    zset    campaign id -> created at (ms)
    ts:cp:used                   set     every campaign id ever created (a deleted one's step keys and
                                         report stay behind, so its id is never given out again)
    ts:cp:<id>                   hash    def (Campaign JSON), status, created_at, started_at, audience,
                                         pos:<step> (customers fanned out), after:<step> (the last of them)
    ts:cp:<id>:audience          string  the audience snapshot: a bitmap over the read model's dense
                                         customer ids (BITOP of the tag bitmaps, readmodel.py), walked
                                         in id order; after:<step> is the dense id of the last one
    ts:cp:lease                  string  the replica fanning campaigns out now (expires)
    ts:n:due, ts:n:jobs                  the notifier's scheduler (services/notifier/redis_store.py), which
                                         `advance` schedules a page of steps into
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis

from schemas.campaigns import Audience, Campaign, CampaignRecord, CampaignStatus
from schemas.limits import MAX_CAMPAIGNS
from schemas.playbooks import ScheduledStep
from services.engine.timeutil import from_us
from services.runtime.bitmaps import set_bits, snapshot_commands
from services.runtime.readmodel import DEFAULT_PREFIX, ID_FIELD, Keys, ReadModel, ReadModelUnavailable
from services.runtime.redis import LEASE, as_text, to_ms


class CampaignsFull(Exception):
    """MAX_CAMPAIGNS are kept: a new one is refused (HTTP 409) rather than the store growing without bound."""


class CampaignStore(Protocol):
    """Campaigns, their audience snapshots and fan-out cursors. A snapshot is taken once, at start; each
    step walks it in one fixed order (ids in memory, the read model's dense ids in Redis), and `advance`
    schedules a page of jobs and moves that step's cursor in one atomic step, only if the cursor is
    where the caller read it (so two replicas, or a replica that lost its lease, never schedule a
    customer's step twice)."""

    async def create(self, record: CampaignRecord) -> bool:
        """False when a campaign with this id exists."""
        ...

    async def get(self, campaign_id: str) -> CampaignRecord | None: ...

    async def all(self) -> list[CampaignRecord]:
        """Every campaign, oldest first."""
        ...

    async def transition(self, campaign_id: str, allowed: frozenset[str], to: CampaignStatus) -> CampaignRecord | None:
        """Move to `to` if the status is one of `allowed`; the record afterwards (None: no such campaign)."""
        ...

    async def start(self, campaign_id: str, audience: Audience | None, at: datetime) -> CampaignRecord | None:
        """Snapshot the audience (None: empty) and mark the campaign running, if it is still scheduled."""
        ...

    async def pending(self, campaign_id: str, step: int, limit: int) -> tuple[int, str | None, list[str]]:
        """The step's cursor (position, last id) and up to `limit` customers after it."""
        ...

    async def advance(
        self, campaign_id: str, step: int, position: int, after: str | None, jobs: Sequence[ScheduledStep]
    ) -> bool:
        """Schedule `jobs` (one per customer, in snapshot order) and move the cursor past them; False
        (nothing done) when the cursor is no longer at (`position`, `after`) or the campaign is not running."""
        ...

    async def finish(self, campaign_id: str) -> None:
        """Mark a running campaign done and drop its snapshot (every step is fanned out)."""
        ...

    async def delete(self, campaign_id: str) -> bool:
        """Forget a done or cancelled campaign (its report's tallies stay); False when it is neither."""
        ...

    async def lease(self, holder: str, ttl: timedelta) -> bool:
        """Be the one replica fanning campaigns out for `ttl` (renewed by calling again)."""
        ...


class RedisCampaigns:
    """Campaign records, audience snapshots and fan-out cursors; fan-out schedules into RedisScheduler's keys."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._base = f"{key_prefix}cp:"
        self._due, self._jobs = f"{key_prefix}n:due", f"{key_prefix}n:jobs"
        self._keys = Keys(key_prefix)
        self._reads = ReadModel(redis, key_prefix=key_prefix)
        self._create = redis.register_script(_CAMPAIGN_CREATE)
        self._transition = redis.register_script(_CAMPAIGN_TRANSITION)
        self._start = redis.register_script(_CAMPAIGN_START)
        self._advance = redis.register_script(_CAMPAIGN_ADVANCE)
        self._finish = redis.register_script(_CAMPAIGN_FINISH)
        self._lease = redis.register_script(LEASE)
        self._delete = redis.register_script(_CAMPAIGN_DELETE)

    def _key(self, campaign_id: str) -> str:
        return f"{self._base}{campaign_id}"

    async def create(self, record: CampaignRecord) -> bool:
        campaign = record.campaign
        fields: list[str | int] = ["def", campaign.model_dump_json(), "status", record.status]
        fields += ["created_at", to_ms(record.created_at)]
        args: list[str | int] = [campaign.id, to_ms(record.created_at), MAX_CAMPAIGNS, *fields]
        created = await self._create([self._key(campaign.id), f"{self._base}all", f"{self._base}used"], args)
        if created == -1:
            raise CampaignsFull(f"{MAX_CAMPAIGNS} campaigns are kept already")
        return bool(created)

    async def get(self, campaign_id: str) -> CampaignRecord | None:
        fields = {as_text(k): as_text(v) for k, v in (await self._redis.hgetall(self._key(campaign_id))).items()}
        if "def" not in fields:
            return None
        campaign = Campaign.model_validate_json(fields["def"])
        started = fields.get("started_at")
        return CampaignRecord(
            campaign=campaign,
            status=fields["status"],
            created_at=from_us(int(fields["created_at"]) * 1000),
            started_at=from_us(int(started) * 1000) if started else None,
            audience=int(fields["audience"]) if "audience" in fields else None,
            positions=tuple(int(fields.get(f"pos:{n}", 0)) for n in range(len(campaign.steps))) if started else (),
        )

    async def all(self) -> list[CampaignRecord]:
        listed: list[Any] = await self._redis.zrange(f"{self._base}all", 0, -1)
        ids = [as_text(i) for i in listed]
        found = [await self.get(campaign_id) for campaign_id in ids]
        return [record for record in found if record is not None]

    async def transition(self, campaign_id: str, allowed: frozenset[str], to: CampaignStatus) -> CampaignRecord | None:
        await self._transition([self._key(campaign_id)], [to, *sorted(allowed)])
        return await self.get(campaign_id)

    async def start(self, campaign_id: str, audience: Audience | None, at: datetime) -> CampaignRecord | None:
        reason = await self._reads.unavailable()
        if reason is not None:  # a missing or half-rebuilt read model would snapshot the wrong audience
            raise ReadModelUnavailable(reason)
        key = self._key(campaign_id)
        commands: list[str | int] = []
        if audience is not None:
            refs = (audience.all_of, audience.any_of, audience.none_of)
            bitmaps = [[self._keys.bitmap(*ref.split("/", 1)) for ref in group] for group in refs]
            for command in snapshot_commands(*bitmaps, target=f"{key}:audience", work=f"{key}:work"):
                commands += [len(command), *command]
        record = await self.get(campaign_id)
        steps = len(record.campaign.steps) if record is not None else 0
        await self._start([key, f"{key}:audience"], [to_ms(at), steps, *commands])
        return await self.get(campaign_id)

    async def pending(self, campaign_id: str, step: int, limit: int) -> tuple[int, str | None, list[str]]:
        key = self._key(campaign_id)
        position, after = await self._redis.hmget(key, [f"pos:{step}", f"after:{step}"])
        last = -1 if after is None else int(after)
        snapshot = f"{key}:audience"
        ids = [dense async for found in set_bits(self._redis, snapshot, after=last, limit=limit) for dense in found]
        return int(position or 0), None if after is None else as_text(after), await self._reads.name(ids)

    async def advance(
        self, campaign_id: str, step: int, position: int, after: str | None, jobs: Sequence[ScheduledStep]
    ) -> bool:
        if not jobs:
            return False
        args: list[str | int] = [step, position, after or ""]
        for job in jobs:
            args += [job.key, to_ms(job.due_at), job.model_dump_json()]
        last = self._keys.customer(jobs[-1].customer_id)
        return bool(await self._advance([self._key(campaign_id), self._due, self._jobs, last], args))

    async def finish(self, campaign_id: str) -> None:
        key = self._key(campaign_id)
        await self._finish([key, f"{key}:audience"], [])

    async def delete(self, campaign_id: str) -> bool:
        key = self._key(campaign_id)
        return bool(await self._delete([key, f"{key}:audience", f"{self._base}all"], [campaign_id]))

    async def lease(self, holder: str, ttl: timedelta) -> bool:
        return bool(await self._lease([f"{self._base}lease"], [holder, max(1, int(ttl.total_seconds() * 1000))]))


# KEYS: record hash, all zset, ids ever used. ARGV: id, created ms, max campaigns, field/value pairs.
_CAMPAIGN_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# KEYS: record hash. ARGV: new status, allowed statuses...
_CAMPAIGN_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
for i = 2, #ARGV do
  if ARGV[i] == status then
    local to = ARGV[1]
    if to == 'running' and not redis.call('HGET', KEYS[1], 'started_at') then to = 'scheduled' end
    redis.call('HSET', KEYS[1], 'status', to)
    return 1
  end
end
return 0
"""

# KEYS: record hash, snapshot. ARGV: started at ms, steps, then the snapshot's commands
# (bitmaps.snapshot_commands), each as its length and its words. BITOP on bitmaps of ~125 KB (a
# million customers) keeps this script around a millisecond; BITCOUNT counts the audience.
_CAMPAIGN_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'scheduled' then return 0 end
redis.call('DEL', KEYS[2])
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local count = redis.call('BITCOUNT', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'audience', count)
for step = 0, tonumber(ARGV[2]) - 1 do redis.call('HSET', KEYS[1], 'pos:' .. step, 0) end
return 1
"""

# KEYS: record hash, due, jobs, the read model's hash of the last job's customer (its dense id is
# the step's new cursor). ARGV: step, position, after ('' for none), (key, due ms, job)*.
_CAMPAIGN_ADVANCE = f"""
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local step = ARGV[1]
if tonumber(redis.call('HGET', KEYS[1], 'pos:' .. step) or '0') ~= tonumber(ARGV[2]) then return 0 end
if (redis.call('HGET', KEYS[1], 'after:' .. step) or '') ~= ARGV[3] then return 0 end
local last = redis.call('HGET', KEYS[4], '{ID_FIELD}')
if not last then return 0 end
local count = 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
  count = count + 1
end
redis.call('HINCRBY', KEYS[1], 'pos:' .. step, count)
redis.call('HSET', KEYS[1], 'after:' .. step, last)
return 1
"""

# KEYS: record hash, snapshot.
_CAMPAIGN_FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'done')
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: record hash, snapshot, all zset. ARGV: id.
_CAMPAIGN_DELETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'done' and status ~= 'cancelled' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
