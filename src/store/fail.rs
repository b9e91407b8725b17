//! Wrapper of `lua/fail.lua`: record failed attempts (batched).

use super::outcome::AttemptEnd;
use super::{Name, Store, ms};
use crate::error::Result;

/// A failed attempt.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Task id.
    pub id: String,
    /// Lease token of the attempt.
    pub token: String,
    /// What went wrong (cut to the configured length).
    pub error_message: String,
    /// False for errors that another attempt cannot fix.
    pub retryable: bool,
    /// True when the attempt overran timeoutMs (a final one ends as TIMEOUT).
    pub timed_out: bool,
}

/// A recorded failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// What became of the task.
    pub outcome: FailOutcome,
    /// The attempt that ended.
    pub attempt: AttemptEnd,
}

/// What became of a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// QUEUED again after backoff.
    Retrying,
    /// FAILED for good.
    Failed,
    /// TIMEOUT for good.
    TimedOut,
}

impl Store {
    /// Fails each attempt independently; one result per item, in order.
    pub async fn fail(&self, items: &[Failure]) -> Result<Vec<Result<Failed>>> {
        let cfg = &self.inner.config;
        let mut results = Vec::with_capacity(items.len());
        let r = super::reply::Reply { script: "fail" };
        for chunk in items.chunks(super::claim::MAX_CLAIM) {
            let mut args = vec![
                self.now_arg(),
                ms(cfg.backoff_base),
                ms(cfg.backoff_cap),
                chunk.len().to_string(),
            ];
            for f in chunk {
                let message: String = f
                    .error_message
                    .chars()
                    .take(cfg.limits.max_error_len)
                    .collect();
                args.extend([
                    f.id.clone(),
                    f.token.clone(),
                    message,
                    if f.retryable { "1" } else { "0" }.to_string(),
                    if f.timed_out { "timeout" } else { "error" }.to_string(),
                ]);
            }
            let codes = r.codes(self.call(Name::Fail, args).await?, chunk.len())?;
            for (code, f) in codes.into_iter().zip(chunk) {
                let outcome = match code.split('|').next().unwrap_or_default() {
                    "retry" => FailOutcome::Retrying,
                    "failed" => FailOutcome::Failed,
                    "timeout" => FailOutcome::TimedOut,
                    other => {
                        results.push(Err(r.item_refusal(other, &f.id)?));
                        continue;
                    }
                };
                results.push(Ok(Failed {
                    outcome,
                    attempt: AttemptEnd::parse(&r, &code)?,
                }));
            }
        }
        Ok(results)
    }
}
