// The feed benchmark (scripts/dev bench-feed): latency from a task created
// through node A's REST API to its event on connections to node B, at a
// fixed rate. Prints one JSON line.
//
// Settings (environment): NODE_A, NODE_B (base URLs), TOKEN (admin),
// CLIENTS (connections to B), AGENTS (client i follows agent i % AGENTS, a
// task of agent k reaches CLIENTS / AGENTS clients), RATE (creates per
// second), DURATION_S (how long the load runs), TRANSPORT, FEED:
// `socketio` (socket.io-client, room agent:<id>) or `graphql` (graphql-ws,
// `aiTaskStatusChanged` with a worker token of the agent, minted here from
// JWT_SECRET: a worker sees its agent's tasks).
//
// Latency is measured three ways per delivery: from the commit (the event's
// `timestamp`, Redis' clock in whole milliseconds, so up to 1 ms too
// high), from the moment the create request was sent (includes the HTTP
// request), and from the moment its response arrived (a lower bound: the
// commit happened before; negative values count as 0).
const { io } = require("socket.io-client");
const crypto = require("node:crypto");

const env = (k, d) => process.env[k] ?? d;
const NODE_A = env("NODE_A");
const NODE_B = env("NODE_B");
const TOKEN = env("TOKEN");
const CLIENTS = Number(env("CLIENTS", "100"));
const AGENTS = Math.min(Number(env("AGENTS", "100")), CLIENTS);
const RATE = Number(env("RATE", "1000"));
const SECONDS = Number(env("DURATION_S", "10"));
const TRANSPORT = env("TRANSPORT", "websocket");
const BATCH = Number(env("BATCH", "10"));
const MAX_REQUESTS_IN_FLIGHT = 256;
const FEED = env("FEED", "socketio");

// An HS256 token for a worker of `agent` (what `taskherd token` mints).
function workerToken(agent) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const body = b64({ sub: `bench-${agent}`, role: "worker", agent, exp });
  const sig = crypto.createHmac("sha256", env("JWT_SECRET")).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// CLIENTS graphql-ws connections to node B, each subscribed to its agent's
// tasks; `onTask(id, at, committedAt)` per delivery. Resolves once every
// client has seen a warm-up task of its agent (the protocol has no
// subscribe ack): from then on each is live.
async function graphqlClients(onTask) {
  const { createClient } = require("graphql-ws");
  const WebSocket = require("ws");
  const url = NODE_B.replace(/^http/, "ws") + "/graphql/ws";
  const warm = new Set();
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const agent = `bench-${i % AGENTS}`;
    const client = createClient({
      url,
      webSocketImpl: WebSocket,
      connectionParams: { token: workerToken(agent) },
      retryAttempts: 0,
      lazy: false,
      onNonLazyError: (e) => {
        console.error(`client ${i}: ${e?.reason ?? e}`);
        process.exit(2);
      },
    });
    client.subscribe(
      { query: "subscription { aiTaskStatusChanged { id taskType updatedAt } }" },
      {
        next: (r) => {
          const t = r.data?.aiTaskStatusChanged;
          if (!t) return;
          if (t.taskType === "warmup") warm.add(i);
          else onTask(t.id, now(), t.updatedAt);
        },
        error: (e) => {
          console.error(`client ${i}: ${JSON.stringify(e?.reason ?? e)}`);
          process.exit(2);
        },
        complete: () => {},
      },
    );
    clients.push(client);
  }
  const deadline = now() + 60_000;
  while (warm.size < CLIENTS) {
    const tasks = [];
    for (let k = 0; k < AGENTS; k++) tasks.push({ agentId: `bench-${k}`, taskType: "warmup" });
    for (let k = 0; k < tasks.length; k += 100) {
      await fetch(`${NODE_A}/api/ai/tasks/batch`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ tasks: tasks.slice(k, k + 100) }),
      });
    }
    const until = now() + 1000;
    while (warm.size < CLIENTS && now() < until) await sleep(20);
    if (now() > deadline) {
      console.error(`only ${warm.size} of ${CLIENTS} clients went live`);
      process.exit(2);
    }
  }
  return clients;
}

// The wall clock with sub-millisecond steps: performance.now() anchored to
// Date.now() at the instant Date.now() ticks (performance.timeOrigin can be
// milliseconds off the wall clock, which Redis' times are on).
const offset = (() => {
  const start = Date.now();
  let t;
  while ((t = Date.now()) === start);
  return t - performance.now();
})();
const now = () => performance.now() + offset;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return Math.round(sorted[Math.max(0, i)] * 1000) / 1000;
}

