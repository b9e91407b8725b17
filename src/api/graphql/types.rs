//! The GraphQL types with the seeds' names. Times are Unix milliseconds
//! (`Timestamp`), as in the REST API; input and output data are `JSON`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{ComplexObject, Context, Enum, InputObject, Json, Result, SimpleObject};

use crate::store::{Agent, Breakdown, QueueHealth, QueueStatus, Statistics, TaskPage};
use crate::task::{Priority, Task, TaskStatus};

/// A whole number beyond GraphQL's 32-bit `Int`, as a JSON number.
macro_rules! long_scalar {
    ($name:ident, $gql:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub(super) struct $name(pub(super) i64);

        #[async_graphql::Scalar(name = $gql)]
        impl async_graphql::ScalarType for $name {
            fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
                match &value {
                    async_graphql::Value::Number(n) => n
                        .as_i64()
                        .map($name)
                        .ok_or_else(|| async_graphql::InputValueError::custom("a whole number")),
                    _ => Err(async_graphql::InputValueError::expected_type(value)),
                }
            }

            fn to_value(&self) -> async_graphql::Value {
                async_graphql::Value::Number(self.0.into())
            }
        }
    };
}

long_scalar!(
    Timestamp,
    "Timestamp",
    "Unix milliseconds (Redis' clock), as a JSON number."
);
long_scalar!(Long, "Long", "A whole number up to 2^53, as a JSON number.");

fn ms(v: i64) -> Timestamp {
    Timestamp(v)
}

fn long(v: u64) -> Long {
    Long(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A task's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(
    name = "TaskStatus",
    rename_items = "SCREAMING_SNAKE_CASE",
    remote = "TaskStatus"
)]
pub(super) enum TaskStatusGql {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
}

/// A task's claim priority: URGENT > HIGH > NORMAL > LOW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(
    name = "TaskPriority",
    rename_items = "SCREAMING_SNAKE_CASE",
    remote = "Priority"
)]
pub(super) enum PriorityGql {
    Urgent,
    High,
    Normal,
    Low,
}

/// What a handler reported about its run.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(name = "TaskMetrics")]
pub(super) struct TaskMetricsGql {
    /// Wall time the handler reports (ms).
    duration_ms: Option<Long>,
    /// Tokens sent to the model.
    tokens_in: Option<Long>,
    /// Tokens the model produced.
    tokens_out: Option<Long>,
}

/// An agent as its tasks show it.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(name = "Agent")]
pub(super) struct AgentGql {
    /// The agent id tasks name.
    id: String,
    /// Display name.
    name: String,
    /// Free-form type (`llm`, `translator` ...).
    #[graphql(name = "type")]
    agent_type: String,
}

impl From<&Agent> for AgentGql {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            agent_type: a.agent_type.clone(),
        }
    }
}

/// Every agent record, read once per request for all the tasks it shows.
pub(super) struct AgentsOnce(pub(super) tokio::sync::OnceCell<Arc<HashMap<String, AgentGql>>>);

/// A task.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(name = "AITask", complex)]
pub(super) struct AiTask {
    /// `task_` + ULID.
    id: async_graphql::ID,
    /// The agent whose workers run it.
    agent_id: String,
    /// What kind of work.
    task_type: String,
    /// Handler input.
    input_data: Json<serde_json::Value>,
    /// Handler output, once completed.
    output_data: Option<Json<serde_json::Value>>,
    /// Current status.
    status: TaskStatusGql,
    /// Claim priority.
    priority: PriorityGql,
    /// Retries used so far.
    retry_count: u32,
    /// Retries allowed after the first attempt.
    max_retries: u32,
    /// Hard limit on one attempt (ms).
    timeout_ms: Long,
    /// Why the last attempt ended; none once COMPLETED.
    error_message: Option<String>,
    /// Caller's estimate.
    estimated_cost: Option<f64>,
    /// Reported by the handler.
    actual_cost: Option<f64>,
    /// Reported by the handler (0..1 by convention).
    quality_score: Option<f64>,
    /// Reported by the handler.
    metrics: Option<TaskMetricsGql>,
    /// Earliest start (ms).
    run_at: Option<Timestamp>,
    /// Caller's idempotency key.
    idempotency_key: Option<String>,
    /// Principal that created it.
    owner_id: Option<String>,
    /// Worker that holds or last held it.
    worker_id: Option<String>,
    /// Lease deadline of the current attempt (ms).
    lease_until: Option<Timestamp>,
    /// Created (ms).
    created_at: Timestamp,
    /// Latest attempt started (ms).
    started_at: Option<Timestamp>,
    /// Reached a terminal status (ms).
    completed_at: Option<Timestamp>,
    /// Last change (ms).
    updated_at: Timestamp,
    /// The lease token of the attempt `startTaskProcessing` just began:
    /// `heartbeatTask`, `completeTask` and `failTask` must present it.
    /// Null everywhere else (reads and subscriptions never show it).
    pub(super) lease_token: Option<String>,
}

