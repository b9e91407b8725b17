-- get_many.lua: several task records in one call (grouped GET /tasks/:id reads).
-- KEYS (1): [1] namespace prefix "{ns}:"
--   reads task:<id> HASHes
-- ARGV: [1..n] task ids (1..1000)
-- Returns: array of n replies in order, each the record as a flat HGETALL
--   array (empty when there is no such task)
-- Errors: BAD_ARGS (no ids or too many); WRONGTYPE when a record key holds
--   another type (the whole call fails; callers read those ids one by one)
-- Events: none
-- Uses: lib/common.lua
if #ARGV < 1 or #ARGV > 1000 then
  return fail_with('BAD_ARGS', 'expected 1 to 1000 task ids')
end
local out = {}
for i, id in ipairs(ARGV) do
  out[i] = redis.call('HGETALL', K.task(id))
end
return out
