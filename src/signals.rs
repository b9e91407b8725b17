//! The node's one subscription to the namespace's signal channel, and the
//! wake-ups it drives.
//!
//! Scripts signal when work becomes ready, when an attempt must stop
//! (cancelled, reaped, timed out), when a delayed task was added and when a
//! deadline was granted before the reapers' next pass (the
//! channel and its messages are the store's: [`Signal`]). Signals only wake
//! things up: nothing is ever taken from Redis by a blocking command, so a
//! lost signal costs latency, never a task. After a reconnect (signals may
//! have been missed) everything is woken once.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tokio::sync::{Notify, broadcast};

use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::store::{Signal, SignalSubscription, Store};

/// What the node's components wait on.
#[derive(Clone)]
pub struct Signals {
    /// Work may be ready for an agent this node serves.
    pub work: Arc<Notify>,
    /// A delayed task was added (the promoter re-reads the next due time).
    pub delayed: Arc<Notify>,
    /// A deadline before the reaper's planned pass was granted (the reaper
    /// plans again).
    pub reap: Arc<Notify>,
    /// (task id, lease token) of attempts that must stop.
    pub stop: broadcast::Sender<(String, String)>,
    /// Agents this node's workers serve; wake-ups for others are ignored.
    pub served: Arc<RwLock<HashSet<String>>>,
    /// Every agent that got ready work, for long-polling external workers
    /// (sent only while someone listens).
    pub ready: broadcast::Sender<Arc<str>>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            work: Arc::new(Notify::new()),
            delayed: Arc::new(Notify::new()),
            reap: Arc::new(Notify::new()),
            stop: broadcast::channel(4096).0,
            served: Arc::new(RwLock::new(HashSet::new())),
            ready: broadcast::channel(1024).0,
        }
    }
}

impl Signals {
    /// Wakes every waiter (after a reconnect, when signals may be lost).
    pub fn wake_all(&self) {
        self.work.notify_one();
        self.delayed.notify_one();
        self.reap.notify_one();
    }

    fn dispatch(&self, signal: Signal) {
        match signal {
            Signal::Work(agent) => {
                if self.ready.receiver_count() > 0 {
                    let _ = self.ready.send(Arc::from(agent.as_str()));
                }
                let served = self
                    .served
                    .read()
                    .map(|s| s.contains(&agent))
                    .unwrap_or(true);
                if served {
                    self.work.notify_one();
                }
            }
            Signal::Stop { task_id, token } => {
                let _ = self.stop.send((task_id, token));
            }
            Signal::Delayed => self.delayed.notify_one(),
            Signal::Reap => self.reap.notify_one(),
            Signal::Reconnected => {
                tracing::info!("signal subscription reconnected; waking workers");
                self.wake_all();
            }
            Signal::Lagged => self.wake_all(),
        }
    }
}

/// Subscribes to the store's signal channel and dispatches signals until
/// shutdown. A subscription that cannot be set up (Redis away at start-up)
/// is retried with backoff; meanwhile workers rely on their safety recheck.
pub async fn listen(store: Store, signals: Signals, mut shutdown: Shutdown) -> Result<()> {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match store.subscribe_signals().await {
            Ok(subscription) => {
                dispatch_until_shutdown(subscription, &signals, &mut shutdown).await;
                return Ok(());
            }
            Err(e) => tracing::warn!(error = %e, "signal subscription failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn dispatch_until_shutdown(
    mut subscription: SignalSubscription,
    signals: &Signals,
    shutdown: &mut Shutdown,
) {
    // Signals sent before the subscription was in place are lost.
    signals.wake_all();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            signal = subscription.next() => match signal {
                Some(signal) => signals.dispatch(signal),
                None => break,
            },
        }
    }
    subscription.close().await;
}
