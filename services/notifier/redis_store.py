"""Redis behind the notifier's ports: the scheduler (sorted set + leases, in Lua), the ledger, tag facts.

Key layout (prefix `ts:` by default):

    ts:n:due                     zset    step key -> due time (ms); a claim moves it to the lease's end
    ts:n:jobs                    hash    step key -> ScheduledStep JSON
    ts:n:lease                   hash    step key -> token of the claim holding it
    ts:n:claims                  hash    step key -> how many times it was claimed
    ts:n:d:<step key>            string  the final decision ("sent", "suppressed", ...), expires
    ts:c:{<customer>}:sent:<ch>  zset    "<playbook>|<step key>" -> sent at (ms): what the caps count
    ts:c:{<customer>}:coupon:<k> string  "<step key>|<until ms>": who holds the coupon kind, until when
    ts:c:{<customer>}:lock:<ch>  string  the step key deciding and sending on that channel now (expires)
    ts:r:<kind>:<id>             hash    report tallies of a playbook or campaign: "<step>|<outcome>|<reason>" -> n
    ts:r:<kind>:<id>:touch       hash    customer -> "treated|<ms>" or "holdout|<ms>": their first send (or holdout)

Campaigns (RedisCampaigns, below):

    ts:cp:all                    zset    campaign id -> created at (ms)
    ts:cp:used                   set     every campaign id ever created (a deleted one's step keys and
                                         report stay behind, so its id is never given out again)
    ts:cp:<id>                   hash    def (Campaign JSON), status, created_at, started_at, audience,
                                         pos:<step> (customers fanned out), after:<step> (the last of them)
    ts:cp:<id>:audience          zset    the audience snapshot, every score 0 (ZRANGEBYLEX pages)
    ts:cp:lease                  string  the replica fanning campaigns out now (expires)
    ts:pb                        hash    playbooks replaced over the API: version, doc, at, actor

A claim leaves the job in `due` with its score pushed to the lease's end, so a replica that dies
holding it simply lets the score come due again: no reaper is needed. Completion and deferral check
the claim's token, so a replica whose lease ran out cannot remove a job another replica now holds.
Times compared are the notifier's injected clock, not Redis's, so tests can move time.
Single-node Redis (or Sentinel): the scheduler keys are shared by all customers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from schemas.limits import MAX_CAMPAIGNS
from services.engine.timeutil import from_us
from services.notifier.policy import Audience, Campaign, PlaybookSet, ScheduledStep, SendRecord
from services.notifier.policy.campaigns import CampaignRecord, CampaignsFull, CampaignStatus
from services.notifier.ports import Claim, ProgramKind, StoredPlaybooks, Tally
from services.runtime.readmodel import DEFAULT_PREFIX, Keys, ReadModel, ReadModelUnavailable, tag_field


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisScheduler:
    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        base = f"{key_prefix}n:"
        self._keys = [f"{base}due", f"{base}jobs", f"{base}lease", f"{base}claims"]
        self._schedule = redis.register_script(_SCHEDULE)
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)
        self._defer = redis.register_script(_DEFER)

    async def schedule(self, jobs: Sequence[ScheduledStep]) -> set[str]:
        args: list[str | int] = []
        for job in jobs:
            args += [job.key, _ms(job.due_at), job.model_dump_json()]
        return {_text(key) for key in await self._schedule(self._keys[:2], args)} if args else set()

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        token = uuid.uuid4().hex
        reply = await self._claim(self._keys, [_ms(now), limit, _ms(now + lease), token])
        return [
            Claim(ScheduledStep.model_validate_json(reply[i + 1]), token, int(reply[i + 2]))
            for i in range(0, len(reply), 3)
        ]

    async def complete(self, claim: Claim) -> bool:
        return bool(await self._complete(self._keys, [claim.job.key, claim.token]))

    async def defer(self, claim: Claim, until: datetime) -> bool:
        return bool(await self._defer(self._keys, [claim.job.key, claim.token, _ms(until)]))

    async def backlog(self, now: datetime) -> tuple[int, datetime | None]:
        due_key = self._keys[0]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(due_key, "-inf", _ms(now))
            pipe.zrangebyscore(due_key, "-inf", _ms(now), start=0, num=1, withscores=True)
            count, oldest = await pipe.execute()
        first = from_us(int(oldest[0][1]) * 1000) if oldest else None
        return int(count), first

    async def size(self) -> int:
        """Every stored job, due or not."""
        return int(await self._redis.zcard(self._keys[0]))


class RedisLedger:
    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._lock = redis.register_script(_LOCK)
        self._unlock = redis.register_script(_UNLOCK)
        self._tally_first = redis.register_script(_TALLY_FIRST)

    def report_key(self, kind: ProgramKind, program_id: str) -> str:
        return f"{self._prefix}r:{kind}:{program_id}"

    def decided_key(self, key: str) -> str:
        return f"{self._prefix}n:d:{key}"

    def sent_key(self, customer_id: str, channel: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:sent:{channel}"

    def coupon_key(self, customer_id: str, coupon: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:coupon:{coupon}"

    def lock_key(self, customer_id: str, channel: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:lock:{channel}"

    async def lock(self, customer_id: str, channel: str, holder: str, ttl: timedelta) -> bool:
        ttl_ms = max(1, int(ttl.total_seconds() * 1000))
        return bool(await self._lock([self.lock_key(customer_id, channel)], [holder, ttl_ms]))

    async def unlock(self, customer_id: str, channel: str, holder: str) -> None:
        await self._unlock([self.lock_key(customer_id, channel)], [holder])

    async def decided(self, key: str) -> bool:
        return bool(await self._redis.exists(self.decided_key(key)))

    async def history(self, customer_id: str, channel: str, since: datetime) -> list[SendRecord]:
        entries: list[Any] = await self._redis.zrangebyscore(
            self.sent_key(customer_id, channel), f"({_ms(since)}", "+inf", withscores=True
        )
        return [
            SendRecord(channel, _text(member).split("|", 1)[0], from_us(int(score) * 1000)) for member, score in entries
        ]

    async def coupon_holder(self, customer_id: str, coupon: str, now: datetime) -> str | None:
        value = await self._redis.get(self.coupon_key(customer_id, coupon))
        if value is None:
            return None
        holder, until = _text(value).rsplit("|", 1)
        return holder if int(until) > _ms(now) else None

    async def reserve_coupon(self, customer_id: str, coupon: str, key: str, now: datetime, until: datetime) -> str:
        ttl_ms = max(1, _ms(until) - _ms(now))  # Redis forgets the reservation once it cannot matter
        reply = await self._reserve([self.coupon_key(customer_id, coupon)], [key, _ms(now), _ms(until), ttl_ms])
        return _text(reply)

    async def release_coupon(self, customer_id: str, coupon: str, key: str) -> None:
        await self._release([self.coupon_key(customer_id, coupon)], [key])

    async def record(
        self,
        key: str,
        outcome: str,
        sent: SendRecord | None,
        customer_id: str,
        keep: timedelta,
        tally: Tally | None = None,
    ) -> None:
        keep_ms = int(keep.total_seconds() * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            if tally is None:
                pipe.set(self.decided_key(key), outcome, px=keep_ms)
            else:
                report = self.report_key(tally.kind, tally.program_id)
                await self._tally_first(
                    [self.decided_key(key), report, f"{report}:touch"],
                    [outcome, keep_ms, tally.field, tally.customer_id, tally.touched or "", _ms(tally.at)],
                    client=pipe,
                )
            if sent is not None:
                history = self.sent_key(customer_id, sent.channel)
                pipe.zadd(history, {f"{sent.playbook_id}|{key}": _ms(sent.at)})
                pipe.zremrangebyscore(history, "-inf", _ms(sent.at) - keep_ms)
                pipe.pexpire(history, keep_ms)
            await pipe.execute()

    async def tally(self, kind: ProgramKind, program_id: str, field: str, count: int = 1) -> None:
        await self._redis.hincrby(self.report_key(kind, program_id), field, count)

    # the Reports port
    async def counts(self, kind: ProgramKind, program_id: str) -> dict[str, int]:
        fields = await self._redis.hgetall(self.report_key(kind, program_id))
        return {_text(name): int(value) for name, value in fields.items()}

    async def touches(self, kind: ProgramKind, program_id: str) -> AsyncIterator[tuple[str, str, datetime]]:
        key = f"{self.report_key(kind, program_id)}:touch"
        async for customer, value in self._redis.hscan_iter(key, count=1000):
            touched, at = _text(value).split("|", 1)
            yield _text(customer), touched, from_us(int(at) * 1000)


class RedisCampaigns:
    """Campaign records, audience snapshots and fan-out cursors; fan-out schedules into RedisScheduler's keys."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._base = f"{key_prefix}cp:"
        self._due, self._jobs = f"{key_prefix}n:due", f"{key_prefix}n:jobs"
        self._members = Keys(key_prefix).members
        self._reads = ReadModel(redis, key_prefix=key_prefix)
        self._create = redis.register_script(_CAMPAIGN_CREATE)
        self._transition = redis.register_script(_CAMPAIGN_TRANSITION)
        self._start = redis.register_script(_CAMPAIGN_START)
        self._advance = redis.register_script(_CAMPAIGN_ADVANCE)
        self._finish = redis.register_script(_CAMPAIGN_FINISH)
        self._lease = redis.register_script(_LOCK)
        self._delete = redis.register_script(_CAMPAIGN_DELETE)

    def _key(self, campaign_id: str) -> str:
        return f"{self._base}{campaign_id}"

    async def create(self, record: CampaignRecord) -> bool:
        campaign = record.campaign
        fields: list[str | int] = ["def", campaign.model_dump_json(), "status", record.status]
        fields += ["created_at", _ms(record.created_at)]
        args: list[str | int] = [campaign.id, _ms(record.created_at), MAX_CAMPAIGNS, *fields]
        created = await self._create([self._key(campaign.id), f"{self._base}all", f"{self._base}used"], args)
        if created == -1:
            raise CampaignsFull(f"{MAX_CAMPAIGNS} campaigns are kept already")
        return bool(created)

    async def get(self, campaign_id: str) -> CampaignRecord | None:
        fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(self._key(campaign_id))).items()}
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
        ids = [_text(i) for i in listed]
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
        work = [f"{key}:audience", f"{key}:all_of", f"{key}:any_of", f"{key}:base"]
        refs = (audience.all_of, audience.any_of, audience.none_of) if audience is not None else ((), (), ())
        members = [self._members(*ref.split("/", 1)) for group in refs for ref in group]
        record = await self.get(campaign_id)
        steps = len(record.campaign.steps) if record is not None else 0
        await self._start([key, *work, *members], [*(len(group) for group in refs), _ms(at), steps])
        return await self.get(campaign_id)

    async def pending(self, campaign_id: str, step: int, limit: int) -> tuple[int, str | None, list[str]]:
        key = self._key(campaign_id)
        position, after = await self._redis.hmget(key, [f"pos:{step}", f"after:{step}"])
        start = "-" if after is None else "(" + _text(after)
        ids = await self._redis.zrangebylex(f"{key}:audience", start, "+", 0, limit)
        return int(position or 0), None if after is None else _text(after), [_text(i) for i in ids]

    async def advance(
        self, campaign_id: str, step: int, position: int, after: str | None, jobs: Sequence[ScheduledStep]
    ) -> bool:
        if not jobs:
            return False
        args: list[str | int] = [step, position, after or "", jobs[-1].customer_id]
        for job in jobs:
            args += [job.key, _ms(job.due_at), job.model_dump_json()]
        return bool(await self._advance([self._key(campaign_id), self._due, self._jobs], args))

    async def finish(self, campaign_id: str) -> None:
        key = self._key(campaign_id)
        await self._finish([key, f"{key}:audience"], [])

    async def delete(self, campaign_id: str) -> bool:
        key = self._key(campaign_id)
        return bool(await self._delete([key, f"{key}:audience", f"{self._base}all"], [campaign_id]))

    async def lease(self, holder: str, ttl: timedelta) -> bool:
        return bool(await self._lease([f"{self._base}lease"], [holder, max(1, int(ttl.total_seconds() * 1000))]))


