-- start.lua: leases one named task to a worker (the seeds' startTaskProcessing).
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads/writes task:<id> HASH, ready:<agent>:<rank> and delayed ZSETs, processing ZSET,
--   idx:status:* ZSETs, counts HASH, events STREAM
-- ARGV: [1] now ms override or ""  [2] lease length (ms)  [3] lease token
--       [4] worker id (recorded on the task)  [5] task id
-- Returns: the 12 fields of a leased task, as claim.lua returns them
-- Errors: BAD_ARGS; TASK_NOT_FOUND; TASK_NOT_READY (not QUEUED, or QUEUED but
--   its run time or retry backoff has not come; a due task not yet promoted
--   is started); nothing written
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
if not agent or not rank or not tonumber(v[2]) then
  return fail_with('TASK_NOT_READY', id .. ' has a damaged record')
end
local from = K.ready(agent, rank)
if not redis.call('ZSCORE', from, id) then
  -- Due but not promoted yet (its run time or retry backoff just passed):
  -- taken straight from the delayed set, as promote would have moved it.
  local due = redis.call('ZSCORE', K.delayed, id)
  if not due or tonumber(due) > now then
    return fail_with('TASK_NOT_READY', id .. ' waits for its run time')
  end
  from = K.delayed
end

W.zrem(from, id)
local reply = {}
local lease_until = now + lease_ms
lease_task(id, agent, v, now, int_str(now), lease_until, int_str(lease_until), token, worker, reply)
W.flush()
return reply
