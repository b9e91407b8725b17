//! Wrapper of `lua/retry.lua` (manual retry).

use super::{Name, Store};
use crate::error::{Error, Result};
use crate::task::{TaskStatus, validate_task_id};

impl Store {
    /// Puts a FAILED, TIMEOUT or CANCELLED task back in its queue with fresh
    /// attempts; returns the status it had.
    pub async fn retry(&self, id: &str) -> Result<TaskStatus> {
        validate_task_id(id).map_err(|_| Error::TaskNotFound(id.to_string()))?;
        let value = self
            .call(Name::Retry, vec![self.now_arg(), id.to_string()])
            .await?;
        let r = super::reply::Reply { script: "retry" };
        let reply = r.string(value)?;
        let (status, _, _) = r.status_tag(&reply)?;
        Ok(status)
    }
}
