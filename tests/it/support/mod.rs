//! Test support: a private redis-server per test, stores and in-process nodes
//! bound to port 0, a child-process node for kill -9, `wait_until`, and raw
//! Redis connections of the test's own (`raw`).

#![allow(dead_code)]

pub mod raw;
pub mod sio;

pub use raw::{raw_redis, raw_subscriber};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use taskherd::api::ApiConfig;
use taskherd::auth::{Auth, AuthConfig, Role};
use taskherd::clock::Clock;
use taskherd::local_redis::LocalRedis;
use taskherd::maintenance::MaintenanceConfig;
use taskherd::node::{self, Node, NodeConfig};
use taskherd::shutdown::{self, ShutdownTrigger};
use taskherd::store::{Event, EventId, Store, StoreConfig};
use taskherd::worker::{Registry, WorkerConfig};

/// A redis-server of this test's own, with its data folder.
pub struct TestRedis {
    pub redis: LocalRedis,
    _dir: tempfile::TempDir,
}

impl TestRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = LocalRedis::start(&dir.path().join("redis")).expect("redis-server starts");
        Self { redis, _dir: dir }
    }

    pub fn url(&self) -> String {
        self.redis.url()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.redis.dir().to_path_buf()
    }

    /// Clean restart on the same port and data (AOF is replayed).
    pub fn restart(&mut self) {
        let port = self.redis.port();
        let dir = self.redis.dir().to_path_buf();
        self.redis.stop();
        self.redis = LocalRedis::start_on(&dir, port).expect("redis-server restarts");
    }

    /// A store with a manual clock starting at `start_ms`.
    pub async fn store_with_clock(&self, clock: Clock) -> Store {
        Store::connect(&self.url(), 2, StoreConfig::default(), clock)
            .await
            .expect("store connects")
    }

    /// A store on Redis' own clock.
    pub async fn store(&self) -> Store {
        self.store_with_clock(Clock::redis()).await
    }
}

/// A fixed starting time for manual clocks: 2026-01-01T00:00:00Z.
pub const T0_MS: i64 = 1_767_225_600_000;

/// Waits until `check` returns Some, polling every 10 ms, or panics after `deadline`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An in-process node on 127.0.0.1:0.
pub struct TestNode {
    pub store: Store,
    pub queue: taskherd::queue::Queue,
    pub events: taskherd::events::Hub,
    pub runtime: Option<taskherd::worker::Runtime>,
    pub feed: taskherd::api::ws::Feed,
    pub graphql: taskherd::api::graphql::Live,
    pub addr: std::net::SocketAddr,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<taskherd::Result<()>>,
}

/// Settings for test nodes: short leases so faults show quickly.
pub fn node_config(url: &str, worker: Option<WorkerConfig>, clock: Clock) -> NodeConfig {
    NodeConfig {
        redis_url: url.to_string(),
        redis_pool: 2,
        store: StoreConfig {
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(400),
            ..StoreConfig::default()
        },
        worker,
        maintenance: Some(MaintenanceConfig {
            max_idle: Duration::from_millis(200),
            ..MaintenanceConfig::default()
        }),
        clock,
        api: ApiConfig {
            rate_limit_per_s: 100_000,
            ..ApiConfig::default()
        },
        auth: test_auth_config(),
        redis_wait: Duration::from_secs(10),
    }
}

/// The secret every test node signs tokens with.
pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret!";

pub fn test_auth_config() -> AuthConfig {
    AuthConfig {
        secret: TEST_SECRET.as_bytes().to_vec(),
        issuer: None,
        audience: None,
    }
}

/// A token for test nodes (one hour).
pub fn token(sub: &str, role: Role, agent: Option<&str>) -> String {
    Auth::new(test_auth_config())
        .expect("test secret is long enough")
        .mint(sub, role, agent, Duration::from_secs(3600))
        .expect("token mints")
}

/// An admin token for test nodes.
pub fn admin_token() -> String {
    token("test-admin", Role::Admin, None)
}

/// Worker settings for tests.
pub fn worker_config(node_id: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        node_id: node_id.to_string(),
        concurrency,
        lease: Duration::from_millis(1_500),
        grace: Duration::from_secs(5),
        idle_recheck: Duration::from_secs(5),
        agent_refresh: Duration::from_millis(500),
    }
}

impl TestNode {
    /// A node with workers (test settings) on Redis' own clock.
    pub async fn with_workers(
        redis_url: &str,
        node_id: &str,
        concurrency: usize,
        registry: Registry,
    ) -> Self {
        Self::start(
            node_config(
                redis_url,
                Some(worker_config(node_id, concurrency)),
                Clock::redis(),
            ),
            registry,
        )
        .await
    }

