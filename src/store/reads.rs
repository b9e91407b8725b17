//! Group reads: concurrent reads of task records (every
//! `GET /api/ai/tasks/:id`) that arrive together go out as one call of
//! `lua/get_many.lua`, so N requests cost the node and Redis one socket
//! write and one read instead of N. (A fred pipeline would not do: fred 10
//! flushes the socket after each command of a pipeline when nothing else is
//! queued.) A read that finds no company is sent as a plain `HGETALL`.
//!
//! The same group commit as the create coalescer (`store::batch`), with at
//! most [`IN_FLIGHT`] groups on the wire at once and [`MAX_GROUP`] reads per
//! group.

use fred::prelude::*;

use super::batch::{Batcher, Job};
use super::{Name, Store};
use crate::error::{Error, RedisErrorKind, Result};

/// Most reads one call carries. A group runs as one atomic call and its
/// reply holds every record, so this also bounds how long one call holds
/// Redis (records carry up to a few MiB of inputData and outputData).
const MAX_GROUP: usize = 32;
/// Groups in flight at once.
const IN_FLIGHT: usize = 4;

/// A record as field/value pairs (empty when the key does not exist).
pub(super) type Pairs = Vec<(String, String)>;

/// Group reads of task records by id.
pub(super) type ReadGroup = Batcher<String, Pairs>;

pub(super) fn read_group() -> ReadGroup {
    // The store is going away: answered like an unreachable Redis (503 at the
    // API), not as an internal error.
    Batcher::new(|why| super::redis_error::unavailable(format!("read group {why}")))
}

pub(super) fn start_read_group(store: &Store) {
    store.inner.reads.start(
        store.downgrade(),
        MAX_GROUP,
        IN_FLIGHT,
        |store, jobs| async move {
            store.read_group(jobs).await;
        },
    );
}

/// Whether a failed group call failed for the connection (every read would
/// fail the same way now) rather than for one record.
fn connection_failure(e: &Error) -> bool {
    matches!(e, Error::Redis(r) if r.kind() == RedisErrorKind::Unavailable)
}

impl Store {
    async fn read_one(&self, id: &str) -> Result<Pairs> {
        Ok(self.client().hgetall(self.keys().task(id)).await?)
    }

    async fn read_group(&self, jobs: Vec<Job<String, Pairs>>) {
        // Callers that gave up (client gone) are not read for.
        let jobs: Vec<_> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if jobs.len() > 1 {
            let ids: Vec<String> = jobs.iter().map(|j| j.item.clone()).collect();
            let r = super::reply::Reply { script: "get_many" };
            let rows = match self.call(Name::GetMany, ids).await {
                Ok(v) => r.array(v),
                Err(e) => Err(e),
            };
            match rows {
                Ok(rows) if rows.len() == jobs.len() => {
                    for (job, row) in jobs.into_iter().zip(rows) {
                        let _ = job.reply.send(r.pairs(row));
                    }
                    return;
                }
                Err(e) if connection_failure(&e) => {
                    // Redis is away: one timeout for the group, not one per read.
                    for job in jobs {
                        let _ = job.reply.send(Err(e.duplicate()));
                    }
                    return;
                }
                Ok(rows) => tracing::warn!(
                    reads = jobs.len(),
                    replies = rows.len(),
                    "get_many answered the wrong number of records; reading one by one"
                ),
                // A record key of another type fails the whole call: the
                // others are still readable.
                Err(e) => tracing::debug!(error = %e, "get_many failed; reading one by one"),
            }
        }
        // Alone, or after a group call that failed for one record: each read
        // on its own, concurrently.
        futures::future::join_all(jobs.into_iter().map(|job| async move {
            let _ = job.reply.send(self.read_one(&job.item).await);
        }))
        .await;
    }
}