class RedisPlaybooks:
    """`ts:pb` hash: version, doc (PlaybookSet JSON), at (ms), actor; replaced by compare-and-set on version."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._key = f"{key_prefix}pb"
        self._replace = redis.register_script(_PLAYBOOKS_REPLACE)

    async def current(self) -> StoredPlaybooks | None:
        fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(self._key)).items()}
        if "doc" not in fields:
            return None
        return StoredPlaybooks(
            version=int(fields["version"]),
            playbooks=PlaybookSet.model_validate_json(fields["doc"]),
            updated_at=from_us(int(fields["at"]) * 1000),
            actor=fields["actor"],
        )

    async def version(self) -> int:
        return int(await self._redis.hget(self._key, "version") or 0)

    async def replace(
        self, playbooks: PlaybookSet, expected_version: int, at: datetime, actor: str
    ) -> StoredPlaybooks | None:
        args: list[str | int] = [expected_version, playbooks.model_dump_json(), _ms(at), actor]
        if not await self._replace([self._key], args):
            return None
        return StoredPlaybooks(expected_version + 1, playbooks, at, actor)


class RedisTagFacts:
    """Reads the tagger's read model (services/runtime/readmodel.py) for cancel conditions."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._keys = Keys(key_prefix)
        self._reads = ReadModel(redis, key_prefix=key_prefix)

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        await self._require_whole()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._keys.seq(customer_id))
            pipe.hexists(self._keys.tags(customer_id), tag_field(group_id, tag_id))
            known, held = await pipe.execute()
        return bool(held) if known else None

    async def last_activity(self, customer_id: str) -> datetime | None:
        await self._require_whole()
        activity = await self._reads.activity(customer_id)
        return None if activity is None else activity.latest

    async def _require_whole(self) -> None:
        """A missing or half-rebuilt read model would cancel (or fail to cancel) steps on wrong facts."""
        reason = await self._reads.unavailable()
        if reason is not None:
            raise ReadModelUnavailable(reason)


