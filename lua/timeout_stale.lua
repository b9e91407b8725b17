-- timeout_stale.lua: an operator's cut-off: ends PROCESSING attempts that started at least
-- max age ago as timed-out attempts (retried while attempts remain, else TIMEOUT), walking
-- one bounded chunk of the processing set per call.
-- KEYS (1): [1] namespace prefix "{ns}:"  (processing ZSET, task:<id> HASH and what
--   lib/attempt.lua writes)
-- ARGV: [1] now ms override or ""  [2] backoff base (ms)  [3] backoff cap (ms)
--       [4] max age (ms, >= 1): attempts with startedAt <= now - max age are ended
--       [5] start index into the processing set (>= 0)  [6] limit (1..1000)
-- Returns: { timed out count, next start index (this chunk's ended entries are gone, so
--   it is start + scanned - timed out), scanned count, now in ms, tags (one
--   "<retry|timeout>|<agent>|<taskType>|<duration ms>|deadline" per ended attempt) };
--   scanned < limit means
--   the end of the set was reached. processing is ordered by deadline, not startedAt,
--   hence the index walk.
-- Errors: BAD_ARGS
-- Events: retrying or timeout (one per ended attempt)
-- Uses: lib/common.lua, lib/attempt.lua
local now = now_ms(ARGV[1])
local base = to_int(ARGV[2], 'backoff base')
local cap = to_int(ARGV[3], 'backoff cap')
local max_age = to_int(ARGV[4], 'max age')
local start = to_int(ARGV[5], 'start index')
local limit = to_int(ARGV[6], 'limit')
if max_age < 1 then return fail_with('BAD_ARGS', 'max age must be at least 1 ms') end
if start < 0 then return fail_with('BAD_ARGS', 'start index must not be negative') end
if limit < 1 or limit > 1000 then return fail_with('BAD_ARGS', 'limit out of range') end
if base < 0 or cap < 0 then return fail_with('BAD_ARGS', 'backoff must not be negative') end

local cutoff = now - max_age
local message = 'attempt ran longer than ' .. int_str(max_age) .. ' ms (timed out by an operator)'
local ids = redis.call('ZRANGE', K.processing, start, start + limit - 1)
local timed_out = 0
local tags = {}
for _, id in ipairs(ids) do
  local t = read_attempt(id)
  -- Entries whose task is gone or no longer PROCESSING are left to the reaper's index repair.
  if t and t.status == 'PROCESSING' then
    if t.started_at and t.started_at <= cutoff then
      timed_out = timed_out + 1
      W.publish('c:' .. id .. ':' .. (t.token or ''))
      local outcome = end_failed_attempt(now, id, t, 'TIMEOUT', message, true, base, cap)
      tags[#tags + 1] = attempt_tag(outcome, now, t) .. '|deadline'
    end
  end
end
W.flush()
return { timed_out, start + #ids - timed_out, #ids, int_str(now), tags }
