"""The queue's Lua scripts. Each runs atomically on the Redis server and uses
the server's clock, so deadlines do not depend on the workers' clocks.

Task record fields (hash ``task:<id>``): payload, state, priority, category,
attempts, max_attempts, lease, worker, enqueued_at, claimed_at, finished_at
(milliseconds, server clock), result, reason, crashes (worker processes that
died holding the task).

Every state change also appends one entry to the ``events`` stream with the
fields kind, task, priority, category, worker, attempt, detail.
"""

from __future__ import annotations

# Shared prelude: the server clock and the event append.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A field Redis can HINCRBY: a decimal whole number >= 0 (else nil).
local function whole(s)
  if type(s) == 'string' and #s <= 15 and
      (s == '0' or string.match(s, '^[1-9]%d*$')) then
    return tonumber(s)
  end
  return nil
end
local function event(stream, maxlen, kind, id, prio, cat, worker, attempt, detail)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'task', id, 'priority', prio or '', 'category', cat or '',
    'worker', worker or '', 'attempt', attempt or '', 'detail', detail or '')
end
"""

# KEYS: events, wake, then for each task: its record, the pending list of its
#       priority, its idempotency key (or its record again when it has none)
# ARGV: events maxlen, then for each task: id, payload, priority, category,
#       max_attempts, idempotency ttl ms (0: no key)
# Enqueues a batch in one call, each task atomically: a task whose
# idempotency key (used in the last ttl) or id already names a task is not
# enqueued again. Returns {created, id, created, id, ...} in the order given:
# {1, id} when enqueued, {0, id of the earlier task} when not. Redis checks
# memory before the first write, so a full Redis refuses the whole batch and
# writes nothing.
ENQUEUE_MANY = (
    _PRELUDE
    + """
