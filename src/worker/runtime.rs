//! The worker runtime every node runs (unless switched off).
//!
//! Parts, one lifecycle each:
//! - dispatcher: claims as many tasks as there are free slots, in one script
//!   call; when a claim comes back short it waits for a wake-up signal (work
//!   became ready), a freed slot, or a long safety recheck; never a fixed poll;
//! - attempts: one tokio task per claimed task; stopped when the lease is lost,
//!   the task is cancelled or reaped (signal or heartbeat), `timeoutMs`
//!   passes, or shutdown hands it back;
//! - finisher: group-commits results (complete, fail, requeue) in batches;
//! - heartbeater: extends every lease this node holds in one call per interval
//!   and stops attempts whose lease is lost (or could not be renewed in time);
//! - agent refresher: serves agents whose record says HTTP.
//!
//! Shutdown order: stop claiming; let attempts finish within the grace period;
//! hand the rest back (QUEUED, no attempt spent); flush the finisher; stop the
//! heartbeater. A lease never outlives its heartbeats by more than one lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::attempt::InFlight;
use super::finisher::FinishJob;
use super::{Handler, Registry};
use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::signals::Signals;
use crate::store::Store;

/// How a node's workers behave.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Recorded on claimed tasks and shown in health.
    pub node_id: String,
    /// Most attempts this node runs at once (default 10).
    pub concurrency: usize,
    /// Lease length; heartbeats every third of it (default 30 s).
    pub lease: Duration,
    /// How long in-flight attempts may finish after shutdown starts (30 s).
    pub grace: Duration,
    /// Safety recheck when no wake-up came (signals lost on a reconnect are
    /// also covered by a wake-up on reconnect). Default 5 s.
    pub idle_recheck: Duration,
    /// How often agent records are re-read for HTTP agents (10 s).
    pub agent_refresh: Duration,
}

/// Attempts a node runs at once unless configured.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// In-node workers' lease unless configured (external workers name theirs:
/// [`crate::queue::DEFAULT_LEASE`] when they do not).
pub const DEFAULT_WORKER_LEASE: Duration = Duration::from_secs(30);
/// How long in-flight attempts may finish at shutdown unless configured.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            node_id: "node".into(),
            concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_WORKER_LEASE,
            grace: DEFAULT_GRACE,
            idle_recheck: Duration::from_secs(5),
            agent_refresh: Duration::from_secs(10),
        }
    }
}

/// What health reports about a node's workers.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// Node id.
    pub node_id: String,
    /// Claiming (false before start, while draining and after stop).
    pub running: bool,
    /// Slots.
    pub concurrency: usize,
    /// Attempts running now.
    pub in_flight: usize,
    /// Agents served by this node.
    pub agents: Vec<String>,
    /// Tasks claimed since start.
    pub claimed_total: u64,
    /// Attempts completed.
    pub completed_total: u64,
    /// Attempts failed (retried or final).
    pub failed_total: u64,
    /// Results refused by the lease fence (stale attempts).
    pub refused_total: u64,
    /// Tasks handed back at shutdown.
    pub requeued_total: u64,
    /// Redis errors seen by the workers.
    pub redis_errors_total: u64,
    /// Unix ms of the last successful claim call (None before the first).
    pub last_claim_ok_at: Option<i64>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) claimed: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) requeued: AtomicU64,
    pub(super) redis_errors: AtomicU64,
    pub(super) last_claim_ok_at: AtomicI64,
}

/// A node's worker runtime; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) registry: Registry,
    pub(super) config: WorkerConfig,
    pub(super) signals: Signals,
    pub(super) slots: Arc<Semaphore>,
    pub(super) slot_freed: Notify,
    pub(super) in_flight: Mutex<HashMap<String, InFlight>>,
    pub(super) http_agents: RwLock<HashMap<String, Arc<dyn Handler>>>,
    pub(super) agent_limits: RwLock<HashMap<String, usize>>,
    pub(super) hand_back: CancellationToken,
    pub(super) running: AtomicBool,
    /// One client (and its keep-alive connections) for every HTTP agent.
    pub(super) http_client: reqwest::Client,
    /// Where the next claim's window of at most 100 agents starts.
    pub(super) agent_window: std::sync::atomic::AtomicUsize,
    pub(super) counters: Counters,
}

