-- claim.lua: leases up to N ready tasks of one or more agents to one worker.
-- Strict priority URGENT > HIGH > NORMAL > LOW; FIFO (order score) within a priority.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads/writes ready:<agent>:<rank> ZSETs, task:<id> HASH, processing ZSET,
--   idx:status:* ZSETs, counts HASH, events STREAM
-- ARGV: [1] now ms override or ""
--       [2] lease length (ms)
--       [3] max tasks in all (1..1000)
--       [4] token prefix (unique per call; token = prefix .. "." .. i)
--       [5] worker id (recorded on the task)
--       [6] agent count m, then m pairs: agentId, max tasks for that agent
-- Returns: flat array, 12 fields per claimed task: id, token, agentId, taskType,
--   inputData, retryCount, maxRetries, timeoutMs, priority, leaseUntil, deadlineAt,
--   createdAt
-- Errors: BAD_ARGS
-- Events: started (one per claimed task)
-- Uses: lib/common.lua, lib/attempt.lua
local now = now_ms(ARGV[1])
local lease_ms = to_int(ARGV[2], 'lease')
local want = to_int(ARGV[3], 'max tasks')
local token_prefix = ARGV[4]
local worker = ARGV[5]
local m = to_int(ARGV[6], 'agent count')
if want < 1 or want > 1000 or lease_ms < 1 or m < 1 or m > 100 or #ARGV ~= 6 + 2 * m then
  return fail_with('BAD_ARGS', 'bad claim arguments')
end
local agents = {}
for i = 0, m - 1 do
  local quota = to_int(ARGV[8 + 2 * i], 'agent quota')
  if quota > 0 then agents[#agents + 1] = { id = ARGV[7 + 2 * i], quota = quota } end
end

local now_s = int_str(now)
local lease_until = now + lease_ms
local lease_s = int_str(lease_until)
local reply = {}
local claimed = 0
for rank = 0, 3 do
  if claimed >= want then break end
  -- Candidates of this priority from every agent, merged by order score.
  local cands = {}
  for _, a in ipairs(agents) do
    local take = math.min(a.quota, want - claimed)
    if take > 0 then
      local key = K.ready(a.id, rank)
      local r = redis.call('ZRANGE', key, 0, take - 1, 'WITHSCORES')
      for j = 1, #r, 2 do
        cands[#cands + 1] = { id = r[j], score = tonumber(r[j + 1]), agent = a, key = key }
      end
    end
  end
  if #agents > 1 then table.sort(cands, function(x, y) return x.score < y.score end) end
  for _, c in ipairs(cands) do
    if claimed >= want then break end
    if c.agent.quota > 0 then
      W.zrem(c.key, c.id)
      local v = redis.call('HMGET', K.task(c.id), unpack(LEASE_FIELDS))
      -- A ready entry whose task is gone or no longer QUEUED is dropped (index repair).
      if v[1] == 'QUEUED' then
        claimed = claimed + 1
        c.agent.quota = c.agent.quota - 1
        lease_task(c.id, c.agent.id, v, now, now_s, lease_until, lease_s,
          token_prefix .. '.' .. claimed, worker, reply)
      end
    end
  end
end
W.flush()
return reply