local now = now_ms()
local out = {}
local created = 0
local n = (#KEYS - 2) / 3
for i = 0, n - 1 do
  local rec, list, idem = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local a = 2 + 6 * i
  local id, ttl = ARGV[a], tonumber(ARGV[a + 5])
  local existing = nil
  if ttl > 0 then existing = redis.call('GET', idem) end
  if existing then
    table.insert(out, 0)
    table.insert(out, existing)
  elseif redis.call('EXISTS', rec) == 1 then
    table.insert(out, 0)
    table.insert(out, id)
  else
    redis.call('HSET', rec, 'payload', ARGV[a + 1], 'state', 'pending',
      'priority', ARGV[a + 2], 'category', ARGV[a + 3], 'attempts', 0,
      'max_attempts', ARGV[a + 4], 'enqueued_at', now)
    redis.call('RPUSH', list, id)
    if ttl > 0 then redis.call('SET', idem, id, 'PX', ttl) end
    event(KEYS[1], ARGV[1], 'enqueued', id, ARGV[a + 2], ARGV[a + 3], '', '0',
      '')
    created = created + 1
    table.insert(out, 1)
    table.insert(out, id)
  end
end
if created > 0 then
  for _ = 1, math.min(created, 64) do redis.call('LPUSH', KEYS[2], '1') end
  redis.call('LTRIM', KEYS[2], 0, 63)
end
return out
"""
)

# KEYS: inflight, paused, events, dead, pending lists critical..low
# ARGV: worker id, lease ms, lease token, task key prefix, events maxlen,
#       priority names critical..low, most tasks to claim, aging ms (0: strict
#       priority)
# Returns the claims as a list (empty when nothing can be claimed, or when
# ``all`` or ``drain`` is in the paused set) of {id, payload, attempts,
# max_attempts, priority, deadline ms, crashes} (crashes: how many worker
# processes died holding the task), in the order one claim at a time would
# take them. The claims of one call share the lease token. A task with
# crashes is claimed alone: it ends a batch, or waits at the head of its
# queue for the next call when the batch already holds others.
# Without aging each claim takes the head of the highest unpaused non-empty
# level. With aging, the head of each level counts one level higher for every
# full aging period it has waited (never above critical); the best level
# wins and, between heads that count the same, the one enqueued first.
# A list entry that names no task record is dead-lettered under the first 24
# hex digits of its SHA-1, with the raw entry kept as its payload.
CLAIM = (
    _PRELUDE
    + """
local out = {}
if redis.call('SISMEMBER', KEYS[2], 'all') == 1 then return out end
if redis.call('SISMEMBER', KEYS[2], 'drain') == 1 then return out end
local prefix = ARGV[4]
local want = tonumber(ARGV[10])
local aging = tonumber(ARGV[11]) or 0
local now = now_ms()
local deadline = now + tonumber(ARGV[2])
-- A queued task this script cannot run: dead with its reason, never lost.
local function bury(tkey, id, prio, cat, reason)
  redis.call('HSET', tkey, 'state', 'dead', 'reason', reason, 'finished_at', now)
  redis.call('ZADD', KEYS[4], now, id)
  event(KEYS[3], ARGV[5], 'dead', id, prio, cat, ARGV[1], '0', reason)
end
for _ = 1, 4000 do
  if #out >= want then break end
  local slot, best_rank, best_enq = nil, 99, 0
  for i = 1, 4 do
    if redis.call('SISMEMBER', KEYS[2], ARGV[5 + i]) == 0 then
      local head = redis.call('LINDEX', KEYS[4 + i], 0)
      if head then
        local rank, enq = i, 0
        if aging > 0 then
          enq = tonumber(redis.call('HGET', prefix .. head, 'enqueued_at')) or now
          rank = math.max(1, i - math.floor((now - enq) / aging))
        end
        if rank < best_rank or (rank == best_rank and enq < best_enq) then
          slot, best_rank, best_enq = i, rank, enq
        end
        if aging <= 0 then break end
      end
    end
  end
  if not slot then break end
  local prio = ARGV[5 + slot]
  local id = redis.call('LPOP', KEYS[4 + slot])
  local tkey = prefix .. id
  local state = redis.call('HGET', tkey, 'state')
  if not state then
    local bad = redis.sha1hex(id):sub(1, 24)
    local reason = 'decode: queue entry names no task record'
    redis.call('HSET', prefix .. bad, 'payload', id, 'state', 'dead',
      'priority', prio, 'category', '', 'attempts', 0, 'max_attempts', 1,
      'enqueued_at', now, 'finished_at', now, 'reason', reason)
    redis.call('ZADD', KEYS[4], now, bad)
    event(KEYS[3], ARGV[5], 'dead', bad, prio, '', ARGV[1], '0', reason)
  elseif state == 'done' or (state == 'running' and
      redis.call('ZSCORE', KEYS[1], id)) or (state == 'dead' and
      redis.call('ZSCORE', KEYS[4], id)) then
    -- A stale second entry of a task that is where its state says: the
    -- entry goes, the task stays as it is (it must not run twice).
  elseif state ~= 'pending' then
    -- A queued task whose record says otherwise, and is nowhere else.
    bury(tkey, id, prio, '',
      'decode: queued, but its record says state ' .. string.sub(state, 1, 40))
  else
    local f = redis.call('HMGET', tkey, 'payload', 'max_attempts', 'category',
      'attempts', 'crashes')
    -- A max_attempts that is not a whole number from 1 gives the task one
    -- attempt, written back so that failing and reaping count the same.
    local max = whole(f[2])
    if not max or max < 1 then
      max = 1
      redis.call('HSET', tkey, 'max_attempts', 1)
    end
    if not whole(f[4]) then
      -- A record this script cannot count attempts on.
      bury(tkey, id, prio, f[3], 'decode: attempts is not a whole number >= 0')
    else
      local crashes = tonumber(f[5]) or 0
      if crashes > 0 and #out > 0 then
        -- A crash suspect runs alone: it starts the next call's batch.
        redis.call('LPUSH', KEYS[4 + slot], id)
        return out
      end
      local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
      redis.call('HSET', tkey, 'state', 'running', 'worker', ARGV[1],
        'lease', ARGV[3], 'claimed_at', now)
      redis.call('ZADD', KEYS[1], deadline, id)
      event(KEYS[3], ARGV[5], 'claimed', id, prio, f[3], ARGV[1],
        tostring(attempts), '')
      table.insert(out, {id, f[1] or '', attempts, max, prio, deadline, crashes})
      if crashes > 0 then return out end
    end
  end
end
return out
"""
)

# KEYS: inflight, task record
# ARGV: id, lease token, lease ms
# Returns the new deadline in ms, or 0 when the lease is no longer ours.
RENEW = (
    _PRELUDE
    + """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then return 0 end
local deadline = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
return deadline
"""
)

# KEYS: inflight, task record, events
# ARGV: id, lease token, result json, retention ms (0: keep), events maxlen,
#       detail for the event
# Returns 1 when recorded, 0 when the lease is no longer ours (the result is
# then discarded: another worker holds the task or it has ended).
COMPLETE = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[2], 'lease', 'state', 'priority', 'category',
  'worker', 'attempts')
if f[1] ~= ARGV[2] or f[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[2], 'state', 'done', 'result', ARGV[3],
  'finished_at', now_ms())
redis.call('HDEL', KEYS[2], 'lease')
redis.call('ZREM', KEYS[1], ARGV[1])
local retention = tonumber(ARGV[4])
if retention > 0 then redis.call('PEXPIRE', KEYS[2], retention) end
event(KEYS[3], ARGV[5], 'done', ARGV[1], f[3], f[4], f[5], f[6], ARGV[6])
return 1
"""
)

