//! The finisher: group-commits attempt results (complete, fail, requeue).
//!
//! Attempts send their result over a channel and wait for its
//! acknowledgement; whatever queued up while the previous batch was being
//! written goes out in one script call per kind. Writes are retried while
//! Redis is away, for at most one lease (after that the lease is gone and the
//! task is re-delivered anyway).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Runtime;
use crate::store::{Completion, Failure};

/// What an attempt leaves to be written.
pub(super) enum Finish {
    Complete(Completion),
    Fail(Failure),
    Requeue { id: String, token: String },
}

/// One result on its way to the finisher; `done` fires once it is written
/// (or given up on), so the attempt holds its slot until then.
pub(super) struct FinishJob {
    pub(super) finish: Finish,
    pub(super) done: oneshot::Sender<()>,
}

impl Runtime {
    /// Group commit of results: whatever queued up while the previous batch
    /// was being written goes out in one call per kind.
    pub(super) async fn finisher(self, mut rx: mpsc::Receiver<FinishJob>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < crate::store::MAX_CLAIM {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (mut completes, mut fails, mut requeues, mut acks) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for job in jobs {
                match job.finish {
                    Finish::Complete(c) => completes.push(c),
                    Finish::Fail(f) => fails.push(f),
                    Finish::Requeue { id, token } => requeues.push((id, token)),
                }
                acks.push(job.done);
            }
            self.write_results(&completes, &fails, &requeues).await;
            for ack in acks {
                let _ = ack.send(());
            }
        }
    }

    async fn write_results(
        &self,
        completes: &[Completion],
        fails: &[Failure],
        requeues: &[(String, String)],
    ) {
        let store = &self.inner.store;
        let c = &self.inner.counters;
        // Results are retried while Redis is away, up to one lease: after
        // that the lease is gone anyway and the task will be re-delivered.
        let give_up = Instant::now() + self.inner.config.lease;
        let mut backoff = Duration::from_millis(50);
        let mut pending = (
            !completes.is_empty(),
            !fails.is_empty(),
            !requeues.is_empty(),
        );
        let mut fails: Vec<Failure> = fails.to_vec();
        while pending.0 || pending.1 || pending.2 {
            if pending.0 {
                match store.complete(completes).await {
                    Ok(results) => {
                        pending.0 = false;
                        for (r, done) in results.into_iter().zip(completes) {
                            match r {
                                Ok(ended) => {
                                    if let Some(end) = &ended {
                                        crate::metrics::attempt_completed(end, done);
                                    }
                                    c.completed.fetch_add(1, Ordering::Relaxed);
                                }
                                // A result the queue cannot store (too large, not a
                                // finite number) fails the task for good, with the reason.
                                Err(crate::Error::Validation(why)) => {
                                    tracing::warn!(task_id = %done.id, reason = %why, "result refused; failing the task");
                                    fails.push(Failure {
                                        id: done.id.clone(),
                                        token: done.token.clone(),
                                        error_message: format!("result refused: {why}"),
                                        retryable: false,
                                        timed_out: false,
                                    });
                                    pending.1 = true;
                                }
                                Err(e) => {
                                    tracing::info!(error = %e, "completion refused");
                                    c.refused.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) => pending.0 = self.keep_trying(&e),
                }
            }
            if pending.1 {
                match store.fail(&fails).await {
                    Ok(results) => {
                        pending.1 = false;
                        for r in results {
                            match r {
                                Ok(failed) => {
                                    crate::metrics::attempt_ended(&failed.attempt);
                                    c.failed.fetch_add(1, Ordering::Relaxed)
                                }
                                Err(e) => {
                                    tracing::info!(error = %e, "failure report refused");
                                    c.refused.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                    }
                    Err(e) => pending.1 = self.keep_trying(&e),
                }
            }
            if pending.2 {
                match store.requeue(requeues).await {
                    Ok(results) => {
                        pending.2 = false;
                        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
                        c.requeued.fetch_add(ok, Ordering::Relaxed);
                    }
                    Err(e) => pending.2 = self.keep_trying(&e),
                }
            }
            if (pending.0 || pending.1 || pending.2) && Instant::now() < give_up {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            } else if pending.0 || pending.1 || pending.2 {
                tracing::error!(
                    "results could not be written within one lease; the tasks will be re-delivered"
                );
                return;
            }
        }
    }

    /// Whether a failed write is worth retrying (Redis away), logged once here.
    fn keep_trying(&self, e: &crate::Error) -> bool {
        if e.is_transient() {
            self.note_redis_error(e);
            true
        } else {
            tracing::error!(error = %e, "writing results failed and cannot succeed; leases will expire");
            false
        }
    }

    fn note_redis_error(&self, e: &crate::Error) {
        self.inner
            .counters
            .redis_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "writing results failed; retrying");
    }
}
