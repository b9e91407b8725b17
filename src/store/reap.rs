//! Wrapper of `lua/reap.lua`.

use super::promote::{Pass, pass};
use super::{Name, Store, ms};
use crate::error::Result;

impl Store {
    /// Ends up to `limit` attempts whose lease or deadline passed.
    pub async fn reap(&self, limit: usize) -> Result<Pass> {
        let cfg = &self.inner.config;
        let value = self
            .call(
                Name::Reap,
                vec![
                    self.now_arg(),
                    ms(cfg.backoff_base),
                    ms(cfg.backoff_cap),
                    limit.clamp(1, 1000).to_string(),
                ],
            )
            .await?;
        let r = super::reply::Reply { script: "reap" };
        let mut items = r.array(value)?;
        let tags = (items.len() > 3).then(|| items.remove(3));
        let ended = r.attempt_ends(tags)?;
        Ok(Pass {
            ended,
            ..pass(&r, fred::types::Value::Array(items))?
        })
    }
}
