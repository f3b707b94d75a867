"""The projector's Lua scripts (projector.py calls them): each applies a whole batch, or nothing.

Layout of the keys they write: services/runtime/readmodel.py.
"""

from __future__ import annotations

from services.runtime.bitmaps import ID_BUCKET
from services.runtime.readmodel import (
    DAILY_BASE_FIELD,
    DAILY_KEEP_DAYS,
    GROUP_PREFIX,
    ID_FIELD,
    LAST_ORDER_FIELD,
    LAST_SEEN_FIELD,
    SEQ_FIELD,
    TAG_PREFIX,
)
from services.tagger.marker import SETTLE

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
APPLY = (
    _APPLY_ONE
    + """
return apply_one(shared_from(KEYS, 1, ARGV, 1), {KEYS[6], KEYS[7], KEYS[8], KEYS[9]},
  {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]})
"""
)

# ARGV holds field, epoch-microseconds pairs; each field only ever grows.
ACTIVITY = """
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
# keys and 8 args, as APPLY takes them.
APPLY_BATCH = (
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
ACTIVITY_BATCH = (
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
MESSAGES_BATCH = (
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
