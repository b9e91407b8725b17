-- list.lua: one page of tasks, newest first, filtered through the indexes,
-- with the total count of matches. Reads only the indexes named by the filter
-- (intersected when there are several), never every task.
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads idx:all or idx:<filter> ZSETs and task:<id> HASHes; writes and deletes
--   the scratch ZSET tmp:list within the call when filters are intersected
-- ARGV: [1] lowest order score ("-inf" or integer)  [2] highest order score ("+inf" or integer)
--       [3] cursor: only scores below it, within [1]..[2] ("" for none)  [4] offset  [5] limit (1..1000)
--       [6] filter count f (0..6), then f index names such as "status:QUEUED", "agent:a1"
-- Returns: { total matches, page of { HGETALL fields... } ..., 1 when more matches
--   follow the page (below its last score) else 0 }
-- Errors: BAD_ARGS (nothing written)
-- Events: none
-- Uses: lib/common.lua
local lo, hi, cursor = ARGV[1], ARGV[2], ARGV[3]
local offset = to_int(ARGV[4], 'offset')
local limit = to_int(ARGV[5], 'limit')
local f = to_int(ARGV[6], 'filter count')
if limit < 1 or limit > 1000 or offset < 0 or f < 0 or f > 6 or #ARGV ~= 6 + f then
  return fail_with('BAD_ARGS', 'bad list arguments')
end
-- Checked before the scratch set is written, so a bad range writes nothing.
if lo ~= '-inf' then to_int(lo, 'lowest score') end
if hi ~= '+inf' then to_int(hi, 'highest score') end
-- The page ends below the cursor and at or below hi, whichever is lower.
local upper = hi
if cursor ~= '' then
  local c = to_int(cursor, 'cursor')
  if hi == '+inf' or c <= tonumber(hi) then upper = '(' .. cursor end
end
local src = K.idx_all
local scratch = nil
if f == 1 then
  src = K.idx(ARGV[7])
elseif f > 1 then
  local keys = {}
  for i = 1, f do keys[i] = K.idx(ARGV[6 + i]) end
  scratch = K.tmp_list
  keys[#keys + 1] = 'AGGREGATE'
  keys[#keys + 1] = 'MAX'
  redis.call('ZINTERSTORE', scratch, f, unpack(keys))
  src = scratch
end
local total = redis.call('ZCOUNT', src, lo, hi)
-- One past the page tells whether another page follows (exact for cursors too).
local ids = redis.call('ZREVRANGEBYSCORE', src, upper, lo, 'LIMIT', offset, limit + 1)
if scratch then redis.call('DEL', scratch) end
local more = 0
if #ids > limit then
  more = 1
  ids[#ids] = nil
end
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = redis.call('HGETALL', K.task(id))
end
return { total, page, more }