async function main() {
  const sent = new Map(); // taskId -> [sentAt, answeredAt]
  const received = []; // [taskId, at]
  const sockets = [];
  let connected = 0;
  if (FEED === "graphql") {
    const clients = await graphqlClients((id, at, committedAt) => received.push([id, at, committedAt]));
    connected = clients.length;
    sockets.push(...clients.map((c) => ({ close: () => c.dispose() })));
  }
  for (let i = 0; FEED !== "graphql" && i < CLIENTS; i++) {
    const s = io(NODE_B, {
      path: "/ws/ai-tasks",
      auth: { token: TOKEN },
      transports: [TRANSPORT],
      upgrade: false,
      reconnection: false,
    });
    s.on("agent:task:update", (d) => received.push([d.taskId, now(), d.timestamp]));
    s.on("connect_error", (e) => {
      console.error(`client ${i}: ${e.message}`);
      process.exit(2);
    });
    sockets.push(s);
    await new Promise((resolve) =>
      s.once("connect", () => {
        s.emit("subscribe:agent", `bench-${i % AGENTS}`, (ack) => {
          if (!ack.ok) {
            console.error(JSON.stringify(ack));
            process.exit(2);
          }
          connected++;
          resolve();
        });
      }),
    );
  }

  // The load runs in a process of its own, so that the clients' event loop
  // does nothing but receive.
  const { fork } = require("node:child_process");
  const load = fork(__filename, ["--load"], { env: process.env });
  const done = await new Promise((resolve) => load.once("message", resolve));
  const { failed, seconds: loadSeconds } = done;
  for (const [id, at, answered] of done.sent) sent.set(id, [at, answered]);
  const expected = () => sent.size * (CLIENTS / AGENTS);
  const deadline = now() + 10_000;
  while (received.length < expected() && now() < deadline) await sleep(20);

  const fromSent = [];
  const fromAnswer = [];
  const fromCommit = [];
  const createMs = [...sent.values()].map(([a, b]) => b - a).sort((a, b) => a - b);
  for (const [id, at, committedAt] of received) {
    const t = sent.get(id);
    if (!t) continue;
    fromCommit.push(at - committedAt);
    fromSent.push(at - t[0]);
    fromAnswer.push(Math.max(0, at - t[1]));
  }
  fromSent.sort((a, b) => a - b);
  fromCommit.sort((a, b) => a - b);
  fromAnswer.sort((a, b) => a - b);
  const summary = (xs) => ({
    p50: quantile(xs, 0.5),
    p90: quantile(xs, 0.9),
    p99: quantile(xs, 0.99),
    max: quantile(xs, 1),
  });
  console.log(
    JSON.stringify({
      feed: FEED,
      clients: connected,
      agents: AGENTS,
      transport: FEED === "graphql" ? "websocket" : TRANSPORT,
      rate_target: RATE,
      rate_achieved: Math.round(sent.size / loadSeconds),
      created: sent.size,
      create_errors: failed,
      deliveries_expected: expected(),
      deliveries: received.length,
      batch: BATCH,
      create_ms: summary(createMs),
      latency_ms_from_commit: summary(fromCommit),
      latency_ms_from_request: summary(fromSent),
      latency_ms_after_response: summary(fromAnswer),
    }),
  );
  for (const s of sockets) s.close();
  process.exit(0);
}

// The load generator (run as `bench.cjs --load`, forked by the clients'
// process): paced batch creates, then the ids it made, with when each
// request went out and when its answer came, sent to the parent.
async function generate() {
  const sent = new Map();
  const total = RATE * SECONDS;
  let issued = 0;
  let inFlight = 0;
  let failed = 0;
  const started = now();
  // Tasks go out in batches of BATCH (one request, one script call): the
  // load shares the machine's two cores with the nodes, Redis and the
  // clients, and a request per task would cost more than the feed itself.
  const create = async (k) => {
    inFlight++;
    const at = now();
    try {
      const tasks = [];
      for (let j = 0; j < BATCH; j++) {
        tasks.push({ agentId: `bench-${(k + j) % AGENTS}`, taskType: "bench", inputData: { k: k + j } });
      }
      const r = await fetch(`${NODE_A}/api/ai/tasks/batch`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({ tasks }),
      });
      const body = await r.json();
      if (r.status !== 201) failed += BATCH;
      else for (const t of body.tasks) sent.set(t.id, [at, now()]);
    } catch {
      failed += BATCH;
    } finally {
      inFlight--;
    }
  };
  // Paced: task k goes out at started + k / RATE seconds.
  while (issued < total) {
    const due = Math.floor(((now() - started) / 1000) * RATE) + BATCH;
    while (issued + BATCH <= Math.min(due, total) && inFlight < MAX_REQUESTS_IN_FLIGHT) {
      create(issued);
      issued += BATCH;
    }
    await sleep(1);
  }
  while (inFlight > 0) await sleep(5);
  const seconds = (now() - started) / 1000;
  const list = [...sent].map(([id, [at, answered]]) => [id, at, answered]);
  process.send({ sent: list, failed, seconds }, () => process.exit(0));
}

(process.argv.includes("--load") ? generate() : main()).catch((e) => {
  console.error(e);
  process.exit(1);
});
