-- retry.lua: manual retry of a FAILED, TIMEOUT or CANCELLED task: back to
-- QUEUED at the end of its priority queue, with a fresh set of attempts.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   task:<id> HASH, ready/finished ZSETs, idx:status:* ZSETs, counts HASH, events STREAM
-- ARGV: [1] now ms override or ""  [2] task id
--   [3] owner the task must have ("" for any)  [4] agent it must have ("" for any)
-- Returns: { the status the task had, the record after the change as a flat
--   HGETALL array }
-- Errors: TASK_NOT_FOUND (also for a task outside the owner/agent scope),
--   NOT_RETRYABLE (QUEUED, PROCESSING or COMPLETED; nothing written)
-- Events: retried
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local id = ARGV[2]
local v = redis.call('HMGET', K.task(id), 'status', 'agentId', 'priority', 'seq', 'taskType', 'ownerId')
if not v[1] or not in_scope(v[6], v[2], ARGV[3], ARGV[4]) then
  return fail_with('TASK_NOT_FOUND', id)
end
local status, agent = v[1], v[2]
if status ~= 'FAILED' and status ~= 'TIMEOUT' and status ~= 'CANCELLED' then
  return fail_with('NOT_RETRYABLE', id .. ' is ' .. status)
end

local score = next_scores(now, 1)
redis.call('HSET', K.task(id), 'status', 'QUEUED', 'retryCount', '0', 'updatedAt', int_str(now))
redis.call('HDEL', K.task(id), 'completedAt', 'errorMessage', 'outputData', 'runAt')
W.zrem(K.finished, id)
W.zadd(K.ready(agent, PRIORITY_RANK[v[3]]), score, id)
move_status(id, agent, tonumber(v[4]), status, 'QUEUED')
W.publish('w:' .. agent)
emit(now, 'retried', id, agent, v[6], v[5], 'QUEUED', 'previousStatus', status)
W.flush()
return { status, redis.call('HGETALL', K.task(id)) }
