-- complete.lua: records successful attempts (one or a batch), token-checked.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   task:<id> HASH, processing/finished ZSETs, idx:status:* ZSETs, counts HASH,
--   stats:<day> HASH, events STREAM
-- ARGV: [1] now ms override or ""
--       [2] count n (1..1000), then n items of 8 fields: task id, lease token,
--       outputData (JSON or ""), actualCost ("" or |x| <= 1e15), qualityScore ("" or
--       |x| <= 1e15), metrics (JSON or ""), tokensIn ("" or integer 0..2^53-1),
--       tokensOut ("" or integer 0..2^53-1)
-- Returns: array of n codes in order: "ok|<agent>|<taskType>|<duration ms>"
--   (metrics tag); plain "ok" for a repeat with the same token of an already
--   completed task (safe retry, not counted twice); or a refusal that
--   changed nothing: "TASK_NOT_FOUND", "LEASE_MISMATCH" (another attempt holds
--   or held the task), "NOT_PROCESSING" (cancelled, timed out, or retrying)
-- Errors: BAD_ARGS (nothing written)
-- Events: completed (one per completed task)
-- Uses: lib/common.lua
local FIELDS = 8
local now = now_ms(ARGV[1])
local n = to_int(ARGV[2], 'count')
if n < 1 or n > 1000 or #ARGV ~= 2 + n * FIELDS then
  return fail_with('BAD_ARGS', 'expected ' .. n .. ' items of ' .. FIELDS .. ' fields')
end
-- Bounds that keep the statistics' HINCRBY / HINCRBYFLOAT from failing in
-- W.flush after the task records are written (mirrored in src/store/complete.rs):
-- 1,000 token counts below 2^53 sum below 2^63; costs and qualities stay finite.
local MAX_TOKENS = 2 ^ 53
local MAX_ABS_NUMBER = 1e15
for i = 0, n - 1 do
  local b = 2 + i * FIELDS
  for j = 4, 5 do
    local x = tonumber(ARGV[b + j])
    -- "not (<=)" also refuses NaN.
    if ARGV[b + j] ~= '' and (x == nil or not (math.abs(x) <= MAX_ABS_NUMBER)) then
      return fail_with('BAD_ARGS', 'actualCost and qualityScore must be finite numbers within +-1e15')
    end
  end
  for j = 7, 8 do
    if ARGV[b + j] ~= '' then
      local tokens = to_int(ARGV[b + j], 'tokens')
      if not (tokens >= 0 and tokens < MAX_TOKENS) then
        return fail_with('BAD_ARGS', 'token counts must be 0 to 2^53 - 1')
      end
    end
  end
end

local now_s = int_str(now)
local reply = {}
for i = 0, n - 1 do
  local b = 2 + i * FIELDS
  local id, token = ARGV[b + 1], ARGV[b + 2]
  local v = redis.call('HMGET', K.task(id), 'status', 'token', 'seq', 'agentId', 'taskType', 'startedAt',
    'ownerId')
  if not v[1] then
    reply[#reply + 1] = 'TASK_NOT_FOUND'
  elseif v[2] ~= token then
    reply[#reply + 1] = 'LEASE_MISMATCH'
  elseif v[1] == 'COMPLETED' then
    reply[#reply + 1] = 'ok'
  elseif v[1] ~= 'PROCESSING' then
    reply[#reply + 1] = 'NOT_PROCESSING'
  else
    local agent, task_type = v[4], v[5]
    local fields = { 'status', 'COMPLETED', 'completedAt', now_s, 'updatedAt', now_s }
    local output, cost, quality, metrics = ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
    if output ~= '' then fields[#fields + 1] = 'outputData'; fields[#fields + 1] = output end
    if cost ~= '' then
      fields[#fields + 1] = 'actualCost'; fields[#fields + 1] = cost
      stat_float(now, agent, task_type, 'costSum', tonumber(cost))
      stat(now, agent, task_type, 'costCount', 1)
    end
    if quality ~= '' then
      fields[#fields + 1] = 'qualityScore'; fields[#fields + 1] = quality
      stat_float(now, agent, task_type, 'qualitySum', tonumber(quality))
      stat(now, agent, task_type, 'qualityCount', 1)
    end
    if metrics ~= '' then fields[#fields + 1] = 'metrics'; fields[#fields + 1] = metrics end
    if ARGV[b + 7] ~= '' then stat(now, agent, task_type, 'tokensIn', tonumber(ARGV[b + 7])) end
    if ARGV[b + 8] ~= '' then stat(now, agent, task_type, 'tokensOut', tonumber(ARGV[b + 8])) end
    redis.call('HSET', K.task(id), unpack(fields))
    -- The record says what the task is now: an earlier attempt's error goes.
    redis.call('HDEL', K.task(id), 'errorMessage')
    W.zrem(K.processing, id)
    W.zadd(K.finished, now_s, id)
    move_status(id, agent, v[3] or 0, 'PROCESSING', 'COMPLETED')
    local duration = math.max(0, now - (tonumber(v[6]) or now))
    stat(now, agent, task_type, 'COMPLETED', 1)
    stat(now, agent, task_type, 'durationMsSum', duration)
    stat(now, agent, task_type, 'durationMs:' .. duration_bucket(duration), 1)
    emit(now_s, 'completed', id, agent, v[7], task_type, 'COMPLETED', 'durationMs', int_str(duration))
    reply[#reply + 1] = 'ok|' .. agent .. '|' .. task_type .. '|' .. int_str(duration)
  end
end
W.flush()
return reply
