-- queue_status.lua: one consistent snapshot of the queue's shape.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads counts HASH, agents SET, ready:<agent>:<rank> ZSETs, delayed and processing ZSETs
-- ARGV: [1] now ms override or ""  [2] max agents reported (1..10000)
-- Returns: { now ms, counts as flat HGETALL, delayed count, processing count,
--   per agent { agentId, ready URGENT, HIGH, NORMAL, LOW, oldest ready order score or -1 } ... }
-- Errors: BAD_ARGS
-- Events: none
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local max_agents = to_int(ARGV[2], 'max agents')
if max_agents < 1 or max_agents > 10000 then return fail_with('BAD_ARGS', 'max agents out of range') end
local per_agent = {}
local cursor = '0'
repeat
  local r = redis.call('SSCAN', K.agents, cursor, 'COUNT', 1000)
  cursor = r[1]
  for _, agent in ipairs(r[2]) do
    if #per_agent < max_agents then
      local row = { agent }
      local oldest = -1
      for rank = 0, 3 do
        local key = K.ready(agent, rank)
        row[#row + 1] = redis.call('ZCARD', key)
        local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if first[2] then
          local s = tonumber(first[2])
          if oldest < 0 or s < oldest then oldest = s end
        end
      end
      row[#row + 1] = int_str(oldest)
      per_agent[#per_agent + 1] = row
    end
  end
until cursor == '0' or #per_agent >= max_agents
return { int_str(now), redis.call('HGETALL', K.counts), redis.call('ZCARD', K.delayed),
  redis.call('ZCARD', K.processing), per_agent }
