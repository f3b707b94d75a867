"""The projector's Lua scripts (projector.py calls them): each applies a whole batch, or nothing.

Layout of the keys they write: services/runtime/readmodel.py.
"""

from __future__ import annotations

from services.runtime.bitmaps import ID_BUCKET
from services.runtime.readmodel import (
    DAILY_BASE_FIELD,
    DAILY_KEEP_DAYS,
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
_FOLD_DAYS = f"""
local function fold_days(key)
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

# A customer's history (readmodel.py): one string, the entry count then each entry framed by its
# length (history_codec.py), oldest first. Appending reads and writes it whole: SET stores it at its
# size, where APPEND would leave Redis's growth reserve (up to its size again) behind every history.
# Past `limit` entries, the oldest are cut from the front. An entry of format 3 has no instant and
# cause (the entry before it has them): one that would come first after a cut, or follow a change of
# its run that was not applied, is written as format 2 with those it stands for.
_HISTORY = """
local function read_varint(data, at)
  local value, scale, byte = 0, 1, 128
  while byte >= 128 do
    byte = string.byte(data, at)
    value, scale, at = value + (byte % 128) * scale, scale * 128, at + 1
  end
  return value, at
end

local function varint(value)
  local out = {}
  while value >= 128 do
    out[#out + 1] = string.char(value % 128 + 128)
    value = math.floor(value / 128)
  end
  out[#out + 1] = string.char(value)
  return table.concat(out)
end

-- Where the instant of the entry starting at `first` starts (format 2), or would start (format 3).
local function event_at(data, first)
  local number, at = read_varint(data, first + 1)
  if number == 0 then
    local size
    size, at = read_varint(data, at)
    at = at + size
  end
  local _, after_seq = read_varint(data, at)
  return after_seq
end

-- The instant and cause (their bytes) of the entry starting at `first`; `before`: its predecessor's.
local function event_of(data, first, before)
  if string.byte(data, first) == 3 then return before end
  local start = event_at(data, first)
  local _, at = read_varint(data, start)
  local caused_size
  caused_size, at = read_varint(data, at)
  return string.sub(data, start, at + math.max(caused_size - 1, 0) - 1)
end

local function with_event(entry, event)
  local at = event_at(entry, 1)
  return string.char(2) .. string.sub(entry, 2, at - 1) .. event .. string.sub(entry, at)
end

-- `entries`: the run's new entries, unframed, of format 2 or 3, the first of format 2.
local function append_history(key, entries, limit)
  local history = redis.call('GET', key)
  local framed = {}
  for i, entry in ipairs(entries) do framed[i] = varint(#entry) .. entry end
  local count, body = #entries, table.concat(framed)
  if history then
    local stored, at = read_varint(history, 1)
    count, body = count + stored, string.sub(history, at) .. body
  end
  local at, event = 1, nil
  for _ = 1, count - limit do
    local size
    size, at = read_varint(body, at)
    event = event_of(body, at, event)
    at = at + size
  end
  local first = ''
  if at > 1 then
    local size, start = read_varint(body, at)
    if string.byte(body, start) == 3 then
      first = with_event(string.sub(body, start, start + size - 1), event)
      first = varint(#first) .. first
      at = start + size
    end
  end
  redis.call('SET', key, varint(math.min(count, limit)) .. first .. string.sub(body, at))
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
# hash is read once (HGETALL: the last seq, the dense id, and how many tags of each group it holds,
# counted from its tag fields, so no per-group field is kept) and its seq written once, its history
# entries appended and trimmed in one write, which leaves the same keys as applying each change by
# itself (each change is still decided by the seq before it: the next one applied, a repeat or an
# older one dropped, a jump applied and counted as a gap). Key names are put together here from the
# pieces `Projector._shared` gives (readmodel.Keys names them), so a change needs no keys of its own.
#
# The cross-customer counters (holders per tag and per group, a tag's daily counts) are summed in
# `totals` over the whole script and written once per tag, group and day at its end (`write_totals`):
# a sum of the same deltas, in one command each instead of one per change. A counter touched is
# written even when its sum is 0, as applying the changes one by one would have left it.
#
# `shared`: the keys and args `Projector._shared` gives once per script (next id, tag members,
# group members, gap count, gap customers, head table; the buckets' key prefix, the history's
# length, the head table's generation, the name pieces of customer, history, bitmap and daily keys).
_APPLY_RUN = (
    _FOLD_DAYS
    + _HISTORY
    + f"""
local function customer_of(key)
  local fields = redis.call('HGETALL', key)
  local customer = {{key = key, seq = 0, id = false, groups = {{}}}}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == '{SEQ_FIELD}' then
      customer.seq = tonumber(fields[i + 1])
    elseif name == '{ID_FIELD}' then
      customer.id = fields[i + 1]
    elseif string.sub(name, 1, {len(TAG_PREFIX)}) == '{TAG_PREFIX}' then
      local group = string.sub(name, {len(TAG_PREFIX) + 1}, string.find(name, '/', 1, true) - 1)
      customer.groups[group] = (customer.groups[group] or 0) + 1
    end
  end
  return customer
end

local function dense_id(shared, customer, customer_id)
  if customer.id then return customer.id end
  local n = redis.call('INCR', shared.next_id) - 1
  customer.id = string.format('%d', n)
  redis.call('HSET', customer.key, '{ID_FIELD}', customer.id)
  redis.call('HSET', shared.buckets .. string.format('%d', math.floor(n / {ID_BUCKET})),
    string.format('%d', n % {ID_BUCKET}), customer_id)
  return customer.id
end

local function add(sums, name, delta)
  sums[name] = (sums[name] or 0) + delta
end

local function change_tags(shared, totals, customer, customer_id, change, field, held, day)
  local tag_key, delta = '{TAG_PREFIX}' .. field, 1
  if change == 'added' then
    if redis.call('HSET', customer.key, tag_key, held) == 0 then return end
  else
    if redis.call('HDEL', customer.key, tag_key) == 0 then return end
    delta = -1
  end
  redis.call('SETBIT', shared.bitmap .. field, dense_id(shared, customer, customer_id), (delta + 1) / 2)
  local group = string.sub(field, 1, string.find(field, '/', 1, true) - 1)
  local held_in_group = (customer.groups[group] or 0) + delta
  customer.groups[group] = held_in_group
  if held_in_group == (delta + 1) / 2 then add(totals.groups, group, delta) end -- 0 -> 1 or 1 -> 0
  add(totals.tags, field, delta)
  local days = totals.days[field]
  if not days then
    days = {{}}
    totals.days[field] = days
  end
  add(days, day, delta)
end

local function write_totals(shared, totals)
  for _, counter in ipairs({{{{shared.tag_members, totals.tags}}, {{shared.group_members, totals.groups}}}}) do
    for name, delta in pairs(counter[2]) do
      if redis.call('HINCRBY', counter[1], name, delta) <= 0 then redis.call('HDEL', counter[1], name) end
    end
  end
  for field, days in pairs(totals.days) do
    local key = shared.daily .. field
    for day, delta in pairs(days) do redis.call('HINCRBY', key, day, delta) end
    fold_days(key)
  end
end

-- ARGV[first]: the customer, ARGV[first + 1]: how many changes; then one arg per change,
-- "<seq> <change> <local day> <held value> <group/tag>\\n<history entry>" (the held value:
-- readmodel.held_value, one word; only the entry, last, may hold any byte).
-- Appends each change's outcome to `out`; returns the index after the run.
local function apply_run(shared, totals, args, first, out)
  local customer_id, n = args[first], tonumber(args[first + 1])
  local customer = customer_of(shared.customer[1] .. customer_id .. shared.customer[2])
  local last = customer.seq
  local last_text, entries, skipped, event = nil, {{}}, false, nil
  for a = first + 2, first + 1 + n do
    local line_end = string.find(args[a], '\\n', 1, true)
    local seq_text, change, day, held, field =
      string.match(string.sub(args[a], 1, line_end - 1), '^(%d+) (%a+) (%-?%d+) (%S+) (%S+)$')
    local seq = tonumber(seq_text)
    if seq == last then
      out[#out + 1] = 'duplicate'
      skipped = true
    elseif seq < last then
      out[#out + 1] = 'stale'
      skipped = true
    else
      if seq > last + 1 then
        redis.call('INCR', shared.gap_count)
        redis.call('SADD', shared.gap_customers, customer_id)
        out[#out + 1] = 'applied-after-gap'
      else
        out[#out + 1] = 'applied'
      end
      last, last_text = seq, seq_text
      change_tags(shared, totals, customer, customer_id, change, field, held, day)
      local entry = string.sub(args[a], line_end + 1)
      if string.byte(entry, 1) == 3 and skipped then entry = with_event(entry, event) end
      entries[#entries + 1] = entry
      skipped = false
    end
    event = event_of(args[a], line_end + 1, event)
  end
  if last_text then
    redis.call('HSET', customer.key, '{SEQ_FIELD}', last_text)
    append_history(shared.history[1] .. customer_id .. shared.history[2], entries, shared.history_limit)
  end
  return first + 2 + n
end

local function new_totals()
  return {{tags = {{}}, groups = {{}}, days = {{}}}}
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

-- The shared keys from keys[k] and args from args[a], then every run after them; each change's
-- outcome, or nil (nothing written) when the head table is of another generation.
local function apply_runs(keys, k, args, a)
  local shared = shared_from(keys, k, args, a)
  if not heads_current(shared) then return nil end
  local out, totals = {{}}, new_totals()
  a = a + {SHARED_ARGS}
  while a <= #args do a = apply_run(shared, totals, args, a, out) end
  write_totals(shared, totals)
  return out
end
"""
)

# KEYS: the 6 shared keys; ARGV: the 9 shared args, then runs (customer, count, an arg per change).
APPLY = (
    _APPLY_RUN
    + """
local out = apply_runs(KEYS, 1, ARGV, 1)
if not out then return {'heads'} end
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
    + """
local out = apply_runs(KEYS, 3, ARGV, 6)
if not out then return {'heads', ''} end
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
