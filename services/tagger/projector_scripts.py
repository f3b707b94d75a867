"""The projector's Lua scripts (projector.py calls them): each applies a whole batch, or nothing.

Layout of the keys they write: services/runtime/readmodel.py.
"""

from __future__ import annotations

from services.runtime.bitmaps import ID_BUCKET
from services.runtime.readmodel import (
    DAILY_BASE_FIELD,
    DAILY_KEEP_DAYS,
    GROUP_PREFIX,
    HEADS_GENERATION_FIELD,
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

SHARED_KEYS = 6
SHARED_ARGS = 9
"""How many keys and args every change script takes first (`Projector._shared`)."""

# Counters move only when the tag set really changed, so an "added" for a tag already held (or a
# "removed" for one not held, possible after a gap) keeps bitmaps and counts consistent. A customer
# gets a dense id when first tagged: the next value of the counter, recorded in its hash and in the
# id's bucket in the same script. Numbers go to redis.call as strings (string.format '%d'): Lua
# would print large ones in exponent form.
#
# A run is one customer's consecutive changes in a batch (the changes of one event, usually): its
# last seq is read once and written once, and its history entries pushed by one LPUSH and trimmed
# once, which leaves the same keys as applying each change by itself (each change is still decided
# by the seq before it: the next one applied, a repeat or an older one dropped, a jump applied and
# counted as a gap). Key names are put together here from the pieces `Projector._shared` gives
# (readmodel.Keys names them), so a change needs no keys of its own.
#
# `shared`: the keys and args `Projector._shared` gives once per script (next id, tag members,
# group members, gap count, gap customers, head table; the buckets' key prefix, the history's
# length, the head table's generation, the name pieces of customer, history, bitmap and daily keys).
_APPLY_RUN = (
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

local function change_tags(shared, customer_key, customer, change, field, held, day)
  local bitmap_key, daily_key = shared.bitmap .. field, shared.daily .. field
  local group = string.sub(field, 1, string.find(field, '/', 1, true) - 1)
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
end

-- ARGV[first]: the customer, ARGV[first + 1]: how many changes; then one arg per change,
-- "<seq> <change> <local day> <held value> <group/tag>\\n<history entry>" (the held value is
-- "<added µs> <source> <group version>"; only the entry, last, may hold any byte).
-- Appends each change's outcome to `out`; returns the index after the run.
local function apply_run(shared, args, first, out)
  local customer, n = args[first], tonumber(args[first + 1])
  local customer_key = shared.customer[1] .. customer .. shared.customer[2]
  local last = tonumber(redis.call('HGET', customer_key, '{SEQ_FIELD}') or '0')
  local last_text, entries = nil, {{}}
  for a = first + 2, first + 1 + n do
    local line_end = string.find(args[a], '\\n', 1, true)
    local seq_text, change, day, held, field =
      string.match(string.sub(args[a], 1, line_end - 1), '^(%d+) (%a+) (%-?%d+) (%d+ %S+ %d+) (%S+)$')
    local seq = tonumber(seq_text)
    if seq == last then
      out[#out + 1] = 'duplicate'
    elseif seq < last then
      out[#out + 1] = 'stale'
    else
      if seq > last + 1 then
        redis.call('INCR', shared.gap_count)
        redis.call('SADD', shared.gap_customers, customer)
        out[#out + 1] = 'applied-after-gap'
      else
        out[#out + 1] = 'applied'
      end
      last, last_text = seq, seq_text
      change_tags(shared, customer_key, customer, change, field, held, day)
      entries[#entries + 1] = string.sub(args[a], line_end + 1)
    end
  end
  if last_text then
    redis.call('HSET', customer_key, '{SEQ_FIELD}', last_text)
    local history_key = shared.history[1] .. customer .. shared.history[2]
    redis.call('LPUSH', history_key, unpack(entries))
    redis.call('LTRIM', history_key, 0, shared.history_limit - 1)
  end
  return first + 2 + n
end

local function shared_from(keys, k, args, a)
  return {{next_id = keys[k], tag_members = keys[k + 1], group_members = keys[k + 2], gap_count = keys[k + 3],
    gap_customers = keys[k + 4], heads = keys[k + 5], buckets = args[a], history_limit = tonumber(args[a + 1]),
    heads_generation = args[a + 2], customer = {{args[a + 3], args[a + 4]}}, history = {{args[a + 5], args[a + 6]}},
    bitmap = args[a + 7], daily = args[a + 8]}}
end

-- Entries name heads of the table's generation they were built for: another one (Redis lost its
-- data since) would misname them, so nothing is written and the projector interns them again.
local function heads_current(shared)
  if shared.heads_generation == '' then return true end -- no number given yet: every entry carries its head
  return redis.call('HGET', shared.heads, '{HEADS_GENERATION_FIELD}') == shared.heads_generation
end
"""
)

# KEYS: the 6 shared keys; ARGV: the 9 shared args, then runs (customer, count, an arg per change).
APPLY = (
    _APPLY_RUN
    + f"""
local shared = shared_from(KEYS, 1, ARGV, 1)
if not heads_current(shared) then return {{'heads'}} end
local out = {{}}
local a = {SHARED_ARGS + 1}
while a <= #ARGV do a = apply_run(shared, ARGV, a, out) end
return out
"""
)

# The head table (history_codec.py): KEYS[1] number -> head (and the generation), KEYS[2] head ->
# number; ARGV[1] a generation to start with, ARGV[2] the most heads kept, then the heads to number.
# Replies the generation, then each head's number (0: not kept, the entry carries it). Numbers are
# never given back, so a number names one head for the table's life.
INTERN = f"""
local generation = redis.call('HGET', KEYS[1], '{HEADS_GENERATION_FIELD}')
if not generation then
  generation = ARGV[1]
  redis.call('HSET', KEYS[1], '{HEADS_GENERATION_FIELD}', generation)
end
local reply = {{generation}}
for i = 3, #ARGV do
  local number = redis.call('HGET', KEYS[2], ARGV[i])
  if not number then
    local count = redis.call('HLEN', KEYS[2])
    if count < tonumber(ARGV[2]) then
      number = string.format('%d', count + 1)
      redis.call('HSET', KEYS[2], ARGV[i], number)
      redis.call('HSET', KEYS[1], number, ARGV[i])
    else
      number = '0'
    end
  end
  reply[#reply + 1] = tonumber(number)
end
return reply
"""

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

# After the position's keys and args: the 6 shared keys and 9 shared args, then runs as APPLY takes them.
APPLY_BATCH = (
    _APPLY_RUN
    + SETTLE
    + _BATCH_CHECK
    + f"""
local shared = shared_from(KEYS, 3, ARGV, 6)
if not heads_current(shared) then return {{'heads', ''}} end
local out = {{}}
local a = {6 + SHARED_ARGS}
while a <= #ARGV do a = apply_run(shared, ARGV, a, out) end
"""
    + _BATCH_DONE
    + """
local reply = {'ok', state}
for i = 1, #out do reply[i + 2] = out[i] end
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
