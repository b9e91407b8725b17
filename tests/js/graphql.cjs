// Drives real graphql-ws clients (the npm package, over the npm `ws`
// WebSocket) for the Rust tests and the benchmark: one JSON command per
// stdin line, one JSON report per stdout line, as driver.cjs does.
//
// Commands (`c` names a connection, `s` a subscription on it):
//   {"op":"connect","c":"a","url":"ws://127.0.0.1:1234/graphql/ws","params":{...}}
//       createClient({url, connectionParams: params, retryAttempts: 0, lazy: false})
//   {"op":"subscribe","c":"a","s":"s1","query":"subscription {...}","variables":{}}
//       (a query or mutation too: graphql-ws runs any operation)
//   {"op":"unsubscribe","c":"a","s":"s1"}
//   {"op":"close","c":"a"}
//   {"op":"raw","c":"r","url":"ws://...","protocol":"graphql-ws","origin":"http://..."}
//       a bare `ws` connection (origin optional), for the older subprotocol
//       and protocol errors
//   {"op":"raw_send","c":"r","msg":{...}}
//   {"op":"quit"}
// Reports: {"c","type":"connected"|"closed"|"next"|"error"|"complete"|
//           "raw"|"raw_closed","s","data","errors","code","reason","at"}
//           where "at" is the wall clock in milliseconds (fractional).
// The packages are found through NODE_PATH (scripts/dev installs them).
const { createInterface } = require("node:readline");
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");

const clients = new Map();
const subscriptions = new Map();
const raws = new Map();
const now = () => performance.timeOrigin + performance.now();
const report = (r) => process.stdout.write(JSON.stringify(r) + "\n");

function connect({ c, url, params }) {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: params,
    lazy: false,
    retryAttempts: 0,
    onNonLazyError: () => {},
    on: {
      connected: () => report({ c, type: "connected", at: now() }),
      closed: (e) => report({ c, type: "closed", at: now(), code: e?.code, reason: e?.reason }),
    },
  });
  clients.set(c, client);
}

function subscribe({ c, s, query, variables }) {
  const client = clients.get(c);
  if (!client) return report({ c, type: "driver_error", message: `no connection ${c}` });
  const dispose = client.subscribe(
    { query, variables },
    {
      next: (r) => report({ c, s, type: "next", at: now(), data: r.data ?? null, errors: r.errors ?? null }),
      error: (e) => {
        // An array of GraphQL errors, or a CloseEvent, or an Error.
        if (Array.isArray(e)) return report({ c, s, type: "error", at: now(), errors: e });
        report({ c, s, type: "error", at: now(), code: e?.code, reason: e?.reason ?? e?.message });
      },
      complete: () => report({ c, s, type: "complete", at: now() }),
    },
  );
  subscriptions.set(`${c}/${s}`, dispose);
}

function raw({ c, url, protocol, origin }) {
  const ws = new WebSocket(url, protocol, origin ? { origin } : undefined);
  raws.set(c, ws);
  ws.on("open", () => report({ c, type: "raw_open", at: now(), protocol: ws.protocol }));
  ws.on("message", (m) => report({ c, type: "raw", at: now(), data: JSON.parse(m.toString()) }));
  ws.on("close", (code, reason) =>
    report({ c, type: "raw_closed", at: now(), code, reason: reason.toString() }),
  );
  ws.on("unexpected-response", (_req, res) => {
    let body = "";
    res.on("data", (d) => (body += d));
    res.on("end", () => report({ c, type: "raw_refused", at: now(), status: res.statusCode, body }));
  });
  ws.on("error", () => {});
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    return report({ type: "driver_error", message: `bad command: ${e.message}` });
  }
  switch (cmd.op) {
    case "connect": return connect(cmd);
    case "subscribe": return subscribe(cmd);
    case "unsubscribe": {
      const key = `${cmd.c}/${cmd.s}`;
      subscriptions.get(key)?.();
      subscriptions.delete(key);
      return;
    }
    case "close":
      clients.get(cmd.c)?.dispose();
      clients.delete(cmd.c);
      raws.get(cmd.c)?.close();
      raws.delete(cmd.c);
      return;
    case "raw": return raw(cmd);
    case "raw_send": return raws.get(cmd.c)?.send(JSON.stringify(cmd.msg));
    case "quit":
      for (const client of clients.values()) client.dispose();
      for (const ws of raws.values()) ws.close();
      process.exit(0);
    default:
      report({ type: "driver_error", message: `unknown op ${cmd.op}` });
  }
});
lines.on("close", () => process.exit(0));
report({ type: "ready" });
