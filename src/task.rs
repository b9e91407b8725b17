//! The task model: statuses, priorities, ids, and the rules for new tasks.
//!
//! Transitions (each one a script in `lua/`):
//! QUEUED -> PROCESSING (claim) -> COMPLETED (complete) | QUEUED (fail or reap
//! with attempts left, requeue on shutdown) | FAILED / TIMEOUT (last attempt);
//! QUEUED | PROCESSING -> CANCELLED (cancel); FAILED | TIMEOUT | CANCELLED ->
//! QUEUED (manual retry). COMPLETED, FAILED, CANCELLED and TIMEOUT are terminal.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Task status as the seeds name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Ready, or waiting for its `runAt` / retry backoff.
    Queued,
    /// Leased to a worker.
    Processing,
    /// Finished successfully (terminal).
    Completed,
    /// Failed for good (terminal).
    Failed,
    /// Cancelled (terminal).
    Cancelled,
    /// Its last attempt overran `timeoutMs` (terminal).
    Timeout,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Processing,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Timeout,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "QUEUED",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Timeout => "TIMEOUT",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal statuses end a task's life (until a manual retry).
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Processing)
    }
}

/// Claim order: URGENT > HIGH > NORMAL > LOW.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Claimed before everything else.
    Urgent,
    /// Before NORMAL and LOW.
    High,
    /// The default.
    #[default]
    Normal,
    /// Claimed last.
    Low,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "URGENT",
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Measurements of one attempt, reported by the handler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMetrics {
    /// Wall time the handler reports (ms); the queue measures its own too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Tokens sent to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    /// Tokens the model produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
}

/// A task as stored. Times are Unix milliseconds from Redis' clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `task_` + ULID: time-ordered and unique.
    pub id: String,
    /// The agent whose workers run it.
    pub agent_id: String,
    /// What kind of work (summarise, translate ...).
    pub task_type: String,
    /// Handler input.
    pub input_data: serde_json::Value,
    /// Handler output, once completed.
    pub output_data: Option<serde_json::Value>,
    /// Current status.
    pub status: TaskStatus,
    /// Claim priority.
    pub priority: Priority,
    /// Retries used so far (attempts - 1).
    pub retry_count: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Hard limit on one attempt (ms).
    pub timeout_ms: u64,
    /// Why the last attempt ended; none once the task is COMPLETED.
    pub error_message: Option<String>,
    /// Caller's estimate.
    pub estimated_cost: Option<f64>,
    /// Reported by the handler.
    pub actual_cost: Option<f64>,
    /// Reported by the handler (0..1 by convention).
    pub quality_score: Option<f64>,
    /// Reported by the handler.
    pub metrics: Option<TaskMetrics>,
    /// Earliest start (ms), for scheduled tasks and retry backoff.
    pub run_at: Option<i64>,
    /// Caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Principal that created it.
    pub owner_id: Option<String>,
    /// Worker that holds or last held it.
    pub worker_id: Option<String>,
    /// Lease deadline of the current attempt (ms).
    pub lease_until: Option<i64>,
    /// When it was created (ms).
    pub created_at: i64,
    /// When its latest attempt started (ms).
    pub started_at: Option<i64>,
    /// When it reached a terminal status (ms).
    pub completed_at: Option<i64>,
    /// Last change (ms).
    pub updated_at: i64,
}

/// Limits on what a task may carry; every API checks them before Redis.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum serialized inputData (bytes).
    pub max_input_bytes: usize,
    /// Maximum serialized outputData (bytes).
    pub max_output_bytes: usize,
    /// Maximum length of agentId, taskType, ownerId, idempotencyKey.
    pub max_id_len: usize,
    /// Maximum errorMessage length (longer ones are cut, not refused).
    pub max_error_len: usize,
    /// Maximum maxRetries.
    pub max_retries: u32,
    /// Maximum timeoutMs.
    pub max_timeout_ms: u64,
}

/// Default maximum inputData / outputData size: 1 MiB.
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;
/// Default maximum length of identifiers.
pub const DEFAULT_MAX_ID_LEN: usize = 128;
/// Default maxRetries when a task names none (as in the seeds).
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default timeoutMs when a task names none: one hour, as in the seeds.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_600_000;
/// Latest runAt: 9999-12-31T23:59:59.999Z. Times past 2^53 ms would lose
/// precision in Lua's doubles; `lua/create.lua` checks the same bound.
pub const MAX_RUN_AT_MS: i64 = 253_402_300_799_999;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: DEFAULT_MAX_DATA_BYTES,
            max_output_bytes: DEFAULT_MAX_DATA_BYTES,
            max_id_len: DEFAULT_MAX_ID_LEN,
            max_error_len: 4096,
            max_retries: 100,
            max_timeout_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// What a caller supplies to create a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTask {
    /// Agent that should run it.
    pub agent_id: String,
    /// Kind of work.
    pub task_type: String,
    /// Handler input (JSON; null when omitted).
    #[serde(default)]
    pub input_data: serde_json::Value,
    /// Claim priority (NORMAL when omitted).
    #[serde(default)]
    pub priority: Priority,
    /// Retries after the first attempt (3 when omitted).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Hard limit on one attempt in ms (one hour when omitted).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Caller's estimate.
    #[serde(default)]
    pub estimated_cost: Option<f64>,
    /// Earliest start (Unix ms, at most [`MAX_RUN_AT_MS`]).
    #[serde(default)]
    pub run_at: Option<i64>,
    /// Same key (per owner) -> same task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Principal creating it (set by the API from the token, never by the body).
    #[serde(default)]
    pub owner_id: Option<String>,
}

