//! What the scripts report about ended attempts, typed: the store's callers
//! (the queue service, the worker runtime, maintenance) turn these into
//! metrics; the store itself records none.

use super::reply::Reply;
use crate::error::Result;

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Completed: the task is COMPLETED.
    Completed,
    /// Failed or expired with attempts left: QUEUED again after backoff.
    Retrying,
    /// Failed on its last attempt (or not retryable): FAILED.
    Failed,
    /// Overran its timeout on its last attempt: TIMEOUT.
    TimedOut,
}

/// Why the reaper ended an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The lease ran out (the worker stopped heartbeating).
    Lease,
    /// The attempt ran past its timeoutMs.
    Deadline,
}

impl Expiry {
    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Lease => "lease",
            Expiry::Deadline => "deadline",
        }
    }
}

/// One ended attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptEnd {
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The task's agent.
    pub agent_id: String,
    /// The task's type.
    pub task_type: String,
    /// From its start to its end (ms, store clock).
    pub duration_ms: u64,
    /// Set when the reaper (or timeout-stale) ended it.
    pub expiry: Option<Expiry>,
}

impl AttemptEnd {
    /// Parses a script's attempt tag:
    /// `<ok|retry|failed|timeout>|<agent>|<taskType>|<ms>[|<lease|deadline>]`
    /// (`lua/lib/attempt.lua`, `attempt_tag`).
    pub(super) fn parse(r: &Reply, tag: &str) -> Result<Self> {
        let bad = || r.err(format!("bad attempt tag {tag:?}"));
        let mut it = tag.split('|');
        let outcome = match it.next() {
            Some("ok") => AttemptOutcome::Completed,
            Some("retry") => AttemptOutcome::Retrying,
            Some("failed") => AttemptOutcome::Failed,
            Some("timeout") => AttemptOutcome::TimedOut,
            _ => return Err(bad()),
        };
        let agent_id = it.next().ok_or_else(bad)?.to_string();
        let task_type = it.next().ok_or_else(bad)?.to_string();
        let duration_ms = it.next().and_then(|ms| ms.parse().ok()).ok_or_else(bad)?;
        let expiry = match it.next() {
            None => None,
            Some("lease") => Some(Expiry::Lease),
            Some("deadline") => Some(Expiry::Deadline),
            Some(_) => return Err(bad()),
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            outcome,
            agent_id,
            task_type,
            duration_ms,
            expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_tags_parse_into_typed_ends_and_bad_ones_are_refused() {
        let r = Reply { script: "test" };
        let end = AttemptEnd::parse(&r, "retry|echo|summarise|1500|deadline").unwrap();
        assert_eq!(
            end,
            AttemptEnd {
                outcome: AttemptOutcome::Retrying,
                agent_id: "echo".into(),
                task_type: "summarise".into(),
                duration_ms: 1500,
                expiry: Some(Expiry::Deadline),
            }
        );
        let done = AttemptEnd::parse(&r, "ok|a|t|7").unwrap();
        assert_eq!(
            (done.outcome, done.expiry),
            (AttemptOutcome::Completed, None)
        );
        for bad in [
            "",
            "ok",
            "ok|a|t",
            "ok|a|t|x",
            "done|a|t|1",
            "retry|a|t|1|soon",
            "retry|a|t|1|lease|more",
        ] {
            assert!(AttemptEnd::parse(&r, bad).is_err(), "{bad:?}");
        }
    }
}
