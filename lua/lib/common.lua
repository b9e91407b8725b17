-- lib/common.lua: the shared part of the taskherd Redis Functions library.
-- scripts.rs builds one library: lib/*.lua, then every script in lua/ wrapped
-- as a function `<name>(KEYS, ARGV)` that first calls begin(KEYS). Library
-- code runs once, at FUNCTION LOAD; per call only begin() runs.
-- Every key is derived from KEYS[1], the namespace prefix "{ns}:", so all keys a
-- script touches share one hash tag (one Redis Cluster slot), and only here:
-- scripts use K.<key>, never P .. '...'. The names here mirror
-- src/store/keys.rs; a unit test there checks that both agree (and that no
-- script builds a key of its own), so change both together.

local function keys_for(p)
  local k = {
    delayed = p .. 'delayed',          -- ZSET member task id, score due time (ms)
    processing = p .. 'processing',    -- ZSET member task id, score min(lease deadline, attempt deadline) (ms)
    finished = p .. 'finished',        -- ZSET member task id, score completedAt (ms), terminal tasks only
    events = p .. 'events',            -- STREAM of lifecycle events
    clock = p .. 'clock',              -- STRING last issued order score
    counts = p .. 'counts',            -- HASH "<agent>|<STATUS>" -> live task count
    agents = p .. 'agents',            -- SET of agent ids seen in tasks or agent records
    signal = p .. 'signal',            -- pub/sub: "w:<agent>" wake, "c:<id>:<token>" stop, "d" delayed, "r" reap
    idx_all = p .. 'idx:all',          -- ZSET member task id, score order score (creation)
    audit = p .. 'audit',              -- HASH status -> order score where audit.lua's walk resumes
    tmp_list = p .. 'tmp:list',        -- ZSET list.lua's intersection of several filters, deleted within the call
    reaper_wake = p .. 'reaper:wake',  -- STRING when a sleeping reaper passes next (ms); lower deadlines signal "r"
  }
  function k.task(id) return p .. 'task:' .. id end
  function k.ready(agent, prio) return p .. 'ready:' .. agent .. ':' .. prio end
  function k.idx_status(s) return p .. 'idx:status:' .. s end
  function k.idx_prio(x) return p .. 'idx:prio:' .. x end
  function k.idx_agent(a) return p .. 'idx:agent:' .. a end
  function k.idx_type(t) return p .. 'idx:type:' .. t end
  function k.idx_owner(o) return p .. 'idx:owner:' .. o end
  function k.idx(name) return p .. 'idx:' .. name end  -- an index by name ("status:QUEUED"), as list.lua's filters give it
  function k.idem(owner, key) return p .. 'idem:' .. owner .. ':' .. key end
  function k.stats(day) return p .. 'stats:' .. day end
  function k.agent(id) return p .. 'agent:' .. id end
  function k.rate_limit(window, principal) return p .. 'rlh:' .. window .. ':' .. principal end
  return k
end

-- The call's prefix and keys; set by begin() (calls never interleave: Redis
-- runs one function at a time). Key tables are kept per prefix (a few
-- namespaces at most; the cache is dropped past 64).
local P, K
local K_BY_PREFIX, K_CACHED = {}, 0
-- Grouped writes of the current call (see W below).
local pending

local function begin(keys)
  P = keys[1]
  local k = K_BY_PREFIX[P]
  if k == nil then
    if K_CACHED >= 64 then K_BY_PREFIX, K_CACHED = {}, 0 end
    k = keys_for(P)
    K_BY_PREFIX[P] = k
    K_CACHED = K_CACHED + 1
  end
  K = k
  pending = { zadd = {}, zadd_order = {}, zrem = {}, zrem_order = {}, hincr = {},
    hincr_order = {}, hfloat = {}, expire = {}, expire_order = {}, pub = {}, pub_order = {},
    deadline = nil, deadline_now = nil }
end

local PRIORITY_RANK = { URGENT = 0, HIGH = 1, NORMAL = 2, LOW = 3 }
local PRIORITY_BY_RANK = { [0] = 'URGENT', [1] = 'HIGH', [2] = 'NORMAL', [3] = 'LOW' }
local EVENTS_MAXLEN = '100000'
local DAY_MS = 86400000
-- Longest statistics query range (days): keep equal to MAX_DAYS in
-- src/store/stats.rs (a unit test there checks this line). A stats:<day> hash
-- expires (STATS_MAX_DAYS + 35) days after its first write, so every day a
-- query can reach is kept and old days go away on their own.
local STATS_MAX_DAYS = 366
local STATS_TTL_MS = (STATS_MAX_DAYS + 35) * DAY_MS
-- Upper bounds (ms) of the attempt-duration histogram kept in the statistics.
local DURATION_BUCKETS_MS = { 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
  120000, 300000, 600000, 1800000, 3600000 }

local function fail_with(code, msg)
  return redis.error_reply(code .. ' ' .. msg)
end

-- Whether a task of `owner` and `agent` is in the caller's scope: `want_owner`
-- and `want_agent` are "" for any (the access policy's scope, applied inside a
-- script so a change needs no read first). A task without an owner is in no
-- owner's scope.
local function in_scope(owner, agent, want_owner, want_agent)
  if want_owner ~= nil and want_owner ~= '' and owner ~= want_owner then return false end
  if want_agent ~= nil and want_agent ~= '' and agent ~= want_agent then return false end
  return true
end

-- Integers travel as strings; tostring() would print large numbers as 1e+15,
-- and '%d' (a C long) is much cheaper than '%.0f' (float formatting).
local function int_str(n) return string.format('%d', n) end

local function to_int(s, what)
  local n = tonumber(s)
  if n == nil or n ~= math.floor(n) then
    error({ err = 'BAD_ARGS ' .. what .. ' is not an integer: ' .. tostring(s) })
  end
  return n
end

-- Now in ms: from ARGV (test override) when given, else from Redis' own clock,
-- so every node agrees on lease deadlines and due dates.
local function now_ms(override)
  if override ~= nil and override ~= '' then return to_int(override, 'now') end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Order scores: strictly increasing, ~ now*1000. FIFO within a priority and
-- unique index scores (pagination cursors) come from this single generator.
local function next_scores(now, n)
  local last = tonumber(redis.call('GET', K.clock) or '0')
  local first = math.max(now * 1000, last + 1)
  redis.call('SET', K.clock, int_str(first + n - 1))
  return first
end

-- Grouped writes: scripts queue their index updates here and flush once, so a
-- batch of N tasks costs one variadic command per key instead of N. begin()
-- starts each call with empty queues, so a call that failed half-way leaves
-- nothing behind for the next one.
local W = {}
-- score: a number, or an integer already formatted by int_str (or read back
-- from a record), which saves formatting the same score for every index.
function W.zadd(key, score, member)
  local l = pending.zadd[key]
  if l == nil then l = {}; pending.zadd[key] = l; pending.zadd_order[#pending.zadd_order + 1] = key end
  if type(score) ~= 'string' then score = int_str(score) end
  l[#l + 1] = score; l[#l + 1] = member
end
function W.zrem(key, member)
  local l = pending.zrem[key]
  if l == nil then l = {}; pending.zrem[key] = l; pending.zrem_order[#pending.zrem_order + 1] = key end
  l[#l + 1] = member
end
function W.hincr(key, field, n)
  local h = pending.hincr[key]
  if h == nil then h = {}; pending.hincr[key] = h; pending.hincr_order[#pending.hincr_order + 1] = key end
  h[field] = (h[field] or 0) + n
end
function W.hfloat(key, field, x)
  local h = pending.hfloat[key]
  if h == nil then h = {}; pending.hfloat[key] = h end
  h[field] = (h[field] or 0) + x
end
-- Gives key a TTL of ms after the flush unless it already has one; queued once
-- per key per script call, however many fields are written to it.
function W.expire_unless_set(key, ms)
  if pending.expire[key] == nil then
    pending.expire[key] = ms; pending.expire_order[#pending.expire_order + 1] = key
  end
end
function W.publish(msg)
  if pending.pub[msg] == nil then pending.pub[msg] = true; pending.pub_order[#pending.pub_order + 1] = msg end
end
-- A lease or attempt deadline was set or moved (ms; `now` the call's time):
-- the earliest of the call is checked against the reapers' next pass at
-- the flush. Every script that writes a processing score calls it.
function W.deadline(ms, now)
  if pending.deadline == nil or ms < pending.deadline then pending.deadline = ms end
  pending.deadline_now = now
end
-- How long a reaper's plan (reaper_wake) outlives its time: a plan that no
-- reaper renewed (its node stopped, its pass failed, its signal was lost)
-- is gone a second after it, so the next deadline signals again.
local REAPER_WAKE_SLACK_MS = 1000
local function write_reaper_wake(wake, now)
  redis.call('SET', K.reaper_wake, int_str(wake), 'PX', int_str(math.max(wake - now, 0) + REAPER_WAKE_SLACK_MS))
end
-- Reapers sleep until their next pass and write when that is (reap.lua). A
-- deadline before it signals "r" so that every node's reaper re-plans, and
-- lowers the plan, so the deadlines after it signal nothing until a reaper
-- has passed again. No plan (no reaper yet, a Redis restart) or one already
-- past (nobody passed at its time) also signals.
local function wake_reapers_for(deadline, now)
  local wake = tonumber(redis.call('GET', K.reaper_wake))
  if wake == nil or wake < now or deadline < wake then
    write_reaper_wake(deadline, now)
    redis.call('PUBLISH', K.signal, 'r')
  end
end
-- Order matters only per key: removals first, so a member moved out and back
-- within one script ends up present.
function W.flush()
  for _, key in ipairs(pending.zrem_order) do redis.call('ZREM', key, unpack(pending.zrem[key])) end
  for _, key in ipairs(pending.zadd_order) do redis.call('ZADD', key, unpack(pending.zadd[key])) end
  for _, key in ipairs(pending.hincr_order) do
    for field, n in pairs(pending.hincr[key]) do
      if n ~= 0 then redis.call('HINCRBY', key, field, int_str(n)) end
    end
  end
  for key, h in pairs(pending.hfloat) do
    for field, x in pairs(h) do redis.call('HINCRBYFLOAT', key, field, string.format('%.17g', x)) end
  end
  -- PTTL -1: the key exists without a TTL (-2: nothing was written to it).
  for _, key in ipairs(pending.expire_order) do
    if redis.call('PTTL', key) == -1 then redis.call('PEXPIRE', key, int_str(pending.expire[key])) end
  end
  for _, msg in ipairs(pending.pub_order) do redis.call('PUBLISH', K.signal, msg) end
  if pending.deadline ~= nil then wake_reapers_for(pending.deadline, pending.deadline_now) end
end

-- Moves a task between status indexes and live counts (seq: number or string, as W.zadd).
local function move_status(id, agent, seq, from, to)
  if from ~= nil then
    W.zrem(K.idx_status(from), id)
    W.hincr(K.counts, agent .. '|' .. from, -1)
  end
  W.zadd(K.idx_status(to), seq, id)
  W.hincr(K.counts, agent .. '|' .. to, 1)
end

-- Statistics are kept per UTC day, per agent and task type, in one hash per
-- day; they are never touched by cleanup, so they outlive the tasks, and
-- expire STATS_TTL_MS after the day's first write.
local function stats_key(now)
  -- One key per call in practice: remembered until the day changes.
  if pending.stats_now ~= now then
    local key = K.stats(math.floor(now / DAY_MS))
    W.expire_unless_set(key, STATS_TTL_MS)
    pending.stats_now, pending.stats_key = now, key
  end
  return pending.stats_key
end
local function stat(now, agent, task_type, metric, n)
  W.hincr(stats_key(now), agent .. '|' .. task_type .. '|' .. metric, n)
end
local function stat_float(now, agent, task_type, metric, x)
  W.hfloat(stats_key(now), agent .. '|' .. task_type .. '|' .. metric, x)
end
local function duration_bucket(ms)
  for i, upper in ipairs(DURATION_BUCKETS_MS) do
    if ms <= upper then return int_str(upper) end
  end
  return 'inf'
end

-- One stream entry per state change, written in the same script as the change.
-- Every event names its task's agent, owner ('' when none) and task type, so
-- a reader can tell who may see it without reading the record. The reader in
-- src/store/events.rs is the only code that decodes these entries.
-- now: ms as a number or as int_str(now) (scripts format it once per call).
local function emit(now, kind, id, agent, owner, task_type, status, ...)
  if type(now) ~= 'string' then now = int_str(now) end
  return redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'type', kind, 'taskId', id, 'agentId', agent, 'ownerId', owner or '',
    'taskType', task_type or '', 'status', status, 'ts', now, ...)
end
