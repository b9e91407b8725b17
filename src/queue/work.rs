//! The external worker's operations: claim (with the long-poll wait), start,
//! heartbeat, complete, fail. The same scripts and lease fence as the
//! in-node workers: a stale token is refused and changes nothing.
//!
//! A worker token runs only its agent's tasks (another agent's task is "not
//! found"); admin tokens run any agent's.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::{Queue, allow};
use crate::auth::{Action, Principal, Scope};
use crate::error::{Error, Result};
use crate::ids::{AgentId, LeaseToken, TaskId, WorkerId};
use crate::store::{self, ClaimedTask, Completion, Failure, LeaseState};
use crate::task::Task;

/// Lease when the worker names none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Long-poll waits are cut to this, whatever the client asks.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most tasks one external claim leases.
pub const MAX_CLAIM_TASKS: usize = 100;
/// Long-polls re-check Redis at least this often (a lost wake-up signal costs
/// at most this much latency).
const RECHECK: Duration = Duration::from_secs(1);

/// What an external worker asks of a claim.
#[derive(Clone, Debug, Default)]
pub struct ClaimOptions {
    /// Most tasks to lease (1 to [`MAX_CLAIM_TASKS`]; 0 counts as 1).
    pub max_tasks: usize,
    /// Wait up to this long for work when none is ready (cut to
    /// [`MAX_WAIT`]).
    pub wait: Duration,
    /// Lease length (default [`DEFAULT_LEASE`]).
    pub lease: Option<Duration>,
    /// Worker id recorded on the tasks (default: the caller's subject).
    pub worker_id: Option<WorkerId>,
}

/// The worker id a lease records: the one the request names, else the
/// caller's subject.
fn worker_id(principal: &Principal, named: Option<WorkerId>) -> Result<WorkerId> {
    named.map_or_else(|| WorkerId::parse(&principal.sub), Ok)
}

fn first<T>(results: Vec<Result<T>>) -> Result<T> {
    results.into_iter().next().unwrap_or_else(|| {
        Err(Error::Reply {
            script: "worker api",
            detail: "no result for the item".into(),
        })
    })
}

impl Queue {
    /// Whether the caller may run task `id`: admins any (a missing task is
    /// then found missing by the script itself), workers their agent's (one
    /// field is read, not the whole record), other roles none.
    async fn check_runner(&self, principal: &Principal, id: &TaskId) -> Result<()> {
        allow(principal, Action::RunTasks, id)?;
        if Scope::of(principal) == Scope::All {
            // Admins run every agent's tasks: no read needed.
            return Ok(());
        }
        match self.store().agent_of(id).await? {
            Some(agent) => allow(principal, Action::RunTask(&agent), id),
            None => Err(Error::TaskNotFound(id.to_string())),
        }
    }

    /// Leases up to `max_tasks` ready tasks of `agent`, highest priority
    /// first, then oldest; with a wait, waits for work (woken through Redis,
    /// re-checked every second) until the wait ends or the node drains.
    pub async fn claim(
        &self,
        principal: &Principal,
        agent: &AgentId,
        options: ClaimOptions,
    ) -> Result<Vec<ClaimedTask>> {
        allow(principal, Action::ClaimFrom(agent), "")?;
        let max_tasks = options.max_tasks.clamp(1, MAX_CLAIM_TASKS);
        let request = store::ClaimRequest {
            worker_id: worker_id(principal, options.worker_id)?.into_string(),
            lease: options.lease.unwrap_or(DEFAULT_LEASE),
            max_tasks,
            agents: vec![(agent.to_string(), max_tasks)],
        };
        let deadline = Instant::now() + options.wait.min(MAX_WAIT);
        loop {
            // Subscribe before claiming, so a task created in between wakes us.
            let mut ready = self.inner.signals.ready.subscribe();
            let tasks = self.store().claim(&request).await?;
            tasks.iter().for_each(crate::metrics::task_started);
            let now = Instant::now();
            if !tasks.is_empty() || now >= deadline || self.is_draining() {
                return Ok(tasks);
            }
            let recheck = tokio::time::sleep_until(deadline.min(now + RECHECK));
            tokio::pin!(recheck);
            loop {
                tokio::select! {
                    msg = ready.recv() => match msg {
                        Ok(a) if *a == **agent => break,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                    },
                    _ = &mut recheck => break,
                }
            }
        }
    }

    /// Leases the named task (the seeds' startTaskProcessing) instead of the
    /// next ready one; `NotReady` when it is not QUEUED or waits for its run
    /// time.
    pub async fn start(
        &self,
        principal: &Principal,
        id: &TaskId,
        worker: Option<WorkerId>,
        lease: Option<Duration>,
    ) -> Result<ClaimedTask> {
        self.check_runner(principal, id).await?;
        let worker_id = worker_id(principal, worker)?;
        let task = self
            .store()
            .start(id, &worker_id, lease.unwrap_or(DEFAULT_LEASE))
            .await?;
        crate::metrics::task_started(&task);
        Ok(task)
    }

    /// Extends the lease of the attempt holding `token`; the lease granted.
    /// `LeaseMismatch` when it was lost, `TaskCancelled` when the task was
    /// cancelled (stop either way).
    pub async fn heartbeat(
        &self,
        principal: &Principal,
        id: &TaskId,
        token: LeaseToken,
        lease: Option<Duration>,
    ) -> Result<Duration> {
        self.check_runner(principal, id).await?;
        let lease = lease.unwrap_or(DEFAULT_LEASE);
        let states = self
            .store()
            .heartbeat(&[(id.to_string(), token.into_string())], lease)
            .await?;
        match states.first() {
            Some(LeaseState::Held) => Ok(lease),
            Some(LeaseState::Cancelled) => Err(Error::TaskCancelled(id.to_string())),
            Some(LeaseState::Gone) => Err(Error::TaskNotFound(id.to_string())),
            Some(LeaseState::Lost) | None => Err(Error::LeaseMismatch(id.to_string())),
        }
    }

    /// Stores the attempt's result (a repeat with the same token is
    /// harmless); the task as it is now.
    /// [`Completion`] is the store's batch item, shared with the in-node
    /// workers; its id is parsed here, once.
    pub async fn complete(&self, principal: &Principal, completion: Completion) -> Result<Task> {
        let id = TaskId::parse(&completion.id)?;
        self.check_runner(principal, &id).await?;
        let completions = [completion];
        if let Some(end) = first(self.store().complete(&completions).await?)? {
            crate::metrics::attempt_completed(&end, &completions[0]);
        }
        self.get(principal, &id).await
    }

    /// Records a failed attempt: retried after backoff while attempts remain
    /// and it is retryable, else FAILED; the task as it is now.
    /// Parses [`Failure`]'s id as [`Queue::complete`] does.
    pub async fn fail(&self, principal: &Principal, failure: Failure) -> Result<Task> {
        let id = TaskId::parse(&failure.id)?;
        self.check_runner(principal, &id).await?;
        let failed = first(self.store().fail(&[failure]).await?)?;
        crate::metrics::attempt_ended(&failed.attempt);
        self.get(principal, &id).await
    }
}
