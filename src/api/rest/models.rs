//! Request and response bodies of the REST API that are not core types.
//! Request bodies refuse unknown fields, so a client cannot set server-owned
//! fields (status, retryCount, ownerId, lease) by sending them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use poem_openapi::{Object, Tags};
use serde_json::Value;

use crate::store::{
    Agent, AgentKind, AgentQueue, Breakdown, QueueHealth, QueueStatus, Statistics, TaskPage,
};

use crate::task::{NewTask, Priority, Task, TaskMetrics, TaskStatus};

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
    pub priority: Option<PriorityBody>,
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
            priority: self.priority.map(Into::into).unwrap_or_default(),
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

/// Most tasks in one batch.
pub const MAX_BATCH_TASKS: usize = 100;

/// A batch body in either form: `{"tasks": [...]}` or the seeds' bare array
/// of tasks. Both hold 1 to 100 tasks.
#[derive(Debug)]
pub struct BatchCreateBody(pub Vec<CreateTaskRequest>);

impl BatchCreateBody {
    /// The tasks, in request order.
    pub fn into_tasks(self) -> Vec<CreateTaskRequest> {
        self.0
    }
}

impl Type for BatchCreateBody {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "BatchCreateBody".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let bare = MetaSchema {
            ty: "array",
            description: Some("The tasks alone (the seeds' form)."),
            items: Some(Box::new(CreateTaskRequest::schema_ref())),
            min_items: Some(1),
            max_items: Some(MAX_BATCH_TASKS),
            ..MetaSchema::ANY
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "`{\"tasks\": [...]}` or a bare array of tasks; 1 to 100 either way.",
            ),
            one_of: vec![
                BatchCreateRequest::schema_ref(),
                MetaSchemaRef::Inline(Box::new(bare)),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn register(registry: &mut Registry) {
        BatchCreateRequest::register(registry);
        CreateTaskRequest::register(registry);
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

impl ParseFromJSON for BatchCreateBody {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Array(items)) => {
                if !(1..=MAX_BATCH_TASKS).contains(&items.len()) {
                    return Err(ParseError::custom(format!(
                        "a batch holds 1 to {MAX_BATCH_TASKS} tasks, not {}",
                        items.len()
                    )));
                }
                Vec::<CreateTaskRequest>::parse_from_json(Some(Value::Array(items)))
                    .map(BatchCreateBody)
                    .map_err(ParseError::propagate)
            }
            Some(object @ Value::Object(_)) => BatchCreateRequest::parse_from_json(Some(object))
                .map(|b| BatchCreateBody(b.tasks))
                .map_err(ParseError::propagate),
            _ => Err(ParseError::custom(
                "expected {\"tasks\": [...]} or an array of tasks",
            )),
        }
    }
}

/// Latest time a query takes as Unix ms: 9999-12-31T23:59:59.999Z.
pub const MAX_QUERY_UNIX_MS: i64 = 253_402_300_799_999;

/// A time in a query string, given as Unix ms (0 to [`MAX_QUERY_UNIX_MS`])
/// or as an RFC 3339 date-time with `Z` or an offset
/// (`2026-12-01T10:00:00Z`, `2026-12-01T12:00:00.5+02:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryTime {
    /// The time as Unix ms (before 1970 negative, from a date-time).
    pub unix_ms: i64,
}

impl QueryTime {
    /// Reads `value` as Unix ms or an RFC 3339 date-time.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Ok(ms) = value.parse::<i64>() {
            if !(0..=MAX_QUERY_UNIX_MS).contains(&ms) {
                return Err(format!(
                    "Unix ms must be from 0 to {MAX_QUERY_UNIX_MS}, not {ms}"
                ));
            }
            return Ok(Self { unix_ms: ms });
        }
        let refused = || {
            format!(
                "expected Unix ms or an RFC 3339 date-time such as 2026-12-01T10:00:00Z, not {value:?}"
            )
        };
        // RFC 3339 separates date and time with `T` (time's parser takes any
        // character there).
        if !matches!(value.as_bytes().get(10), Some(b'T' | b't')) {
            return Err(refused());
        }
        let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .map_err(|_| refused())?;
        let ms = at.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms)
            .map(|unix_ms| Self { unix_ms })
            .map_err(|_| refused())
    }
}

