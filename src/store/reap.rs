//! Wrapper of `lua/reap.lua`.

use std::time::Duration;

use super::promote::{Pass, pass};
use super::{Name, Store, ms};
use crate::error::Result;

impl Store {
    /// Ends up to `limit` attempts whose lease or deadline passed: a pass by
    /// no sleeping reaper (an admin's timeout-stale, tests).
    pub async fn reap(&self, limit: usize) -> Result<Pass> {
        self.reap_pass(limit, None).await
    }

    /// A sleeping reaper's pass: ends what [`Store::reap`] ends, then plans
    /// when this reaper passes next (`wake_ms`: now after a full batch, else
    /// the next deadline but at most `max_sleep` away) and writes the plan to
    /// the store. A script that grants an earlier deadline, on any node, then
    /// signals [`super::Signal::Reap`], so deadlines are kept to the time it
    /// takes a signal to arrive, however short the leases granted.
    pub async fn reap_and_plan(&self, limit: usize, max_sleep: Duration) -> Result<Pass> {
        self.reap_pass(limit, Some(max_sleep)).await
    }

    async fn reap_pass(&self, limit: usize, max_sleep: Option<Duration>) -> Result<Pass> {
        let cfg = &self.inner.config;
        let value = self
            .call(
                Name::Reap,
                vec![
                    self.now_arg(),
                    ms(cfg.backoff_base),
                    ms(cfg.backoff_cap),
                    limit.clamp(1, 1000).to_string(),
                    max_sleep
                        .map(|d| ms(d.max(Duration::from_millis(1))))
                        .unwrap_or_default(),
                ],
            )
            .await?;
        let r = super::reply::Reply { script: "reap" };
        let mut items = r.array(value)?;
        if items.len() != 5 {
            return Err(r.err("expected 5 items"));
        }
        let wake = r.int(items.remove(4))?;
        let tags = items.remove(3);
        let ended = r.attempt_ends(Some(tags))?;
        Ok(Pass {
            ended,
            wake_ms: (wake >= 0).then_some(wake),
            ..pass(&r, fred::types::Value::Array(items))?
        })
    }
}
