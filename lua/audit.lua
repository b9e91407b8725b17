-- audit.lua: finds and repairs live tasks whose indexes disagree with their
-- records (keys deleted or edited by hand, or writes a restored backup lost),
-- one bounded slice per call. Safe to run on every node at once.
-- Walks idx:status:PROCESSING and idx:status:QUEUED from the cursors saved in
-- the audit HASH (one score per status), limit entries each, and wraps
-- around at the end. For each entry:
--   * record gone -> the id leaves the status index, idx:all, idx:prio:*,
--     processing and delayed; when agents SET has at most MAX_AGENT_SCAN
--     members, the agent whose idx:agent:<a> holds it is found, and the id
--     leaves that index and its ready sets, and counts "<a>|<status>" drops
--     by one (idx:type and idx:owner entries stay: their names are unknown).
--     Each agent tried is one ZSCORE; a call stops its walk after the entry
--     that used up the lookup budget and goes on from there next time;
--   * record in another (known) status -> the entry moves to that status'
--     index (counts are left as they are: they follow the records' changes);
--   * PROCESSING without a processing entry -> one is added at
--     min(leaseUntil, deadlineAt), so the reaper ends the attempt when due;
--   * QUEUED in neither its ready set nor delayed -> back in delayed when
--     runAt is still ahead, else in its ready set at its original order
--     score (it keeps its FIFO place), and its agent's workers are woken.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads/writes audit HASH, idx:status:* / idx:all / idx:prio:* / idx:agent:<a>
--   ZSETs, processing / delayed / ready:<agent>:<rank> ZSETs, counts HASH; reads
--   task:<id> HASHes and agents SET
-- ARGV: [1] now ms override or ""  [2] limit per status (1..1000)
--       [3] agent lookup budget per call (1..100000)
-- Returns: { entries checked, ghosts removed, lease entries restored,
--   queue entries restored, status entries moved, 1 when both walks wrapped
--   around to the start in this call else 0 }
-- Errors: BAD_ARGS
-- Events: none (no task changes state; the repairs only make the indexes
--   agree with the records again)
-- Uses: lib/common.lua
local MAX_AGENT_SCAN = 1000
local now = now_ms(ARGV[1])
local limit = to_int(ARGV[2], 'limit')
local budget = to_int(ARGV[3], 'lookup budget')
if limit < 1 or limit > 1000 or budget < 1 or budget > 100000 or #ARGV ~= 3 then
  return fail_with('BAD_ARGS', 'limit or lookup budget out of range')
end
local lookups = 0
local checked, ghosts, leases, queued, moved, wrapped = 0, 0, 0, 0, 0, 0

-- The agent whose index holds a task whose record is gone, or nil.
local agent_list = nil
local function agent_of_ghost(id)
  if agent_list == nil then
    agent_list = {}
    if redis.call('SCARD', K.agents) <= MAX_AGENT_SCAN then
      agent_list = redis.call('SMEMBERS', K.agents)
    end
  end
  for _, a in ipairs(agent_list) do
    lookups = lookups + 1
    if redis.call('ZSCORE', K.idx_agent(a), id) then return a end
  end
  return nil
end

local function remove_ghost(id, status)
  W.zrem(K.idx_status(status), id)
  W.zrem(K.idx_all, id)
  for rank = 0, 3 do W.zrem(K.idx_prio(PRIORITY_BY_RANK[rank]), id) end
  W.zrem(K.processing, id)
  W.zrem(K.delayed, id)
  local agent = agent_of_ghost(id)
  if agent then
    W.zrem(K.idx_agent(agent), id)
    for rank = 0, 3 do W.zrem(K.ready(agent, rank), id) end
    W.hincr(K.counts, agent .. '|' .. status, -1)
  end
end

local STATUSES = { QUEUED = true, PROCESSING = true, COMPLETED = true, FAILED = true,
  CANCELLED = true, TIMEOUT = true }

local function check(id, score, status)
  local v = redis.call('HMGET', K.task(id), 'status', 'agentId', 'priority', 'seq',
    'leaseUntil', 'deadlineAt', 'runAt')
  -- A damaged seq must not fail a ZADD at flush, after other writes.
  local seq = tonumber(v[4]) and v[4] or score
  if not v[1] then
    remove_ghost(id, status)
    ghosts = ghosts + 1
  elseif v[1] ~= status then
    -- A record with an unknown status or no agent is left for a human.
    if STATUSES[v[1]] then
      W.zrem(K.idx_status(status), id)
      W.zadd(K.idx_status(v[1]), seq, id)
      moved = moved + 1
    end
  elseif not v[2] then
    return
  elseif status == 'PROCESSING' then
    if not redis.call('ZSCORE', K.processing, id) then
      local lease = tonumber(v[5]) or now
      local deadline = tonumber(v[6]) or lease
      W.zadd(K.processing, math.min(lease, deadline), id)
      W.deadline(math.min(lease, deadline), now)
      leases = leases + 1
    end
  else
    local rank = PRIORITY_RANK[v[3]] or 2
    local ready = K.ready(v[2], rank)
    if not redis.call('ZSCORE', ready, id) and not redis.call('ZSCORE', K.delayed, id) then
      local run_at = tonumber(v[7])
      if run_at and run_at > now then
        W.zadd(K.delayed, run_at, id)
        W.publish('d')
      else
        W.zadd(ready, seq, id)
        W.publish('w:' .. v[2])
      end
      queued = queued + 1
    end
  end
end

local walks_done = 0
for _, status in ipairs({ 'PROCESSING', 'QUEUED' }) do
  local from = redis.call('HGET', K.audit, status)
  local lo = from and ('(' .. from) or '-inf'
  local r = redis.call('ZRANGE', K.idx_status(status), lo, '+inf', 'BYSCORE', 'LIMIT', 0, limit,
    'WITHSCORES')
  local last, stopped = nil, false
  for j = 1, #r, 2 do
    if lookups >= budget then
      stopped = true
      break
    end
    checked = checked + 1
    check(r[j], r[j + 1], status)
    last = r[j + 1]
  end
  if stopped then
    if last then redis.call('HSET', K.audit, status, last) end
  elseif #r < 2 * limit then
    redis.call('HDEL', K.audit, status)
    walks_done = walks_done + 1
  else
    redis.call('HSET', K.audit, status, r[#r])
  end
end
if walks_done == 2 then wrapped = 1 end
W.flush()
return { checked, ghosts, leases, queued, moved, wrapped }
