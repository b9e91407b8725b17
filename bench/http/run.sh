#!/usr/bin/env bash
# HTTP benchmark: throughput and p50/p99 latency of `POST /api/ai/tasks` and
# `GET /api/ai/tasks/:id` on a taskherd node, side by side in the same run
# with a bare poem server returning a constant (examples/bare_poem.rs).
# Goal: taskherd reaches at least half the bare handler's throughput.
#
# Also in the same run, the floor: the same bare poem server making exactly
# one Redis round trip per request through fred (HGETALL of the task's record
# for GET, one INCR for POST) on the node's own redis-server, before it
# answers the constant. No Redis-backed handler can do less; the 'vs floor'
# column compares taskherd with it.
#
#   scripts/dev bench-http            (or bench/http/run.sh)
#   BENCH_SET=graphql scripts/dev bench-http
#
# BENCH_SET=graphql measures GraphQL against REST instead, on the same node
# in the same run, BENCH_PASSES times interleaved (default 3): `aiTask(id)`
# against `GET /api/ai/tasks/:id` and `aiTasks(pagination: {limit: 20})`
# against `GET /api/ai/tasks?limit=20`, both selecting every field REST
# returns (the list also `agent { name type }`, read once per request), the
# rate limit off for both. A GraphQL answer carrying `errors` counts as
# failed.
#
# Load: wrk (installed with apt-get when missing), loopback only, each run
# bounded in time (BENCH_DURATION s, at most 120) and in count
# (BENCH_MAX_REQUESTS). The node runs with its own redis-server (no
# REDIS_URL), workers off (--no-worker: the GET reads one stable QUEUED task),
# a rate limit far above the load (so the limiter counts every request and
# syncs with Redis every 50 ms, but never refuses), and a token minted by
# `taskherd token`. Then the node is restarted with the rate limit off
# (TASKHERD_RATE_LIMIT=0) and measured again, which shows the limiter's share.
# TASKHERD_REDIS_POOL in the environment reaches the node (pool comparisons).
#
# Exits non-zero when any response of taskherd or of the floor was not 2xx.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${BENCH_DURATION:-10}"        # seconds per measured run
WARMUP="${BENCH_WARMUP:-2}"             # seconds of warm-up before each
CONNECTIONS="${BENCH_CONNECTIONS:-50}"
THREADS="${BENCH_THREADS:-2}"           # wrk threads
MAX_REQUESTS="${BENCH_MAX_REQUESTS:-3000000}"
LIMIT_OFF="${BENCH_LIMIT_OFF:-1}"       # 1: also measure with the rate limit off
SET="${BENCH_SET:-rest}"                # rest, or graphql (GraphQL against REST)
PASSES="${BENCH_PASSES:-3}"             # graphql: interleaved passes
BODY='{"agentId":"bench","taskType":"bench","inputData":{"n":1}}'
SECRET="bench-http-only-secret-0123456789abcdef"

for n in "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS" "$MAX_REQUESTS"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench-http: settings must be whole numbers" >&2; exit 2; }
done
if [ "$DURATION" -lt 1 ] || [ "$DURATION" -gt 120 ] || [ "$CONNECTIONS" -lt 1 ] ||
  [ "$CONNECTIONS" -gt 1000 ] || [ "$THREADS" -lt 1 ] || [ "$THREADS" -gt "$CONNECTIONS" ]; then
  echo "bench-http: BENCH_DURATION 1-120 s, BENCH_CONNECTIONS 1-1000, BENCH_THREADS 1-connections" >&2
  exit 2
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench-http: installing wrk (apt-get)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --locked --bin taskherd --example bare_poem
TASKHERD=target/release/taskherd
BARE=target/release/examples/bare_poem

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most $3 s) until $1 answers 200; fails when process $2 is gone.
wait_http_200() {
  local url="$1" pid="$2" deadline=$((SECONDS + $3))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "bench-http: process $pid exited before $url answered" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "bench-http: $url did not answer within $3 s" >&2; return 1; }
    sleep 0.2
  done
}