impl From<Task> for AiTask {
    fn from(t: Task) -> Self {
        Self {
            id: t.id.into(),
            agent_id: t.agent_id,
            task_type: t.task_type,
            input_data: Json(t.input_data),
            output_data: t.output_data.map(Json),
            status: t.status.into(),
            priority: t.priority.into(),
            retry_count: t.retry_count,
            max_retries: t.max_retries,
            timeout_ms: long(t.timeout_ms),
            error_message: t.error_message,
            estimated_cost: t.estimated_cost,
            actual_cost: t.actual_cost,
            quality_score: t.quality_score,
            metrics: t.metrics.map(|m| TaskMetricsGql {
                duration_ms: m.duration_ms.map(long),
                tokens_in: m.tokens_in.map(long),
                tokens_out: m.tokens_out.map(long),
            }),
            run_at: t.run_at.map(ms),
            idempotency_key: t.idempotency_key,
            owner_id: t.owner_id,
            worker_id: t.worker_id,
            lease_until: t.lease_until.map(ms),
            created_at: ms(t.created_at),
            started_at: t.started_at.map(ms),
            completed_at: t.completed_at.map(ms),
            updated_at: ms(t.updated_at),
            lease_token: None,
        }
    }
}

#[ComplexObject]
impl AiTask {
    /// Its agent's record (null when the agent has none). Read once per
    /// request for every task shown.
    async fn agent(&self, ctx: &Context<'_>) -> Result<Option<AgentGql>> {
        super::query::agent(ctx, &self.agent_id).await
    }

    /// Whether the task has ended (COMPLETED, FAILED, CANCELLED, TIMEOUT).
    async fn is_terminal(&self) -> bool {
        !matches!(
            self.status,
            TaskStatusGql::Queued | TaskStatusGql::Processing
        )
    }

    /// Attempt time so far or in all (ms): from the latest start to the end,
    /// or to the last change while it runs; null before it started.
    async fn duration_ms(&self) -> Option<Long> {
        let start = self.started_at?;
        Some(Long(
            (self.completed_at.unwrap_or(self.updated_at).0 - start.0).max(0),
        ))
    }
}

/// Which tasks `aiTasks` lists.
#[derive(Clone, Debug, Default, InputObject)]
#[graphql(name = "AITaskFilter")]
pub(super) struct TaskFilter {
    /// Only this status.
    pub(super) status: Option<TaskStatusGql>,
    /// Only this priority.
    pub(super) priority: Option<PriorityGql>,
    /// Only this agent.
    pub(super) agent_id: Option<String>,
    /// Only this task type.
    pub(super) task_type: Option<String>,
    /// Created at or after (Unix ms).
    pub(super) start_date: Option<Timestamp>,
    /// Created at or before (Unix ms).
    pub(super) end_date: Option<Timestamp>,
}

/// Which page `aiTasks` answers.
#[derive(Clone, Debug, InputObject)]
#[graphql(name = "PaginationInput")]
pub(super) struct Pagination {
    /// 1-based page (ignored with `cursor`).
    #[graphql(default = 1)]
    pub(super) page: u32,
    /// Tasks per page, 1 to 100.
    #[graphql(default = 20)]
    pub(super) limit: u32,
    /// `pageInfo.nextCursor` of the previous page.
    pub(super) cursor: Option<String>,
}

impl Default for Pagination {
    fn default() -> Self {
        Self {
            page: 1,
            limit: 20,
            cursor: None,
        }
    }
}

/// Where a page stands.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct PageInfo {
    /// More pages follow.
    has_next_page: bool,
    /// This page's number.
    current_page: u32,
    /// Pages in all.
    total_pages: u32,
    /// Pass as `pagination.cursor` for the next page (stable while tasks
    /// are added).
    next_cursor: Option<String>,
}

/// One page of tasks, newest first.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(name = "AITaskConnection")]
pub(super) struct TaskConnection {
    /// The tasks of this page.
    tasks: Vec<AiTask>,
    /// Matches of the filter in all pages.
    total_count: u64,
    /// Where this page stands.
    page_info: PageInfo,
}

impl From<TaskPage> for TaskConnection {
    fn from(p: TaskPage) -> Self {
        Self {
            tasks: p.tasks.into_iter().map(AiTask::from).collect(),
            total_count: p.total_count,
            page_info: PageInfo {
                has_next_page: p.has_next_page,
                current_page: p.current_page,
                total_pages: p.total_pages,
                next_cursor: p.next_cursor,
            },
        }
    }
}

/// The queue's health by its oldest wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
#[graphql(rename_items = "lowercase", remote = "QueueHealth")]
pub(super) enum QueueHealthGql {
    Healthy,
    Warning,
    Critical,
}