impl Type for QueryTime {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "unix_ms_or_date_time".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let unix_ms = MetaSchema {
            description: Some("Unix ms."),
            minimum: Some(0.0),
            maximum: Some(MAX_QUERY_UNIX_MS as f64),
            ..MetaSchema::new_with_format("integer", "int64")
        };
        let date_time = MetaSchema {
            description: Some("RFC 3339, with Z or an offset, e.g. 2026-12-01T10:00:00Z."),
            ..MetaSchema::new_with_format("string", "date-time")
        };
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![
                MetaSchemaRef::Inline(Box::new(unix_ms)),
                MetaSchemaRef::Inline(Box::new(date_time)),
            ],
            ..MetaSchema::ANY
        }))
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

impl ParseFromParameter for QueryTime {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).map_err(ParseError::custom)
    }
}

/// The tasks of an accepted batch, in request order.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct BatchCreateResult {
    /// The tasks (existing ones where an idempotency key matched).
    pub tasks: Vec<TaskBody>,
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
    pub priority: PriorityBody,
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
            priority: c.priority.into(),
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
    pub metrics: Option<TaskMetricsBody>,
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
    pub kind: Option<AgentKindBody>,
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
            kind: self.kind.map(AgentKind::from).unwrap_or_default(),
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
    pub agents: Vec<AgentBody>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: &str) -> Result<i64, String> {
        QueryTime::parse(value).map(|t| t.unix_ms)
    }

    #[test]
    fn a_query_time_is_unix_ms_or_an_rfc3339_instant() {
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("1796196158443"), Ok(1_796_196_158_443));
        assert_eq!(ms("2026-12-01T10:00:00Z"), Ok(1_796_119_200_000));
        assert_eq!(ms("2026-12-01t10:00:00z"), Ok(1_796_119_200_000));
        assert_eq!(ms("2026-12-01T12:30:00.250+02:30"), Ok(1_796_119_200_250));
        assert_eq!(ms("2026-12-01T00:00:00-10:00"), Ok(1_796_119_200_000));
        // Before 1970 the milliseconds round down, like the days of statistics.
        assert_eq!(ms("1969-12-31T23:59:59.9995Z"), Ok(-1));
        assert_eq!(ms("9999-12-31T23:59:59.999Z"), Ok(MAX_QUERY_UNIX_MS));
    }

    #[test]
    fn a_query_time_that_is_neither_form_is_refused() {
        for bad in [
            "-1",
            "253402300800000",
            "",
            "yesterday",
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-12-01 10:00:00Z",
            "2026-12-01x10:00:00Z",
            "2026-02-30T10:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00+24:00",
            "2026-12-01T10:00:00Z ",
            "1.5",
        ] {
            assert!(ms(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

/// How an agent's tasks are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "AgentKind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentKindBody {
    /// A Rust `Handler` registered in the nodes' worker registry.
    Handler,
    /// The built-in HTTP executor POSTs each task to `endpoint`.
    Http,
    /// External workers claim its tasks over the API.
    External,
}

impl From<AgentKind> for AgentKindBody {
    fn from(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Handler => Self::Handler,
            AgentKind::Http => Self::Http,
            AgentKind::External => Self::External,
        }
    }
}

impl From<AgentKindBody> for AgentKind {
    fn from(kind: AgentKindBody) -> Self {
        match kind {
            AgentKindBody::Handler => Self::Handler,
            AgentKindBody::Http => Self::Http,
            AgentKindBody::External => Self::External,
        }
    }
}

/// An agent record.
#[derive(Clone, Debug, PartialEq, Object)]
#[oai(
    rename = "Agent",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct AgentBody {
    /// Agent id (the `agentId` tasks name).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free-form type as in the seeds (`llm`, `translator` ...).
    #[oai(rename = "type")]
    pub agent_type: String,
    /// How its tasks run.
    pub kind: AgentKindBody,
    /// Endpoint of the HTTP executor (kind HTTP).
    pub endpoint: Option<String>,
    /// Most tasks of this agent one node runs at once (default: node limit).
    pub concurrency: Option<u32>,
}

impl From<Agent> for AgentBody {
    fn from(a: Agent) -> Self {
        Self {
            id: a.id,
            name: a.name,
            agent_type: a.agent_type,
            kind: a.kind.into(),
            endpoint: a.endpoint,
            concurrency: a.concurrency,
        }
    }
}

/// Counts for one agent or task type.
#[derive(Clone, Debug, PartialEq, Object)]
#[oai(rename = "Breakdown", rename_all = "camelCase")]
pub struct BreakdownBody {
    /// Tasks created.
    pub created: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks timed out for good.
    pub timeout: u64,
}

/// Outcomes over a date range.
#[derive(Clone, Debug, PartialEq, Object)]
#[oai(
    rename = "Statistics",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct StatisticsBody {
    /// Tasks created in the range.
    pub total_tasks: u64,
    /// Completed in the range.
    pub completed_tasks: u64,
    /// Failed for good in the range.
    pub failed_tasks: u64,
    /// Cancelled in the range.
    pub cancelled_tasks: u64,
    /// Timed out for good in the range.
    pub timeout_tasks: u64,
    /// Retries scheduled (automatic) in the range.
    pub retries: u64,
    /// completed / (completed + failed + timeout), in percent (0 with no outcomes).
    pub success_rate: f64,
    /// Mean duration of completed attempts (ms).
    pub average_duration_ms: Option<f64>,
    /// 95th percentile duration of completed attempts (ms, upper bound of its
    /// histogram bucket). When it falls in the open bucket past one hour, this
    /// is 3,600,000 and means "at least one hour".
    pub p95_duration_ms: Option<u64>,
    /// Sum of actualCost.
    pub total_cost: f64,
    /// Mean actualCost of tasks that reported one.
    pub average_cost: Option<f64>,
    /// Mean qualityScore of tasks that reported one.
    pub average_quality: Option<f64>,
    /// Tokens in (reported metrics).
    pub tokens_in: u64,
    /// Tokens out (reported metrics).
    pub tokens_out: u64,
    /// Per agent.
    pub by_agent: BTreeMap<String, BreakdownBody>,
    /// Per task type.
    pub by_task_type: BTreeMap<String, BreakdownBody>,
    /// First UTC day counted (ms at 00:00). A range longer than 366 days is
    /// cut to its last 366 days.
    pub from_ms: i64,
    /// Last UTC day counted (ms at 00:00).
    pub to_ms: i64,
}

impl From<Breakdown> for BreakdownBody {
    fn from(b: Breakdown) -> Self {
        Self {
            created: b.created,
            completed: b.completed,
            failed: b.failed,
            cancelled: b.cancelled,
            timeout: b.timeout,
        }
    }
}

impl From<Statistics> for StatisticsBody {
    fn from(s: Statistics) -> Self {
        Self {
            total_tasks: s.total_tasks,
            completed_tasks: s.completed_tasks,
            failed_tasks: s.failed_tasks,
            cancelled_tasks: s.cancelled_tasks,
            timeout_tasks: s.timeout_tasks,
            retries: s.retries,
            success_rate: s.success_rate,
            average_duration_ms: s.average_duration_ms,
            p95_duration_ms: s.p95_duration_ms,
            total_cost: s.total_cost,
            average_cost: s.average_cost,
            average_quality: s.average_quality,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            by_agent: s.by_agent.into_iter().map(|(k, v)| (k, v.into())).collect(),
            by_task_type: s
                .by_task_type
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
            from_ms: s.from_ms,
            to_ms: s.to_ms,
        }
    }
}

/// healthy / warning / critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "QueueHealth", rename_all = "lowercase")]
pub enum QueueHealthBody {
    /// Work is being picked up promptly.
    Healthy,
    /// Backlog or waiting time is building up.
    Warning,
    /// Backlog or waiting time is far past normal.
    Critical,
}

/// One agent's queue.
#[derive(Clone, Debug, Object)]
#[oai(
    rename = "AgentQueue",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct AgentQueueBody {
    /// Agent id.
    pub agent_id: String,
    /// Live tasks per status.
    pub by_status: BTreeMap<String, u64>,
    /// Ready (claimable now) tasks per priority.
    pub ready_by_priority: BTreeMap<String, u64>,
    /// How long its oldest ready task has waited (ms).
    pub oldest_waiting_ms: Option<i64>,
}

/// The queue's shape at one instant.
#[derive(Clone, Debug, Object)]
#[oai(
    rename = "QueueStatus",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct QueueStatusBody {
    /// Live tasks (not yet cleaned up).
    pub total_tasks: u64,
    /// QUEUED (ready or delayed).
    pub queued_tasks: u64,
    /// PROCESSING.
    pub processing_tasks: u64,
    /// COMPLETED.
    pub completed_tasks: u64,
    /// FAILED.
    pub failed_tasks: u64,
    /// CANCELLED.
    pub cancelled_tasks: u64,
    /// TIMEOUT.
    pub timeout_tasks: u64,
    /// QUEUED tasks waiting for runAt or a retry backoff.
    pub delayed_tasks: u64,
    /// Ready tasks per priority, all agents.
    pub ready_by_priority: BTreeMap<String, u64>,
    /// Per agent.
    pub agents: Vec<AgentQueueBody>,
    /// How long the oldest ready task has waited (ms).
    pub oldest_waiting_ms: Option<i64>,
    /// healthy / warning / critical (thresholds: `health_thresholds`, and the
    /// queueStatus operation's description).
    pub queue_health: QueueHealthBody,
    /// When this snapshot was taken (ms, Redis clock).
    pub timestamp: i64,
}

impl From<QueueHealth> for QueueHealthBody {
    fn from(h: QueueHealth) -> Self {
        match h {
            QueueHealth::Healthy => Self::Healthy,
            QueueHealth::Warning => Self::Warning,
            QueueHealth::Critical => Self::Critical,
        }
    }
}

impl From<AgentQueue> for AgentQueueBody {
    fn from(a: AgentQueue) -> Self {
        Self {
            agent_id: a.agent_id,
            by_status: a.by_status,
            ready_by_priority: a.ready_by_priority,
            oldest_waiting_ms: a.oldest_waiting_ms,
        }
    }
}

impl From<QueueStatus> for QueueStatusBody {
    fn from(q: QueueStatus) -> Self {
        Self {
            total_tasks: q.total_tasks,
            queued_tasks: q.queued_tasks,
            processing_tasks: q.processing_tasks,
            completed_tasks: q.completed_tasks,
            failed_tasks: q.failed_tasks,
            cancelled_tasks: q.cancelled_tasks,
            timeout_tasks: q.timeout_tasks,
            delayed_tasks: q.delayed_tasks,
            ready_by_priority: q.ready_by_priority,
            agents: q.agents.into_iter().map(AgentQueueBody::from).collect(),
            oldest_waiting_ms: q.oldest_waiting_ms,
            queue_health: q.queue_health.into(),
            timestamp: q.timestamp,
        }
    }
}

/// Task status as the seeds name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "TaskStatus", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatusBody {
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

impl From<TaskStatus> for TaskStatusBody {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Queued => Self::Queued,
            TaskStatus::Processing => Self::Processing,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Cancelled => Self::Cancelled,
            TaskStatus::Timeout => Self::Timeout,
        }
    }
}

