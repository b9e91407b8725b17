//! Wrapper of `lua/timeout_stale.lua`: the operator's "time out everything
//! that has been running longer than X" over the whole processing set, one
//! bounded chunk per script call.

use std::time::Duration;

use fred::prelude::*;

use super::outcome::AttemptEnd;
use super::{Name, Store, ms};
use crate::error::{Error, Result};

/// Processing entries examined per script call.
pub const TIMEOUT_STALE_BATCH: usize = 500;

/// What one chunk of a timeout-stale walk did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleChunk {
    /// Attempts ended in this chunk.
    pub timed_out: u64,
    /// Where the next chunk starts (this chunk's ended entries left the set).
    pub next_start: u64,
    /// Entries examined; fewer than the limit means the walk reached the end.
    pub scanned: u64,
    /// The store clock's time of the call (ms).
    pub now_ms: i64,
    /// The attempts this chunk ended.
    pub ended: Vec<AttemptEnd>,
}

impl Store {
    /// Ends, as timed-out attempts, the PROCESSING tasks among up to `limit`
    /// processing entries from index `start` whose attempt started at least
    /// `max_age` ago: retried after backoff while attempts remain, TIMEOUT on
    /// the last one; their workers get the stop signal and their late results
    /// are refused by the lease fence.
    pub async fn timeout_stale_chunk(
        &self,
        max_age: Duration,
        start: u64,
        limit: usize,
    ) -> Result<StaleChunk> {
        self.check_max_age(max_age)?;
        let cfg = &self.inner.config;
        let value = self
            .call(
                Name::TimeoutStale,
                vec![
                    self.now_arg(),
                    ms(cfg.backoff_base),
                    ms(cfg.backoff_cap),
                    ms(max_age),
                    start.to_string(),
                    limit.clamp(1, 1000).to_string(),
                ],
            )
            .await?;
        let r = super::reply::Reply {
            script: "timeout_stale",
        };
        let mut it = r.array(value)?.into_iter();
        let mut next = || -> Result<i64> { r.int(it.next().ok_or_else(|| r.err("short reply"))?) };
        let timed_out = next()?;
        let next_start = next()?;
        let scanned = next()?;
        let now_ms = next()?;
        let ended = r.attempt_ends(it.next())?;
        if timed_out < 0 || next_start < 0 || scanned < 0 || timed_out > scanned {
            return Err(r.err(format!(
                "inconsistent counts: {timed_out} timed out, next {next_start}, {scanned} scanned"
            )));
        }
        Ok(StaleChunk {
            timed_out: timed_out as u64,
            next_start: next_start as u64,
            scanned: scanned as u64,
            now_ms,
            ended,
        })
    }

    /// Ends every PROCESSING attempt that started at least `max_age` ago (see
    /// [`Store::timeout_stale_chunk`]) and returns the attempts it ended.
    ///
    /// The walk is bounded: it stops at the end of the set, or once it has
    /// examined as many entries as the set held when it began plus one chunk
    /// (claims made meanwhile are younger than any sensible `max_age`).
    /// The set moves while it is walked, one chunk per call: an attempt that
    /// finishes in between shifts later entries forward, so a few entries may
    /// be skipped under load; running the operation again catches them, and
    /// ending an attempt twice is impossible (the second pass finds it gone).
    pub async fn timeout_stale(&self, max_age: Duration) -> Result<Vec<AttemptEnd>> {
        self.check_max_age(max_age)?;
        let size: u64 = self
            .inner
            .pool
            .next()
            .zcard(self.inner.keys.processing())
            .await?;
        let budget = size + TIMEOUT_STALE_BATCH as u64;
        let (mut start, mut scanned, mut ended) = (0, 0, Vec::new());
        while scanned < budget {
            let chunk = self
                .timeout_stale_chunk(max_age, start, TIMEOUT_STALE_BATCH)
                .await?;
            scanned += chunk.scanned;
            start = chunk.next_start;
            let last = chunk.scanned < TIMEOUT_STALE_BATCH as u64;
            ended.extend(chunk.ended);
            if last {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(ended)
    }

    fn check_max_age(&self, max_age: Duration) -> Result<()> {
        let max_ms = self.inner.config.limits.max_timeout_ms;
        let age_ms = max_age.as_millis();
        if age_ms < 1 || age_ms > u128::from(max_ms) {
            return Err(Error::Validation(format!(
                "timeoutMs must be 1 to {max_ms} ms"
            )));
        }
        Ok(())
    }
}
