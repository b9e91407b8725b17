//! Wrapper of `lua/audit.lua`: the slow pass that makes the indexes of live
//! tasks agree with their records again (RELIABILITY.md, fault 14).

use super::{Name, Store};
use crate::error::Result;

/// Entries of each status index (PROCESSING, QUEUED) one audit call checks.
pub const AUDIT_BATCH: usize = 200;

/// Agents one audit call may try (one `ZSCORE` each) to find the agent of
/// tasks whose record is gone; past it the call stops early.
pub const AUDIT_LOOKUP_BUDGET: usize = 5_000;

/// What one audit call found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Index entries checked.
    pub checked: u64,
    /// Entries of tasks whose record is gone, removed.
    pub ghosts_removed: u64,
    /// PROCESSING tasks that had no lease entry, given one back.
    pub leases_restored: u64,
    /// QUEUED tasks that were in no ready or delayed set, put back.
    pub queue_entries_restored: u64,
    /// Entries in the index of a status their task no longer has, moved.
    pub status_entries_moved: u64,
    /// Both walks reached the end of their index in this call (the next call
    /// starts over).
    pub wrapped: bool,
}

impl Audit {
    /// Repairs made.
    pub fn repaired(&self) -> u64 {
        self.ghosts_removed
            + self.leases_restored
            + self.queue_entries_restored
            + self.status_entries_moved
    }
}

impl Store {
    /// Checks the next `limit` entries (1..1000) of the PROCESSING and QUEUED
    /// status indexes and repairs what disagrees with the task records,
    /// trying at most [`AUDIT_LOOKUP_BUDGET`] agents for deleted records.
    pub async fn audit(&self, limit: usize) -> Result<Audit> {
        self.audit_with_budget(limit, AUDIT_LOOKUP_BUDGET).await
    }

    /// [`Store::audit`] with another agent lookup budget (1..100000).
    pub async fn audit_with_budget(&self, limit: usize, budget: usize) -> Result<Audit> {
        let value = self
            .call(
                Name::Audit,
                vec![
                    self.now_arg(),
                    limit.clamp(1, 1000).to_string(),
                    budget.clamp(1, 100_000).to_string(),
                ],
            )
            .await?;
        let r = super::reply::Reply { script: "audit" };
        let items = r.array(value)?;
        if items.len() != 6 {
            return Err(r.err("expected 6 counts"));
        }
        let mut n = Vec::with_capacity(6);
        for item in items {
            n.push(r.int(item)?.max(0) as u64);
        }
        Ok(Audit {
            checked: n[0],
            ghosts_removed: n[1],
            leases_restored: n[2],
            queue_entries_restored: n[3],
            status_entries_moved: n[4],
            wrapped: n[5] == 1,
        })
    }
}
