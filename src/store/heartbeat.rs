//! Wrapper of `lua/heartbeat.lua`: extend leases, learn which were lost.

use std::time::Duration;

use super::{Name, Store, ms};
use crate::error::Result;

/// What a heartbeat learned about one lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Extended.
    Held,
    /// The task was cancelled: stop the handler.
    Cancelled,
    /// Reaped or re-delivered: stop; any result will be refused.
    Lost,
    /// The task no longer exists.
    Gone,
}

impl Store {
    /// Extends the leases of `(task id, token)` pairs by `lease` from now.
    pub async fn heartbeat(
        &self,
        leases: &[(String, String)],
        lease: Duration,
    ) -> Result<Vec<LeaseState>> {
        let mut states = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(super::claim::MAX_CLAIM) {
            let mut args = vec![self.now_arg(), ms(lease), chunk.len().to_string()];
            for (id, token) in chunk {
                args.push(id.clone());
                args.push(token.clone());
            }
            let value = self.call(Name::Heartbeat, args).await?;
            let r = super::reply::Reply {
                script: "heartbeat",
            };
            for code in r.codes(value, chunk.len())? {
                states.push(match code.as_str() {
                    "ok" => LeaseState::Held,
                    "cancelled" => LeaseState::Cancelled,
                    "lost" => LeaseState::Lost,
                    "gone" => LeaseState::Gone,
                    other => return Err(r.err(format!("unknown state {other}"))),
                });
            }
        }
        Ok(states)
    }
}
