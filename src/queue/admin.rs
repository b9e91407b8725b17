//! The queue's aggregate views (status, statistics, agents, nodes) and the
//! admin operations (agent records, cleanup, timeout-stale).

use std::time::Duration;

use super::{Queue, allow};
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::ids::AgentId;
use crate::nodes::NodeInfo;
use crate::store::{Agent, QueueStatus, Statistics, StatsFilter};

/// Reaper passes timeout-stale runs at most, each of [`REAP_PASS`] tasks.
const MAX_REAP_PASSES: usize = 1_000;
/// Tasks one reaper pass handles at most.
const REAP_PASS: usize = 1_000;

/// What a cleanup removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupOutcome {
    /// Terminal tasks deleted.
    pub deleted: u64,
    /// The retention applied.
    pub retention: Duration,
}

impl Queue {
    /// Counts per status, priority and agent, oldest wait, health.
    pub async fn queue_status(&self, principal: &Principal) -> Result<QueueStatus> {
        allow(principal, Action::ReadQueue, "")?;
        self.store().queue_status().await
    }

    /// Outcomes by agent and task type over whole UTC days.
    pub async fn statistics(
        &self,
        principal: &Principal,
        filter: &StatsFilter,
    ) -> Result<Statistics> {
        allow(principal, Action::ReadQueue, "")?;
        self.store().statistics(filter).await
    }

    /// Every agent record.
    pub async fn agents(&self, principal: &Principal) -> Result<Vec<Agent>> {
        allow(principal, Action::ReadQueue, "")?;
        self.store().list_agents().await
    }

    /// One agent record.
    pub async fn agent(&self, principal: &Principal, id: &AgentId) -> Result<Agent> {
        allow(principal, Action::ReadQueue, "")?;
        self.store()
            .get_agent(id.as_str())
            .await?
            .ok_or_else(|| Error::AgentNotFound(id.to_string()))
    }

    /// Creates or updates an agent record; true when it was created.
    pub async fn put_agent(&self, principal: &Principal, agent: &Agent) -> Result<bool> {
        allow(principal, Action::Administer, "")?;
        self.store().upsert_agent(agent).await
    }

    /// Deletes an agent record (its tasks stay and keep waiting).
    pub async fn delete_agent(&self, principal: &Principal, id: &AgentId) -> Result<()> {
        allow(principal, Action::Administer, "")?;
        if self.store().delete_agent(id.as_str()).await? {
            Ok(())
        } else {
            Err(Error::AgentNotFound(id.to_string()))
        }
    }

    /// The nodes that reported recently, by id.
    pub async fn nodes(&self, principal: &Principal) -> Result<Vec<NodeInfo>> {
        allow(principal, Action::ReadQueue, "")?;
        crate::nodes::list(self.store(), crate::nodes::DEFAULT_STALE_AFTER).await
    }

    /// Deletes terminal tasks older than the store's retention, in bounded
    /// batches; statistics stay.
    pub async fn cleanup(&self, principal: &Principal) -> Result<CleanupOutcome> {
        allow(principal, Action::Administer, "")?;
        let retention = self.store().config().retention;
        let deleted = self.store().cleanup(retention).await?;
        Ok(CleanupOutcome { deleted, retention })
    }

    /// Runs the reaper now (attempts past their lease or timeoutMs), then,
    /// with `max_age`, ends every attempt running longer than that; ended
    /// attempts are retried while attempts remain. How many were ended.
    pub async fn timeout_stale(
        &self,
        principal: &Principal,
        max_age: Option<Duration>,
    ) -> Result<u64> {
        allow(principal, Action::Administer, "")?;
        let mut ended = 0;
        for _ in 0..MAX_REAP_PASSES {
            let pass = self.store().reap(REAP_PASS).await?;
            pass.ended.iter().for_each(crate::metrics::attempt_ended);
            ended += pass.handled;
            if pass.handled < REAP_PASS as u64 {
                break;
            }
        }
        if let Some(max_age) = max_age {
            let stale = self.store().timeout_stale(max_age).await?;
            stale.iter().for_each(crate::metrics::attempt_ended);
            ended += stale.len() as u64;
        }
        Ok(ended)
    }
}

impl Queue {
    /// Sets the shared queue gauges (`taskherd_queue_*`,
    /// `taskherd_event_stream_*`) from Redis for a scrape. A Redis error
    /// leaves them as they were and says so in `taskherd_queue_read_ok`: the
    /// scrape still answers with the node's own series.
    pub async fn refresh_shared_metrics(&self, principal: &Principal) -> Result<()> {
        allow(principal, Action::ReadMetrics, "")?;
        let status = self.store().queue_status().await;
        let stream = match &status {
            Ok(_) => self.store().event_stream_info().await.ok(),
            Err(_) => None,
        };
        crate::metrics::shared_queue(status.as_ref().ok(), stream);
        Ok(())
    }
}
