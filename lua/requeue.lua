-- requeue.lua: hands leased tasks back to QUEUED without spending an attempt
-- (graceful shutdown). They go back to the front of their priority queue.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   task:<id> HASH, processing/ready ZSETs, idx:status:* ZSETs, counts HASH,
--   events STREAM, signal channel
-- ARGV: [1] now ms override or ""  [2] count n (1..1000), then n pairs: task id, lease token
-- Returns: array of n codes: "ok", or a refusal that changed nothing:
--   "TASK_NOT_FOUND", "LEASE_MISMATCH", "NOT_PROCESSING"
-- Errors: BAD_ARGS
-- Events: requeued (one per task handed back)
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local n = to_int(ARGV[2], 'count')
if n < 1 or n > 1000 or #ARGV ~= 2 + 2 * n then return fail_with('BAD_ARGS', 'bad requeue arguments') end
local reply = {}
for i = 0, n - 1 do
  local id, token = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local v = redis.call('HMGET', K.task(id), 'status', 'token', 'agentId', 'priority', 'seq',
    'ownerId', 'taskType')
  if not v[1] then
    reply[#reply + 1] = 'TASK_NOT_FOUND'
  elseif v[2] ~= token then
    reply[#reply + 1] = 'LEASE_MISMATCH'
  elseif v[1] ~= 'PROCESSING' then
    reply[#reply + 1] = 'NOT_PROCESSING'
  else
    local agent, seq = v[3], tonumber(v[5])
    redis.call('HSET', K.task(id), 'status', 'QUEUED', 'updatedAt', int_str(now))
    W.zrem(K.processing, id)
    -- Its creation score puts it ahead of everything created after it.
    W.zadd(K.ready(agent, PRIORITY_RANK[v[4]]), seq, id)
    move_status(id, agent, seq, 'PROCESSING', 'QUEUED')
    W.publish('w:' .. agent)
    emit(now, 'requeued', id, agent, v[6], v[7], 'QUEUED')
    reply[#reply + 1] = 'ok'
  end
end
W.flush()
return reply
