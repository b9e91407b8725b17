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

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::error::{ApiError, Errors, status as s};
use super::models::{
    ApiTags, ClaimRequest, ClaimResult, CompleteRequest, FailRequest, HeartbeatRequest,
    HeartbeatResult, LeasedTask, StartRequest, Text,
};
use super::tasks::visible_task;
use super::{AppState, BearerAuth, MAX_WAIT};
use crate::auth::{Principal, Role};
use crate::store::{self, Completion, Failure, LeaseState};
use crate::task::{DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS, Task, validate_ident, validate_task_id};

pub(super) struct WorkersApi;

/// Lease when the worker names none.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Long-polls re-check Redis at least this often (a lost wake-up signal costs
/// at most this much latency).
const RECHECK: Duration = Duration::from_secs(1);

const RUN_ERRORS: u16 = s::WITH_BODY | s::FORBIDDEN | s::NOT_FOUND | s::CONFLICT;

/// Whether the principal may run task `id`: admins any (a missing task is
/// then found missing by the script itself), workers their agent's (another
/// agent's task is not found; one field is read, not the whole record),
/// other roles none.
async fn check_runner(state: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin => validate_task_id(id).map_err(|_| ApiError::task_not_found(id)),
        Role::Worker => match state.store.agent_of(id).await? {
            Some(agent) if principal.agent.as_deref() == Some(agent.as_str()) => Ok(()),
            _ => Err(ApiError::task_not_found(id)),
        },
        Role::User | Role::Metrics => {
            Err(crate::auth::Forbidden("running tasks needs a worker or admin token".into()).into())
        }
    }
}

/// The worker id a lease records: the one the request names, else the
/// token's subject.
fn worker_id(principal: &Principal, named: Option<Text>) -> crate::Result<String> {
    let id = named.map_or_else(|| principal.sub.clone(), |w| w.0);
    validate_ident("workerId", &id, DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS)?;
    Ok(id)
}

/// The lease a request asks for, else the default.
fn lease(ms: Option<u64>) -> Duration {
    ms.map(Duration::from_millis).unwrap_or(DEFAULT_LEASE)
}

fn first<T>(results: Vec<crate::Result<T>>) -> Result<T, ApiError> {
    results
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            Err(crate::Error::Reply {
                script: "worker api",
                detail: "no result for the item".into(),
            })
        })
        .map_err(ApiError::from)
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
        let agent = agent_id.0;
        principal.require_runner(&agent)?;
        validate_ident("agentId", &agent, DEFAULT_MAX_ID_LEN, &[])?;
        let req = body.0;
        let worker_id = worker_id(&principal, req.worker_id)?;
        let max_tasks = req.max_tasks.unwrap_or(1).clamp(1, 100) as usize;
        let request = store::ClaimRequest {
            worker_id,
            lease: lease(req.lease_ms),
            max_tasks,
            agents: vec![(agent.clone(), max_tasks)],
        };
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)).min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        loop {
            // Subscribe before claiming, so a task created in between wakes us.
            let mut ready = state.signals.ready.subscribe();
            let tasks = state.store.claim(&request).await?;
            let now = Instant::now();
            if !tasks.is_empty() || now >= deadline || state.is_draining() {
                return Ok(Json(ClaimResult {
                    tasks: tasks.into_iter().map(LeasedTask::from).collect(),
                }));
            }
            let recheck = tokio::time::sleep_until(deadline.min(now + RECHECK));
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    msg = ready.recv() => match msg {
                        Ok(a) if *a == *agent => break,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                    },
                    _ = &mut recheck => break,
                }
            }
        }
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
        check_runner(state, &principal, &id.0).await?;
        let req = body.0;
        let worker_id = worker_id(&principal, req.worker_id)?;
        let task = state
            .store
            .start(&id.0, &worker_id, lease(req.lease_ms))
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
        check_runner(state, &principal, &id.0).await?;
        let lease = lease(body.0.lease_ms);
        let states = state
            .store
            .heartbeat(&[(id.0.clone(), body.0.token.0)], lease)
            .await?;
        match states.first() {
            Some(LeaseState::Held) => Ok(Json(HeartbeatResult {
                held: true,
                lease_ms: lease.as_millis() as u64,
            })),
            Some(LeaseState::Cancelled) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "TASK_CANCELLED",
                format!("task {} was cancelled: stop working on it", id.0),
            )
            .into()),
            Some(LeaseState::Gone) => Err(ApiError::task_not_found(&id.0).into()),
            Some(LeaseState::Lost) | None => {
                Err(ApiError::from(crate::Error::LeaseMismatch(id.0)).into())
            }
        }
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
    ) -> Result<Json<Task>, Errors<RUN_ERRORS>> {
        check_runner(state, &principal, &id.0).await?;
        let b = body.0;
        let completion = Completion {
            id: id.0.clone(),
            token: b.token.0,
            output_data: b.output_data,
            actual_cost: b.actual_cost,
            quality_score: b.quality_score,
            metrics: b.metrics,
        };
        first(state.store.complete(&[completion]).await?)?;
        Ok(Json(visible_task(state, &principal, &id.0).await?))
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
    ) -> Result<Json<Task>, Errors<RUN_ERRORS>> {
        check_runner(state, &principal, &id.0).await?;
        let b = body.0;
        let failure = Failure {
            id: id.0.clone(),
            token: b.token.0,
            error_message: b.error_message.0,
            retryable: b.retryable.unwrap_or(true),
            timed_out: false,
        };
        first(state.store.fail(&[failure]).await?)?;
        Ok(Json(visible_task(state, &principal, &id.0).await?))
    }
}