# KEYS: due, jobs. ARGV: (key, due ms, payload)*. A key already stored is left alone. Returns the new keys.
_SCHEDULE = """
local added = {}
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    added[#added + 1] = ARGV[i]
  end
end
return added
"""

# KEYS: due, jobs, lease, claims. ARGV: now ms, limit, lease end ms, token.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HSET', KEYS[3], id, ARGV[4])
    local claims = redis.call('HINCRBY', KEYS[4], id, 1)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = claims
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: due, jobs, lease, claims. ARGV: key, token.
_COMPLETE = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# KEYS: due, jobs, lease, claims. ARGV: key, token, due ms.
_DEFER = """
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# KEYS: coupon key. ARGV: step key, now ms, until ms, ttl ms. Returns the holder after the attempt.
_RESERVE = """
local value = redis.call('GET', KEYS[1])
if value then
  local holder, untils = string.match(value, '^(.*)|(%d+)$')
  if holder ~= ARGV[1] and tonumber(untils) > tonumber(ARGV[2]) then return holder end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[3], 'PX', ARGV[4])
return ARGV[1]
"""

# KEYS: lock key. ARGV: holder, ttl ms. Re-entrant: a step re-claimed after its replica died takes
# its own lock back at once (only one claim of a step is live at a time, so this is safe).
_LOCK = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lock key. ARGV: holder.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: coupon key. ARGV: step key.
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and string.match(value, '^(.*)|%d+$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: decided key, report hash, touch hash. ARGV: outcome, keep ms, field, customer, touched, at ms.
# The first record of a step key counts into its report; a re-record (a replica that lost its lease)
# does not, so the report counts distinct keys as consumers of the notifications topic do.
_TALLY_FIRST = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if not old then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[3], ARGV[4], ARGV[5] .. '|' .. ARGV[6]) end
end
return 1
"""

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

