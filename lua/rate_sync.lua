-- rate_sync.lua: records how many requests one node's limiter admitted per principal and
-- window, and answers each window's total over every node. Idempotent: a sync sent again
-- after its reply was lost (a reset, a timeout) sets the same count, never adds it twice.
-- KEYS (1): [1] namespace prefix "{ns}:"  (rlh:<window s>:<principal> HASH limiter id -> count)
-- ARGV: [1] limiter id (one per node process)  [2] key TTL (ms, 1..60000)
--       then n triples: window (Unix s), principal, count admitted by this limiter so far
-- Returns: array of n totals in order: the window's count summed over every limiter
-- Errors: BAD_ARGS (nothing written)
-- Events: none
-- Uses: lib/common.lua
local me = ARGV[1]
local ttl = to_int(ARGV[2], 'ttl')
if me == nil or me == '' or ttl < 1 or ttl > 60000 or (#ARGV - 2) % 3 ~= 0 then
  return fail_with('BAD_ARGS', 'expected a limiter id, a TTL and triples')
end
for i = 3, #ARGV, 3 do
  to_int(ARGV[i], 'window')
  if to_int(ARGV[i + 2], 'count') < 0 then return fail_with('BAD_ARGS', 'negative count') end
end
local totals = {}
for i = 3, #ARGV, 3 do
  local key = K.rate_limit(ARGV[i], ARGV[i + 1])
  local count = tonumber(ARGV[i + 2])
  -- Counts only grow within a window: an older sync arriving late keeps the newer count.
  if count > (tonumber(redis.call('HGET', key, me)) or 0) then
    redis.call('HSET', key, me, ARGV[i + 2])
  end
  redis.call('PEXPIRE', key, ttl, 'NX')
  local total = 0
  for _, v in ipairs(redis.call('HVALS', key)) do total = total + (tonumber(v) or 0) end
  totals[#totals + 1] = int_str(total)
end
return totals
