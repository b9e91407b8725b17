-- wrk script of the HTTP benchmark (bench/http/run.sh).
--
-- Request: method, body and bearer token from the environment
--   BENCH_METHOD (GET or POST), BENCH_BODY (JSON, POST only), BENCH_TOKEN.
-- BENCH_FAIL_ON: a response whose body contains this text counts as
--   failed, like a non-2xx one (GraphQL answers errors with 200).
-- Bound: each thread stops after BENCH_MAX_REQUESTS / threads responses
-- (wrk's -d bounds the time).
-- Output: one line `RESULT key=value ...` with the request count, rate,
-- latency percentiles in microseconds, non-2xx responses and socket errors.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local method = os.getenv("BENCH_METHOD") or "GET"
wrk.method = method
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
if method == "POST" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = os.getenv("BENCH_BODY") or "{}"
end

local limit
local fail_on = os.getenv("BENCH_FAIL_ON")
if fail_on == "" then
  fail_on = nil
end

function init(args)
  responses = 0
  non2xx = 0
  limit = math.floor((tonumber(os.getenv("BENCH_MAX_REQUESTS")) or 1000000) / (tonumber(os.getenv("BENCH_THREADS")) or 1))
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif fail_on and body and string.find(body, fail_on, 1, true) then
    non2xx = non2xx + 1
  end
  if responses >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local counted, bad = 0, 0
  for _, thread in ipairs(threads) do
    counted = counted + thread:get("responses")
    bad = bad + thread:get("non2xx")
  end
  local errors = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p99_us=%d max_us=%d non2xx=%d counted=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max, bad, counted,
    errors.connect + errors.read + errors.write + errors.timeout))
end
