//! Request and response bodies of the REST API that are not core types.
//! Request bodies refuse unknown fields, so a client cannot set server-owned
//! fields (status, retryCount, ownerId, lease) by sending them.

use std::borrow::Cow;

use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Object, Tags};
use serde_json::Value;

use crate::store::{Agent, AgentKind};
use crate::task::{NewTask, Priority, Task, TaskMetrics};

/// A JSON string, and only a string: poem-openapi's `String` also takes
/// numbers and booleans (`false` would become "false"), which the schema
/// does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Text(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

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
    pub agent_id: Text,
    /// Kind of work (same characters as agentId).
    pub task_type: Text,
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
    pub idempotency_key: Option<Text>,
}

impl CreateTaskRequest {
    /// The core request (the queue sets its owner).
    pub fn into_new(self) -> NewTask {
        NewTask {
            agent_id: self.agent_id.0,
            task_type: self.task_type.0,
            input_data: self.input_data.unwrap_or(Value::Null),
            priority: self.priority.unwrap_or_default(),
            max_retries: self.max_retries,
            timeout_ms: self.timeout_ms,
            estimated_cost: self.estimated_cost,
            run_at: self.run_at,
            idempotency_key: self.idempotency_key.map(|k| k.0),
            owner_id: None,
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
    #[oai(validator(minimum(value = "0"), maximum(value = "30000")))]
    pub wait_ms: Option<u64>,
    /// Lease length in ms (default 30000); heartbeat before it runs out.
    #[oai(validator(minimum(value = "1000"), maximum(value = "3600000")))]
    pub lease_ms: Option<u64>,
    /// Worker id recorded on the tasks (default: the token's subject).
    #[oai(validator(pattern = r"^[A-Za-z0-9_.@+-]+$", min_length = 1, max_length = 128))]
    pub worker_id: Option<Text>,
}

/// An external worker's start of one named task.
#[derive(Debug, Default, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    /// Lease length in ms (default 30000); heartbeat before it runs out.
    #[oai(validator(minimum(value = "1000"), maximum(value = "3600000")))]
    pub lease_ms: Option<u64>,
    /// Worker id recorded on the task (default: the token's subject).
    #[oai(validator(pattern = r"^[A-Za-z0-9_.@+-]+$", min_length = 1, max_length = 128))]
    pub worker_id: Option<Text>,
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
    pub token: Text,
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
    pub token: Text,
    /// Output (any JSON, at most 1 MiB serialized by default).
    pub output_data: Option<Value>,
    /// What the attempt cost.
    #[oai(validator(minimum(value = "-1e15"), maximum(value = "1e15")))]
    pub actual_cost: Option<f64>,
    /// Quality of the output (0..1 by convention).
    #[oai(validator(minimum(value = "-1e15"), maximum(value = "1e15")))]
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
    pub token: Text,
    /// What went wrong (cut to 4096 characters).
    #[oai(validator(min_length = 1))]
    pub error_message: Text,
    /// False when another attempt cannot help (default true).
    pub retryable: Option<bool>,
}

/// An agent's settings (the id is in the path).
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentInput {
    /// Display name.
    #[oai(validator(max_length = 256))]
    pub name: Option<Text>,
    /// Free-form type (`llm`, `translator` ...).
    #[oai(rename = "type", validator(max_length = 64))]
    pub agent_type: Option<Text>,
    /// How its tasks run (default EXTERNAL).
    pub kind: Option<AgentKind>,
    /// Endpoint the HTTP executor posts to (kind HTTP).
    #[oai(validator(max_length = 2048))]
    pub endpoint: Option<Text>,
    /// Most of its tasks one node runs at once.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub concurrency: Option<u32>,
}

impl AgentInput {
    /// The record for agent `id`.
    pub fn into_agent(self, id: String) -> Agent {
        Agent {
            id,
            name: self.name.unwrap_or_default().0,
            agent_type: self.agent_type.unwrap_or_default().0,
            kind: self.kind.unwrap_or_default(),
            endpoint: self.endpoint.map(|e| e.0),
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
    pub nodes: Vec<NodeInfo>,
}

impl From<Vec<crate::nodes::NodeInfo>> for NodeList {
    fn from(nodes: Vec<crate::nodes::NodeInfo>) -> Self {
        Self {
            nodes: nodes.into_iter().map(NodeInfo::from).collect(),
        }
    }
}

/// One live node.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct NodeInfo {
    /// Node id (unique per running node).
    pub node_id: String,
    /// taskherd version the node runs.
    pub version: String,
    /// When the node started (Unix ms).
    pub started_at: i64,
    /// When the node last refreshed its entry (Unix ms, Redis clock).
    pub last_seen_at: i64,
    /// What the node runs: `api`, `worker`, `maintenance`.
    pub roles: Vec<String>,
    /// The node's worker statistics, when it runs workers.
    pub worker: Option<serde_json::Value>,
}

impl From<crate::nodes::NodeInfo> for NodeInfo {
    fn from(n: crate::nodes::NodeInfo) -> Self {
        Self {
            node_id: n.node_id,
            version: n.version,
            started_at: n.started_at,
            last_seen_at: n.last_seen_at,
            roles: n.roles,
            worker: n.worker,
        }
    }
}