# KEYS: record hash, snapshot, all_of work, any_of work, base work, then the member sets of the
# all_of, any_of and none_of tags. ARGV: how many of each, started at ms, steps.
_CAMPAIGN_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'scheduled' then return 0 end
local na, ny, nn = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 6
local sources = {}
if na > 0 then
  redis.call('SINTERSTORE', KEYS[3], unpack(KEYS, i, i + na - 1))
  sources[#sources + 1] = KEYS[3]
  i = i + na
end
if ny > 0 then
  redis.call('SUNIONSTORE', KEYS[4], unpack(KEYS, i, i + ny - 1))
  sources[#sources + 1] = KEYS[4]
  i = i + ny
end
redis.call('DEL', KEYS[2], KEYS[5])
if #sources > 0 then
  redis.call('SINTERSTORE', KEYS[5], unpack(sources))
  if nn > 0 then redis.call('SDIFFSTORE', KEYS[5], KEYS[5], unpack(KEYS, i, i + nn - 1)) end
  redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[5], 'WEIGHTS', 0)
end
local count = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[4], 'audience', count)
for step = 0, tonumber(ARGV[5]) - 1 do redis.call('HSET', KEYS[1], 'pos:' .. step, 0) end
return 1
"""

# KEYS: record hash, due, jobs. ARGV: step, position, after ('' for none), last id, (key, due ms, job)*.
_CAMPAIGN_ADVANCE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
local step = ARGV[1]
if tonumber(redis.call('HGET', KEYS[1], 'pos:' .. step) or '0') ~= tonumber(ARGV[2]) then return 0 end
if (redis.call('HGET', KEYS[1], 'after:' .. step) or '') ~= ARGV[3] then return 0 end
local count = 0
for i = 5, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
  count = count + 1
end
redis.call('HINCRBY', KEYS[1], 'pos:' .. step, count)
redis.call('HSET', KEYS[1], 'after:' .. step, ARGV[4])
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

# KEYS: playbooks hash. ARGV: expected version, doc, at ms, actor.
_PLAYBOOKS_REPLACE = """
if tonumber(redis.call('HGET', KEYS[1], 'version') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', tonumber(ARGV[1]) + 1, 'doc', ARGV[2], 'at', ARGV[3], 'actor', ARGV[4])
return 1
"""
