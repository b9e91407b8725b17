-- lib/attempt.lua: starting an attempt (claim.lua, start.lua) and ending one
-- that did not succeed, shared by fail.lua (the worker reports) and reap.lua
-- (the lease or the attempt deadline ran out).

-- What leasing a task reads from its record, in this order.
local LEASE_FIELDS = { 'status', 'seq', 'taskType', 'inputData', 'retryCount', 'maxRetries',
  'timeoutMs', 'priority', 'createdAt', 'agentId', 'ownerId' }

-- Leases a QUEUED task already taken out of its ready set; v holds its
-- LEASE_FIELDS. Writes the attempt to the record, the processing set and the
-- status index, emits `started`, and appends the 12 reply fields of a leased
-- task to reply: id, token, agentId, taskType, inputData, retryCount,
-- maxRetries, timeoutMs, priority, leaseUntil, deadlineAt, createdAt.
-- now_s and lease_s are now and now + lease, formatted once per call.
local function lease_task(id, agent, v, now, now_s, lease_until, lease_s, token, worker, reply)
  local timeout_ms = tonumber(v[7]) or 0
  local deadline, deadline_s = lease_until, lease_s
  if timeout_ms > 0 then
    deadline = now + timeout_ms
    deadline_s = int_str(deadline)
  end
  redis.call('HSET', K.task(id), 'status', 'PROCESSING', 'token', token,
    'startedAt', now_s, 'updatedAt', now_s, 'leaseUntil', lease_s,
    'deadlineAt', deadline_s, 'workerId', worker)
  W.zadd(K.processing, math.min(lease_until, deadline), id)
  W.deadline(math.min(lease_until, deadline), now)
  -- A damaged seq must not fail the ZADD at flush, after the HSET above.
  move_status(id, agent, tonumber(v[2]) and v[2] or 0, 'QUEUED', 'PROCESSING')
  emit(now_s, 'started', id, agent, v[11], v[3], 'PROCESSING', 'attempt', int_str((tonumber(v[5]) or 0) + 1),
    'workerId', worker)
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = id, token, agent, v[3]
  reply[n + 5], reply[n + 6], reply[n + 7], reply[n + 8] = v[4], v[5], v[6], v[7]
  reply[n + 9], reply[n + 10], reply[n + 11], reply[n + 12] = v[8], lease_s, deadline_s, v[9] or now_s
end

local ATTEMPT_FIELDS = { 'status', 'token', 'seq', 'agentId', 'taskType', 'retryCount',
  'maxRetries', 'deadlineAt', 'startedAt', 'ownerId' }

-- Reads what ending an attempt needs; nil when the task record is gone.
local function read_attempt(id)
  local v = redis.call('HMGET', K.task(id), unpack(ATTEMPT_FIELDS))
  if not v[1] then return nil end
  return { status = v[1], token = v[2], seq = tonumber(v[3]), agent = v[4], task_type = v[5],
    retry_count = tonumber(v[6]) or 0, max_retries = tonumber(v[7]) or 0,
    deadline_at = tonumber(v[8]), started_at = tonumber(v[9]), owner = v[10] }
end

-- The metrics tag of an ended attempt: "<outcome>|<agent>|<taskType>|<duration ms>"
-- (agent ids and task types never contain '|'). Wrappers count it per node.
local function attempt_tag(outcome, now, t)
  return outcome .. '|' .. t.agent .. '|' .. t.task_type .. '|'
    .. int_str(math.max(0, now - (t.started_at or now)))
end

-- Retries after backoff (base * 2^retryCount, capped) while attempts remain and
-- the error is retryable; otherwise ends the task as final_status (FAILED or
-- TIMEOUT). Returns 'retry', 'failed' or 'timeout'.
local function end_failed_attempt(now, id, t, final_status, message, retryable, backoff_base_ms, backoff_cap_ms)
  W.zrem(K.processing, id)
  if retryable and t.retry_count < t.max_retries then
    local due = now + math.min(backoff_base_ms * (2 ^ t.retry_count), backoff_cap_ms)
    redis.call('HSET', K.task(id), 'status', 'QUEUED', 'retryCount', int_str(t.retry_count + 1),
      'errorMessage', message, 'runAt', int_str(due), 'updatedAt', int_str(now))
    W.zadd(K.delayed, due, id)
    move_status(id, t.agent, t.seq, 'PROCESSING', 'QUEUED')
    stat(now, t.agent, t.task_type, 'retries', 1)
    if final_status == 'TIMEOUT' then stat(now, t.agent, t.task_type, 'timedOutAttempts', 1) end
    W.publish('d')
    emit(now, 'retrying', id, t.agent, t.owner, t.task_type, 'QUEUED', 'attempt', int_str(t.retry_count + 1),
      'runAt', int_str(due), 'errorMessage', message)
    return 'retry'
  end
  redis.call('HSET', K.task(id), 'status', final_status, 'errorMessage', message,
    'completedAt', int_str(now), 'updatedAt', int_str(now))
  W.zadd(K.finished, now, id)
  move_status(id, t.agent, t.seq, 'PROCESSING', final_status)
  stat(now, t.agent, t.task_type, final_status, 1)
  local kind = (final_status == 'TIMEOUT') and 'timeout' or 'failed'
  emit(now, kind, id, t.agent, t.owner, t.task_type, final_status, 'attempt', int_str(t.retry_count + 1),
    'errorMessage', message)
  return kind
end
