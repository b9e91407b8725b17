//! Per-principal rate limit shared by every node.
//!
//! A fixed one-second window per token subject, counted in Redis with one
//! pipelined `INCR` + `PEXPIRE NX` (one round trip), so N nodes together allow
//! the configured rate, not N times it. A node that already saw the
//! principal over the limit in the current window refuses without asking
//! Redis. Windows start on each node's clock, so nodes whose clocks differ
//! share a window only approximately; a fixed window also lets a client send
//! up to twice the rate across a window boundary. Both are documented
//! trade-offs for one round trip per request.
//!
//! When Redis cannot be reached the limiter lets the request through: the
//! request itself then meets the same outage and answers 503.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use fred::types::ExpireOptions;

use super::error::ApiError;
use crate::store::Store;

/// Most principals whose local "over the limit" mark a node remembers per
/// window; past it the node just asks Redis.
const MAX_LOCAL_MARKS: usize = 10_000;

/// The limiter of one node.
pub struct RateLimiter {
    per_second: u32,
    /// (window second, principals seen over the limit in it).
    over: Mutex<(u64, HashSet<String>)>,
}

impl RateLimiter {
    /// `per_second` requests per principal per second; 0 switches it off.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            over: Mutex::new((0, HashSet::new())),
        }
    }

    /// Counts one request of `sub`; 429 with `Retry-After` past the limit.
    pub async fn check(&self, store: &Store, sub: &str) -> Result<(), ApiError> {
        if self.per_second == 0 {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.marked(now, sub) {
            return Err(limited(self.per_second));
        }
        let key = format!("{}rl:{now}:{sub}", store.keys().prefix());
        let pipe = store.pool().next().pipeline();
        let _: () = pipe.incr(&key).await.unwrap_or(());
        let _: () = pipe
            .pexpire(&key, 2_000, Some(ExpireOptions::NX))
            .await
            .unwrap_or(());
        let count: Result<(i64, i64), _> = pipe.all().await;
        match count {
            Ok((count, _)) if count > i64::from(self.per_second) => {
                self.mark(now, sub);
                Err(limited(self.per_second))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "rate limit not counted: redis unavailable");
                Ok(())
            }
        }
    }

    fn marked(&self, now: u64, sub: &str) -> bool {
        self.over
            .lock()
            .map(|g| g.0 == now && g.1.contains(sub))
            .unwrap_or(false)
    }

    fn mark(&self, now: u64, sub: &str) {
        if let Ok(mut g) = self.over.lock() {
            if g.0 != now {
                *g = (now, HashSet::new());
            }
            if g.1.len() < MAX_LOCAL_MARKS {
                g.1.insert(sub.to_string());
            }
        }
    }
}

fn limited(per_second: u32) -> ApiError {
    let mut e = ApiError::new(
        poem::http::StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("rate limit of {per_second} requests per second reached"),
    );
    e.retry_after_s = Some(1);
    e
}
