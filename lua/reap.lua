-- reap.lua: ends attempts whose lease expired (worker died or stalled) or whose
-- deadline (startedAt + timeoutMs) passed; each counts as a failed attempt and
-- is retried while attempts remain. Safe to run on every node at once.
-- KEYS (1): [1] namespace prefix "{ns}:"  (processing ZSET and what lib/attempt.lua writes)
-- ARGV: [1] now ms override or ""  [2] backoff base (ms)  [3] backoff cap (ms)
--       [4] limit (1..1000)  [5] a sleeping reaper's longest sleep (ms), or "" for a
--       pass by no sleeping reaper (admin timeout-stale, tests)
-- Returns: { reaped count, next deadline in ms or -1 when nothing is processing, now in ms,
--   tags: one "<retry|failed|timeout>|<agent>|<taskType>|<duration ms>|<lease|deadline>"
--   per reaped attempt (metrics), wake: when the reaper passes next (ms; now when the
--   batch was full, else the next deadline but at most now + [5]; -1 without [5]) }
--   With [5] the wake is written to reaper_wake, which lib/attempt.lua's new
--   deadlines are checked against (a nearer one publishes "r").
-- Errors: BAD_ARGS
-- Events: retrying, failed or timeout (one per reaped task)
-- Uses: lib/common.lua, lib/attempt.lua
local now = now_ms(ARGV[1])
local base = to_int(ARGV[2], 'backoff base')
local cap = to_int(ARGV[3], 'backoff cap')
local limit = to_int(ARGV[4], 'limit')
if limit < 1 or limit > 1000 then return fail_with('BAD_ARGS', 'limit out of range') end
local idle = ARGV[5] ~= nil and ARGV[5] ~= '' and to_int(ARGV[5], 'idle') or nil
if idle ~= nil and idle < 1 then return fail_with('BAD_ARGS', 'idle must be at least 1 ms') end
local expired = redis.call('ZRANGEBYSCORE', K.processing, '-inf', int_str(now), 'LIMIT', 0, limit)
local reaped = 0
local tags = {}
for _, id in ipairs(expired) do
  local t = read_attempt(id)
  if t and t.status == 'PROCESSING' then
    reaped = reaped + 1
    W.publish('c:' .. id .. ':' .. (t.token or ''))
    if t.deadline_at and now >= t.deadline_at then
      local outcome = end_failed_attempt(now, id, t, 'TIMEOUT', 'attempt exceeded its timeout', true, base, cap)
      tags[#tags + 1] = attempt_tag(outcome, now, t) .. '|deadline'
    else
      local outcome = end_failed_attempt(now, id, t, 'FAILED', 'lease expired: worker stopped heartbeating', true, base, cap)
      tags[#tags + 1] = attempt_tag(outcome, now, t) .. '|lease'
    end
  else
    W.zrem(K.processing, id)
  end
end
W.flush()
local nxt = redis.call('ZRANGE', K.processing, 0, 0, 'WITHSCORES')
local next_due = nxt[2] and tonumber(nxt[2]) or -1
local wake = -1
if idle ~= nil then
  if #expired >= limit then
    wake = now
  elseif next_due >= 0 then
    wake = math.min(math.max(next_due, now + 1), now + idle)
  else
    wake = now + idle
  end
  write_reaper_wake(wake, now)
end
return { reaped, next_due, int_str(now), tags, int_str(wake) }