impl Runtime {
    /// A runtime for `registry`'s agents (plus HTTP agents found in Redis).
    pub fn new(store: Store, registry: Registry, config: WorkerConfig, signals: Signals) -> Self {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                config,
                signals,
                slots,
                slot_freed: Notify::new(),
                in_flight: Mutex::new(HashMap::new()),
                http_agents: RwLock::new(HashMap::new()),
                agent_limits: RwLock::new(HashMap::new()),
                hand_back: CancellationToken::new(),
                running: AtomicBool::new(false),
                http_client: reqwest::Client::new(),
                agent_window: std::sync::atomic::AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        }
    }

    /// A snapshot for health and the node list.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.inner.counters;
        let last = c.last_claim_ok_at.load(Ordering::Relaxed);
        WorkerStats {
            node_id: self.inner.config.node_id.clone(),
            running: self.inner.running.load(Ordering::Relaxed),
            concurrency: self.inner.config.concurrency,
            in_flight: self.in_flight_len(),
            agents: self.served_agents(),
            claimed_total: c.claimed.load(Ordering::Relaxed),
            completed_total: c.completed.load(Ordering::Relaxed),
            failed_total: c.failed.load(Ordering::Relaxed),
            refused_total: c.refused.load(Ordering::Relaxed),
            requeued_total: c.requeued.load(Ordering::Relaxed),
            redis_errors_total: c.redis_errors.load(Ordering::Relaxed),
            last_claim_ok_at: (last > 0).then_some(last),
        }
    }

    fn in_flight_len(&self) -> usize {
        self.inner.in_flight.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub(super) fn served_agents(&self) -> Vec<String> {
        let mut agents: Vec<String> = self.inner.registry.agents().cloned().collect();
        if let Ok(http) = self.inner.http_agents.read() {
            agents.extend(
                http.keys()
                    .filter(|a| self.inner.registry.get(a).is_none())
                    .cloned(),
            );
        }
        agents.sort();
        agents
    }

    pub(super) fn handler_for(&self, agent: &str) -> Option<Arc<dyn Handler>> {
        self.inner
            .registry
            .get(agent)
            .or_else(|| self.inner.http_agents.read().ok()?.get(agent).cloned())
    }

    /// Runs until `shutdown`, then drains as documented above.
    pub async fn run(&self, shutdown: Shutdown) -> Result<()> {
        let (finish_tx, finish_rx) = mpsc::channel::<FinishJob>(4096);
        let finisher = tokio::spawn(self.clone().finisher(finish_rx));
        let background = CancellationToken::new();
        let heartbeater = tokio::spawn(self.clone().heartbeater(background.clone()));
        let stopper = tokio::spawn(self.clone().stop_listener(background.clone()));
        let refresher = tokio::spawn(self.clone().agent_refresher(background.clone()));

        self.refresh_agents().await;
        self.inner.running.store(true, Ordering::Relaxed);
        self.dispatch(shutdown, finish_tx).await;
        self.inner.running.store(false, Ordering::Relaxed);

        // Grace period for in-flight attempts, then hand the rest back.
        let grace_end = tokio::time::Instant::now() + self.inner.config.grace;
        while self.in_flight_len() > 0 && tokio::time::Instant::now() < grace_end {
            let _ = tokio::time::timeout_at(grace_end, self.inner.slot_freed.notified()).await;
        }
        if self.in_flight_len() > 0 {
            tracing::info!(
                count = self.in_flight_len(),
                "grace period over; handing tasks back"
            );
            self.inner.hand_back.cancel();
            let hand_back_end = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.in_flight_len() > 0 && tokio::time::Instant::now() < hand_back_end {
                let _ =
                    tokio::time::timeout_at(hand_back_end, self.inner.slot_freed.notified()).await;
            }
        }
        // Attempts hold the finisher's senders; once they are gone it drains and ends.
        // Attempts whose handler never yields (blocking code) would hold the
        // finisher forever: stop waiting after a bound; their leases expire.
        if tokio::time::timeout(Duration::from_secs(15), finisher)
            .await
            .is_err()
        {
            tracing::error!("attempts did not stop after hand-back; leaving them to lease expiry");
        }
        background.cancel();
        let _ = tokio::join!(heartbeater, stopper, refresher);
        Ok(())
    }
}
