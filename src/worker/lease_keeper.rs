//! The lease keeper: keeps this node's leases alive and stops attempts
//! that lost theirs.
//!
//! The heartbeater renews every lease the node holds in one call per third
//! of a lease; an attempt whose lease was not renewed (reaped, re-delivered)
//! or could not be renewed in time is stopped, so it never outlives its
//! lease. The stop listener stops attempts named by stop signals (a cancel or
//! a reap on any node) at once, without waiting for the next heartbeat.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::store::LeaseState;

impl Runtime {
    /// Renews every lease this node holds, once per third of a lease.
    pub(super) async fn heartbeater(self, stop: CancellationToken) {
        let lease = self.inner.config.lease;
        let every = (lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let leases: Vec<(String, String)> = match self.inner.in_flight.lock() {
                Ok(m) => m
                    .iter()
                    .map(|(id, f)| (id.clone(), f.token.clone()))
                    .collect(),
                Err(_) => continue,
            };
            if leases.is_empty() {
                continue;
            }
            let sent_at = Instant::now();
            // Bounded: a call that hangs (Redis unreachable, commands queued
            // until the client's 10 s timeout) must not hold back the local
            // expiry check below, or an attempt would outlive its lease.
            let renewal =
                tokio::time::timeout(every, self.inner.store.heartbeat(&leases, lease)).await;
            match renewal {
                Ok(Ok(states)) => {
                    if let Ok(mut m) = self.inner.in_flight.lock() {
                        for ((id, token), state) in leases.iter().zip(states) {
                            let Some(f) = m.get_mut(id).filter(|f| &f.token == token) else {
                                continue;
                            };
                            if state == LeaseState::Held {
                                f.lease_valid_until = sent_at + lease;
                            } else {
                                tracing::info!(task_id = %id, ?state, "lease not renewed; stopping attempt");
                                f.cancel.cancel();
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.inner
                        .counters
                        .redis_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                Err(_) => {
                    self.inner
                        .counters
                        .redis_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(timeout = ?every, "heartbeat got no answer in time");
                }
            }
            // A lease that could not be renewed in time is presumed lost.
            let now = Instant::now();
            if let Ok(m) = self.inner.in_flight.lock() {
                for (id, f) in m.iter().filter(|(_, f)| f.lease_valid_until <= now) {
                    tracing::warn!(task_id = %id, "lease expired without renewal; stopping attempt");
                    f.cancel.cancel();
                }
            }
        }
    }

    /// Stops attempts named by stop signals (cancel or reap on any node).
    pub(super) async fn stop_listener(self, stop: CancellationToken) {
        let mut rx = self.inner.signals.stop.subscribe();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = rx.recv() => match msg {
                    Ok((id, token)) => {
                        if let Ok(m) = self.inner.in_flight.lock()
                            && let Some(f) = m.get(&id).filter(|f| f.token == token)
                        {
                            f.cancel.cancel();
                        }
                    }
                    // Missed signals: the next heartbeat reports those leases.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }
}
