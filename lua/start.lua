-- start.lua: leases one named task to a worker (the seeds' startTaskProcessing).
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads/writes task:<id> HASH, ready:<agent>:<rank> ZSET, processing ZSET,
--   idx:status:* ZSETs, counts HASH, events STREAM
-- ARGV: [1] now ms override or ""  [2] lease length (ms)  [3] lease token
--       [4] worker id (recorded on the task)  [5] task id
-- Returns: the 12 fields of a leased task, as claim.lua returns them
-- Errors: BAD_ARGS; TASK_NOT_FOUND; TASK_NOT_READY (not QUEUED, or QUEUED but
--   waiting for its run time or a retry backoff); nothing written
-- Events: started
-- Uses: lib/common.lua, lib/attempt.lua
local now = now_ms(ARGV[1])
local lease_ms = to_int(ARGV[2], 'lease')
if lease_ms < 1 or #ARGV ~= 5 or ARGV[3] == '' or ARGV[4] == '' then
  return fail_with('BAD_ARGS', 'bad start arguments')
end
local token, worker, id = ARGV[3], ARGV[4], ARGV[5]
local v = redis.call('HMGET', K.task(id), unpack(LEASE_FIELDS))
if not v[1] then return fail_with('TASK_NOT_FOUND', id) end
if v[1] ~= 'QUEUED' then return fail_with('TASK_NOT_READY', id .. ' is ' .. v[1]) end
local agent, rank = v[10], PRIORITY_RANK[v[8]]
local ready = agent and rank and K.ready(agent, rank)
if not ready or not redis.call('ZSCORE', ready, id) then
  return fail_with('TASK_NOT_READY', id .. ' waits for its run time')
end

W.zrem(ready, id)
local reply = {}
local lease_until = now + lease_ms
lease_task(id, agent, v, now, int_str(now), lease_until, int_str(lease_until), token, worker, reply)
W.flush()
return reply
