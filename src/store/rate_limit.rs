//! The shared counts of the per-principal rate limit: one counter per
//! principal and one-second window ([`super::keys::Keys::rate_limit`]),
//! which every node adds its local count to. The limiter itself (what is
//! admitted, when counts are sent) is `crate::api::ratelimit`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ExpireOptions, Value};

use super::Store;

/// Requests one node admitted for a principal in one window and has not
/// sent yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCount<'a> {
    /// The principal (token subject).
    pub principal: &'a str,
    /// The window: its Unix second.
    pub window_s: u64,
    /// Requests to add.
    pub admitted: u64,
}

impl Store {
    /// Adds each count to its window's counter and reads back the window's
    /// total over every node, in one pipelined call (`INCRBY`, and
    /// `PEXPIRE NX` with `ttl` so a counter goes away after its window).
    /// One answer per count, in order: `None` where it did not reach Redis
    /// (the caller sends it again). Never fails as a whole.
    pub async fn add_rate_counts(
        &self,
        counts: &[RateCount<'_>],
        ttl: Duration,
    ) -> Vec<Option<u64>> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let pipe = self.inner.pool.next().pipeline();
        for c in counts {
            let key = self.keys().rate_limit(c.window_s, c.principal);
            let n = i64::try_from(c.admitted).unwrap_or(i64::MAX);
            // Queued, not sent: these cannot fail.
            let _: () = pipe.incr_by(&key, n).await.unwrap_or(());
            let _: () = pipe
                .pexpire(&key, ttl_ms, Some(ExpireOptions::NX))
                .await
                .unwrap_or(());
        }
        let replies = pipe.try_all::<Value>().await;
        (0..counts.len())
            .map(|i| match replies.get(2 * i) {
                Some(Ok(v)) => v.as_i64().and_then(|n| u64::try_from(n).ok()),
                _ => None,
            })
            .collect()
    }

    /// A window's counter and its TTL in ms (tests of the limiter).
    #[cfg(test)]
    pub(crate) async fn rate_count(
        &self,
        principal: &str,
        window_s: u64,
    ) -> crate::error::Result<(Option<u64>, i64)> {
        let key = self.keys().rate_limit(window_s, principal);
        let count: Option<u64> = self.inner.pool.get(&key).await?;
        let ttl_ms: i64 = self.inner.pool.pttl(&key).await?;
        Ok((count, ttl_ms))
    }
}