# KEYS: inflight, task record, events, dead, wake, pending lists critical..low
# ARGV: id, lease token, reason, retryable (1/0), events maxlen,
#       priority names critical..low
# Returns 'retry' (back at the tail of its queue), 'dead', or 0 when the lease
# is no longer ours.
FAIL = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[2], 'lease', 'state', 'priority', 'category',
  'worker', 'attempts', 'max_attempts')
if f[1] ~= ARGV[2] or f[2] ~= 'running' then return 0 end
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'lease')
redis.call('HSET', KEYS[2], 'reason', ARGV[3])
local attempts = tonumber(f[6]) or 0
local max = tonumber(f[7]) or 1
if ARGV[4] == '1' and attempts < max then
  for i = 1, 4 do
    if ARGV[5 + i] == f[3] then
      redis.call('HSET', KEYS[2], 'state', 'pending', 'enqueued_at', now)
      redis.call('RPUSH', KEYS[5 + i], ARGV[1])
      redis.call('LPUSH', KEYS[5], '1')
      redis.call('LTRIM', KEYS[5], 0, 63)
      event(KEYS[3], ARGV[5], 'retry', ARGV[1], f[3], f[4], f[5], f[6], ARGV[3])
      return 'retry'
    end
  end
end
redis.call('HSET', KEYS[2], 'state', 'dead', 'finished_at', now)
redis.call('ZADD', KEYS[4], now, ARGV[1])
event(KEYS[3], ARGV[5], 'dead', ARGV[1], f[3], f[4], f[5], f[6], ARGV[3])
return 'dead'
"""
)

# KEYS: inflight, task record, events, wake, pending lists critical..low
# ARGV: id, lease token, reason, events maxlen, priority names critical..low
# Puts a running task back at the head of its queue without spending an
# attempt. Returns 1, or 0 when the lease is no longer ours.
HAND_BACK = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[2], 'lease', 'state', 'priority', 'category',
  'worker', 'attempts')
if f[1] ~= ARGV[2] or f[2] ~= 'running' then return 0 end
for i = 1, 4 do
  if ARGV[4 + i] == f[3] then
    local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', -1)
    redis.call('ZREM', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], 'lease')
    redis.call('HSET', KEYS[2], 'state', 'pending')
    redis.call('LPUSH', KEYS[4 + i], ARGV[1])
    redis.call('LPUSH', KEYS[4], '1')
    redis.call('LTRIM', KEYS[4], 0, 63)
    event(KEYS[3], ARGV[4], 'handed_back', ARGV[1], f[3], f[4], f[5],
      tostring(attempts), ARGV[3])
    return 1
  end
end
return 0
"""
)

