//! Loads the scripts in `lua/` once, as one Redis Functions library, and
//! calls them by FCALL; a Redis that lost the library (a new or flushed
//! server) gets it again on the first "function not found".
//!
//! Why Functions rather than EVALSHA: a script called by EVALSHA re-runs the
//! shared library code (`lua/lib/*.lua`: key helpers, grouped writes, ...) on
//! every call, about 11 µs of Redis CPU each time; in a function library that
//! code runs once, at FUNCTION LOAD. Functions are also kept in Redis' AOF and
//! RDB and replicated, so a restarted Redis still has them.
//!
//! The library's name and its function names carry a hash of the code, so
//! nodes of different versions sharing one Redis each call their own code
//! (as EVALSHA would), and loading one version never changes another's.
//! Script error replies start with a stable code; [`refusal`] is the one
//! table that maps them to typed errors.

use fred::bytes_utils::Str;
use fred::clients::Pool;
use fred::prelude::*;
use fred::types::Value;

use crate::error::{Error, Result};

/// Shared Lua at the top of the library (key derivation, clock, grouped writes).
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
    GetMany,
    Start,
    Audit,
    RateSync,
}

impl Name {
    pub(crate) const ALL: [Name; 19] = [
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
        Name::GetMany,
        Name::Start,
        Name::Audit,
        Name::RateSync,
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
            Name::GetMany => "get_many",
            Name::Start => "start",
            Name::Audit => "audit",
            Name::RateSync => "rate_sync",
        }
    }

    /// The function's flags (Redis 7 functions). Redis refuses a function
    /// without `allow-oom` or `no-writes` while it is out of memory
    /// (`maxmemory` reached, `noeviction`): only what adds work is refused
    /// then (create, manual retry, agent records), so work already queued
    /// can still be claimed, finished, reaped and cleaned up, and reads still
    /// answer. Pure reads are `no-writes`.
    pub(crate) fn flags(self) -> &'static str {
        match self {
            Name::Create | Name::Retry | Name::AgentUpsert => "",
            Name::GetMany | Name::QueueStatus => "'no-writes'",
            Name::Claim
            | Name::Start
            | Name::Heartbeat
            | Name::Complete
            | Name::Fail
            | Name::Cancel
            | Name::Promote
            | Name::Reap
            | Name::Cleanup
            | Name::Requeue
            | Name::List
            | Name::TimeoutStale
            | Name::Audit
            | Name::RateSync => "'allow-oom'",
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
            Name::GetMany => include_str!("../../lua/get_many.lua"),
            Name::Start => include_str!("../../lua/start.lua"),
            Name::Audit => include_str!("../../lua/audit.lua"),
            Name::RateSync => include_str!("../../lua/rate_sync.lua"),
        }
    }
}

/// The function library: its code and each script's function name.
#[derive(Debug)]
pub(crate) struct Scripts {
    library: String,
    functions: Vec<String>,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let mut code = LIB.concat();
        for name in Name::ALL {
            code.push_str(name.body());
        }
        let hash = fred::util::sha1_hash(&code);
        let tag = &hash[..12];
        let functions: Vec<String> = Name::ALL
            .iter()
            .map(|name| format!("th_{tag}_{}", name.file_stem()))
            .collect();
        let mut library = format!("#!lua name=taskherd_{tag}\n");
        for part in LIB {
            library.push_str(part);
            library.push('\n');
        }
        for (name, function) in Name::ALL.iter().zip(&functions) {
            // KEYS and ARGV become the function's parameters, so every script
            // reads them as it would under EVAL.
            library.push_str(&format!(
                "redis.register_function{{function_name = '{function}', flags = {{ {} }}, \
                 callback = function(KEYS, ARGV)\nbegin(KEYS)\n{}\nend}}\n",
                name.flags(),
                name.body()
            ));
        }
        Self { library, functions }
    }

    fn function(&self, name: Name) -> &str {
        // ALL and the vector are built in the same order.
        let index = Name::ALL.iter().position(|n| *n == name).unwrap_or(0);
        &self.functions[index]
    }

    /// Loads the library (at start-up, so readiness means "scripts loaded").
    /// Loading the same version again is harmless.
    pub(crate) async fn load_all(&self, pool: &Pool) -> Result<()> {
        let client = pool.next();
        let loaded: std::result::Result<Value, fred::error::Error> = if client.is_clustered() {
            client
                .function_load_cluster::<Value, _>(true, self.library.as_str())
                .await
        } else {
            client.function_load(true, self.library.as_str()).await
        };
        match loaded {
            Ok(_) => Ok(()),
            Err(e) if e.details().to_ascii_lowercase().contains("unknown command") => {
                Err(Error::Config(format!(
                    "Redis 7.0 or newer is needed (FUNCTION LOAD failed: {})",
                    e.details()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// FCALL, loading the library once more when Redis does not know it;
    /// script refusals become typed errors.
    pub(crate) async fn call(
        &self,
        pool: &Pool,
        name: Name,
        prefix: &str,
        args: Vec<String>,
        observer: Option<super::ScriptObserver>,
    ) -> Result<Value> {
        let function = self.function(name);
        // Str shares its bytes: the copy kept for a reload costs no copying
        // of large arguments (inputData, outputData).
        let args: Vec<Str> = args.into_iter().map(Str::from).collect();
        let started = std::time::Instant::now();
        let mut result = self.fcall(pool, function, prefix, args.clone()).await;
        if let Err(Error::Redis(e)) = &result
            && e.message().contains("Function not found")
        {
            tracing::info!("Redis lost the function library: loading it again");
            result = match self.load_all(pool).await {
                Ok(()) => self.fcall(pool, function, prefix, args).await,
                Err(e) => Err(e),
            };
        }
        if let Some(observe) = observer {
            observe(
                name.file_stem(),
                started.elapsed(),
                matches!(result, Err(Error::Redis(_))),
            );
        }
        result
    }

    async fn fcall(
        &self,
        pool: &Pool,
        function: &str,
        prefix: &str,
        args: Vec<Str>,
    ) -> Result<Value> {
        match super::fail_fast_client(pool)
            .fcall::<Value, _, _, _>(function, vec![prefix.to_string()], args)
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => Err(refusal(e.details()).unwrap_or_else(|| e.into())),
        }
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
        "TASK_NOT_READY" => Error::NotReady(subject),
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