/// Checks that an identifier is safe inside a Redis key and a URL path:
/// 1..=max chars of `[A-Za-z0-9_.-]` plus `extra`. No braces (hash tags), no
/// glob characters, no `:` or `|` (key and statistics separators).
pub fn validate_ident(what: &str, value: &str, max_len: usize, extra: &[char]) -> Result<()> {
    if value.is_empty() || value.len() > max_len {
        return Err(Error::Validation(format!(
            "{what} must be 1 to {max_len} characters"
        )));
    }
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') || extra.contains(&c));
    if !ok {
        let allowed: String = extra.iter().collect();
        return Err(Error::Validation(format!(
            "{what} may contain only letters, digits and _ . -{allowed}"
        )));
    }
    Ok(())
}

/// Characters an owner id (a token subject, often an e-mail) may add.
pub const OWNER_EXTRA_CHARS: &[char] = &['@', '+'];

impl NewTask {
    /// A NORMAL task with defaults.
    pub fn new(
        agent_id: impl Into<String>,
        task_type: impl Into<String>,
        input: serde_json::Value,
    ) -> Self {
        Self {
            agent_id: agent_id.into(),
            task_type: task_type.into(),
            input_data: input,
            ..Self::default()
        }
    }

    /// Checks every field against `limits`; returns the serialized input.
    pub fn validate(&self, limits: &Limits) -> Result<String> {
        validate_ident("agentId", &self.agent_id, limits.max_id_len, &[])?;
        validate_ident("taskType", &self.task_type, limits.max_id_len, &[])?;
        if let Some(owner) = &self.owner_id {
            validate_ident("ownerId", owner, limits.max_id_len, OWNER_EXTRA_CHARS)?;
        }
        if let Some(key) = &self.idempotency_key {
            validate_ident("idempotencyKey", key, limits.max_id_len, &[])?;
        }
        if self.max_retries.is_some_and(|n| n > limits.max_retries) {
            return Err(Error::Validation(format!(
                "maxRetries must be at most {}",
                limits.max_retries
            )));
        }
        if self
            .timeout_ms
            .is_some_and(|ms| ms == 0 || ms > limits.max_timeout_ms)
        {
            return Err(Error::Validation(format!(
                "timeoutMs must be 1 to {}",
                limits.max_timeout_ms
            )));
        }
        if self
            .estimated_cost
            .is_some_and(|cost| !cost.is_finite() || cost < 0.0)
        {
            return Err(Error::Validation(
                "estimatedCost must be a non-negative number".into(),
            ));
        }
        if self
            .run_at
            .is_some_and(|at| !(0..=MAX_RUN_AT_MS).contains(&at))
        {
            return Err(Error::Validation(format!(
                "runAt must be a Unix time in ms from 0 to {MAX_RUN_AT_MS} (year 9999)"
            )));
        }
        let input = serde_json::to_string(&self.input_data)
            .map_err(|e| Error::Validation(format!("inputData: {e}")))?;
        if input.len() > limits.max_input_bytes {
            return Err(Error::Validation(format!(
                "inputData is {} bytes; the limit is {}",
                input.len(),
                limits.max_input_bytes
            )));
        }
        Ok(input)
    }
}

/// A fresh task id: `task_` + ULID (time-ordered, 26 characters).
pub fn new_task_id() -> String {
    format!("task_{}", ulid::Ulid::generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_with_key_syntax_are_refused() {
        for bad in ["a{b}", "a*", "a?", "a:b", "a|b", "", "a b", "ä"] {
            assert!(validate_ident("agentId", bad, 64, &[]).is_err(), "{bad:?}");
        }
        assert!(validate_ident("agentId", "agent_1.v-2", 64, &[]).is_ok());
        assert!(validate_ident("ownerId", "a+b@x.io", 64, OWNER_EXTRA_CHARS).is_ok());
    }

    #[test]
    fn oversized_input_is_refused() {
        let limits = Limits {
            max_input_bytes: 10,
            ..Limits::default()
        };
        let task = NewTask::new("a", "t", serde_json::json!({"text": "far too long"}));
        assert!(matches!(task.validate(&limits), Err(Error::Validation(_))));
    }

    #[test]
    fn task_ids_sort_by_creation_time() {
        let a = new_task_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_task_id();
        assert!(a < b && a.starts_with("task_") && crate::ids::TaskId::parse(&a).is_ok());
    }
}
