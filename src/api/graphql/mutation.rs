//! Mutations over the same service calls as REST: what submitters do
//! (create, batch, cancel, retry), what workers do (start, heartbeat,
//! complete, fail: the lease token travels as in REST, returned by
//! `startTaskProcessing` and presented by the others, and a stale one is
//! refused), and the admin's cleanup and timeout-stale.

use std::time::Duration;

use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Json, Object, Result, SimpleObject,
};

use super::types::{AiTask, Long, PriorityGql, Timestamp};
use super::{caller, service};
use crate::ids::{LeaseToken, TaskId, WorkerId};
use crate::store::{Completion, Failure};
use crate::task::{NewTask, TaskMetrics};

/// Longest lease a worker may ask for (ms), as in REST.
const MAX_LEASE_MS: i64 = 3_600_000;
/// Shortest lease (ms).
const MIN_LEASE_MS: i64 = 1_000;
/// Largest `timeoutMs` of `timeoutStaleTasks` (7 days), as in REST.
const MAX_STALE_MS: i64 = 604_800_000;
/// Largest cost or quality score accepted, either sign, as in REST.
const MAX_SCORE: f64 = 1e15;
/// Largest metric accepted (2^53 - 1: exact in JSON).
const MAX_METRIC: i64 = 9_007_199_254_740_991;

fn invalid(message: String) -> async_graphql::Error {
    super::error(crate::Error::Validation(message))
}

/// `ms` as a duration when it lies in `min..=max`.
fn millis(name: &str, ms: Option<Long>, min: i64, max: i64) -> Result<Option<Duration>> {
    match ms {
        None => Ok(None),
        Some(Long(v)) if (min..=max).contains(&v) => Ok(Some(Duration::from_millis(v as u64))),
        Some(Long(v)) => Err(invalid(format!("{name} must be {min} to {max}, not {v}"))),
    }
}

fn score(name: &str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.is_finite() && x.abs() <= MAX_SCORE) => Err(invalid(format!(
            "{name} must be a number from -1e15 to 1e15"
        ))),
        v => Ok(v),
    }
}

fn token_of(t: &str) -> Result<String> {
    Ok(LeaseToken::parse(t).map_err(super::error)?.into_string())
}

/// A task to create (the REST create body).
#[derive(Clone, Debug, InputObject)]
#[graphql(name = "CreateAITaskInput")]
pub(super) struct CreateTaskInput {
    /// Agent that should run it.
    agent_id: String,
    /// Kind of work.
    task_type: String,
    /// Input for the agent (any JSON).
    input_data: Option<Json<serde_json::Value>>,
    /// Claim priority (default NORMAL).
    priority: Option<PriorityGql>,
    /// Retries after the first attempt (default 3, at most 100).
    max_retries: Option<u32>,
    /// Hard limit on one attempt in ms (default one hour, at most 7 days).
    timeout_ms: Option<super::types::Long>,
    /// Caller's cost estimate (non-negative).
    estimated_cost: Option<f64>,
    /// Earliest start (Unix ms).
    run_at: Option<Timestamp>,
    /// Same key from the same owner returns the same task.
    idempotency_key: Option<String>,
}

impl CreateTaskInput {
    fn into_new(self) -> NewTask {
        NewTask {
            agent_id: self.agent_id,
            task_type: self.task_type,
            input_data: self
                .input_data
                .map(|j| j.0)
                .unwrap_or(serde_json::Value::Null),
            priority: self.priority.map(Into::into).unwrap_or_default(),
            max_retries: self.max_retries,
            timeout_ms: self
                .timeout_ms
                .map(|l| u64::try_from(l.0).unwrap_or(u64::MAX)),
            estimated_cost: self.estimated_cost,
            run_at: self.run_at.map(|t| t.0),
            idempotency_key: self.idempotency_key,
            owner_id: None,
        }
    }
}

/// The tasks of an accepted batch, in request order.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct BatchTaskResult {
    /// The tasks (existing ones where an idempotency key matched).
    tasks: Vec<AiTask>,
    /// How many this request created.
    created_count: u32,
    /// How many already existed (idempotency key).
    existing_count: u32,
}

/// What a handler reports about its run (each 0 to 2^53 - 1).
#[derive(Clone, Debug, Default, InputObject)]
#[graphql(name = "TaskMetricsInput")]
pub(super) struct TaskMetricsInput {
    /// Wall time the handler reports (ms); the queue measures its own too.
    duration_ms: Option<Long>,
    /// Tokens sent to the model.
    tokens_in: Option<Long>,
    /// Tokens the model produced.
    tokens_out: Option<Long>,
}

impl TaskMetricsInput {
    fn into_metrics(self) -> Result<TaskMetrics> {
        let check = |name: &str, v: Option<Long>| match v {
            None => Ok(None),
            Some(Long(n)) if (0..=MAX_METRIC).contains(&n) => Ok(Some(n as u64)),
            Some(_) => Err(invalid(format!("metrics.{name} must be 0 to 2^53 - 1"))),
        };
        Ok(TaskMetrics {
            duration_ms: check("durationMs", self.duration_ms)?,
            tokens_in: check("tokensIn", self.tokens_in)?,
            tokens_out: check("tokensOut", self.tokens_out)?,
        })
    }
}