impl From<TaskStatusBody> for TaskStatus {
    fn from(s: TaskStatusBody) -> Self {
        match s {
            TaskStatusBody::Queued => Self::Queued,
            TaskStatusBody::Processing => Self::Processing,
            TaskStatusBody::Completed => Self::Completed,
            TaskStatusBody::Failed => Self::Failed,
            TaskStatusBody::Cancelled => Self::Cancelled,
            TaskStatusBody::Timeout => Self::Timeout,
        }
    }
}

/// Claim order: URGENT > HIGH > NORMAL > LOW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "Priority", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PriorityBody {
    /// Claimed before everything else.
    Urgent,
    /// Before NORMAL and LOW.
    High,
    /// The default.
    Normal,
    /// Claimed last.
    Low,
}

impl From<Priority> for PriorityBody {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Urgent => Self::Urgent,
            Priority::High => Self::High,
            Priority::Normal => Self::Normal,
            Priority::Low => Self::Low,
        }
    }
}

impl From<PriorityBody> for Priority {
    fn from(p: PriorityBody) -> Self {
        match p {
            PriorityBody::Urgent => Self::Urgent,
            PriorityBody::High => Self::High,
            PriorityBody::Normal => Self::Normal,
            PriorityBody::Low => Self::Low,
        }
    }
}