# KEYS: inflight, events, dead, wake, pending lists critical..low
# ARGV: task key prefix, most to handle, events maxlen, priority names
# Returns expired leases to the head of their queue, or dead-letters those on
# their last attempt. Returns {returned ids..., '|', dead ids...}.
REAP = (
    _PRELUDE
    + """
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0,
  tonumber(ARGV[2]))
local returned, dead = {}, {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = ARGV[1] .. id
  local f = redis.call('HMGET', tkey, 'state', 'priority', 'category', 'worker',
    'attempts', 'max_attempts')
  if f[1] == 'running' then
    local attempts = tonumber(f[5]) or 0
    local max = tonumber(f[6]) or 1
    local slot = nil
    for i = 1, 4 do if ARGV[3 + i] == f[2] then slot = i end end
    redis.call('HDEL', tkey, 'lease')
    if attempts >= max or not slot then
      local reason = 'lease expired on attempt ' .. attempts .. ' of ' .. max ..
        ' (worker ' .. (f[4] or '?') .. ')'
      redis.call('HSET', tkey, 'state', 'dead', 'reason', reason,
        'finished_at', now)
      redis.call('ZADD', KEYS[3], now, id)
      event(KEYS[2], ARGV[3], 'dead', id, f[2], f[3], f[4], f[5], reason)
      table.insert(dead, id)
    else
      redis.call('HSET', tkey, 'state', 'pending', 'reason',
        'lease expired (worker ' .. (f[4] or '?') .. ')')
      redis.call('LPUSH', KEYS[4 + slot], id)
      redis.call('LPUSH', KEYS[4], '1')
      redis.call('LTRIM', KEYS[4], 0, 63)
      event(KEYS[2], ARGV[3], 'expired', id, f[2], f[3], f[4], f[5],
        'lease expired')
      table.insert(returned, id)
    end
  end
end
table.insert(returned, '|')
for _, id in ipairs(dead) do table.insert(returned, id) end
return returned
"""
)

# KEYS: task record, dead, events, wake, pending lists critical..low
# ARGV: id, events maxlen, priority names critical..low
# Returns 1 when the dead task is back at the tail of its queue with its
# attempts reset, -1 when no such task exists, or its state when it is not
# dead.
REQUEUE = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'priority', 'category')
if not f[1] then return -1 end
if f[1] ~= 'dead' then return f[1] end
for i = 1, 4 do
  if ARGV[2 + i] == f[2] then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0,
      'enqueued_at', now_ms())
    redis.call('PERSIST', KEYS[1])
    redis.call('RPUSH', KEYS[4 + i], ARGV[1])
    redis.call('LPUSH', KEYS[4], '1')
    redis.call('LTRIM', KEYS[4], 0, 63)
    event(KEYS[3], ARGV[2], 'requeued', ARGV[1], f[2], f[3], '', '0', '')
    return 1
  end
end
return 'unknown priority ' .. tostring(f[2])
"""
)

# KEYS: task record, where the task goes (its pending list, the dead set, or
#       the task record again for a done task), events, wake, idempotency key
#       (or the task record again when there is none)
# ARGV: id, payload, state (pending, dead or done), priority, category,
#       attempts, max_attempts, enqueued_at ms, finished_at ms ('' none),
#       reason, result json ('' none), ms the record is kept (0: for ever),
#       idempotency ttl ms (0: none), events maxlen
# Rebuilds one task from the audit trail. Returns 1, or 0 when a record with
# that id exists already (it is left alone: Redis knows better than the trail).
RESTORE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local state = ARGV[3]
redis.call('HSET', KEYS[1], 'payload', ARGV[2], 'state', state,
  'priority', ARGV[4], 'category', ARGV[5], 'attempts', ARGV[6],
  'max_attempts', ARGV[7], 'enqueued_at', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'finished_at', ARGV[9]) end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[11]) end
if state == 'pending' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 63)
elseif state == 'dead' then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[9]) or now_ms(), ARGV[1])
end
local keep = tonumber(ARGV[12])
if keep > 0 then redis.call('PEXPIRE', KEYS[1], keep) end
local ttl = tonumber(ARGV[13])
if ttl > 0 then redis.call('SET', KEYS[5], ARGV[1], 'PX', ttl, 'NX') end
event(KEYS[3], ARGV[14], 'restored', ARGV[1], ARGV[4], ARGV[5], '',
  ARGV[6], state)
return 1
"""
)

