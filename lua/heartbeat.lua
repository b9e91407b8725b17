-- heartbeat.lua: extends the leases a worker holds; tells it which it lost.
-- KEYS (1): [1] namespace prefix "{ns}:"  (task:<id> HASH, processing ZSET)
-- ARGV: [1] now ms override or ""
--       [2] lease length (ms)
--       [3] count n (1..1000), then n pairs: task id, lease token
-- Returns: array of n codes in order: "ok" (lease now ends at now+lease, or at
--   the attempt deadline if sooner), "cancelled" (the task was cancelled),
--   "lost" (the lease was reaped or re-delivered: stop, the result will be refused),
--   "gone" (no such task)
-- Errors: BAD_ARGS
-- Events: none (a heartbeat changes no state)
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local lease_ms = to_int(ARGV[2], 'lease')
local n = to_int(ARGV[3], 'count')
if n < 1 or n > 1000 or lease_ms < 1 or #ARGV ~= 3 + 2 * n then
  return fail_with('BAD_ARGS', 'bad heartbeat arguments')
end
local reply = {}
for i = 0, n - 1 do
  local id, token = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local v = redis.call('HMGET', K.task(id), 'status', 'token', 'deadlineAt')
  if not v[1] then
    reply[#reply + 1] = 'gone'
  elseif v[2] ~= token then
    reply[#reply + 1] = 'lost'
  elseif v[1] == 'CANCELLED' then
    reply[#reply + 1] = 'cancelled'
  elseif v[1] ~= 'PROCESSING' then
    reply[#reply + 1] = 'lost'
  else
    local lease_until = now + lease_ms
    redis.call('HSET', K.task(id), 'leaseUntil', int_str(lease_until))
    W.zadd(K.processing, math.min(lease_until, tonumber(v[3]) or lease_until), id)
    -- A shorter lease than before moves the deadline earlier.
    W.deadline(math.min(lease_until, tonumber(v[3]) or lease_until), now)
    reply[#reply + 1] = 'ok'
  end
end
W.flush()
return reply