/// A lease still held after a heartbeat.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct HeartbeatResult {
    /// Always true: a lost lease is an error (`LEASE_MISMATCH`, or
    /// `TASK_CANCELLED` when the task was cancelled), and the worker stops.
    held: bool,
    /// The lease granted from now (ms).
    lease_ms: Long,
}

/// What `cleanupOldTasks` removed.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct CleanupResult {
    /// Terminal tasks deleted (their statistics stay).
    deleted_count: Long,
    /// The retention applied (days).
    retention_days: Long,
}

/// What `timeoutStaleTasks` ended.
#[derive(Clone, Debug, SimpleObject)]
pub(super) struct TimeoutResult {
    /// Attempts ended (each retried while attempts remain, else TIMEOUT).
    timed_out_count: Long,
}

/// The mutation root.
pub(crate) struct Mutation;

fn task_id(id: &ID) -> Result<TaskId> {
    TaskId::parse(id.as_str()).map_err(|_| super::error(crate::Error::TaskNotFound(id.to_string())))
}

#[Object]
impl Mutation {
    /// Creates a task owned by the caller (a repeated idempotency key
    /// returns the first task).
    #[graphql(name = "createAITask")]
    async fn create_ai_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let created = service(ctx)
            .create(principal, input.into_new())
            .await
            .map_err(super::error)?;
        Ok(created.task.into())
    }

    /// Creates 1 to 100 tasks, all or nothing; a refusal lists each bad
    /// item in `extensions.details.items` (`index`, `message`).
    #[graphql(name = "createAITasksBatch")]
    async fn create_ai_tasks_batch(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<CreateTaskInput>,
    ) -> Result<BatchTaskResult> {
        let principal = caller(ctx)?;
        let tasks = inputs.into_iter().map(CreateTaskInput::into_new).collect();
        let created = service(ctx)
            .create_batch(principal, tasks)
            .await
            .map_err(super::error)?;
        let created_count = created.iter().filter(|c| c.created).count() as u32;
        Ok(BatchTaskResult {
            existing_count: created.len() as u32 - created_count,
            created_count,
            tasks: created.into_iter().map(|c| c.task.into()).collect(),
        })
    }

    /// Cancels a QUEUED or PROCESSING task the caller may change.
    #[graphql(name = "cancelAITask")]
    async fn cancel_ai_task(&self, ctx: &Context<'_>, id: ID) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let task = service(ctx)
            .cancel(principal, &task_id(&id)?)
            .await
            .map_err(super::error)?;
        Ok(task.into())
    }

    /// Puts a FAILED, TIMEOUT or CANCELLED task back in the queue.
    #[graphql(name = "retryAITask")]
    async fn retry_ai_task(&self, ctx: &Context<'_>, id: ID) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let task = service(ctx)
            .retry(principal, &task_id(&id)?)
            .await
            .map_err(super::error)?;
        Ok(task.into())
    }

    /// Leases this QUEUED task for the caller (a worker of its agent, or an
    /// admin) instead of the next ready one, as `POST
    /// /api/ai/tasks/{id}/start` does. The returned task carries the
    /// attempt's `leaseToken`: heartbeat before `leaseUntil` and present
    /// the token to `completeTask` or `failTask`, or the task goes to
    /// another worker and this one's results are refused
    /// (`LEASE_MISMATCH`). `TASK_NOT_READY` when it is not QUEUED or waits
    /// for its run time. Should the task not be read back after the lease
    /// was taken, the error carries `extensions.leaseToken` and
    /// `leaseUntil`.
    #[graphql(name = "startTaskProcessing")]
    async fn start_task_processing(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task to lease.")] id: ID,
        #[graphql(desc = "Lease length in ms (1000 to 3600000; default 30000).")] lease_ms: Option<
            Long,
        >,
        #[graphql(desc = "Worker id recorded on the task (default: the token's subject).")]
        worker_id: Option<String>,
    ) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let id = task_id(&id)?;
        let lease = millis("leaseMs", lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        let worker = worker_id
            .map(|w| WorkerId::parse(&w))
            .transpose()
            .map_err(super::error)?;
        let queue = service(ctx);
        let claimed = queue
            .start(principal, &id, worker, lease)
            .await
            .map_err(super::error)?;
        // The lease is taken: a failed read-back still hands the worker its
        // token (in the error's extensions), or the task would sit leased.
        let task = match queue.get(principal, &id).await {
            Ok(task) => task,
            Err(e) => {
                let (token, until) = (claimed.token, claimed.lease_until);
                return Err(super::error(e).extend_with(move |_, ext| {
                    ext.set("leaseToken", token.as_str());
                    ext.set("leaseUntil", until);
                }));
            }
        };
        let mut task = AiTask::from(task);
        task.lease_token = Some(claimed.token);
        Ok(task)
    }

    /// Extends the lease of the attempt holding `token`.
    #[graphql(name = "heartbeatTask")]
    async fn heartbeat_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task.")] id: ID,
        #[graphql(desc = "The lease token `startTaskProcessing` returned.")] token: String,
        #[graphql(desc = "Lease length in ms from now (1000 to 3600000; default 30000).")]
        lease_ms: Option<Long>,
    ) -> Result<HeartbeatResult> {
        let principal = caller(ctx)?;
        let id = task_id(&id)?;
        let lease = millis("leaseMs", lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        let token = LeaseToken::parse(&token).map_err(super::error)?;
        let granted = service(ctx)
            .heartbeat(principal, &id, token, lease)
            .await
            .map_err(super::error)?;
        Ok(HeartbeatResult {
            held: true,
            lease_ms: Long(granted.as_millis() as i64),
        })
    }

    /// Stores the attempt's result and completes the task (a repeat with
    /// the same token is harmless). `LEASE_MISMATCH` when the token is not
    /// the current attempt's, `NOT_PROCESSING` when the task no longer
    /// runs (cancelled, timed out).
    #[graphql(name = "completeTask")]
    // Each argument is one of the GraphQL field's.
    #[allow(clippy::too_many_arguments)]
    async fn complete_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task.")] id: ID,
        #[graphql(desc = "The lease token `startTaskProcessing` returned.")] token: String,
        #[graphql(desc = "The handler's output (any JSON).")] output_data: Option<
            Json<serde_json::Value>,
        >,
        #[graphql(desc = "What the handler reports about its run.")] metrics: Option<
            TaskMetricsInput,
        >,
        #[graphql(desc = "The run's cost (-1e15 to 1e15).")] actual_cost: Option<f64>,
        #[graphql(desc = "The result's quality (0..1 by convention; -1e15 to 1e15).")]
        quality_score: Option<f64>,
    ) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let id = task_id(&id)?;
        let completion = Completion {
            id: id.into_string(),
            token: token_of(&token)?,
            output_data: output_data.map(|j| j.0),
            actual_cost: score("actualCost", actual_cost)?,
            quality_score: score("qualityScore", quality_score)?,
            metrics: metrics.map(TaskMetricsInput::into_metrics).transpose()?,
        };
        let task = service(ctx)
            .complete(principal, completion)
            .await
            .map_err(super::error)?;
        Ok(task.into())
    }

    /// Records a failed attempt: retried after a backoff while attempts
    /// remain and `retryable` is not false, else FAILED. Refusals as for
    /// `completeTask`.
    #[graphql(name = "failTask")]
    async fn fail_task(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task.")] id: ID,
        #[graphql(desc = "The lease token `startTaskProcessing` returned.")] token: String,
        #[graphql(desc = "Why the attempt failed (not empty).")] error_message: String,
        #[graphql(desc = "False: no retry, whatever attempts remain.")] retryable: Option<bool>,
    ) -> Result<AiTask> {
        let principal = caller(ctx)?;
        let id = task_id(&id)?;
        if error_message.is_empty() {
            return Err(invalid("errorMessage must not be empty".into()));
        }
        let failure = Failure {
            id: id.into_string(),
            token: token_of(&token)?,
            error_message,
            retryable: retryable.unwrap_or(true),
            timed_out: false,
        };
        let task = service(ctx)
            .fail(principal, failure)
            .await
            .map_err(super::error)?;
        Ok(task.into())
    }

    /// Deletes terminal tasks that ended more than the retention ago (the
    /// node's setting, 7 days by default); statistics stay. Admins only.
    #[graphql(name = "cleanupOldTasks")]
    async fn cleanup_old_tasks(&self, ctx: &Context<'_>) -> Result<CleanupResult> {
        let principal = caller(ctx)?;
        let outcome = service(ctx)
            .cleanup(principal)
            .await
            .map_err(super::error)?;
        Ok(CleanupResult {
            deleted_count: Long(i64::try_from(outcome.deleted).unwrap_or(i64::MAX)),
            retention_days: Long((outcome.retention.as_secs() / 86_400) as i64),
        })
    }

    /// Runs the reaper now (attempts past their lease or own timeoutMs);
    /// with `timeoutMs`, also ends every attempt running longer than that.
    /// Ended attempts are retried while attempts remain. Admins only.
    #[graphql(name = "timeoutStaleTasks")]
    async fn timeout_stale_tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Also end attempts running longer than this (1 to 604800000 ms).")]
        timeout_ms: Option<Long>,
    ) -> Result<TimeoutResult> {
        let principal = caller(ctx)?;
        let max_age = millis("timeoutMs", timeout_ms, 1, MAX_STALE_MS)?;
        let ended = service(ctx)
            .timeout_stale(principal, max_age)
            .await
            .map_err(super::error)?;
        Ok(TimeoutResult {
            timed_out_count: Long(i64::try_from(ended).unwrap_or(i64::MAX)),
        })
    }
}
