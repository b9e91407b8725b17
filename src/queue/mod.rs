//! The service every API calls: REST today, GraphQL and the Socket.IO feed
//! next. Each operation takes the caller first, asks the access policy
//! ([`crate::auth::authorize`]), calls the store, and returns domain results
//! or typed refusals ([`crate::Error`]: `Forbidden`, `TaskNotFound` for a
//! task the caller may not see, conflicts ...). An API adapter parses its
//! request into these calls and maps the result to its wire format; no rule
//! lives in an adapter.
//!
//! - [`tasks`]: create (single, batch, idempotent), get, list, cancel, retry;
//! - [`work`]: claim (with the long-poll wait), start, heartbeat, complete,
//!   fail — the external worker's operations, under the same lease fence as
//!   the in-node workers;
//! - [`admin`]: queue status, statistics, agents, nodes, cleanup,
//!   timeout-stale.

mod admin;
mod feed;
mod tasks;
mod work;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use admin::CleanupOutcome;
pub use work::{ClaimOptions, DEFAULT_LEASE, MAX_CLAIM_TASKS, MAX_WAIT};

use crate::auth::{Action, Denied, Principal, authorize};
use crate::error::{Error, Result};
use crate::signals::Signals;
use crate::store::Store;

/// The queue as its callers see it; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Wake-ups from Redis: long-polling claims wait on them.
    signals: Signals,
    /// Set when the node began shutting down: long polls answer at once.
    draining: AtomicBool,
}

impl Queue {
    /// The service over `store`, woken by `signals`.
    pub fn new(store: Store, signals: Signals) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                signals,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// The store underneath (the node's own bookkeeping: rate-limit sync,
    /// node registry).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Stops waiting in long polls (the node is shutting down).
    pub fn begin_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Round trip to Redis (health and readiness; no caller needed).
    pub async fn ping(&self) -> Result<()> {
        self.store().ping().await
    }
}

/// [`authorize`], with a refusal as the crate's error: a hidden task is
/// "not found" (`id`), exactly like a missing one.
fn allow(principal: &Principal, action: Action<'_>, id: &str) -> Result<()> {
    authorize(principal, action).map_err(|denied| match denied {
        Denied::Forbidden(message) => Error::Forbidden(message),
        Denied::Hidden => Error::TaskNotFound(id.to_string()),
    })
}
