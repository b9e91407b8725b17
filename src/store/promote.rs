//! Wrapper of `lua/promote.lua`.

use super::{Name, Store};
use crate::error::Result;

/// What one maintenance pass did, and when the next one is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Tasks handled.
    pub handled: u64,
    /// When the next task falls due (ms, store clock), if any.
    pub next_due_ms: Option<i64>,
    /// The store clock's time of the pass (ms), so callers need no extra
    /// round trip to turn `next_due_ms` into a wait.
    pub now_ms: i64,
    /// The attempts the pass ended (reaper passes; empty otherwise).
    pub ended: Vec<super::outcome::AttemptEnd>,
    /// When the reaper that made this pass passes next (ms, store clock), as
    /// written for the scripts that grant deadlines ([`Store::reap_and_plan`]
    /// passes; `None` otherwise).
    pub wake_ms: Option<i64>,
}

pub(super) fn pass(r: &super::reply::Reply, value: fred::types::Value) -> Result<Pass> {
    let mut it = r.array(value)?.into_iter();
    let handled = r.int(it.next().ok_or_else(|| r.err("short reply"))?)?;
    let next = r.int(it.next().ok_or_else(|| r.err("short reply"))?)?;
    let now_ms = r.int(it.next().ok_or_else(|| r.err("short reply"))?)?;
    Ok(Pass {
        handled: handled.max(0) as u64,
        next_due_ms: (next >= 0).then_some(next),
        now_ms,
        ended: Vec::new(),
        wake_ms: None,
    })
}

impl Store {
    /// Moves up to `limit` due delayed tasks to their ready queues.
    pub async fn promote(&self, limit: usize) -> Result<Pass> {
        let value = self
            .call(
                Name::Promote,
                vec![self.now_arg(), limit.clamp(1, 1000).to_string()],
            )
            .await?;
        pass(&super::reply::Reply { script: "promote" }, value)
    }
}
