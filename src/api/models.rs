//! Request and response bodies of the REST API that are not core types.
//! Request bodies refuse unknown fields, so a client cannot set server-owned
//! fields (status, retryCount, ownerId, lease) by sending them.

use poem_openapi::{Object, Tags};
use serde_json::Value;

use crate::store::{Agent, AgentKind};
use crate::task::{NewTask, Priority, Task, TaskMetrics};

/// Operation groups of the spec.
#[derive(Tags)]
pub enum ApiTags {
    /// Create, list, follow, cancel and retry tasks.
    Tasks,
    /// External workers: claim, heartbeat, complete and fail tasks.
    Workers,
    /// Agent records: how an agent's tasks run.
    Agents,
    /// Queue status, statistics, live nodes.
    Monitoring,
    /// Admin-only maintenance.
    Admin,
    /// Liveness and readiness (no auth).
    Health,
}

/// A task to create. The owner is the token's subject. Field limits are
/// checked by the queue (not the schema), so a refused batch can name each
/// refused item.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// Agent that should run it (letters, digits, `_ . -`; at most 128).
    pub agent_id: String,
    /// Kind of work (same characters as agentId).
    pub task_type: String,
    /// Input for the agent (any JSON, at most 1 MiB serialized by default).
    pub input_data: Option<Value>,
    /// Claim priority (default NORMAL).
    pub priority: Option<Priority>,
    /// Retries after the first attempt (default 3, at most 100).
    pub max_retries: Option<u32>,
    /// Hard limit on one attempt in ms (default one hour, at most 7 days).
    pub timeout_ms: Option<u64>,
    /// Caller's cost estimate (non-negative).
    pub estimated_cost: Option<f64>,
    /// Earliest start, Unix ms (scheduled task).
    pub run_at: Option<i64>,
    /// Same key from the same owner returns the same task (also accepted as
    /// the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

impl CreateTaskRequest {
    /// The core request, owned by `owner`.
    pub fn into_new(self, owner: &str) -> NewTask {
        NewTask {
            agent_id: self.agent_id,
            task_type: self.task_type,
            input_data: self.input_data.unwrap_or(Value::Null),
            priority: self.priority.unwrap_or_default(),
            max_retries: self.max_retries,
            timeout_ms: self.timeout_ms,
            estimated_cost: self.estimated_cost,
            run_at: self.run_at,
            idempotency_key: self.idempotency_key,
            owner_id: Some(owner.to_string()),
        }
    }
}

/// 1 to 100 tasks, created all together or not at all.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchCreateRequest {
    /// The tasks.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub tasks: Vec<CreateTaskRequest>,
}

/// The tasks of an accepted batch, in request order.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct BatchCreateResult {
    /// The tasks (existing ones where an idempotency key matched).
    pub tasks: Vec<Task>,
    /// How many were created by this request.
    pub created_count: u32,
    /// How many already existed (idempotency key).
    pub existing_count: u32,
}

/// What a cleanup removed.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CleanupResult {
    /// Terminal tasks deleted.
    pub deleted_count: u64,
    /// Retention applied (days).
    pub retention_days: u64,
}

/// What timeout-stale did.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct TimeoutResult {
    /// Attempts ended (retried while attempts remain, TIMEOUT or FAILED
    /// otherwise).
    pub timed_out_count: u64,
}

/// An external worker's claim.
#[derive(Debug, Default, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// Most tasks to lease (default 1).
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub max_tasks: Option<u32>,
    /// Long-poll: wait up to this long (ms) for work when none is ready
    /// (default 0: answer at once).
    #[oai(validator(maximum(value = "30000")))]
    pub wait_ms: Option<u64>,
    /// Lease length in ms (default 30000); heartbeat before it runs out.
    #[oai(validator(minimum(value = "1000"), maximum(value = "3600000")))]
    pub lease_ms: Option<u64>,
    /// Worker id recorded on the tasks (default: the token's subject).
    #[oai(validator(min_length = 1, max_length = 128))]
    pub worker_id: Option<String>,
}

