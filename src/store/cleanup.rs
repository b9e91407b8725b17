//! Wrapper of `lua/cleanup.lua`.

use std::time::Duration;

use super::{Name, Store, ms};
use crate::error::Result;

impl Store {
    /// Deletes up to `limit` terminal tasks finished more than `retention`
    /// ago; returns how many went and whether more are past the cutoff.
    pub async fn cleanup_batch(&self, retention: Duration, limit: usize) -> Result<(u64, bool)> {
        let value = self
            .call(
                Name::Cleanup,
                vec![
                    self.now_arg(),
                    ms(retention),
                    limit.clamp(1, 1000).to_string(),
                ],
            )
            .await?;
        let r = super::reply::Reply { script: "cleanup" };
        let mut it = r.array(value)?.into_iter();
        let removed = r.int(it.next().ok_or_else(|| r.err("short reply"))?)?;
        let more = r.int(it.next().ok_or_else(|| r.err("short reply"))?)?;
        Ok((removed.max(0) as u64, more == 1))
    }

    /// Deletes every terminal task older than `retention`, in bounded batches
    /// (each batch is one short script, so Redis keeps serving in between).
    pub async fn cleanup(&self, retention: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let (removed, more) = self.cleanup_batch(retention, CLEANUP_BATCH).await?;
            total += removed;
            if !more {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Tasks deleted per cleanup script call. A call blocks Redis for its
/// length: 9–12 µs of script time per task (`bench/lua/script_costs.py`),
/// about 2 ms per call, and claims and results wait at most that long
/// while a large backlog is cleaned up.
pub const CLEANUP_BATCH: usize = 200;
