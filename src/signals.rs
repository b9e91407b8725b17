//! The node's one pub/sub subscription to the namespace's signal channel.
//!
//! Scripts PUBLISH `w:<agent>` when work becomes ready, `c:<task>:<token>`
//! when that attempt must stop (cancelled, reaped, timed out) and `d` when a delayed task
//! was added. Signals only wake things up: nothing is ever taken from Redis
//! by a blocking command, so a lost signal costs latency, never a task. After
//! a reconnect (signals may have been missed) everything is woken once.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::{Notify, broadcast};

use crate::error::Result;
use crate::shutdown::Shutdown;

/// What the node's components wait on.
#[derive(Clone)]
pub struct Signals {
    /// Work may be ready for an agent this node serves.
    pub work: Arc<Notify>,
    /// A delayed task was added (the promoter re-reads the next due time).
    pub delayed: Arc<Notify>,
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
    }

    fn dispatch(&self, message: &str) {
        if let Some(agent) = message.strip_prefix("w:") {
            if self.ready.receiver_count() > 0 {
                let _ = self.ready.send(Arc::from(agent));
            }
            let served = self
                .served
                .read()
                .map(|s| s.contains(agent))
                .unwrap_or(true);
            if served {
                self.work.notify_one();
            }
        } else if let Some(rest) = message.strip_prefix("c:") {
            if let Some((task, token)) = rest.split_once(':') {
                let _ = self.stop.send((task.to_string(), token.to_string()));
            }
        } else if message == "d" {
            self.delayed.notify_one();
        }
    }
}

/// Subscribes to `channel` and dispatches messages until shutdown. A
/// subscription that cannot be set up (Redis away at start-up) is retried with
/// backoff; meanwhile workers rely on their safety recheck.
pub async fn listen(
    redis_url: String,
    channel: String,
    signals: Signals,
    mut shutdown: Shutdown,
) -> Result<()> {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match subscribe_and_dispatch(&redis_url, &channel, &signals, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "signal subscription failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn subscribe_and_dispatch(
    redis_url: &str,
    channel: &str,
    signals: &Signals,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let subscriber: SubscriberClient =
        crate::store::redis_builder(redis_url)?.build_subscriber_client()?;
    let set_up = async {
        subscriber.init().await?;
        subscriber.subscribe(channel.to_string()).await
    };
    if let Err(e) = set_up.await {
        let _ = subscriber.quit().await;
        return Err(e.into());
    }
    let manager = subscriber.manage_subscriptions();
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    signals.wake_all();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            message = messages.recv() => match message {
                Ok(m) => {
                    if let Some(text) = m.value.as_str() {
                        signals.dispatch(&text);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => signals.wake_all(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            reconnect = reconnects.recv() => {
                if reconnect.is_ok() {
                    tracing::info!("signal subscription reconnected; waking workers");
                }
                signals.wake_all();
            }
        }
    }
    manager.abort();
    let _ = subscriber.quit().await;
    Ok(())
}
