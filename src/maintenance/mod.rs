//! Maintenance loops, run by every node at once: each pass is one atomic
//! script over due entries, so two nodes never handle the same entry twice
//! (the second finds nothing). Running everywhere means no leader election
//! and no single node whose death stops maintenance.
//!
//! - promoter: due delayed tasks -> ready (sleeps until the next due time,
//!   woken early by the `d` signal when a nearer one is added);
//! - reaper: expired leases and attempts past `timeoutMs` -> retry or final
//!   (sleeps until the next deadline, and writes when it will pass next so
//!   that a script granting an earlier deadline, on any node, wakes it with
//!   the `r` signal: a deadline is kept within the signal's delay);
//! - janitor: terminal tasks past retention -> deleted in bounded batches;
//! - auditor: a slow walk over the indexes of live tasks that repairs what
//!   disagrees with the records (an index entry or a record deleted by
//!   hand), so no task stays stuck PROCESSING or QUEUED for want of an entry.

use std::time::Duration;

use crate::shutdown::Shutdown;
use crate::signals::Signals;
use crate::store::{AUDIT_BATCH, Pass, Store};

/// How maintenance behaves.
#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// Longest sleep between promoter / reaper passes (5 s).
    pub max_idle: Duration,
    /// How often the janitor runs (5 min).
    pub cleanup_every: Duration,
    /// Entries per pass (each pass is one short script).
    pub batch: usize,
    /// Pause between audit calls (60 s); one walk over all live tasks takes
    /// (live tasks / 200) calls.
    pub audit_every: Duration,
}

/// Time between cleanup runs unless configured.
pub const DEFAULT_CLEANUP_EVERY: Duration = Duration::from_secs(300);
/// Time between index audits unless configured.
pub const DEFAULT_AUDIT_EVERY: Duration = Duration::from_secs(60);

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            max_idle: Duration::from_secs(5),
            cleanup_every: DEFAULT_CLEANUP_EVERY,
            batch: 500,
            audit_every: DEFAULT_AUDIT_EVERY,
        }
    }
}

/// Runs promoter, reaper, janitor and auditor until shutdown.
pub async fn run(store: Store, signals: Signals, config: MaintenanceConfig, shutdown: Shutdown) {
    tokio::join!(
        promoter(
            store.clone(),
            signals.clone(),
            config.clone(),
            shutdown.clone()
        ),
        reaper(
            store.clone(),
            signals.clone(),
            config.clone(),
            shutdown.clone()
        ),
        janitor(store.clone(), config.clone(), shutdown.clone()),
        auditor(store, config, shutdown),
    );
}

/// How long to sleep after a pass: until the next due entry, capped.
fn wait_after(pass: &Pass, max_idle: Duration, batch: usize) -> Duration {
    if pass.handled as usize >= batch {
        return Duration::ZERO;
    }
    let Some(due) = pass.next_due_ms else {
        return max_idle;
    };
    Duration::from_millis((due - pass.now_ms).clamp(1, max_idle.as_millis() as i64) as u64)
}

async fn promoter(
    store: Store,
    signals: Signals,
    config: MaintenanceConfig,
    mut shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        let wait = match store.promote(config.batch).await {
            Ok(pass) => wait_after(&pass, config.max_idle, config.batch),
            Err(e) => {
                tracing::warn!(error = %e, "promote pass failed");
                config.max_idle.min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = signals.delayed.notified() => {}
            _ = shutdown.wait() => {}
        }
    }
}

async fn reaper(store: Store, signals: Signals, config: MaintenanceConfig, mut shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        let wait = match store.reap_and_plan(config.batch, config.max_idle).await {
            Ok(pass) => {
                pass.ended.iter().for_each(crate::metrics::attempt_ended);
                if pass.handled > 0 {
                    tracing::info!(
                        count = pass.handled,
                        "reaped expired leases / timed-out attempts"
                    );
                }
                // Sleep until the plan the scripts were told (always set by
                // reap_and_plan): a later wake would let a deadline before it
                // pass unseen.
                let wake = pass.wake_ms.unwrap_or(pass.now_ms);
                Duration::from_millis((wake - pass.now_ms).max(0) as u64)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reap pass failed");
                config.max_idle.min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = signals.reap.notified() => {}
            _ = shutdown.wait() => {}
        }
    }
}

async fn janitor(store: Store, config: MaintenanceConfig, mut shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        tokio::select! {
            _ = tokio::time::sleep(config.cleanup_every) => {}
            _ = shutdown.wait() => return,
        }
        let retention = store.config().retention;
        match store.cleanup(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "cleaned up old terminal tasks"),
            Err(e) => tracing::warn!(error = %e, "cleanup failed"),
        }
    }
}

async fn auditor(store: Store, config: MaintenanceConfig, mut shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        tokio::select! {
            _ = tokio::time::sleep(config.audit_every) => {}
            _ = shutdown.wait() => return,
        }
        match store.audit(AUDIT_BATCH).await {
            Ok(a) if a.repaired() > 0 => tracing::warn!(
                ghosts_removed = a.ghosts_removed,
                leases_restored = a.leases_restored,
                queue_entries_restored = a.queue_entries_restored,
                status_entries_moved = a.status_entries_moved,
                "audit repaired indexes that disagreed with task records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit failed"),
        }
    }
}
