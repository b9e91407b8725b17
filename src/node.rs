//! One node: store, signal subscription, event hub, workers, maintenance and
//! the HTTP server, wired together.
//!
//! Start-up: the node listens at once and waits for Redis (see [`run`]);
//! then the store, the event hub, the signal subscription, workers,
//! maintenance and the node registry start, and the APIs open.
//!
//! Shutdown order (on the shutdown signal):
//! 1. Socket.IO clients are told the node drains and their connections
//!    close (they reconnect elsewhere); workers stop claiming; in-flight attempts get the grace period, the rest
//!    are handed back to QUEUED without spending an attempt; results flushed;
//! 2. maintenance loops stop;
//! 3. the HTTP server stops (health answered "draining" until here);
//! 4. the event hub stops: its reader's connection closes and open
//!    subscriptions end after what was already sent to them;
//! 5. the node leaves the live-node list; the signal subscription and the
//!    Redis pool close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::Server;
use poem::listener::{Acceptor, TcpAcceptor};

use crate::api::{self, ApiConfig, AppState, NodeContext};
use crate::auth::{Auth, AuthConfig};
use crate::clock::Clock;
use crate::error::Result;
use crate::events::{self, Hub};
use crate::maintenance::{self, MaintenanceConfig};
use crate::queue::Queue;
use crate::shutdown::{self, Shutdown};
use crate::signals::{self, Signals};
use crate::store::{Store, StoreConfig};
use crate::worker::{Registry, Runtime, WorkerConfig};

/// Everything a node needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Redis to use.
    pub redis_url: String,
    /// Redis connections in the pool.
    pub redis_pool: usize,
    /// Store settings.
    pub store: StoreConfig,
    /// Worker settings (None: no workers on this node).
    pub worker: Option<WorkerConfig>,
    /// Maintenance settings (None: no maintenance on this node).
    pub maintenance: Option<MaintenanceConfig>,
    /// Clock for scripts (Redis' own in production).
    pub clock: Clock,
    /// HTTP settings.
    pub api: ApiConfig,
    /// Token settings.
    pub auth: AuthConfig,
    /// How long start-up waits for Redis to serve ([`DEFAULT_REDIS_WAIT`]).
    pub redis_wait: Duration,
}

/// A started node.
pub struct Node {
    /// The node's store handle.
    pub store: Store,
    /// The service its APIs call.
    pub queue: Queue,
    /// The node's one reader of the event stream, fanned out in memory.
    pub events: Hub,
    /// The node's workers.
    pub runtime: Option<Runtime>,
    /// The node's Socket.IO feed.
    pub feed: api::ws::Feed,
    /// The follower behind the node's GraphQL subscriptions.
    pub graphql: api::graphql::Live,
    /// Where it listens.
    pub local_addr: std::net::SocketAddr,
}

/// How long a node starting waits for Redis unless configured: long enough
/// for a Redis restart that replays a large AOF.
pub const DEFAULT_REDIS_WAIT: Duration = Duration::from_secs(60);