# SIGTERM, SIGKILL after 30 s.
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/taskherd-bench-http.XXXXXX")"
BARE_PID=""
FLOOR_PID=""
NODE_PID=""
cleanup() {
  [ -n "$BARE_PID" ] && stop_pid "$BARE_PID"
  [ -n "$FLOOR_PID" ] && stop_pid "$FLOOR_PID"
  [ -n "$NODE_PID" ] && stop_pid "$NODE_PID"
  # A redis-server left behind by a killed node (it has its own process group).
  local port_file="$WORK/data/redis/taskherd-redis.port"
  if [ -f "$port_file" ] && redis-cli -p "$(cat "$port_file")" ping >/dev/null 2>&1; then
    redis-cli -p "$(cat "$port_file")" shutdown nosave >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

BARE_PORT="$(free_port)"
"$BARE" "$BARE_PORT" 2>"$WORK/bare.log" &
BARE_PID=$!
wait_http_200 "http://127.0.0.1:$BARE_PORT/api/ai/tasks/x" "$BARE_PID" 30

NODE_PORT="$(free_port)"
start_node() { # $1: rate limit per second (0: off)
  env -u REDIS_URL HOST=127.0.0.1 PORT="$NODE_PORT" TASKHERD_DATA_DIR="$WORK/data" \
    TASKHERD_RATE_LIMIT="$1" JWT_SECRET="$SECRET" RUST_LOG=warn \
    "$TASKHERD" serve --no-worker >>"$WORK/node.log" 2>&1 &
  NODE_PID=$!
  if ! wait_http_200 "http://127.0.0.1:$NODE_PORT/api/ai/tasks/health" "$NODE_PID" 60; then
    tail -n 20 "$WORK/node.log" >&2
    exit 1
  fi
}
start_node 1000000000
TOKEN="$(JWT_SECRET="$SECRET" "$TASKHERD" token --sub bench --role admin --ttl 2h)"
TASK_ID="$(curl -s --max-time 5 -X POST -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$NODE_PORT/api/ai/tasks" |
  sed -n 's/.*"id":"\(task_[0-9A-Za-z]*\)".*/\1/p')"
[ -n "$TASK_ID" ] || { echo "bench-http: could not create the task to GET" >&2; exit 1; }

FLOOR_PORT="$(free_port)"
"$BARE" "$FLOOR_PORT" "redis://127.0.0.1:$(cat "$WORK/data/redis/taskherd-redis.port")" \
  2>"$WORK/floor.log" &
FLOOR_PID=$!
wait_http_200 "http://127.0.0.1:$FLOOR_PORT/api/ai/tasks/$TASK_ID" "$FLOOR_PID" 30

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
TICKS_PER_S="$(getconf CLK_TCK)"
redis_pid() {
  redis-cli -p "$(cat "$WORK/data/redis/taskherd-redis.port")" info server |
    sed -n 's/^process_id:\([0-9]*\).*/\1/p'
}

# One wrk run; prints its RESULT line (fields: see load.lua).
load() { # $1 method, $2 url, $3 seconds
  BENCH_METHOD="$1" BENCH_BODY="${LOAD_BODY:-$BODY}" BENCH_TOKEN="$TOKEN" BENCH_THREADS="$THREADS" \
    BENCH_MAX_REQUESTS="$MAX_REQUESTS" BENCH_FAIL_ON="${BENCH_FAIL_ON:-}" \
    timeout --kill-after=5 $(($3 + 30)) \
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${3}s" --timeout 5s -s bench/http/load.lua "$2" |
    grep '^RESULT'
}

field() { # $1 RESULT line, $2 key
  sed -n "s/.* $2=\([0-9.]*\).*/\1/p" <<<"$1"
}