/// A leased task.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct LeasedTask {
    /// Task id.
    pub id: String,
    /// Lease token: heartbeat, complete and fail must present it.
    pub token: String,
    /// Agent.
    pub agent_id: String,
    /// Kind of work.
    pub task_type: String,
    /// Input.
    pub input_data: Value,
    /// Retries used before this attempt.
    pub retry_count: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// Hard limit on this attempt (ms).
    pub timeout_ms: u64,
    /// Priority.
    pub priority: Priority,
    /// Lease deadline (Unix ms).
    pub lease_until: i64,
    /// Attempt deadline: start + timeoutMs (Unix ms).
    pub deadline_at: i64,
}

impl From<crate::store::ClaimedTask> for LeasedTask {
    fn from(c: crate::store::ClaimedTask) -> Self {
        Self {
            id: c.id,
            token: c.token,
            agent_id: c.agent_id,
            task_type: c.task_type,
            input_data: c.input_data,
            retry_count: c.retry_count,
            max_retries: c.max_retries,
            timeout_ms: c.timeout_ms,
            priority: c.priority,
            lease_until: c.lease_until,
            deadline_at: c.deadline_at,
        }
    }
}

/// Leased tasks (empty when none was ready within waitMs).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ClaimResult {
    /// The tasks, highest priority first.
    pub tasks: Vec<LeasedTask>,
}

/// Extends a lease.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Lease token from the claim.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub token: String,
    /// New lease length from now (ms, default 30000).
    #[oai(validator(minimum(value = "1000"), maximum(value = "3600000")))]
    pub lease_ms: Option<u64>,
}

/// A held lease.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct HeartbeatResult {
    /// Always true in a 200 answer (a lost lease answers 409).
    pub held: bool,
    /// Lease length granted from now (ms).
    pub lease_ms: u64,
}

/// A successful attempt's result.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteRequest {
    /// Lease token from the claim.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub token: String,
    /// Output (any JSON, at most 1 MiB serialized by default).
    pub output_data: Option<Value>,
    /// What the attempt cost.
    pub actual_cost: Option<f64>,
    /// Quality of the output (0..1 by convention).
    pub quality_score: Option<f64>,
    /// Duration and token counts.
    pub metrics: Option<TaskMetrics>,
}

/// A failed attempt.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailRequest {
    /// Lease token from the claim.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub token: String,
    /// What went wrong (cut to 4096 characters).
    #[oai(validator(min_length = 1))]
    pub error_message: String,
    /// False when another attempt cannot help (default true).
    pub retryable: Option<bool>,
}

/// An agent's settings (the id is in the path).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInput {
    /// Display name.
    #[oai(validator(max_length = 256))]
    pub name: Option<String>,
    /// Free-form type (`llm`, `translator` ...).
    #[oai(rename = "type", validator(max_length = 64))]
    pub agent_type: Option<String>,
    /// How its tasks run (default EXTERNAL).
    pub kind: Option<AgentKind>,
    /// Endpoint the HTTP executor posts to (kind HTTP).
    #[oai(validator(max_length = 2048))]
    pub endpoint: Option<String>,
    /// Most of its tasks one node runs at once.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub concurrency: Option<u32>,
}

impl AgentInput {
    /// The record for agent `id`.
    pub fn into_agent(self, id: String) -> Agent {
        Agent {
            id,
            name: self.name.unwrap_or_default(),
            agent_type: self.agent_type.unwrap_or_default(),
            kind: self.kind.unwrap_or_default(),
            endpoint: self.endpoint,
            concurrency: self.concurrency,
        }
    }
}

/// Every agent.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct AgentList {
    /// Agents, by id.
    pub agents: Vec<Agent>,
}

/// Live nodes.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct NodeList {
    /// Nodes seen in the last few seconds, by id.
    pub nodes: Vec<crate::nodes::NodeInfo>,
}
