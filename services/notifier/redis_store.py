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

The tallies and send history are read through services/runtime/reports.py (the ingest API reads them
too); campaigns and playbooks replaced over the API are services/runtime/{campaigns,playbooks}.py.

A claim leaves the job in `due` with its score pushed to the lease's end, so a replica that dies
holding it simply lets the score come due again: no reaper is needed. Completion and deferral check
the claim's token, so a replica whose lease ran out cannot remove a job another replica now holds.
Times compared are the notifier's injected clock, not Redis's, so tests can move time.
Single-node Redis (or Sentinel): the scheduler keys are shared by all customers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from redis.asyncio import Redis

from schemas.playbooks import ScheduledStep
from services.engine.timeutil import from_us
from services.notifier.policy import SendRecord
from services.notifier.ports import Claim
from services.runtime.readmodel import DEFAULT_PREFIX, Keys, ReadModel, ReadModelUnavailable
from services.runtime.redis import LEASE, as_text, to_ms
from services.runtime.reports import ProgramKind, RedisReports, Tally


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
            args += [job.key, to_ms(job.due_at), job.model_dump_json()]
        return {as_text(key) for key in await self._schedule(self._keys[:2], args)} if args else set()

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        token = uuid.uuid4().hex
        reply = await self._claim(self._keys, [to_ms(now), limit, to_ms(now + lease), token])
        return [
            Claim(ScheduledStep.model_validate_json(reply[i + 1]), token, int(reply[i + 2]))
            for i in range(0, len(reply), 3)
        ]

    async def complete(self, claim: Claim) -> bool:
        return bool(await self._complete(self._keys, [claim.job.key, claim.token]))

    async def defer(self, claim: Claim, until: datetime) -> bool:
        return bool(await self._defer(self._keys, [claim.job.key, claim.token, to_ms(until)]))

    async def backlog(self, now: datetime) -> tuple[int, datetime | None]:
        due_key = self._keys[0]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcount(due_key, "-inf", to_ms(now))
            pipe.zrangebyscore(due_key, "-inf", to_ms(now), start=0, num=1, withscores=True)
            count, oldest = await pipe.execute()
        first = from_us(int(oldest[0][1]) * 1000) if oldest else None
        return int(count), first

    async def size(self) -> int:
        """Every stored job, due or not."""
        return int(await self._redis.zcard(self._keys[0]))


class RedisLedger(RedisReports):
    """Decisions, sends, coupons and locks; the report tallies and send history it writes are read
    through RedisReports (services/runtime/reports.py), by the ingest API as well."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(redis, key_prefix=key_prefix)
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)
        self._lock = redis.register_script(LEASE)
        self._unlock = redis.register_script(_UNLOCK)
        self._tally_first = redis.register_script(_TALLY_FIRST)

    def decided_key(self, key: str) -> str:
        return f"{self._prefix}n:d:{key}"

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

    async def coupon_holder(self, customer_id: str, coupon: str, now: datetime) -> str | None:
        value = await self._redis.get(self.coupon_key(customer_id, coupon))
        if value is None:
            return None
        holder, until = as_text(value).rsplit("|", 1)
        return holder if int(until) > to_ms(now) else None

    async def reserve_coupon(self, customer_id: str, coupon: str, key: str, now: datetime, until: datetime) -> str:
        ttl_ms = max(1, to_ms(until) - to_ms(now))  # Redis forgets the reservation once it cannot matter
        reply = await self._reserve([self.coupon_key(customer_id, coupon)], [key, to_ms(now), to_ms(until), ttl_ms])
        return as_text(reply)

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
                    [outcome, keep_ms, tally.field, tally.customer_id, tally.touched or "", to_ms(tally.at)],
                    client=pipe,
                )
            if sent is not None:
                history = self.sent_key(customer_id, sent.channel)
                pipe.zadd(history, {f"{sent.playbook_id}|{key}": to_ms(sent.at)})
                pipe.zremrangebyscore(history, "-inf", to_ms(sent.at) - keep_ms)
                pipe.pexpire(history, keep_ms)
            await pipe.execute()

    async def tally(self, kind: ProgramKind, program_id: str, field: str, count: int = 1) -> None:
        await self._redis.hincrby(self.report_key(kind, program_id), field, count)


class RedisTagFacts:
    """Reads the tagger's read model (services/runtime/readmodel.py) for cancel conditions."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._keys = Keys(key_prefix)
        self._reads = ReadModel(redis, key_prefix=key_prefix)

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        await self._require_whole()
        return await self._reads.holds(customer_id, group_id, tag_id)

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