/// Runs a node on `listener` until `shutdown`, then stops in the documented
/// order. `on_start` is called once everything runs (tests use it).
///
/// The node listens at once: while it waits for Redis (refused, reset, or
/// `LOADING` after a restart: retried with backoff, a log line per attempt,
/// for up to `redis_wait`), liveness answers alive, readiness not ready, the
/// docs are served and the APIs answer 503 (see [`api::Gate`]).
pub async fn run(
    config: NodeConfig,
    registry: Registry,
    listener: tokio::net::TcpListener,
    mut shutdown: Shutdown,
    on_start: impl FnOnce(Node),
) -> Result<()> {
    let auth = Auth::new(config.auth.clone())?;
    let node_id = config
        .worker
        .as_ref()
        .map(|w| w.node_id.clone())
        .unwrap_or_else(default_node_id);
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    let local_addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| crate::Error::Config("listener has no address".into()))?;
    let (inner_trigger, inner_shutdown) = shutdown::channel();
    let gate = api::Gate::new(&node_id);
    let mut http_shutdown = inner_shutdown.clone();
    let server = tokio::spawn(
        Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
            api::routes(&config.api, gate.clone()),
            async move { http_shutdown.wait().await },
            Some(Duration::from_secs(5)),
        ),
    );
    let started = async {
        let Some(store) = wait_for_redis(&config, &mut shutdown).await? else {
            return Ok(None);
        };
        // Before anything else is spawned: a failure here leaves only the
        // HTTP server to stop.
        match Hub::start(&store, events::DEFAULT_BUFFER).await {
            Ok(hub) => Ok(Some((store, hub))),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    };
    let (store, hub) = match started.await {
        Ok(Some(started)) => started,
        outcome => {
            inner_trigger.trigger();
            let _ = server.await;
            return outcome.map(|_| ());
        }
    };
    // Managed Redis services may refuse CONFIG: the policy is then "unknown"
    // (warned about once, not reported as degraded).
    let policy = match store.maxmemory_policy().await {
        Ok(p) if !p.is_empty() => p,
        _ => {
            tracing::warn!(
                "could not read Redis' maxmemory-policy (CONFIG refused?): make sure it is noeviction"
            );
            "unknown".to_string()
        }
    };
    if policy != "noeviction" && policy != "unknown" {
        tracing::warn!(
            policy = %policy,
            "Redis maxmemory-policy is not noeviction: under memory pressure Redis may evict queued tasks"
        );
    }

    let signals = Signals::default();
    let signal_task = tokio::spawn(signals::listen(
        store.clone(),
        signals.clone(),
        inner_shutdown.clone(),
    ));
    let runtime = config
        .worker
        .clone()
        .map(|w| Runtime::new(store.clone(), registry, w, signals.clone()));
    let worker_task = runtime.clone().map(|rt| {
        let s = shutdown.clone();
        tokio::spawn(async move { rt.run(s).await })
    });
    let maintenance_task = config.maintenance.clone().map(|m| {
        tokio::spawn(maintenance::run(
            store.clone(),
            signals.clone(),
            m,
            inner_shutdown.clone(),
        ))
    });

    let mut roles = vec!["api".to_string()];
    if runtime.is_some() {
        roles.push("worker".into());
    }
    if maintenance_task.is_some() {
        roles.push("maintenance".into());
    }
    let registry_task = tokio::spawn(crate::nodes::run(
        store.clone(),
        crate::nodes::NodeInfo {
            node_id: node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: store.now_ms().await.unwrap_or(0),
            last_seen_at: 0,
            roles,
            worker: None,
        },
        runtime.clone(),
        crate::nodes::DEFAULT_EVERY,
        inner_shutdown.clone(),
    ));

    let queue = Queue::new(store.clone(), signals.clone());
    let (feed, feed_endpoint) = api::ws::Feed::start(
        queue.clone(),
        auth.clone(),
        hub.clone(),
        config.api.feed.clone(),
        config.api.cors_origins.clone(),
    );
    let graphql = api::graphql::Live::start(
        queue.clone(),
        hub.clone(),
        config.api.feed.clone(),
        config.api.graphql.clone(),
    );
    gate.open(
        Arc::new(AppState {
            queue: queue.clone(),
            auth,
            limiter: api::ratelimit::RateLimiter::new(config.api.rate_limit_per_s),
            node: NodeContext {
                id: node_id.clone(),
                maxmemory_policy: policy,
                runtime: runtime.clone(),
            },
            config: config.api.clone(),
            feed: feed.clone(),
            graphql: graphql.clone(),
        }),
        feed_endpoint,
    );
    tracing::info!(node_id = %node_id, addr = %local_addr, "node started");
    on_start(Node {
        store: store.clone(),
        queue: queue.clone(),
        events: hub.clone(),
        runtime,
        feed: feed.clone(),
        graphql: graphql.clone(),
        local_addr,
    });

    shutdown.wait().await;
    tracing::info!("shutting down: workers first");
    queue.begin_draining();
    // Socket.IO clients are told why, then reconnect (to another node).
    feed.close().await;
    // GraphQL WebSocket clients are closed with NODE_DRAINING, and reconnect.
    graphql.close();
    if let Some(task) = worker_task
        && let Ok(Err(e)) = task.await
    {
        tracing::error!(error = %e, "worker runtime ended with an error");
    }
    inner_trigger.trigger();
    if let Some(task) = maintenance_task {
        let _ = task.await;
    }
    let _ = server.await;
    hub.stop().await;
    let _ = registry_task.await;
    let _ = signal_task.await;
    store.close().await;
    tracing::info!("node stopped");
    Ok(())
}

/// Connects the node's store, retrying while Redis cannot serve yet
/// (unreachable, reset, `LOADING`, ...) for up to `config.redis_wait`; `None`
/// when `shutdown` came first. Any other failure (a bad URL, a refused
/// password, a script Redis rejects) ends the wait at once.
async fn wait_for_redis(config: &NodeConfig, shutdown: &mut Shutdown) -> Result<Option<Store>> {
    let store_config = StoreConfig {
        script_observer: Some(crate::metrics::script_call),
        ..config.store.clone()
    };
    let began = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let connect = Store::connect(
            &config.redis_url,
            config.redis_pool,
            store_config.clone(),
            config.clock.clone(),
        );
        let connected = tokio::select! {
            connected = connect => connected,
            _ = shutdown.wait() => return Ok(None),
        };
        let e = match connected {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(
                        attempt,
                        waited_ms = began.elapsed().as_millis() as u64,
                        "Redis is ready"
                    );
                }
                return Ok(Some(store));
            }
            Err(e) => e,
        };
        let waited = began.elapsed();
        if !e.is_redis_not_serving() || waited + backoff > config.redis_wait {
            return Err(if e.is_redis_not_serving() {
                crate::Error::Config(format!(
                    "Redis did not become ready within {} s (--redis-wait-s): {e}",
                    config.redis_wait.as_secs()
                ))
            } else {
                e
            });
        }
        tracing::warn!(
            attempt,
            error = %e,
            retry_in_ms = backoff.as_millis() as u64,
            gives_up_in_s = (config.redis_wait - waited).as_secs(),
            "waiting for Redis"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A node id unique enough to tell nodes apart in logs and health: host
/// name, process id and a random suffix.
pub fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let suffix: u32 = rand::random::<u32>() % 0x10000;
    format!("{host}-{}-{suffix:04x}", std::process::id())
}
