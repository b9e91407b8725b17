//! Wrapper of `lua/cancel.lua`.

use super::{Name, Store};
use crate::error::{Error, Result};
use crate::task::{TaskStatus, validate_task_id};

impl Store {
    /// Cancels a QUEUED or PROCESSING task; returns the status it had.
    /// A running worker is signalled and its result will be refused.
    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<TaskStatus> {
        validate_task_id(id).map_err(|_| Error::TaskNotFound(id.to_string()))?;
        let reason: String = reason
            .unwrap_or("")
            .chars()
            .take(self.inner.config.limits.max_error_len)
            .collect();
        let value = self
            .call(Name::Cancel, vec![self.now_arg(), id.to_string(), reason])
            .await?;
        let r = super::reply::Reply { script: "cancel" };
        let reply = r.string(value)?;
        let (status, _, _) = r.status_tag(&reply)?;
        Ok(status)
    }
}
