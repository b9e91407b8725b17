#!/usr/bin/env python3
"""Script time per task of create, claim and complete, straight against Redis,
and of one audit call.

Loads the scripts of a lua/ folder as one Functions library (as
src/store/scripts.rs builds it, under the name taskherd_costs), then creates
N tasks in batches of 100, claims them and completes them in batches of B,
and prints the script time per task of each from `INFO commandstats`
(FCALL usec), then the cleanup of the finished tasks in calls of 200 (µs
per task and per call: one call blocks Redis that long). It also prices
audit calls of 200 entries per status index,
once over the QUEUED tasks (before the claims) and once over the PROCESSING
ones (before the completions). It FLUSHALLs and FUNCTION FLUSHes the Redis it is given: point
it at a scratch redis-server only (loopback).

    python3 bench/lua/script_costs.py --port 7711 [--lua lua] [--tasks 20000] [--batch 100] [--runs 3]

To price one part of a script, copy lua/ elsewhere, remove the part (say the
XADD in emit() of lib/common.lua) and compare the two folders in one sitting.
"""
import argparse
import os
import random
import socket
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--lua", default=os.path.join(os.path.dirname(__file__), "..", "..", "lua"))
p.add_argument("--tasks", type=int, default=20000)
p.add_argument("--batch", type=int, default=100)
p.add_argument("--runs", type=int, default=3)
args = p.parse_args()
if not (1 <= args.batch <= 1000 and 100 <= args.tasks <= 200000 and 1 <= args.runs <= 10):
    raise SystemExit("--batch 1..1000, --tasks 100..200000, --runs 1..10")

sock = socket.create_connection(("127.0.0.1", args.port))
reader = sock.makefile("rb")


def encode(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for x in parts:
        x = x if isinstance(x, bytes) else str(x).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(out)


def read():
    line = reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else reader.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read() for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")


def call(*parts):
    sock.sendall(encode(*parts))
    return read()


def fcall_usec():
    for line in call("INFO", "commandstats").decode().split("\r\n"):
        if line.startswith("cmdstat_fcall:"):
            fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            return int(fields["usec"])
    return 0


def library(folder):
    code = "#!lua name=taskherd_costs\n"
    for part in ("lib/common.lua", "lib/attempt.lua"):
        code += open(os.path.join(folder, part)).read() + "\n"
    for name in sorted(os.listdir(folder)):
        if name.endswith(".lua"):
            body = open(os.path.join(folder, name)).read()
            code += f"redis.register_function('costs_{name[:-4]}', function(KEYS, ARGV)\nbegin(KEYS)\n{body}\nend)\n"
    return code


PREFIX = "{taskherd}:"
PAYLOAD = '{"p":"' + "x" * 90 + '"}'
ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def task_id():
    return "task_" + "".join(random.choice(ULID_CHARS) for _ in range(26))


def one_run(n, batch):
    call("FLUSHALL")
    t0 = fcall_usec()
    for _ in range(n // 100):
        items = []
        for _ in range(100):
            items += [task_id(), "bench", "bench", "NORMAL", PAYLOAD, 3, 3600000, "", "", "", ""]
        call("FCALL", "costs_create", 1, PREFIX, "", 604800000, 100, *items)
    created = (n // 100) * 100
    audit_queued = audit_cost(created)
    t1 = fcall_usec()
    leased, k = [], 0
    while True:
        r = call("FCALL", "costs_claim", 1, PREFIX, "", 30000, batch, f"t{k}", "w1", 1, "bench", batch)
        k += 1
        if not r:
            break
        leased += [(r[i], r[i + 1]) for i in range(0, len(r), 12)]
    t2 = fcall_usec()
    audit_processing = audit_cost(len(leased))
    t2 = fcall_usec()
    for j in range(0, len(leased), batch):
        part = leased[j : j + batch]
        items = []
        for tid, token in part:
            items += [tid, token, "", "", "", "", "", ""]
        call("FCALL", "costs_complete", 1, PREFIX, "", len(part), *items)
    t3 = fcall_usec()
    # Cleanup of every finished task: a `now` one second ahead puts them all
    # past a retention of 0.
    later = str(int(time.time() * 1000) + 1000)
    calls = 0
    while True:
        removed, more = call("FCALL", "costs_cleanup", 1, PREFIX, later, 0, CLEANUP_LIMIT)
        calls += 1
        if not more:
            break
    t4 = fcall_usec()
    return (
        (t1 - t0) / created,
        (t2 - t1) / len(leased),
        (t3 - t2) / len(leased),
        audit_queued,
        audit_processing,
        (t4 - t3) / len(leased),
        (t4 - t3) / calls,
    )


CLEANUP_LIMIT = 200


AUDIT_LIMIT = 200


def audit_cost(live):
    """Script µs per audit call over `live` entries of one status index."""
    calls = max(1, min(50, live // AUDIT_LIMIT))
    before = fcall_usec()
    for _ in range(calls):
        call("FCALL", "costs_audit", 1, PREFIX, "", AUDIT_LIMIT, 5000)
    return (fcall_usec() - before) / calls


call("FUNCTION", "FLUSH")
call("FUNCTION", "LOAD", "REPLACE", library(args.lua))
runs = [one_run(args.tasks, args.batch) for _ in range(args.runs)]
best = [min(r[i] for r in runs) for i in range(7)]
print(
    f"script µs per task (best of {args.runs}; create in batches of 100, claim/complete in batches of {args.batch}): "
    f"create {best[0]:.1f}  claim {best[1]:.1f}  complete {best[2]:.1f}  sum {sum(best[:3]):.1f}"
)
print(f"cleanup: script µs per task {best[5]:.1f}, per call of {CLEANUP_LIMIT} {best[6]:.0f}")
print(
    f"script µs per audit call ({AUDIT_LIMIT} entries): over QUEUED tasks {best[3]:.0f}  "
    f"over PROCESSING tasks {best[4]:.0f}"
)
call("FLUSHALL")
call("FUNCTION", "FLUSH")
