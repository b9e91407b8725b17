-- cleanup.lua: deletes terminal tasks finished before a cutoff, in a bounded
-- batch, from the record and every index. Statistics are kept.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   finished ZSET, task:<id> HASH, idx:* ZSETs, counts HASH, idem:<owner>:<key> STRING
-- ARGV: [1] now ms override or ""  [2] retention (ms): tasks finished before now - retention go
--       [3] limit (1..1000)
-- Returns: { removed count, 1 when more tasks are past the cutoff else 0 }
-- Errors: BAD_ARGS
-- Events: none (deleting old records is not a task state change)
-- Uses: lib/common.lua
local cutoff = now_ms(ARGV[1]) - to_int(ARGV[2], 'retention')
local limit = to_int(ARGV[3], 'limit')
if limit < 1 or limit > 1000 then return fail_with('BAD_ARGS', 'limit out of range') end
local old = redis.call('ZRANGEBYSCORE', K.finished, '-inf', '(' .. int_str(cutoff), 'LIMIT', 0, limit)
local removed = 0
local tasks = {}
for _, id in ipairs(old) do
  W.zrem(K.finished, id)
  local v = redis.call('HMGET', K.task(id), 'status', 'agentId', 'taskType', 'priority', 'ownerId',
    'idempotencyKey')
  if v[1] then
    local status, agent = v[1], v[2]
    W.zrem(K.idx_all, id)
    W.zrem(K.idx_status(status), id)
    W.zrem(K.idx_prio(v[4]), id)
    W.zrem(K.idx_agent(agent), id)
    W.zrem(K.idx_type(v[3]), id)
    W.hincr(K.counts, agent .. '|' .. status, -1)
    if v[5] then W.zrem(K.idx_owner(v[5]), id) end
    if v[6] then
      local ik = K.idem(v[5] or '', v[6])
      if redis.call('GET', ik) == id then redis.call('DEL', ik) end
    end
    tasks[#tasks + 1] = K.task(id)
    removed = removed + 1
  end
end
if #tasks > 0 then redis.call('DEL', unpack(tasks)) end
W.flush()
local more = #redis.call('ZRANGEBYSCORE', K.finished, '-inf', '(' .. int_str(cutoff), 'LIMIT', 0, 1)
return { removed, more }
