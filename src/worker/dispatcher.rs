//! The dispatcher: the claim loop.
//!
//! It claims as many tasks as there are free slots, from every served agent
//! within its concurrency limit, in one script call, and starts an attempt
//! for each. When a claim comes back short it waits for a wake-up signal
//! (work became ready), a freed slot (when an agent's own limit held claims
//! back), or the long safety recheck; never a fixed poll. Claim errors back
//! off up to 2 s. It stops claiming when shutdown begins.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Runtime;
use super::finisher::FinishJob;
use crate::shutdown::Shutdown;
use crate::store::ClaimRequest;

/// Most agents one claim call names (the claim script's bound).
const MAX_AGENTS_PER_CLAIM: usize = 100;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Runtime {
    /// Claims until `shutdown`; returns once it stops claiming.
    pub(super) async fn dispatch(
        &self,
        mut shutdown: Shutdown,
        finish_tx: mpsc::Sender<FinishJob>,
    ) {
        let inner = &self.inner;
        let mut error_backoff = Duration::from_millis(50);
        while !shutdown.is_triggered() {
            let free = inner.slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = inner.slot_freed.notified() => {}
                    _ = shutdown.wait() => {}
                }
                continue;
            }
            let (agents, capped) = self.quotas(free);
            if agents.is_empty() {
                self.wait_for_work(&mut shutdown, capped).await;
                continue;
            }
            let want = agents.iter().map(|(_, q)| *q).sum::<usize>().min(free);
            let request = ClaimRequest {
                worker_id: inner.config.node_id.clone(),
                lease: inner.config.lease,
                max_tasks: want,
                agents,
            };
            let claim_sent_at = Instant::now();
            match inner.store.claim(&request).await {
                Ok(tasks) => {
                    error_backoff = Duration::from_millis(50);
                    inner
                        .counters
                        .last_claim_ok_at
                        .store(unix_ms(), Ordering::Relaxed);
                    inner
                        .counters
                        .claimed
                        .fetch_add(tasks.len() as u64, Ordering::Relaxed);
                    let short = tasks.len() < want;
                    for task in tasks {
                        crate::metrics::task_started(&task);
                        match inner.slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                self.start_attempt(task, permit, finish_tx.clone(), claim_sent_at)
                            }
                            // Cannot happen (claims never exceed free slots); hand it back.
                            Err(_) => {
                                let _ = inner.store.requeue(&[(task.id, task.token)]).await;
                            }
                        }
                    }
                    if short {
                        self.wait_for_work(&mut shutdown, capped).await;
                    }
                }
                Err(e) => {
                    inner.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "claim failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = shutdown.wait() => {}
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Waits for a wake-up signal, the safety recheck or shutdown; also for a
    /// freed slot when an agent's own limit held claims back (its finishing
    /// attempt is then the only event that makes its ready tasks claimable).
    async fn wait_for_work(&self, shutdown: &mut Shutdown, wake_on_freed_slot: bool) {
        let inner = &self.inner;
        tokio::select! {
            _ = inner.signals.work.notified() => {}
            _ = inner.slot_freed.notified(), if wake_on_freed_slot => {}
            _ = tokio::time::sleep(inner.config.idle_recheck) => {}
            _ = shutdown.wait() => {}
        }
    }

    /// Agents to claim from, with how many each may take now; and whether
    /// some agent's concurrency limit (not the free slots) capped its share.
    fn quotas(&self, free: usize) -> (Vec<(String, usize)>, bool) {
        let mut per_agent: HashMap<String, usize> = HashMap::new();
        if let Ok(m) = self.inner.in_flight.lock() {
            for f in m.values() {
                *per_agent.entry(f.agent.clone()).or_default() += 1;
            }
        }
        let limits = self
            .inner
            .agent_limits
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        let mut capped = false;
        // One claim names at most 100 agents; with more, the window rotates
        // from claim to claim so that every agent is served.
        let mut served = self.served_agents();
        if served.len() > MAX_AGENTS_PER_CLAIM {
            let start = self
                .inner
                .agent_window
                .fetch_add(MAX_AGENTS_PER_CLAIM, Ordering::Relaxed);
            let n = served.len();
            served.rotate_left(start % n);
        }
        let agents = served
            .into_iter()
            .filter_map(|agent| {
                let limit = limits
                    .get(&agent)
                    .copied()
                    .unwrap_or(self.inner.config.concurrency);
                let room = limit.saturating_sub(per_agent.get(&agent).copied().unwrap_or(0));
                capped |= room < free;
                let quota = room.min(free);
                (quota > 0).then_some((agent, quota))
            })
            .take(MAX_AGENTS_PER_CLAIM)
            .collect();
        (agents, capped)
    }
}