    pub async fn start(config: NodeConfig, registry: Registry) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (trigger, shutdown) = shutdown::channel();
        let (tx, rx) = tokio::sync::oneshot::channel::<Node>();
        let task = tokio::spawn(node::run(config, registry, listener, shutdown, move |n| {
            let _ = tx.send(n);
        }));
        let started = rx.await.expect("node starts");
        Self {
            store: started.store,
            queue: started.queue,
            events: started.events,
            runtime: started.runtime,
            feed: started.feed,
            graphql: started.graphql,
            addr: started.local_addr,
            trigger,
            task,
        }
    }

    /// Graceful stop; returns once the node has fully stopped.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task
            .await
            .expect("node task")
            .expect("node stops cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A node as a child process of the built binary (for kill -9).
pub struct ChildNode {
    pub child: std::process::Child,
    pub port: u16,
}

impl ChildNode {
    pub fn spawn(redis_url: &str, extra: &[&str]) -> Self {
        Self::spawn_to(redis_url, extra, std::process::Stdio::null())
    }

    /// As [`ChildNode::spawn`], with its log (warnings and errors) in `log`.
    pub fn spawn_logged(redis_url: &str, extra: &[&str], log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).expect("create the node's log file");
        Self::spawn_to(redis_url, extra, file.into())
    }

    fn spawn_to(redis_url: &str, extra: &[&str], stderr: std::process::Stdio) -> Self {
        let port = taskherd::local_redis::free_port().expect("free port");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_taskherd"))
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--redis-url", redis_url])
            .args(extra)
            .env("JWT_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn taskherd serve");
        Self { child, port }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown) and wait for exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for child")
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event on the stream, oldest first, read with the store's typed
/// reader (`Store::replay_events`); fails the test if any was trimmed.
pub async fn all_events(store: &Store) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    loop {
        let after = out.last().map_or(EventId::ZERO, |e| e.id);
        let page = store
            .replay_events(after, taskherd::store::MAX_REPLAY_PAGE)
            .await
            .expect("replay events");
        assert!(!page.trimmed, "events were trimmed from the stream");
        out.extend(page.events);
        if !page.more {
            return out;
        }
    }
}

/// How many events of each type the stream holds for `task_id`.
pub fn event_counts(events: &[Event], task_id: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e.task_id == task_id) {
        *counts.entry(e.kind.as_str().to_string()).or_insert(0) += 1;
    }
    counts
}

/// Terminal event types (one per finished task).
pub const TERMINAL_EVENTS: [&str; 4] = ["completed", "failed", "timeout", "cancelled"];

/// Sends `signal` (e.g. "STOP", "CONT") to a process with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// An HTTP client for tests that talk to nodes: a request gives up after 5 s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

/// Waits until the node on 127.0.0.1:`port` answers ready (Redis reached,
/// scripts loaded, not draining), or panics after `deadline`.
pub async fn wait_ready(port: u16, deadline: Duration) {
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/api/ai/tasks/health/ready");
    wait_until("the node is ready", deadline, || async {
        let r = http.get(&url).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

impl ChildNode {
    /// The child's health document while it serves with Redis answering
    /// (None while it does not answer, is still waiting for Redis, or Redis
    /// is away).
    pub async fn health(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/ai/tasks/health", self.port);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let response = client.get(url).send().await.ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        response.json().await.ok()
    }
}

/// A TCP proxy in front of a Redis port that can be paused: while paused no
/// byte moves in either direction, as in a network partition between one
/// node and Redis (other nodes, connected directly, see Redis as usual).
/// It can also cut a connection right after Redis answered, so the command
/// ran but its reply never arrives (a reset between send and reply).
pub struct PausableProxy {
    pub port: u16,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PausableProxy {
    pub async fn start(upstream_port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

        async fn hold(paused: &AtomicBool) {
            while paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        /// Copies `from` to `to`; when `cut` is given and set, the next bytes
        /// read are dropped and the copy ends (closing `to`).
        async fn pipe(
            mut from: impl AsyncRead + Unpin,
            mut to: impl AsyncWrite + Unpin,
            paused: std::sync::Arc<AtomicBool>,
            cut: Option<std::sync::Arc<AtomicBool>>,
        ) {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                hold(&paused).await;
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if cut
                    .as_ref()
                    .is_some_and(|c| c.swap(false, Ordering::SeqCst))
                {
                    return;
                }
                hold(&paused).await;
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let paused = std::sync::Arc::new(AtomicBool::new(false));
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = paused.clone();
        let cut_flag = cut.clone();
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: every connection ends with the proxy.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pipe(client_read, server_write, flag.clone(), None));
                connections.spawn(pipe(
                    server_read,
                    client_write,
                    flag.clone(),
                    Some(cut_flag.clone()),
                ));
            }
        });
        Self {
            port,
            paused,
            cut,
            task,
        }
    }

    /// The next reply Redis sends through the proxy is dropped and that
    /// connection is closed.
    pub fn cut_next_reply(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a reply cut asked for has not happened yet.
    pub fn cut_pending(&self) -> bool {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pause(&self) {
        self.paused.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
