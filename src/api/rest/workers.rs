//! External workers: agents written in any language claim, heartbeat,
//! complete and fail tasks over HTTP, with the same scripts (and the same
//! lease fence) as the in-node workers. The seeds' GraphQL names this flow
//! startTaskProcessing / completeTask / failTask: claim takes the next ready
//! tasks, start takes one named task.
//!
//! A worker token is bound to one agent and may only run that agent's tasks;
//! admin tokens may run any agent's. Another agent's task is "not found".

use std::sync::Arc;
use std::time::Duration;

use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;

use super::error::{Errors, status as s};
use super::models::{
    ApiTags, ClaimRequest, ClaimResult, CompleteRequest, FailRequest, HeartbeatRequest,
    HeartbeatResult, LeasedTask, StartRequest, TaskBody,
};
use super::{AppState, BearerAuth};
use crate::ids::{AgentId, LeaseToken, TaskId, WorkerId};
use crate::queue::ClaimOptions;
use crate::store::{Completion, Failure};

pub(super) struct WorkersApi;

const RUN_ERRORS: u16 = s::WITH_BODY | s::FORBIDDEN | s::NOT_FOUND | s::CONFLICT;

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

#[OpenApi(tag = "ApiTags::Workers")]
impl WorkersApi {
    /// Claim tasks of an agent
    ///
    /// Leases up to `maxTasks` ready tasks of the agent, highest priority
    /// first, then oldest. With `waitMs`, waits up to that long for work when
    /// none is ready (woken by new tasks through Redis, not by polling).
    /// Each task comes with a lease token; heartbeat before `leaseUntil`, or
    /// the task goes to another worker and this one's results are refused.
    #[oai(
        path = "/api/ai/agents/:agent_id/claim",
        method = "post",
        operation_id = "claimTasks"
    )]
    async fn claim(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Agent whose tasks to claim.
        #[oai(validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128))]
        agent_id: Path<String>,
        body: Json<ClaimRequest>,
    ) -> Result<Json<ClaimResult>, Errors<{ s::WITH_BODY | s::FORBIDDEN }>> {
        let req = body.0;
        let options = ClaimOptions {
            max_tasks: req.max_tasks.unwrap_or(1) as usize,
            wait: Duration::from_millis(req.wait_ms.unwrap_or(0)),
            lease: millis(req.lease_ms),
            worker_id: req.worker_id.map(|w| WorkerId::parse(&w.0)).transpose()?,
        };
        let tasks = state
            .queue
            .claim(&principal, &AgentId::parse(&agent_id.0)?, options)
            .await?;
        Ok(Json(ClaimResult {
            tasks: tasks.into_iter().map(LeasedTask::from).collect(),
        }))
    }

    /// Start a named task
    ///
    /// Leases this task (the seeds' startTaskProcessing) instead of the next
    /// ready one, with a lease token as a claim gives. 409 `TASK_NOT_READY`
    /// when the task is not QUEUED, or is QUEUED but waits for its run time
    /// or a retry backoff.
    #[oai(
        path = "/api/ai/tasks/:id/start",
        method = "post",
        operation_id = "startTask"
    )]
    async fn start(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
        body: Json<StartRequest>,
    ) -> Result<Json<LeasedTask>, Errors<RUN_ERRORS>> {
        let req = body.0;
        let worker = req.worker_id.map(|w| WorkerId::parse(&w.0)).transpose()?;
        let task = state
            .queue
            .start(
                &principal,
                &TaskId::parse(&id.0)?,
                worker,
                millis(req.lease_ms),
            )
            .await?;
        Ok(Json(LeasedTask::from(task)))
    }

    /// Extend a lease
    ///
    /// 200 while the lease is held. 409 `LEASE_MISMATCH` when it was lost
    /// (expired and given to another worker: stop), 409 `TASK_CANCELLED` when
    /// the task was cancelled (stop).
    #[oai(
        path = "/api/ai/tasks/:id/heartbeat",
        method = "post",
        operation_id = "heartbeatTask"
    )]
    async fn heartbeat(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
        body: Json<HeartbeatRequest>,
    ) -> Result<Json<HeartbeatResult>, Errors<RUN_ERRORS>> {
        let req = body.0;
        let lease = state
            .queue
            .heartbeat(
                &principal,
                &TaskId::parse(&id.0)?,
                LeaseToken::parse(&req.token.0)?,
                millis(req.lease_ms),
            )
            .await?;
        Ok(Json(HeartbeatResult {
            held: true,
            lease_ms: lease.as_millis() as u64,
        }))
    }

    /// Complete a task
    ///
    /// Stores the attempt's result. 409 `LEASE_MISMATCH` when the token is
    /// not the current attempt's (the lease was lost), 409 `NOT_PROCESSING`
    /// when the task is no longer processing (cancelled, timed out).
    #[oai(
        path = "/api/ai/tasks/:id/complete",
        method = "post",
        operation_id = "completeTask"
    )]
    async fn complete(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
        body: Json<CompleteRequest>,
    ) -> Result<Json<TaskBody>, Errors<RUN_ERRORS>> {
        let b = body.0;
        let completion = Completion {
            id: id.0,
            token: LeaseToken::parse(&b.token.0)?.into_string(),
            output_data: b.output_data,
            actual_cost: b.actual_cost,
            quality_score: b.quality_score,
            metrics: b.metrics.map(Into::into),
        };
        Ok(Json(
            state.queue.complete(&principal, completion).await?.into(),
        ))
    }

    /// Fail a task's attempt
    ///
    /// Records the error. The task is retried after a backoff (1 s, 2 s, 4 s
    /// ... capped) while attempts remain and `retryable` is not false; else it
    /// ends FAILED. 409 as for complete.
    #[oai(
        path = "/api/ai/tasks/:id/fail",
        method = "post",
        operation_id = "failTask"
    )]
    async fn fail(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Task id.
        id: Path<String>,
        body: Json<FailRequest>,
    ) -> Result<Json<TaskBody>, Errors<RUN_ERRORS>> {
        let b = body.0;
        let failure = Failure {
            id: id.0,
            token: LeaseToken::parse(&b.token.0)?.into_string(),
            error_message: b.error_message.0,
            retryable: b.retryable.unwrap_or(true),
            timed_out: false,
        };
        Ok(Json(state.queue.fail(&principal, failure).await?.into()))
    }
}