/// Measurements of one attempt, reported by the handler.
#[derive(Clone, Debug, Default, PartialEq, Object)]
#[oai(
    rename = "TaskMetrics",
    rename_all = "camelCase",
    skip_serializing_if_is_none,
    deny_unknown_fields
)]
pub struct TaskMetricsBody {
    /// Wall time the handler reports (ms); the queue measures its own too.
    #[oai(validator(minimum(value = "0"), maximum(value = "9007199254740991")))]
    pub duration_ms: Option<u64>,
    /// Tokens sent to the model.
    #[oai(validator(minimum(value = "0"), maximum(value = "9007199254740991")))]
    pub tokens_in: Option<u64>,
    /// Tokens the model produced.
    #[oai(validator(minimum(value = "0"), maximum(value = "9007199254740991")))]
    pub tokens_out: Option<u64>,
}

impl From<TaskMetrics> for TaskMetricsBody {
    fn from(m: TaskMetrics) -> Self {
        Self {
            duration_ms: m.duration_ms,
            tokens_in: m.tokens_in,
            tokens_out: m.tokens_out,
        }
    }
}

impl From<TaskMetricsBody> for TaskMetrics {
    fn from(m: TaskMetricsBody) -> Self {
        Self {
            duration_ms: m.duration_ms,
            tokens_in: m.tokens_in,
            tokens_out: m.tokens_out,
        }
    }
}

