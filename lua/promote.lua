-- promote.lua: moves delayed tasks whose time has come to their ready queues
-- (runAt reached, or retry backoff over). Safe to run on every node at once.
-- KEYS (1): [1] namespace prefix "{ns}:"  (delayed ZSET, ready ZSETs, task:<id> HASH)
-- ARGV: [1] now ms override or ""  [2] limit (1..1000)
-- Returns: { promoted count, next due time in ms or -1 when none is delayed, now in ms }
-- Errors: BAD_ARGS
-- Events: none (the task stays QUEUED; a wake signal goes to the agent's workers)
-- Uses: lib/common.lua
local now = now_ms(ARGV[1])
local limit = to_int(ARGV[2], 'limit')
if limit < 1 or limit > 1000 then return fail_with('BAD_ARGS', 'limit out of range') end
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', int_str(now), 'LIMIT', 0, limit)
local promoted = 0
if #due > 0 then
  local score = next_scores(now, #due)
  for _, id in ipairs(due) do
    W.zrem(K.delayed, id)
    local v = redis.call('HMGET', K.task(id), 'status', 'agentId', 'priority')
    if v[1] == 'QUEUED' then
      W.zadd(K.ready(v[2], PRIORITY_RANK[v[3]]), score, id)
      W.publish('w:' .. v[2])
      promoted = promoted + 1
    end
    score = score + 1
  end
end
W.flush()
local nxt = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
return { promoted, nxt[2] and tonumber(nxt[2]) or -1, int_str(now) }