ROWS=()
FAILED=0
FLOOR_LABEL="bare poem + 1 Redis command"
measure() { # $1 endpoint label, $2 target label, $3 method, $4 url, $5 bare rps, $6 floor rps (ratios)
  [ "$WARMUP" -gt 0 ] && load "$3" "$4" "$WARMUP" >/dev/null
  local result rps ratio="—" floor_ratio="—" server_pid redis=""
  case "$2" in
    "bare poem") server_pid="$BARE_PID" ;;
    "$FLOOR_LABEL") server_pid="$FLOOR_PID"; redis="$(redis_pid)" ;;
    *) server_pid="$NODE_PID"; redis="$(redis_pid)" ;;
  esac
  local server_before redis_before=0
  server_before="$(cpu_ticks "$server_pid")"
  [ -n "$redis" ] && redis_before="$(cpu_ticks "$redis")"
  result="$(load "$3" "$4" "$DURATION")"
  local server_ticks=$(($(cpu_ticks "$server_pid") - server_before)) redis_ticks=0
  [ -n "$redis" ] && redis_ticks=$(($(cpu_ticks "$redis") - redis_before))
  rps="$(field "$result" rps)"
  if [ "$(field "$result" requests)" -ge "$MAX_REQUESTS" ]; then
    echo "bench-http: $2 reached BENCH_MAX_REQUESTS: its requests/s is understated" >&2
  fi
  [ -n "$5" ] && ratio="$(awk -v a="$rps" -v b="$5" 'BEGIN { printf "%.2f", a / b }')"
  [ -n "${6:-}" ] && floor_ratio="$(awk -v a="$rps" -v b="$6" 'BEGIN { printf "%.2f", a / b }')"
  ROWS+=("$(awk -v e="$1" -v t="$2" -v r="$rps" -v p50="$(field "$result" p50_us)" \
    -v p99="$(field "$result" p99_us)" -v bad="$(field "$result" non2xx)" \
    -v n="$(field "$result" requests)" -v err="$(field "$result" socket_errors)" -v ratio="$ratio" \
    -v floor_ratio="$floor_ratio" -v st="$server_ticks" -v rt="$redis_ticks" -v hz="$TICKS_PER_S" -v has_redis="${redis:+1}" \
    'BEGIN {
       cpu = n > 0 ? st / hz * 1e6 / n : 0; rcpu = n > 0 ? rt / hz * 1e6 / n : 0
       printf "| %s | %s | %.0f | %.2f | %.2f | %d / %d | %d | %.0f | %s | %s | %s |", e, t, r, p50 / 1000,
         p99 / 1000, bad, n, err, cpu, has_redis ? sprintf("%.0f", rcpu) : "—", ratio, floor_ratio }')")
  if [ "$2" != "bare poem" ]; then
    FAILED=$((FAILED + $(field "$result" non2xx) + $(field "$result" socket_errors)))
  fi
  LAST_RPS="$rps"
}

BARE_URL="http://127.0.0.1:$BARE_PORT/api/ai/tasks"
NODE_URL="http://127.0.0.1:$NODE_PORT/api/ai/tasks"

if [ "$SET" = graphql ]; then
  [[ "$PASSES" =~ ^[1-9][0-9]?$ ]] || { echo "bench-http: BENCH_PASSES 1-99" >&2; exit 2; }
  stop_pid "$FLOOR_PID"; FLOOR_PID=""
  stop_pid "$BARE_PID"; BARE_PID=""
  stop_pid "$NODE_PID"
  start_node 0
  # 30 tasks more (a page of 20 is full), of an agent with a record.
  curl -s --max-time 5 -o /dev/null -X PUT -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"name":"Bench","type":"llm"}' "$NODE_URL/../agents/bench"
  for _ in $(seq 30); do
    curl -s --max-time 5 -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' -d "$BODY" "$NODE_URL"
  done
  FIELDS="id agentId taskType inputData outputData status priority retryCount maxRetries timeoutMs errorMessage estimatedCost actualCost qualityScore metrics { durationMs tokensIn tokensOut } runAt idempotencyKey ownerId workerId leaseUntil createdAt startedAt completedAt updatedAt"
  GQL_ONE="$(python3 -c 'import json,sys; print(json.dumps({"query": "query($id: ID!) { aiTask(id: $id) { %s } }" % sys.argv[1], "variables": {"id": sys.argv[2]}}))' "$FIELDS" "$TASK_ID")"
  GQL_LIST="$(python3 -c 'import json,sys; print(json.dumps({"query": "{ aiTasks(pagination: {limit: 20}) { tasks { %s agent { name type } } totalCount pageInfo { hasNextPage currentPage totalPages nextCursor } } }" % sys.argv[1]}))' "$FIELDS")"
  GQL_URL="http://127.0.0.1:$NODE_PORT/graphql"
  echo "bench-http: GraphQL against REST, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS," \
    "${DURATION} s per run after ${WARMUP} s warm-up, $PASSES passes; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for pass in $(seq "$PASSES"); do
    LOAD_BODY="" measure "one task (pass $pass)" "REST GET /api/ai/tasks/:id" GET "$NODE_URL/$TASK_ID" ""
    REST_ONE="$LAST_RPS"
    LOAD_BODY="$GQL_ONE" BENCH_FAIL_ON='"errors"' measure "one task (pass $pass)" "GraphQL aiTask(id)" POST "$GQL_URL" "$REST_ONE"
    LOAD_BODY="" measure "20 tasks (pass $pass)" "REST GET /api/ai/tasks?limit=20" GET "$NODE_URL?limit=20" ""
    REST_LIST="$LAST_RPS"
    LOAD_BODY="$GQL_LIST" BENCH_FAIL_ON='"errors"' measure "20 tasks (pass $pass)" "GraphQL aiTasks(limit: 20)" POST "$GQL_URL" "$REST_LIST"
  done
  echo "bench-http: load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)" >&2
  echo
  echo "| read | target | requests/s | p50 ms | p99 ms | failed / requests | socket errors | server CPU µs/req | Redis CPU µs/req | vs REST | |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  printf '%s\n' "${ROWS[@]}"
  if [ "$FAILED" -gt 0 ]; then
    echo "bench-http: $FAILED responses failed; see the table" >&2
    tail -n 20 "$WORK/node.log" >&2
    exit 1
  fi
  exit 0
