// Drives real socket.io-client connections for the Rust tests and the
// benchmark: one JSON command per stdin line, one JSON report per stdout line.
//
// Commands (`c` names a connection):
//   {"op":"connect","c":"a","url":"http://127.0.0.1:1234","opts":{...}}
//       io(url, {path: "/ws/ai-tasks", reconnection: false, ...opts})
//   {"op":"emit","c":"a","event":"subscribe:task","args":["task_..."],"ack":7}
//       with "ack": the acknowledgement is reported as {"type":"ack","ack":7}
//   {"op":"stall","c":"a"}   stop reading the WebSocket (a slow consumer)
//   {"op":"resume","c":"a"}  read it again
//   {"op":"close","c":"a"}
//   {"op":"quit"}
// Reports: {"c","type":"connect"|"connect_error"|"disconnect"|"event"|"ack",
//           "event","data","message","reason","at"} where "at" is the wall
//           clock in milliseconds (fractional) when it was received.
// socket.io-client is found through NODE_PATH (scripts/dev installs it).
const { createInterface } = require("node:readline");
const { io } = require("socket.io-client");

const sockets = new Map();
const now = () => performance.timeOrigin + performance.now();
const report = (r) => process.stdout.write(JSON.stringify(r) + "\n");

function connect({ c, url, opts }) {
  const socket = io(url, { path: "/ws/ai-tasks", reconnection: false, ...opts });
  sockets.set(c, socket);
  socket.on("connect", () =>
    report({ c, type: "connect", at: now(), transport: socket.io.engine.transport.name }),
  );
  socket.on("connect_error", (err) =>
    report({ c, type: "connect_error", at: now(), message: err.message }),
  );
  socket.on("disconnect", (reason) => report({ c, type: "disconnect", at: now(), reason }));
  socket.onAny((event, data) => report({ c, type: "event", at: now(), event, data }));
  socket.io.on("reconnect", () => report({ c, type: "reconnect", at: now() }));
}

function emit({ c, event, args = [], ack }) {
  const socket = sockets.get(c);
  if (!socket) return report({ c, type: "driver_error", message: `no connection ${c}` });
  if (ack === undefined) {
    socket.emit(event, ...args);
  } else {
    socket.emit(event, ...args, (data) => report({ c, type: "ack", ack, at: now(), data }));
  }
}

function stall({ c }) {
  const socket = sockets.get(c);
  const raw = socket?.io?.engine?.transport?.ws?._socket;
  if (!raw) return report({ c, type: "driver_error", message: "not a websocket" });
  raw.pause();
  report({ c, type: "stalled" });
}

function resume({ c }) {
  const raw = sockets.get(c)?.io?.engine?.transport?.ws?._socket;
  if (!raw) return report({ c, type: "driver_error", message: "not a websocket" });
  raw.resume();
  report({ c, type: "resumed" });
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
    case "emit": return emit(cmd);
    case "stall": return stall(cmd);
    case "resume": return resume(cmd);
    case "close":
      sockets.get(cmd.c)?.close();
      sockets.delete(cmd.c);
      return;
    case "quit":
      for (const s of sockets.values()) s.close();
      process.exit(0);
    default:
      report({ type: "driver_error", message: `unknown op ${cmd.op}` });
  }
});
lines.on("close", () => process.exit(0));
report({ type: "ready" });
