//! Wrapper of `lua/claim.lua`: lease up to N ready tasks to one worker.

use std::time::Duration;

use super::{Name, Store, ms};
use crate::error::{Error, Result};
use crate::task::Priority;

/// Most tasks one claim call may lease.
pub const MAX_CLAIM: usize = 1000;

/// What to claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Recorded on each task as `workerId`.
    pub worker_id: String,
    /// Lease length; heartbeats extend it.
    pub lease: Duration,
    /// Most tasks in all (1..=1000).
    pub max_tasks: usize,
    /// Agents to claim from, each with the most tasks to take from it.
    pub agents: Vec<(String, usize)>,
}

/// A leased task: what a worker needs to run one attempt.
#[derive(Clone, Debug)]
pub struct ClaimedTask {
    /// Task id.
    pub id: String,
    /// Lease (fencing) token: complete, fail and heartbeat must present it.
    pub token: String,
    /// Agent.
    pub agent_id: String,
    /// Kind of work.
    pub task_type: String,
    /// Handler input.
    pub input_data: serde_json::Value,
    /// Retries used before this attempt.
    pub retry_count: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// Hard limit on this attempt (ms).
    pub timeout_ms: u64,
    /// Priority.
    pub priority: Priority,
    /// Lease deadline (ms, Redis clock).
    pub lease_until: i64,
    /// Attempt deadline: startedAt + timeoutMs (ms, Redis clock).
    pub deadline_at: i64,
    /// First attempts: how long it waited from creation to this start (ms);
    /// later attempts waited on a backoff and carry None.
    pub queue_wait_ms: Option<i64>,
}

impl Store {
    /// Leases up to `max_tasks` ready tasks, strict priority then FIFO.
    pub async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>> {
        if req.max_tasks == 0 || req.agents.is_empty() {
            return Ok(Vec::new());
        }
        if req.max_tasks > MAX_CLAIM || req.agents.len() > 100 {
            return Err(Error::Validation(format!(
                "claim at most {MAX_CLAIM} tasks from at most 100 agents"
            )));
        }
        let mut args = vec![
            self.now_arg(),
            ms(req.lease),
            req.max_tasks.to_string(),
            ulid::Ulid::generate().to_string(),
            req.worker_id.clone(),
            req.agents.len().to_string(),
        ];
        for (agent, quota) in &req.agents {
            args.push(agent.clone());
            args.push(quota.to_string());
        }
        let value = self.call(Name::Claim, args).await?;
        let r = super::reply::Reply { script: "claim" };
        r.rows(value, 12)?
            .into_iter()
            .map(|row| leased(&r, row, req.lease))
            .collect()
    }
}

/// One leased task of a claim or start reply (12 fields, see `lua/lib/attempt.lua`).
pub(super) fn leased(
    r: &super::reply::Reply,
    row: Vec<fred::types::Value>,
    lease: Duration,
) -> Result<ClaimedTask> {
    let lease_ms = lease.as_millis() as i64;
    let mut it = row.into_iter();
    let mut next = || it.next().ok_or_else(|| r.err("short row"));
    let id = r.string(next()?)?;
    let token = r.string(next()?)?;
    let agent_id = r.string(next()?)?;
    let task_type = r.string(next()?)?;
    let input = r.string(next()?)?;
    let retry_count = r.int(next()?)? as u32;
    let max_retries = r.int(next()?)? as u32;
    let timeout_ms = r.int(next()?)? as u64;
    let priority = r.string(next()?)?;
    let lease_until = r.int(next()?)?;
    let deadline_at = r.int(next()?)?;
    let created_at = r.int(next()?)?;
    // Created -> first start (startedAt = leaseUntil - lease).
    let queue_wait_ms = (retry_count == 0).then(|| lease_until - lease_ms - created_at);
    Ok(ClaimedTask {
        input_data: serde_json::from_str(&input)
            .map_err(|_| r.err(format!("inputData of {id} is not JSON")))?,
        priority: Priority::parse(&priority).ok_or_else(|| r.err("bad priority"))?,
        id,
        token,
        agent_id,
        task_type,
        retry_count,
        max_retries,
        timeout_ms,
        lease_until,
        deadline_at,
        queue_wait_ms,
    })
}
