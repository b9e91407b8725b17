//! The shared counts of the per-principal rate limit: one hash per principal
//! and one-second window ([`super::keys::Keys::rate_limit`]) in which every
//! node's limiter keeps the count it admitted (`lua/rate_sync.lua`). The
//! limiter itself (what is admitted, when counts are sent) is
//! `crate::api::ratelimit`.
//!
//! A limiter sends its own total, not an increment: sending it again after
//! a reply was lost (a reset, a timeout, a reconnect) sets the same count
//! instead of adding it twice, so a flaky connection cannot inflate a
//! principal's count into spurious 429s.

use std::time::Duration;

use super::{Name, Store};

/// How many requests one limiter admitted for a principal in one window so
/// far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCount<'a> {
    /// The principal (token subject).
    pub principal: &'a str,
    /// The window: its Unix second.
    pub window_s: u64,
    /// Requests admitted by this limiter in the window, in all.
    pub admitted: u64,
}

impl Store {
    /// Records each count as limiter `limiter`'s (a count never goes down)
    /// and reads back each window's total over every limiter, in one script
    /// call; the window's key expires `ttl` after its first write. One answer
    /// per count, in order, or `None` for all when the call failed (the
    /// caller sends the same counts again: that is safe). Never fails as a
    /// whole.
    pub async fn sync_rate_counts(
        &self,
        limiter: &str,
        counts: &[RateCount<'_>],
        ttl: Duration,
    ) -> Vec<Option<u64>> {
        let mut args = Vec::with_capacity(2 + 3 * counts.len());
        args.push(limiter.to_string());
        args.push(super::ms(
            ttl.clamp(Duration::from_millis(1), Duration::from_secs(60)),
        ));
        for c in counts {
            args.push(c.window_s.to_string());
            args.push(c.principal.to_string());
            args.push(c.admitted.to_string());
        }
        let r = super::reply::Reply {
            script: "rate_sync",
        };
        let totals = match self.call(Name::RateSync, args).await {
            Ok(value) => r.array(value).ok(),
            Err(_) => None,
        };
        match totals {
            Some(totals) if totals.len() == counts.len() => totals
                .into_iter()
                .map(|v| r.int(v).ok().and_then(|n| u64::try_from(n).ok()))
                .collect(),
            _ => vec![None; counts.len()],
        }
    }

    /// A window's count per limiter and its TTL in ms (tests of the limiter).
    pub async fn rate_counts(
        &self,
        principal: &str,
        window_s: u64,
    ) -> crate::error::Result<(std::collections::HashMap<String, u64>, i64)> {
        use fred::prelude::*;
        let key = self.keys().rate_limit(window_s, principal);
        let counts: std::collections::HashMap<String, u64> = self.pool().hgetall(&key).await?;
        let ttl_ms: i64 = self.pool().pttl(&key).await?;
        Ok((counts, ttl_ms))
    }
}
