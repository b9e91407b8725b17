//! The real `socket.io-client` from npm, driven through
//! `tests/js/driver.cjs` (one Node process, many connections): JSON
//! commands in, JSON reports out. The same harness drives `graphql-ws`
//! through `tests/js/graphql.cjs` ([`Sio::graphql_ws`]). `scripts/dev test` installs the client and
//! sets `TASKHERD_NODE_MODULES`; without it the folder `scripts/dev` would
//! use is looked for.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

fn node_modules() -> PathBuf {
    if let Ok(dir) = std::env::var("TASKHERD_NODE_MODULES") {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("sha256sum")
        .arg(root.join("tests/js/package-lock.json"))
        .output()
        .expect("sha256sum runs");
    let hash: String = String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(16)
        .collect();
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join(format!("taskherd/js-clients-{hash}/node_modules"))
}

/// Many socket.io-client connections in one Node process.
pub struct Sio {
    child: Child,
    stdin: ChildStdin,
    reports: mpsc::UnboundedReceiver<Value>,
    /// Every report so far, in arrival order.
    pub seen: Vec<Value>,
    next_ack: u64,
}

impl Sio {
    pub async fn start() -> Self {
        Self::start_script("driver.cjs", "socket.io-client").await
    }

    /// The graphql-ws driver (`tests/js/graphql.cjs`): the same reports'
    /// shape, its own commands.
    pub async fn graphql_ws() -> Self {
        Self::start_script("graphql.cjs", "graphql-ws").await
    }

    async fn start_script(script: &str, package: &str) -> Self {
        let modules = node_modules();
        assert!(
            modules.join(package).is_dir(),
            "{package} is not installed at {}: run `scripts/dev test` (it installs it)",
            modules.display()
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/js")
            .join(script);
        let mut child = Command::new("node")
            .arg(script)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/dev test installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("driver printed {line:?}: {e}"),
                }
            }
        });
        let mut sio = Self {
            child,
            stdin,
            reports,
            seen: Vec::new(),
            next_ack: 0,
        };
        sio.wait("the driver", Duration::from_secs(20), |r| {
            r["type"] == "ready"
        })
        .await;
        sio
    }

    pub async fn send(&mut self, command: Value) {
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("driver reads commands");
    }

    /// Connects `c` to a node (`opts` go to `io()`: auth, transports ...).
    pub async fn connect(&mut self, c: &str, addr: std::net::SocketAddr, opts: Value) {
        self.send(json!({"op": "connect", "c": c, "url": format!("http://{addr}"), "opts": opts}))
            .await;
    }

    /// Connects and returns how the handshake ended: the `connect` or
    /// `connect_error` report.
    async fn handshake(&mut self, c: &str, addr: std::net::SocketAddr, opts: Value) -> Value {
        let from = self.seen.len();
        self.connect(c, addr, opts).await;
        self.wait_from(
            from,
            &format!("{c}'s handshake"),
            Duration::from_secs(20),
            |r| r["c"] == c && (r["type"] == "connect" || r["type"] == "connect_error"),
        )
        .await
    }

    /// Connects and waits for `connect`; panics on `connect_error`.
    pub async fn connected(&mut self, c: &str, addr: std::net::SocketAddr, opts: Value) -> Value {
        let r = self.handshake(c, addr, opts).await;
        assert_eq!(r["type"], "connect", "{c} was refused: {r}");
        r
    }

    /// Connects and returns the `connect_error` message; panics if admitted.
    pub async fn refused(&mut self, c: &str, addr: std::net::SocketAddr, opts: Value) -> String {
        let r = self.handshake(c, addr, opts).await;
        assert_eq!(r["type"], "connect_error", "{c} was admitted");
        r["message"].as_str().unwrap_or_default().to_string()
    }

    /// Emits `event` with `args` and waits for its acknowledgement.
    pub async fn call(&mut self, c: &str, event: &str, args: Value) -> Value {
        self.next_ack += 1;
        let ack = self.next_ack;
        let from = self.seen.len();
        self.send(json!({"op": "emit", "c": c, "event": event, "args": args, "ack": ack}))
            .await;
        self.wait_from(
            from,
            &format!("{c}'s ack of {event}"),
            Duration::from_secs(20),
            |r| r["c"] == c && r["type"] == "ack" && r["ack"] == ack,
        )
        .await["data"]
            .clone()
    }

    /// Emits without asking for an acknowledgement.
    pub async fn emit(&mut self, c: &str, event: &str, args: Value) {
        self.send(json!({"op": "emit", "c": c, "event": event, "args": args}))
            .await;
    }

    pub async fn close(&mut self, c: &str) {
        self.send(json!({"op": "close", "c": c})).await;
    }

    /// The first report from index `from` on that `pred` accepts, waiting
    /// for new ones until `deadline`.
    pub async fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(r) = self.seen[from.min(self.seen.len())..]
            .iter()
            .find(|r| pred(r))
        {
            return r.clone();
        }
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let r = tokio::time::timeout_at(until, self.reports.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out after {deadline:?} waiting for {what}; last reports: {:#?}",
                        &self.seen[self.seen.len().saturating_sub(10)..]
                    )
                })
                .expect("the driver is running");
            self.seen.push(r.clone());
            if pred(&r) {
                return r;
            }
        }
    }

    /// [`Sio::wait_from`] over every report so far.
    pub async fn wait(
        &mut self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_from(0, what, deadline, pred).await
    }

    /// Waits for event `event` on `c` (from report `from` on) matching `pred`.
    pub async fn event_from(
        &mut self,
        from: usize,
        c: &str,
        event: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_from(
            from,
            &format!("{event} on {c}"),
            Duration::from_secs(20),
            |r| r["c"] == c && r["type"] == "event" && r["event"] == event && pred(&r["data"]),
        )
        .await["data"]
            .clone()
    }

    /// The events `event` that `c` received so far (payloads).
    pub fn events(&self, c: &str, event: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|r| r["c"] == c && r["type"] == "event" && r["event"] == event)
            .map(|r| r["data"].clone())
            .collect()
    }

    /// Takes in the reports that arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(r) = self.reports.try_recv() {
            self.seen.push(r);
        }
    }

    pub async fn quit(mut self) {
        self.send(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
