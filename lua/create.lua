-- create.lua: creates tasks (one, a batch, or coalesced single creates), QUEUED.
-- KEYS (1): [1] namespace prefix "{ns}:" (all keys below derive from it, lib/common.lua)
--   writes task:<id> HASH, ready:<agent>:<rank> ZSET or delayed ZSET, idx:* ZSETs,
--   counts HASH, agents SET, stats:<day> HASH, idem:<owner>:<key> STRING, events STREAM
-- ARGV: [1] now ms override or "" (Redis TIME)
--       [2] idempotency key TTL (ms, 1..2^53-1)
--       [3] item count n (1..1000)
--       then n items of 11 fields: id, agentId, taskType, priority (URGENT|HIGH|NORMAL|LOW),
--       inputData (JSON text), maxRetries, timeoutMs, estimatedCost ("" none),
--       runAt ms ("" none, else 0..253402300799999), idempotencyKey ("" none), ownerId ("" none)
-- Returns: flat array: now (ms), then per item: task id, 1 when created or 0 when the
--   idempotency key already named a live task (that task's id is returned).
-- Errors: BAD_ARGS (nothing written)
-- Events: created (one per new task)
-- Uses: lib/common.lua
local FIELDS = 11
local now = now_ms(ARGV[1])
local idem_ttl_ms = to_int(ARGV[2], 'idempotency ttl')
local n = to_int(ARGV[3], 'item count')
if n < 1 or n > 1000 or #ARGV ~= 3 + n * FIELDS then
  return fail_with('BAD_ARGS', 'expected ' .. n .. ' items of ' .. FIELDS .. ' fields')
end
-- SET ... PX refuses 0 (and values past Redis' range) after the task is written.
if idem_ttl_ms < 1 or idem_ttl_ms >= 2 ^ 53 then
  return fail_with('BAD_ARGS', 'idempotency ttl must be 1 ms to 2^53 ms')
end
-- 9999-12-31T23:59:59.999Z, as src/task.rs MAX_RUN_AT_MS: stays exact below 2^53.
local MAX_RUN_AT_MS = 253402300799999

-- 1. read and validate
local items = {}
local by_idem = {}
local new_count = 0
for i = 0, n - 1 do
  local b = 3 + i * FIELDS
  local it = { id = ARGV[b + 1], agent = ARGV[b + 2], task_type = ARGV[b + 3], priority = ARGV[b + 4],
    input = ARGV[b + 5], max_retries = to_int(ARGV[b + 6], 'maxRetries'),
    timeout_ms = to_int(ARGV[b + 7], 'timeoutMs'), est_cost = ARGV[b + 8], run_at = ARGV[b + 9],
    idem = ARGV[b + 10], owner = ARGV[b + 11] }
  if PRIORITY_RANK[it.priority] == nil then
    return fail_with('BAD_ARGS', 'unknown priority ' .. it.priority)
  end
  if it.run_at ~= '' then
    it.run_at = to_int(it.run_at, 'runAt')
    if it.run_at < 0 or it.run_at > MAX_RUN_AT_MS then
      return fail_with('BAD_ARGS', 'runAt must be 0 to ' .. MAX_RUN_AT_MS)
    end
  end
  if it.est_cost ~= '' and tonumber(it.est_cost) == nil then
    return fail_with('BAD_ARGS', 'estimatedCost is not a number')
  end
  if it.idem ~= '' then
    local ik = K.idem(it.owner, it.idem)
    it.idem_key = ik
    local seen = by_idem[ik]
    if seen then
      it.existing = seen
    else
      local existing = redis.call('GET', ik)
      if existing and redis.call('EXISTS', K.task(existing)) == 1 then
        it.existing = existing
      else
        by_idem[ik] = it.id
      end
    end
  end
  if not it.existing then
    if redis.call('EXISTS', K.task(it.id)) == 1 then
      return fail_with('BAD_ARGS', 'task id already exists: ' .. it.id)
    end
    new_count = new_count + 1
  end
  items[#items + 1] = it
end

-- 2. write
local now_s = int_str(now)
local reply = { now_s }
local agents_seen = {}
local score = 0
if new_count > 0 then score = next_scores(now, new_count) end
for _, it in ipairs(items) do
  if it.existing then
    reply[#reply + 1] = it.existing
    reply[#reply + 1] = 0
  else
    -- The order score, formatted once for the record and every index.
    local seq = int_str(score)
    score = score + 1
    local rank = PRIORITY_RANK[it.priority]
    local fields = { 'id', it.id, 'agentId', it.agent, 'taskType', it.task_type,
      'priority', it.priority, 'status', 'QUEUED', 'inputData', it.input,
      'retryCount', '0', 'maxRetries', int_str(it.max_retries), 'timeoutMs', int_str(it.timeout_ms),
      'seq', seq, 'createdAt', now_s, 'updatedAt', now_s }
    if it.est_cost ~= '' then fields[#fields + 1] = 'estimatedCost'; fields[#fields + 1] = it.est_cost end
    if it.owner ~= '' then fields[#fields + 1] = 'ownerId'; fields[#fields + 1] = it.owner end
    if it.idem ~= '' then fields[#fields + 1] = 'idempotencyKey'; fields[#fields + 1] = it.idem end
    local delayed = it.run_at ~= '' and it.run_at > now
    if it.run_at ~= '' then fields[#fields + 1] = 'runAt'; fields[#fields + 1] = int_str(it.run_at) end
    redis.call('HSET', K.task(it.id), unpack(fields))
    if delayed then
      W.zadd(K.delayed, it.run_at, it.id)
      W.publish('d')
    else
      W.zadd(K.ready(it.agent, rank), seq, it.id)
      W.publish('w:' .. it.agent)
    end
    W.zadd(K.idx_all, seq, it.id)
    W.zadd(K.idx_prio(it.priority), seq, it.id)
    W.zadd(K.idx_agent(it.agent), seq, it.id)
    W.zadd(K.idx_type(it.task_type), seq, it.id)
    if it.owner ~= '' then W.zadd(K.idx_owner(it.owner), seq, it.id) end
    move_status(it.id, it.agent, seq, nil, 'QUEUED')
    stat(now, it.agent, it.task_type, 'created', 1)
    if it.idem_key then redis.call('SET', it.idem_key, it.id, 'PX', int_str(idem_ttl_ms)) end
    if not agents_seen[it.agent] then
      agents_seen[it.agent] = true
      redis.call('SADD', K.agents, it.agent)
    end
    -- 3. emit
    emit(now_s, 'created', it.id, it.agent, it.owner, it.task_type, 'QUEUED', 'priority', it.priority)
    reply[#reply + 1] = it.id
    reply[#reply + 1] = 1
  end
end
W.flush()
return reply
