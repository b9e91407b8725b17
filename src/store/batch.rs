//! Group commit, shared by the create coalescer (`create.rs`) and the read
//! group (`reads.rs`): callers submit one item each and wait for its own
//! result; whatever queued while earlier batches were in flight leaves
//! together as one batch (one script call), at most `max` items per batch and
//! `in_flight` batches at once.

use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Inner, Store};
use crate::error::{Error, Result};

/// One submitted item and where its result goes.
pub(super) struct Job<I, O> {
    pub(super) item: I,
    pub(super) reply: oneshot::Sender<Result<O>>,
}

pub(super) struct Batcher<I, O> {
    tx: OnceLock<mpsc::Sender<Job<I, O>>>,
    /// The error a caller gets when the batcher is not running (store gone).
    stopped: fn(&'static str) -> Error,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    pub(super) fn new(stopped: fn(&'static str) -> Error) -> Self {
        Self {
            tx: OnceLock::new(),
            stopped,
        }
    }

    /// Starts the batching task; `call` answers every job of a batch. The
    /// task ends when the store (holding the sender) is dropped.
    pub(super) fn start<F, Fut>(&self, store: Weak<Inner>, max: usize, in_flight: usize, call: F)
    where
        F: Fn(Store, Vec<Job<I, O>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Job<I, O>>(4 * max);
        if self.tx.set(tx).is_err() {
            return;
        }
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            while let Some(first) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut jobs = vec![first];
                while jobs.len() < max {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let Some(inner) = store.upgrade() else { return };
                let batch = call(Store::from_inner(inner), jobs);
                tokio::spawn(async move {
                    batch.await;
                    drop(permit);
                });
            }
        });
    }

    /// Submits one item and waits for its result.
    pub(super) async fn submit(&self, item: I) -> Result<O> {
        let tx = self.tx.get().ok_or_else(|| (self.stopped)("not started"))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Job { item, reply })
            .await
            .map_err(|_| (self.stopped)("stopped"))?;
        rx.await.map_err(|_| (self.stopped)("dropped the item"))?
    }
}