/// Counts in one agent's queue.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct AgentQueueStatus {
    /// The agent.
    agent_id: String,
    /// Live tasks by status.
    by_status: Json<std::collections::BTreeMap<String, u64>>,
    /// Ready tasks by priority.
    ready_by_priority: Json<std::collections::BTreeMap<String, u64>>,
    /// How long its oldest ready task has waited (ms).
    oldest_waiting_ms: Option<Long>,
}

/// The queue's shape (the REST `QueueStatus`).
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct TaskQueueStatus {
    total_tasks: u64,
    queued_tasks: u64,
    processing_tasks: u64,
    completed_tasks: u64,
    failed_tasks: u64,
    cancelled_tasks: u64,
    timeout_tasks: u64,
    /// QUEUED tasks waiting for runAt or a retry backoff.
    delayed_tasks: u64,
    /// Ready tasks per priority, all agents.
    ready_by_priority: Json<std::collections::BTreeMap<String, u64>>,
    /// Per agent.
    agents: Vec<AgentQueueStatus>,
    /// How long the oldest ready task has waited (ms).
    oldest_waiting_ms: Option<Long>,
    /// healthy / warning / critical.
    queue_health: QueueHealthGql,
    /// When this snapshot was taken (ms).
    timestamp: Timestamp,
}

impl From<QueueStatus> for TaskQueueStatus {
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
            ready_by_priority: Json(q.ready_by_priority),
            agents: q
                .agents
                .into_iter()
                .map(|a| AgentQueueStatus {
                    agent_id: a.agent_id,
                    by_status: Json(a.by_status),
                    ready_by_priority: Json(a.ready_by_priority),
                    oldest_waiting_ms: a.oldest_waiting_ms.map(Long),
                })
                .collect(),
            oldest_waiting_ms: q.oldest_waiting_ms.map(Long),
            queue_health: q.queue_health.into(),
            timestamp: ms(q.timestamp),
        }
    }
}

/// Which outcomes `taskStatistics` counts.
#[derive(Clone, Debug, Default, InputObject)]
#[graphql(name = "TaskStatisticsFilter")]
pub(super) struct StatisticsFilter {
    /// Only this agent.
    pub(super) agent_id: Option<String>,
    /// Only this task type.
    pub(super) task_type: Option<String>,
    /// A time in the first day (default 29 days before endDate; at most
    /// 366 days are counted, the latest).
    pub(super) start_date: Option<Timestamp>,
    /// A time in the last day (default now).
    pub(super) end_date: Option<Timestamp>,
}

/// Outcome counts of one agent or task type.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(name = "TaskBreakdown")]
pub(super) struct BreakdownGql {
    /// The agent or task type.
    key: String,
    created: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    timeout: u64,
}

fn breakdowns(map: std::collections::BTreeMap<String, Breakdown>) -> Vec<BreakdownGql> {
    map.into_iter()
        .map(|(key, b)| BreakdownGql {
            key,
            created: b.created,
            completed: b.completed,
            failed: b.failed,
            cancelled: b.cancelled,
            timeout: b.timeout,
        })
        .collect()
}

/// Outcomes over whole UTC days (the REST `Statistics`; outlives cleanup).
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct TaskStatistics {
    /// Tasks created in the range.
    total_tasks: u64,
    completed_tasks: u64,
    failed_tasks: u64,
    cancelled_tasks: u64,
    timeout_tasks: u64,
    /// Retries scheduled (automatic).
    retries: u64,
    /// completed / (completed + failed + timeout), in percent.
    success_rate: f64,
    /// Mean duration of completed attempts (ms).
    average_duration_ms: Option<f64>,
    /// 95th percentile duration of completed attempts (ms, bucket bound).
    p95_duration_ms: Option<Long>,
    /// Sum of actualCost.
    total_cost: f64,
    /// Mean actualCost of tasks that reported one.
    average_cost: Option<f64>,
    /// Mean qualityScore of tasks that reported one.
    average_quality: Option<f64>,
    tokens_in: Long,
    tokens_out: Long,
    /// Per agent.
    by_agent: Vec<BreakdownGql>,
    /// Per task type.
    by_task_type: Vec<BreakdownGql>,
    /// First UTC day counted (ms at 00:00).
    from: Timestamp,
    /// Last UTC day counted (ms at 00:00).
    to: Timestamp,
}

impl From<Statistics> for TaskStatistics {
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
            p95_duration_ms: s.p95_duration_ms.map(long),
            total_cost: s.total_cost,
            average_cost: s.average_cost,
            average_quality: s.average_quality,
            tokens_in: long(s.tokens_in),
            tokens_out: long(s.tokens_out),
            by_agent: breakdowns(s.by_agent),
            by_task_type: breakdowns(s.by_task_type),
            from: ms(s.from_ms),
            to: ms(s.to_ms),
        }
    }
}
