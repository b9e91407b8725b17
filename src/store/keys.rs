//! Every Redis key taskherd uses, one function each. The Lua twins live in
//! `lua/lib/common.lua` (scripts derive keys from the prefix they are given as
//! KEYS[1]); change both together.
//!
//! All keys start with `{<namespace>}:`, so they share one hash tag and one
//! Redis Cluster slot: a script may touch any of them. A deployment that
//! outgrows one primary runs several namespaces (partitions), each its own tag.

use crate::error::{Error, Result};
use crate::task::validate_ident;

/// Key builder for one namespace.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of namespace `ns` (letters, digits, `_ . -`).
    pub fn new(namespace: &str) -> Result<Self> {
        validate_ident("namespace", namespace, 64, &[])
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            prefix: format!("{{{namespace}}}:"),
        })
    }

    /// `{ns}:` — KEYS[1] of every script.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// HASH: one task's record (fields named as in [`crate::task::Task`]).
    pub fn task(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }

    /// ZSET: ready tasks of one agent at one priority rank (0 = URGENT);
    /// member task id, score the order score (FIFO).
    pub fn ready(&self, agent: &str, rank: u8) -> String {
        format!("{}ready:{agent}:{rank}", self.prefix)
    }

    /// ZSET: QUEUED tasks waiting for runAt or retry backoff; score due ms.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// ZSET: leased tasks; score min(lease deadline, attempt deadline) ms.
    pub fn processing(&self) -> String {
        format!("{}processing", self.prefix)
    }

    /// ZSET: terminal tasks; score completedAt ms (the janitor's index).
    pub fn finished(&self) -> String {
        format!("{}finished", self.prefix)
    }

    /// STREAM: one entry per state change.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// HASH: `<agent>|<STATUS>` -> number of live tasks.
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    /// SET: agent ids seen in tasks or agent records.
    pub fn agents(&self) -> String {
        format!("{}agents", self.prefix)
    }

    /// HASH: one agent's record (`record` = JSON, `createdAt`, `updatedAt`).
    pub fn agent(&self, id: &str) -> String {
        format!("{}agent:{id}", self.prefix)
    }

    /// Pub/sub channel: `w:<agent>` (work is ready), `c:<task>:<token>` (stop
    /// that attempt), `d` (a delayed task was added).
    pub fn signal(&self) -> String {
        format!("{}signal", self.prefix)
    }

    /// HASH: statistics of one UTC day (days since the Unix epoch);
    /// fields `<agent>|<taskType>|<metric>`.
    pub fn stats(&self, day: i64) -> String {
        format!("{}stats:{day}", self.prefix)
    }

    /// HASH: `PROCESSING` / `QUEUED` -> the order score where the audit's
    /// walk of that status index resumes.
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    /// HASH: live nodes' heartbeats (`node id` -> JSON), maintained by nodes.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_namespace_hash_tag() {
        let k = Keys::new("prod").unwrap();
        for key in [
            k.task("t"),
            k.ready("a", 0),
            k.events(),
            k.stats(1),
            k.signal(),
        ] {
            assert!(key.starts_with("{prod}:"), "{key}");
        }
        assert!(Keys::new("a{b}").is_err());
    }
}
