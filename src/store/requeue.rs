//! Wrapper of `lua/requeue.lua` (graceful hand-back).

use super::{Name, Store};
use crate::error::Result;

impl Store {
    /// Hands leased tasks back to QUEUED without spending an attempt.
    pub async fn requeue(&self, leases: &[(String, String)]) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(leases.len());
        let r = super::reply::Reply { script: "requeue" };
        for chunk in leases.chunks(super::claim::MAX_CLAIM) {
            let mut args = vec![self.now_arg(), chunk.len().to_string()];
            for (id, token) in chunk {
                args.push(id.clone());
                args.push(token.clone());
            }
            let codes = r.codes(self.call(Name::Requeue, args).await?, chunk.len())?;
            for (code, (id, _)) in codes.into_iter().zip(chunk) {
                results.push(if code == "ok" {
                    Ok(())
                } else {
                    Err(r.item_refusal(&code, id)?)
                });
            }
        }
        Ok(results)
    }
}
