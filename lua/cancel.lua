-- cancel.lua: cancels a QUEUED or PROCESSING task. A running worker is told
-- through the signal channel and by its next heartbeat; its result is refused.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   task:<id> HASH, ready/delayed/processing/finished ZSETs, idx:status:* ZSETs,
--   counts HASH, stats:<day> HASH, events STREAM, signal channel
-- ARGV: [1] now ms override or ""  [2] task id  [3] reason ("" for none)
--   [4] owner the task must have ("" for any)  [5] agent it must have ("" for any)
-- Returns: { the status the task had (QUEUED or PROCESSING), the record after
--   the change as a flat HGETALL array }
-- Errors: TASK_NOT_FOUND (also for a task outside the owner/agent scope, so
--   a caller learns nothing of others' tasks), ALREADY_TERMINAL (nothing written)
-- Events: cancelled
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local id = ARGV[2]
local reason = ARGV[3]
local v = redis.call('HMGET', K.task(id), 'status', 'agentId', 'taskType', 'priority', 'seq', 'token', 'ownerId')
if not v[1] or not in_scope(v[7], v[2], ARGV[4], ARGV[5]) then
  return fail_with('TASK_NOT_FOUND', id)
end
local status, agent, task_type = v[1], v[2], v[3]
if status ~= 'QUEUED' and status ~= 'PROCESSING' then
  return fail_with('ALREADY_TERMINAL', id .. ' is ' .. status)
end

if status == 'QUEUED' then
  W.zrem(K.ready(agent, PRIORITY_RANK[v[4]]), id)
  W.zrem(K.delayed, id)
else
  W.zrem(K.processing, id)
  W.publish('c:' .. id .. ':' .. (v[6] or ''))
end
local fields = { 'status', 'CANCELLED', 'completedAt', int_str(now), 'updatedAt', int_str(now) }
if reason ~= '' then fields[#fields + 1] = 'errorMessage'; fields[#fields + 1] = reason end
redis.call('HSET', K.task(id), unpack(fields))
W.zadd(K.finished, now, id)
move_status(id, agent, tonumber(v[5]), status, 'CANCELLED')
stat(now, agent, task_type, 'CANCELLED', 1)
emit(now, 'cancelled', id, agent, v[7], task_type, 'CANCELLED', 'previousStatus', status)
W.flush()
return { status, redis.call('HGETALL', K.task(id)) }
