//! Attempts: one tokio task per claimed task, running its handler.
//!
//! An attempt holds a slot and an entry in the node's in-flight table from
//! the claim until its result is written; it stops when its cancellation
//! token fires (lease lost, task cancelled or reaped), when `timeoutMs`
//! passes (a TIMEOUT attempt) or when shutdown hands it back (QUEUED, no
//! attempt spent). A handler that panics fails its attempt (retryable). The
//! result goes to the finisher; a stopped attempt writes nothing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::finisher::{Finish, FinishJob};
use super::{Handler, HandlerError, Output, Runtime, TaskContext};
use crate::store::{ClaimedTask, Completion, Failure};

/// An attempt running on this node, by task id in `Inner::in_flight`.
pub(super) struct InFlight {
    pub(super) token: String,
    pub(super) agent: String,
    pub(super) cancel: CancellationToken,
    /// Local deadline of the lease as last renewed (measured from before the
    /// renewing call was sent, so it errs early).
    pub(super) lease_valid_until: Instant,
}

/// Frees an attempt's slot however the attempt's task ends (a panic
/// included): a stale in-flight entry would be heartbeated forever and keep
/// its task PROCESSING with a live lease.
struct SlotGuard {
    runtime: Runtime,
    task_id: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let inner = &self.runtime.inner;
        if let Ok(mut m) = inner.in_flight.lock() {
            m.remove(&self.task_id);
        }
        drop(self.permit.take());
        inner.slot_freed.notify_one();
    }
}

/// Runs a handler, turning a panic into a failed (retryable) attempt, so a
/// handler that crashes every time ends FAILED after its attempts. The panic
/// text is logged, not stored: it may show internals.
async fn run_caught(handler: Arc<dyn Handler>, ctx: TaskContext) -> HandlerResult {
    let run = async move {
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(ctx)))?;
        AssertUnwindSafe(future).catch_unwind().await
    };
    run.await.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %text, "handler panicked");
        Err(HandlerError::retryable("handler panicked"))
    })
}

type HandlerResult = std::result::Result<Output, HandlerError>;

impl Runtime {
    pub(super) fn start_attempt(
        &self,
        task: ClaimedTask,
        permit: OwnedSemaphorePermit,
        finish_tx: mpsc::Sender<FinishJob>,
        claim_sent_at: Instant,
    ) {
        let cancel = CancellationToken::new();
        // Measured from before the claim was sent: the local view of the lease
        // ends no later than Redis' own.
        let lease_valid_until = claim_sent_at + self.inner.config.lease;
        if let Ok(mut m) = self.inner.in_flight.lock() {
            m.insert(
                task.id.clone(),
                InFlight {
                    token: task.token.clone(),
                    agent: task.agent_id.clone(),
                    cancel: cancel.clone(),
                    lease_valid_until,
                },
            );
        }
        let rt = self.clone();
        tokio::spawn(async move {
            let id = task.id.clone();
            let _slot = SlotGuard {
                runtime: rt.clone(),
                task_id: id.clone(),
                permit: Some(permit),
            };
            let span = tracing::info_span!("attempt", task_id = %id, agent_id = %task.agent_id, attempt = task.retry_count + 1);
            let finish = rt.attempt(task, cancel).instrument(span).await;
            if let Some(finish) = finish {
                let (done, acked) = oneshot::channel();
                if finish_tx.send(FinishJob { finish, done }).await.is_ok() {
                    let _ = acked.await;
                }
            }
        });
    }

    /// Runs one attempt; returns what to record (None: write nothing).
    async fn attempt(&self, task: ClaimedTask, cancel: CancellationToken) -> Option<Finish> {
        let Some(handler) = self.handler_for(&task.agent_id) else {
            return Some(Finish::Requeue {
                id: task.id,
                token: task.token,
            });
        };
        let ctx = TaskContext {
            task: task.clone(),
            cancel: cancel.clone(),
        };
        let timeout = Duration::from_millis(task.timeout_ms.max(1));
        let hand_back = self.inner.hand_back.clone();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                tracing::info!("attempt stopped: lease lost or task cancelled");
                return None;
            }
            _ = hand_back.cancelled() => {
                cancel.cancel();
                return Some(Finish::Requeue { id: task.id, token: task.token });
            }
            _ = tokio::time::sleep(timeout) => {
                cancel.cancel();
                return Some(Finish::Fail(Failure {
                    id: task.id,
                    token: task.token,
                    error_message: format!("attempt exceeded timeoutMs ({} ms)", task.timeout_ms),
                    retryable: true,
                    timed_out: true,
                }));
            }
            r = run_caught(handler, ctx) => r,
        };
        cancel.cancel();
        Some(match result {
            Ok(out) => Finish::Complete(Completion {
                id: task.id,
                token: task.token,
                output_data: out.output_data,
                actual_cost: out.actual_cost,
                quality_score: out.quality_score,
                metrics: out.metrics,
            }),
            Err(e) => Finish::Fail(Failure {
                id: task.id,
                token: task.token,
                error_message: e.message,
                retryable: e.retryable,
                timed_out: false,
            }),
        })
    }
}
