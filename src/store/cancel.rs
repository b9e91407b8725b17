//! Wrappers of `lua/cancel.lua` and `lua/retry.lua`: a submitter's changes
//! to a task, each one round trip that checks the caller's scope, makes the
//! change and answers the record as it is after it.

use fred::prelude::*;

use super::{Name, Store};
use crate::error::Result;
use crate::ids::TaskId;
use crate::task::{Task, TaskStatus};

/// Which tasks a change may touch, checked inside the script: a task outside
/// it is answered as not found, exactly like a missing one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskScope<'a> {
    /// The owner the task must have (None: any).
    pub owner_id: Option<&'a str>,
    /// The agent the task must have (None: any).
    pub agent_id: Option<&'a str>,
}

impl TaskScope<'_> {
    /// Every task.
    pub const ANY: TaskScope<'static> = TaskScope {
        owner_id: None,
        agent_id: None,
    };

    fn args(&self) -> [String; 2] {
        [
            self.owner_id.unwrap_or("").to_string(),
            self.agent_id.unwrap_or("").to_string(),
        ]
    }
}

/// A change made: the status the task had and the task as it is now.
#[derive(Clone, Debug)]
pub struct Changed {
    /// The status before the change.
    pub previous: TaskStatus,
    /// The record after it.
    pub task: Task,
}

impl Store {
    /// Cancels a QUEUED or PROCESSING task; returns the status it had.
    /// A running worker is signalled and its result will be refused.
    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<TaskStatus> {
        Ok(self.cancel_in(id, reason, TaskScope::ANY).await?.previous)
    }

    /// [`Store::cancel`] of a task in `scope`, answering the record after
    /// the change (one round trip).
    pub async fn cancel_in(
        &self,
        id: &str,
        reason: Option<&str>,
        scope: TaskScope<'_>,
    ) -> Result<Changed> {
        TaskId::parse(id)?;
        let reason: String = reason
            .unwrap_or("")
            .chars()
            .take(self.inner.config.limits.max_error_len)
            .collect();
        let [owner, agent] = scope.args();
        let value = self
            .call(
                Name::Cancel,
                vec![self.now_arg(), id.to_string(), reason, owner, agent],
            )
            .await?;
        changed("cancel", value)
    }

    /// Puts a FAILED, TIMEOUT or CANCELLED task back in its queue with fresh
    /// attempts; returns the status it had.
    pub async fn retry(&self, id: &str) -> Result<TaskStatus> {
        Ok(self.retry_in(id, TaskScope::ANY).await?.previous)
    }

    /// [`Store::retry`] of a task in `scope`, answering the record after the
    /// change (one round trip).
    pub async fn retry_in(&self, id: &str, scope: TaskScope<'_>) -> Result<Changed> {
        TaskId::parse(id)?;
        let [owner, agent] = scope.args();
        let value = self
            .call(
                Name::Retry,
                vec![self.now_arg(), id.to_string(), owner, agent],
            )
            .await?;
        changed("retry", value)
    }
}

/// `{ previous status, record }`.
fn changed(script: &'static str, value: Value) -> Result<Changed> {
    let r = super::reply::Reply { script };
    let mut parts = r.array(value)?.into_iter();
    let (Some(status), Some(record), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(r.err("expected a status and a record"));
    };
    let status = r.string(status)?;
    let previous =
        TaskStatus::parse(&status).ok_or_else(|| r.err(format!("unknown status {status:?}")))?;
    let task = super::query::parse_task(r.pairs(record)?)?;
    Ok(Changed { previous, task })
}
