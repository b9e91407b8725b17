//! Mutations over the same service calls as REST. This step: what
//! submitters do (create, batch, cancel, retry); the worker and admin
//! mutations come next.

use async_graphql::{Context, ID, InputObject, Json, Object, Result, SimpleObject};

use super::types::{AiTask, PriorityGql, Timestamp};
use super::{caller, service};
use crate::ids::TaskId;
use crate::task::NewTask;

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
}
