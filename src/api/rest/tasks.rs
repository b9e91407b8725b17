//! The seeds' task endpoints under `/api/ai/tasks`.

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::error::{Errors, status as s};
use super::models::{
    ApiTags, BatchCreateBody, BatchCreateResult, CleanupResult, CreateTaskRequest, PriorityBody,
    QueryTime, QueueStatusBody, StatisticsBody, TaskBody, TaskPageBody, TaskStatusBody,
    TimeoutResult,
};
use super::{AppState, BearerAuth};
use crate::ids::TaskId;
use crate::store::{ListFilter, StatsFilter};

pub(super) struct TasksApi;

/// 201 for a new task, 200 when the idempotency key matched an existing one.
#[derive(ApiResponse)]
enum CreateResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TaskBody>),
    /// An earlier request with the same idempotency key created this task.
    #[oai(status = 200)]
    Existing(Json<TaskBody>),
}

const GET_ERRORS: u16 = s::AUTHED | s::NOT_FOUND;
const CHANGE_ERRORS: u16 = s::AUTHED | s::FORBIDDEN | s::NOT_FOUND | s::CONFLICT;
const ADMIN_ERRORS: u16 = s::AUTHED | s::BAD_REQUEST | s::FORBIDDEN;

#[OpenApi(tag = "ApiTags::Tasks")]
impl TasksApi {
    /// Create a task
    ///
    /// Queues a task for its agent. The task is owned by the token's subject.
    /// With an idempotency key (header `Idempotency-Key` or field
    /// `idempotencyKey`; the header wins when both are given), a repeat from
    /// the same owner returns the first task with 200 instead of creating
    /// another.
    #[oai(path = "/api/ai/tasks", method = "post", operation_id = "createTask")]
    async fn create(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Same as the `idempotencyKey` field.
        #[oai(
            name = "Idempotency-Key",
            validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128)
        )]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateTaskRequest>,
    ) -> Result<CreateResponse, Errors<{ s::WITH_BODY | s::FORBIDDEN }>> {
        let mut req = body.0;
        // The header wins over the field when both are given.
        if let Some(key) = idempotency_key.0 {
            req.idempotency_key = Some(super::models::Text(key));
        }
        let created = state.queue.create(&principal, req.into_new()).await?;
        Ok(if created.created {
            CreateResponse::Created(Json(created.task.into()))
        } else {
            CreateResponse::Existing(Json(created.task.into()))
        })
    }

    /// List tasks
    ///
    /// Newest first. Users see their own tasks, workers their agent's, admins
    /// all. Page with `page` (deep offsets are capped at 10,000 tasks) or with
    /// the `nextCursor` of the previous page (any depth, stable under new
    /// tasks).
    #[oai(path = "/api/ai/tasks", method = "get", operation_id = "listTasks")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Only this status.
        status: Query<Option<TaskStatusBody>>,
        /// Only this priority.
        priority: Query<Option<PriorityBody>>,
        /// Only this agent.
        #[oai(
            name = "agentId",
            validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128)
        )]
        agent_id: Query<Option<String>>,
        /// Only this task type.
        #[oai(
            name = "taskType",
            validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128)
        )]
        task_type: Query<Option<String>>,
        /// Created at or after (Unix ms, or RFC 3339 such as
        /// 2026-12-01T10:00:00Z).
        #[oai(name = "startDate")]
        start_date: Query<Option<QueryTime>>,
        /// Created at or before (Unix ms, or RFC 3339); before startDate:
        /// nothing matches.
        #[oai(name = "endDate")]
        end_date: Query<Option<QueryTime>>,
        /// Page number, 1 to 100 (deeper: follow `nextCursor`).
        #[oai(
            default = "default_page",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        page: Query<u32>,
        /// Tasks per page, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `nextCursor` of the previous page (then `page` is ignored).
        #[oai(validator(pattern = r"^[0-9]+$", min_length = 1, max_length = 19))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<TaskPageBody>, Errors<{ s::AUTHED | s::BAD_REQUEST | s::FORBIDDEN }>> {
        let filter = ListFilter {
            status: status.0.map(Into::into),
            priority: priority.0.map(Into::into),
            agent_id: agent_id.0,
            task_type: task_type.0,
            owner_id: None,
            created_from_ms: start_date.0.map(|t| t.unix_ms),
            created_to_ms: end_date.0.map(|t| t.unix_ms),
            page: page.0,
            limit: limit.0,
            cursor: cursor.0,
        };
        Ok(Json(state.queue.list(&principal, filter).await?.into()))
    }

    /// Get a task
    ///
    /// 404 when it does not exist or is not visible to the token.
    #[oai(path = "/api/ai/tasks/:id", method = "get", operation_id = "getTask")]
    async fn get(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id (`task_` + ULID).
        id: Path<String>,
    ) -> Result<Json<TaskBody>, Errors<GET_ERRORS>> {
        Ok(Json(
            state
                .queue
                .get(&principal, &TaskId::parse(&id.0)?)
                .await?
                .into(),
        ))
    }

    /// Cancel a task
    ///
    /// A QUEUED task is cancelled at once; a PROCESSING one is cancelled and
    /// its worker told to stop (its late result is refused). 409 when the task
    /// already ended.
    #[oai(
        path = "/api/ai/tasks/:id/cancel",
        method = "put",
        operation_id = "cancelTask"
    )]
    async fn cancel(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
    ) -> Result<Json<TaskBody>, Errors<CHANGE_ERRORS>> {
        Ok(Json(
            state
                .queue
                .cancel(&principal, &TaskId::parse(&id.0)?)
                .await?
                .into(),
        ))
    }

    /// Retry a task
    ///
    /// Puts a FAILED, TIMEOUT or CANCELLED task back in its queue with fresh
    /// attempts. 409 for a task in any other status.
    #[oai(
        path = "/api/ai/tasks/:id/retry",
        method = "post",
        operation_id = "retryTask"
    )]
    async fn retry(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
    ) -> Result<Json<TaskBody>, Errors<CHANGE_ERRORS>> {
        Ok(Json(
            state
                .queue
                .retry(&principal, &TaskId::parse(&id.0)?)
                .await?
                .into(),
        ))
    }

    /// Retry a task (deprecated GET form)
    ///
    /// The seeds' `GET /api/ai/tasks/:id/retry`; use `POST` instead.
    #[oai(
        path = "/api/ai/tasks/:id/retry",
        method = "get",
        operation_id = "retryTaskLegacy",
        deprecated
    )]
    async fn retry_legacy(
        &self,
        auth: BearerAuth,
        state: Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
    ) -> Result<Json<TaskBody>, Errors<CHANGE_ERRORS>> {
        self.retry(auth, state, id).await
    }

    /// Create up to 100 tasks at once
    ///
    /// The body is `{"tasks": [...]}` or a bare array of tasks. All or
    /// nothing: when any item is invalid, nothing is created and the 400
    /// answer lists each refused item (`details.items[].index`).
    #[oai(
        path = "/api/ai/tasks/batch",
        method = "post",
        operation_id = "createTasksBatch"
    )]
    async fn batch(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        body: Json<BatchCreateBody>,
    ) -> Result<BatchCreated, Errors<{ s::WITH_BODY | s::FORBIDDEN }>> {
        let items = body
            .0
            .into_tasks()
            .into_iter()
            .map(|t| t.into_new())
            .collect();
        let created = state.queue.create_batch(&principal, items).await?;
        let created_count = created.iter().filter(|c| c.created).count() as u32;
        let existing_count = created.len() as u32 - created_count;
        Ok(BatchCreated::Created(Json(BatchCreateResult {
            tasks: created.into_iter().map(|c| c.task.into()).collect(),
            created_count,
            existing_count,
        })))
    }

    /// Queue status
    ///
    /// Counts per status, ready tasks per priority and per agent, the oldest
    /// waiting task's age, and queueHealth: `critical` when the oldest ready
    /// task waited over 5 min or more than 10,000 are ready, `warning` over
    /// 1 min or 1,000, else `healthy`.
    #[oai(
        path = "/api/ai/tasks/queue/status",
        method = "get",
        operation_id = "queueStatus",
        tag = "ApiTags::Monitoring"
    )]
    async fn queue_status(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
    ) -> Result<Json<QueueStatusBody>, Errors<{ s::AUTHED }>> {
        Ok(Json(state.queue.queue_status(&principal).await?.into()))
    }

    /// Statistics
    ///
    /// Outcomes by agent and task type over whole UTC days (default: the last
    /// 30; at most 366). Kept apart from the tasks, so they survive cleanup.
    #[oai(
        path = "/api/ai/tasks/statistics/summary",
        method = "get",
        operation_id = "taskStatistics",
        tag = "ApiTags::Monitoring"
    )]
    async fn statistics(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Only this agent.
        #[oai(
            name = "agentId",
            validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128)
        )]
        agent_id: Query<Option<String>>,
        /// Only this task type.
        #[oai(
            name = "taskType",
            validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128)
        )]
        task_type: Query<Option<String>>,
        /// A time in the first day (Unix ms, or RFC 3339 such as
        /// 2026-12-01T10:00:00Z; default 29 days before endDate; at most 366
        /// days are counted, the latest; after endDate: none).
        #[oai(name = "startDate")]
        start_date: Query<Option<QueryTime>>,
        /// A time in the last day (Unix ms, or RFC 3339; default now).
        #[oai(name = "endDate")]
        end_date: Query<Option<QueryTime>>,
    ) -> Result<Json<StatisticsBody>, Errors<{ s::AUTHED | s::BAD_REQUEST }>> {
        let filter = StatsFilter {
            agent_id: agent_id.0,
            task_type: task_type.0,
            from_ms: start_date.0.map(|t| t.unix_ms),
            to_ms: end_date.0.map(|t| t.unix_ms),
        };
        Ok(Json(
            state.queue.statistics(&principal, &filter).await?.into(),
        ))
    }

    /// Delete old finished tasks (admin)
    ///
    /// Deletes COMPLETED, FAILED, CANCELLED and TIMEOUT tasks that ended more
    /// than the retention ago (the node's setting, 7 days by default), in
    /// bounded batches. Statistics are kept.
    #[oai(
        path = "/api/ai/tasks/cleanup/old",
        method = "post",
        operation_id = "cleanupOldTasks",
        tag = "ApiTags::Admin"
    )]
    async fn cleanup_old(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
    ) -> Result<Json<CleanupResult>, Errors<{ s::AUTHED | s::FORBIDDEN }>> {
        let outcome = state.queue.cleanup(&principal).await?;
        Ok(Json(CleanupResult {
            deleted_count: outcome.deleted,
            retention_days: outcome.retention.as_secs() / 86_400,
        }))
    }

    /// Time out stale attempts (admin)
    ///
    /// Without `timeoutMs`: runs the reaper now, ending
    /// attempts past their own timeoutMs or lease. With `timeoutMs`: also ends
    /// every attempt that has run longer than that. Ended attempts are
    /// retried while attempts remain (TIMEOUT otherwise), like any timeout.
    #[oai(
        path = "/api/ai/tasks/cleanup/timeout-stale",
        method = "post",
        operation_id = "timeoutStaleTasks",
        tag = "ApiTags::Admin"
    )]
    async fn timeout_stale(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Also end attempts that have run longer than this (ms).
        #[oai(
            name = "timeoutMs",
            validator(minimum(value = "1"), maximum(value = "604800000"))
        )]
        timeout_ms: Query<Option<u64>>,
    ) -> Result<Json<TimeoutResult>, Errors<ADMIN_ERRORS>> {
        let max_age = timeout_ms.0.map(Duration::from_millis);
        let timed_out_count = state.queue.timeout_stale(&principal, max_age).await?;
        Ok(Json(TimeoutResult { timed_out_count }))
    }
}

/// 201 with the batch's tasks.
#[derive(ApiResponse)]
enum BatchCreated {
    /// Created (or found by idempotency key), in request order.
    #[oai(status = 201)]
    Created(Json<BatchCreateResult>),
}

fn default_page() -> u32 {
    1
}

fn default_limit() -> u32 {
    20
}
