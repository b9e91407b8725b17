//! Loads the scripts in `lua/` once and calls them by EVALSHA, reloading on
//! NOSCRIPT (a restarted or failed-over Redis has an empty script cache).
//! Script error replies start with a stable code; [`refusal`] is the one table
//! that maps them to typed errors.

use fred::clients::Pool;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::error::{Error, Result};

/// Shared Lua prepended to every script (key derivation, clock, grouped writes).
const LIB: &[&str] = &[
    include_str!("../../lua/lib/common.lua"),
    include_str!("../../lua/lib/attempt.lua"),
];

/// Every script, named like its file in `lua/` and its Rust wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    Create,
    Claim,
    Heartbeat,
    Complete,
    Fail,
    Cancel,
    Retry,
    Promote,
    Reap,
    Cleanup,
    Requeue,
    AgentUpsert,
    List,
    QueueStatus,
    TimeoutStale,
}

impl Name {
    pub(crate) const ALL: [Name; 15] = [
        Name::Create,
        Name::Claim,
        Name::Heartbeat,
        Name::Complete,
        Name::Fail,
        Name::Cancel,
        Name::Retry,
        Name::Promote,
        Name::Reap,
        Name::Cleanup,
        Name::Requeue,
        Name::AgentUpsert,
        Name::List,
        Name::QueueStatus,
        Name::TimeoutStale,
    ];

    /// The script's file name in `lua/` without `.lua` (also its metrics label).
    pub(crate) fn file_stem(self) -> &'static str {
        match self {
            Name::Create => "create",
            Name::Claim => "claim",
            Name::Heartbeat => "heartbeat",
            Name::Complete => "complete",
            Name::Fail => "fail",
            Name::Cancel => "cancel",
            Name::Retry => "retry",
            Name::Promote => "promote",
            Name::Reap => "reap",
            Name::Cleanup => "cleanup",
            Name::Requeue => "requeue",
            Name::AgentUpsert => "agent_upsert",
            Name::List => "list",
            Name::QueueStatus => "queue_status",
            Name::TimeoutStale => "timeout_stale",
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            Name::Create => include_str!("../../lua/create.lua"),
            Name::Claim => include_str!("../../lua/claim.lua"),
            Name::Heartbeat => include_str!("../../lua/heartbeat.lua"),
            Name::Complete => include_str!("../../lua/complete.lua"),
            Name::Fail => include_str!("../../lua/fail.lua"),
            Name::Cancel => include_str!("../../lua/cancel.lua"),
            Name::Retry => include_str!("../../lua/retry.lua"),
            Name::Promote => include_str!("../../lua/promote.lua"),
            Name::Reap => include_str!("../../lua/reap.lua"),
            Name::Cleanup => include_str!("../../lua/cleanup.lua"),
            Name::Requeue => include_str!("../../lua/requeue.lua"),
            Name::AgentUpsert => include_str!("../../lua/agent_upsert.lua"),
            Name::List => include_str!("../../lua/list.lua"),
            Name::QueueStatus => include_str!("../../lua/queue_status.lua"),
            Name::TimeoutStale => include_str!("../../lua/timeout_stale.lua"),
        }
    }
}

/// The loaded scripts.
#[derive(Debug)]
pub(crate) struct Scripts {
    scripts: Vec<Script>,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let scripts = Name::ALL
            .iter()
            .map(|name| {
                let mut source = LIB.concat();
                source.push_str(name.body());
                Script::from_lua(source)
            })
            .collect();
        Self { scripts }
    }

    fn script(&self, name: Name) -> &Script {
        // ALL and the vector are built in the same order.
        let index = Name::ALL.iter().position(|n| *n == name).unwrap_or(0);
        &self.scripts[index]
    }

    /// Loads every script (at start-up, so readiness means "scripts loaded").
    pub(crate) async fn load_all(&self, pool: &Pool) -> Result<()> {
        for client in pool.clients() {
            for script in &self.scripts {
                let _: () = script.load(client).await.map(|_| ())?;
            }
        }
        Ok(())
    }

    /// EVALSHA with NOSCRIPT reload; script refusals become typed errors.
    pub(crate) async fn call(
        &self,
        pool: &Pool,
        name: Name,
        prefix: &str,
        args: Vec<String>,
    ) -> Result<Value> {
        let script = self.script(name);
        let started = std::time::Instant::now();
        let result = match script
            .evalsha_with_reload::<Value, _, _>(pool.next(), vec![prefix.to_string()], args)
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => Err(refusal(e.details()).unwrap_or(Error::Redis(e))),
        };
        crate::metrics::script_call(
            name.file_stem(),
            started.elapsed(),
            matches!(result, Err(Error::Redis(_))),
        );
        result
    }
}

/// Maps a script's error reply (`CODE detail ...`) to a typed error.
/// The one table of script error codes (see `lua/README.md`).
pub(crate) fn refusal(reply: &str) -> Option<Error> {
    let mut words = reply.splitn(2, ' ');
    let code = words.next()?;
    let detail = words.next().unwrap_or("").to_string();
    let subject = detail.split(' ').next().unwrap_or("").to_string();
    Some(match code {
        "TASK_NOT_FOUND" => Error::TaskNotFound(subject),
        "LEASE_MISMATCH" => Error::LeaseMismatch(subject),
        "NOT_PROCESSING" => Error::NotProcessing(subject),
        "ALREADY_TERMINAL" => Error::AlreadyTerminal(subject),
        "NOT_RETRYABLE" => Error::NotRetryable(subject),
        "BAD_ARGS" => Error::Validation(detail.split(" script:").next().unwrap_or("").to_string()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each header's `KEYS (n)` must match what the wrapper passes (one prefix).
    #[test]
    fn every_script_declares_one_key_and_documents_its_contract() {
        for name in Name::ALL {
            let body = name.body();
            assert!(
                body.contains("-- KEYS (1):"),
                "{:?} header lacks KEYS (1)",
                name
            );
            for section in [
                "-- ARGV:",
                "-- Returns:",
                "-- Errors:",
                "-- Events:",
                "-- Uses:",
            ] {
                assert!(body.contains(section), "{:?} header lacks {section}", name);
            }
            assert!(
                !body.contains("KEYS[2]"),
                "{:?} uses an undeclared key",
                name
            );
            assert!(body.starts_with(&format!("-- {}.lua:", name.file_stem())));
        }
    }

    #[test]
    fn refusal_codes_map_to_typed_errors() {
        assert!(
            matches!(refusal("TASK_NOT_FOUND task_1"), Some(Error::TaskNotFound(id)) if id == "task_1")
        );
        assert!(
            matches!(refusal("BAD_ARGS x is bad script: abc"), Some(Error::Validation(m)) if m == "x is bad")
        );
        assert!(refusal("ERR something else").is_none());
    }
}