# KEYS: task record, dead, events, pending lists critical..low
# ARGV: id, reason, events maxlen, priority names critical..low
# Takes a pending task off its queue and dead-letters it with the reason, so
# it can still be requeued. Returns 1, -1 when no such task exists, or its
# state when it is not pending.
CANCEL = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'priority', 'category',
  'attempts')
if not f[1] then return -1 end
if f[1] ~= 'pending' then return f[1] end
for i = 1, 4 do
  if ARGV[3 + i] == f[2] then
    redis.call('LREM', KEYS[3 + i], 0, ARGV[1])
    local now = now_ms()
    redis.call('HSET', KEYS[1], 'state', 'dead', 'reason', ARGV[2],
      'finished_at', now)
    redis.call('ZADD', KEYS[2], now, ARGV[1])
    event(KEYS[3], ARGV[3], 'cancelled', ARGV[1], f[2], f[3], '', f[4], ARGV[2])
    return 1
  end
end
return 'unknown priority ' .. tostring(f[2])
"""
)

# KEYS: task record, dead, events
# ARGV: id, events maxlen
# Deletes a dead task's record. Returns 1, -1 when no such task exists, or
# its state when it is not dead.
DELETE_DEAD = (
    _PRELUDE
    + """
local f = redis.call('HMGET', KEYS[1], 'state', 'priority', 'category')
if not f[1] then return -1 end
if f[1] ~= 'dead' then return f[1] end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
event(KEYS[3], ARGV[2], 'deleted', ARGV[1], f[2], f[3], '', '0', '')
return 1
"""
)

# KEYS: inflight, events, dead, wake, pending lists critical..low
# ARGV: task key prefix, worker id, reason, events maxlen, priority names
# A worker process died (its supervisor saw it exit with an error): every task
# it held counts the attempt as spent by a crash. Each goes back to the tail
# of its queue (not the head, so that the tasks that shared the dead process
# spread over the other workers), or to the dead-letter queue with the reason
# on its last attempt. Each task's 'crashes' count goes up by one, so that a
# worker runs it alone next time and a crash it causes then is its own.
# Returns {returned ids..., '|', dead ids...}.
WORKER_CRASHED = (
    _PRELUDE
    + """
local now = now_ms()
local returned, dead = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tkey = ARGV[1] .. id
  local f = redis.call('HMGET', tkey, 'state', 'priority', 'category', 'worker',
    'attempts', 'max_attempts')
  if f[1] == 'running' and f[4] == ARGV[2] then
    local attempts = tonumber(f[5]) or 0
    local max = tonumber(f[6]) or 1
    local slot = nil
    for i = 1, 4 do if ARGV[4 + i] == f[2] then slot = i end end
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', tkey, 'lease')
    redis.call('HINCRBY', tkey, 'crashes', 1)
    local reason = ARGV[3] .. ' on attempt ' .. attempts .. ' of ' .. max
    redis.call('HSET', tkey, 'reason', reason)
    if attempts >= max or not slot then
      redis.call('HSET', tkey, 'state', 'dead', 'finished_at', now)
      redis.call('ZADD', KEYS[3], now, id)
      event(KEYS[2], ARGV[4], 'dead', id, f[2], f[3], f[4], f[5], reason)
      table.insert(dead, id)
    else
      redis.call('HSET', tkey, 'state', 'pending', 'enqueued_at', now)
      redis.call('RPUSH', KEYS[4 + slot], id)
      redis.call('LPUSH', KEYS[4], '1')
      redis.call('LTRIM', KEYS[4], 0, 63)
      event(KEYS[2], ARGV[4], 'crashed', id, f[2], f[3], f[4], f[5], reason)
      table.insert(returned, id)
    end
  end
end
table.insert(returned, '|')
for _, id in ipairs(dead) do table.insert(returned, id) end
return returned
"""
)

# KEYS: pending lists critical..low
# ARGV: task key prefix
# Returns, per level, the enqueued_at (ms) of the task at its head, or -1.
OLDEST = """
local out = {}
for i = 1, 4 do
  local head = redis.call('LINDEX', KEYS[i], 0)
  local at = head and tonumber(redis.call('HGET', ARGV[1] .. head, 'enqueued_at'))
  out[i] = at or -1
end
return out
"""
