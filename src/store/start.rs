//! Wrapper of `lua/start.lua`: lease one named task (the seeds'
//! startTaskProcessing), for a worker that picks its task rather than taking
//! the next one.

use std::time::Duration;

use super::claim::{ClaimedTask, leased};
use super::{Name, Store, ms};
use crate::error::{Error, Result};
use crate::ids::TaskId;

impl Store {
    /// Leases task `id` to `worker_id` for `lease`, if it is QUEUED and ready.
    /// Errors: `TaskNotFound`, `NotReady` (running, ended, or waiting for its
    /// run time or a retry backoff).
    pub async fn start(&self, id: &str, worker_id: &str, lease: Duration) -> Result<ClaimedTask> {
        if TaskId::parse(id).is_err() {
            return Err(Error::TaskNotFound(id.to_string()));
        }
        if lease.is_zero() || worker_id.is_empty() {
            return Err(Error::Validation(
                "start needs a lease of at least 1 ms and a worker id".into(),
            ));
        }
        let token = format!("{}.1", ulid::Ulid::generate());
        let args = vec![
            self.now_arg(),
            ms(lease),
            token,
            worker_id.to_string(),
            id.to_string(),
        ];
        let value = self.call(Name::Start, args).await?;
        let r = super::reply::Reply { script: "start" };
        let row = r.array(value)?;
        if row.len() != 12 {
            return Err(r.err(format!("expected 12 fields, got {}", row.len())));
        }
        leased(&r, row, lease)
    }
}
