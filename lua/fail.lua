-- fail.lua: records failed attempts (one or a batch), token-checked: retry with
-- exponential backoff while attempts remain, else FAILED (or TIMEOUT).
-- KEYS (1): [1] namespace prefix "{ns}:"
--   task:<id> HASH, processing/delayed/finished ZSETs, idx:status:* ZSETs,
--   counts HASH, stats:<day> HASH, events STREAM, signal channel
-- ARGV: [1] now ms override or ""
--       [2] backoff base (ms)  [3] backoff cap (ms)
--       [4] count n (1..1000), then n items of 5 fields: task id, lease token,
--       errorMessage, retryable ("1" or "0"), kind ("error" or "timeout": the
--       attempt overran timeoutMs; a final one ends as TIMEOUT)
-- Returns: array of n codes in order: "retry", "failed", "timeout", each
--   followed by "|<agent>|<taskType>|<attempt duration ms>" (metrics tag); or a
--   refusal that changed nothing: "TASK_NOT_FOUND", "LEASE_MISMATCH", "NOT_PROCESSING"
-- Errors: BAD_ARGS (nothing written)
-- Events: retrying, failed or timeout (one per task)
-- Uses: lib/common.lua, lib/attempt.lua
local FIELDS = 5
local now = now_ms(ARGV[1])
local base = to_int(ARGV[2], 'backoff base')
local cap = to_int(ARGV[3], 'backoff cap')
local n = to_int(ARGV[4], 'count')
if n < 1 or n > 1000 or #ARGV ~= 4 + n * FIELDS then
  return fail_with('BAD_ARGS', 'expected ' .. n .. ' items of ' .. FIELDS .. ' fields')
end
for i = 0, n - 1 do
  local b = 4 + i * FIELDS
  local kind = ARGV[b + 5]
  if (ARGV[b + 4] ~= '1' and ARGV[b + 4] ~= '0') or (kind ~= 'error' and kind ~= 'timeout') then
    return fail_with('BAD_ARGS', 'retryable must be 0|1 and kind error|timeout')
  end
end

local reply = {}
for i = 0, n - 1 do
  local b = 4 + i * FIELDS
  local id, token = ARGV[b + 1], ARGV[b + 2]
  local t = read_attempt(id)
  if not t then
    reply[#reply + 1] = 'TASK_NOT_FOUND'
  elseif t.token ~= token then
    reply[#reply + 1] = 'LEASE_MISMATCH'
  elseif t.status ~= 'PROCESSING' then
    reply[#reply + 1] = 'NOT_PROCESSING'
  else
    local final_status = (ARGV[b + 5] == 'timeout') and 'TIMEOUT' or 'FAILED'
    local outcome = end_failed_attempt(now, id, t, final_status, ARGV[b + 3], ARGV[b + 4] == '1', base, cap)
    reply[#reply + 1] = attempt_tag(outcome, now, t)
  end
end
W.flush()
return reply