fi
echo "bench-http: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS," \
  "${DURATION} s per run after ${WARMUP} s warm-up; GET reads $TASK_ID;" \
  "Redis pool: ${TASKHERD_REDIS_POOL:-default};" \
  "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

FLOOR_URL="http://127.0.0.1:$FLOOR_PORT/api/ai/tasks"
measure "POST /api/ai/tasks" "bare poem" POST "$BARE_URL" ""
BARE_POST="$LAST_RPS"
measure "POST /api/ai/tasks" "$FLOOR_LABEL" POST "$FLOOR_URL" "$BARE_POST"
FLOOR_POST="$LAST_RPS"
measure "POST /api/ai/tasks" "taskherd" POST "$NODE_URL" "$BARE_POST" "$FLOOR_POST"
measure "GET /api/ai/tasks/:id" "bare poem" GET "$BARE_URL/$TASK_ID" ""
BARE_GET="$LAST_RPS"
measure "GET /api/ai/tasks/:id" "$FLOOR_LABEL" GET "$FLOOR_URL/$TASK_ID" "$BARE_GET"
FLOOR_GET="$LAST_RPS"
measure "GET /api/ai/tasks/:id" "taskherd" GET "$NODE_URL/$TASK_ID" "$BARE_GET" "$FLOOR_GET"

if [ "$LIMIT_OFF" = 1 ]; then
  # The floor server talks to this node's redis-server, which goes with it.
  stop_pid "$FLOOR_PID"
  FLOOR_PID=""
  stop_pid "$NODE_PID"
  start_node 0
  measure "POST /api/ai/tasks" "taskherd, rate limit off" POST "$NODE_URL" "$BARE_POST" "$FLOOR_POST"
  measure "GET /api/ai/tasks/:id" "taskherd, rate limit off" GET "$NODE_URL/$TASK_ID" "$BARE_GET" "$FLOOR_GET"
fi

echo "bench-http: load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)" >&2
echo
echo "| endpoint | target | requests/s | p50 ms | p99 ms | non-2xx / requests | socket errors | server CPU µs/req | Redis CPU µs/req | vs bare | vs floor |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "goal: taskherd at least 0.5x the bare handler's requests/s (the 'vs bare' column)."
echo "floor: '$FLOOR_LABEL' makes one Redis round trip per request and nothing else ('vs floor': taskherd against it)."
echo "CPU columns: CPU time of the server process (and of the node's redis-server) during the run, per request."
if [ "$FAILED" -gt 0 ]; then
  echo "bench-http: $FAILED responses of taskherd or the floor were not 2xx (or failed); see the table" >&2
  tail -n 20 "$WORK/node.log" >&2
  exit 1
fi
