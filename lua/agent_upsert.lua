-- agent_upsert.lua: creates or replaces an agent record and registers the agent.
-- KEYS (1): [1] namespace prefix "{ns}:"  (agent:<id> HASH, agents SET, events STREAM)
-- ARGV: [1] now ms override or ""  [2] agent id  [3] record as JSON text
-- Returns: 1 when created, 0 when replaced
-- Errors: none beyond Redis' own
-- Events: none on the task stream
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local id = ARGV[2]
local created = redis.call('EXISTS', K.agent(id)) == 0
redis.call('HSET', K.agent(id), 'record', ARGV[3], 'updatedAt', int_str(now))
if created then redis.call('HSET', K.agent(id), 'createdAt', int_str(now)) end
redis.call('SADD', K.agents, id)
return created and 1 or 0