/// A task as stored. Times are Unix milliseconds from Redis' clock.
#[derive(Clone, Debug, PartialEq, Object)]
#[oai(rename = "Task", rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct TaskBody {
    /// `task_` + ULID: time-ordered and unique.
    pub id: String,
    /// The agent whose workers run it.
    pub agent_id: String,
    /// What kind of work (summarise, translate ...).
    pub task_type: String,
    /// Handler input.
    pub input_data: Value,
    /// Handler output, once completed.
    pub output_data: Option<Value>,
    /// Current status.
    pub status: TaskStatusBody,
    /// Claim priority.
    pub priority: PriorityBody,
    /// Retries used so far (attempts - 1).
    pub retry_count: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Hard limit on one attempt (ms).
    pub timeout_ms: u64,
    /// Why the last attempt ended (failure, lost lease, cancellation);
    /// kept while the task retries, absent once it is COMPLETED.
    pub error_message: Option<String>,
    /// Caller's estimate.
    pub estimated_cost: Option<f64>,
    /// Reported by the handler.
    pub actual_cost: Option<f64>,
    /// Reported by the handler (0..1 by convention).
    pub quality_score: Option<f64>,
    /// Reported by the handler.
    pub metrics: Option<TaskMetricsBody>,
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

impl From<Task> for TaskBody {
    fn from(t: Task) -> Self {
        Self {
            id: t.id,
            agent_id: t.agent_id,
            task_type: t.task_type,
            input_data: t.input_data,
            output_data: t.output_data,
            status: t.status.into(),
            priority: t.priority.into(),
            retry_count: t.retry_count,
            max_retries: t.max_retries,
            timeout_ms: t.timeout_ms,
            error_message: t.error_message,
            estimated_cost: t.estimated_cost,
            actual_cost: t.actual_cost,
            quality_score: t.quality_score,
            metrics: t.metrics.map(Into::into),
            run_at: t.run_at,
            idempotency_key: t.idempotency_key,
            owner_id: t.owner_id,
            worker_id: t.worker_id,
            lease_until: t.lease_until,
            created_at: t.created_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            updated_at: t.updated_at,
        }
    }
}

/// One page of tasks, newest first.
#[derive(Clone, Debug, Object)]
#[oai(
    rename = "TaskPage",
    rename_all = "camelCase",
    skip_serializing_if_is_none
)]
pub struct TaskPageBody {
    /// The tasks.
    pub tasks: Vec<TaskBody>,
    /// Matches of the filter in all pages.
    pub total_count: u64,
    /// This page's number (1-based; with a cursor, counted from the cursor).
    pub current_page: u32,
    /// Pages in all at this page size.
    pub total_pages: u32,
    /// Page size.
    pub limit: u32,
    /// Whether more tasks follow.
    pub has_next_page: bool,
    /// Pass as `cursor` to get the next page (stable under inserts).
    pub next_cursor: Option<String>,
}

impl From<TaskPage> for TaskPageBody {
    fn from(p: TaskPage) -> Self {
        Self {
            tasks: p.tasks.into_iter().map(Into::into).collect(),
            total_count: p.total_count,
            current_page: p.current_page,
            total_pages: p.total_pages,
            limit: p.limit,
            has_next_page: p.has_next_page,
            next_cursor: p.next_cursor,
        }
    }
}
