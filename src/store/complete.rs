//! Wrapper of `lua/complete.lua`: record successful attempts (batched).

use super::outcome::AttemptEnd;
use super::{Name, Store};
use crate::error::{Error, Result};
use crate::task::{Limits, TaskMetrics};

/// A successful attempt's result.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    /// Task id.
    pub id: String,
    /// Lease token of the attempt.
    pub token: String,
    /// Handler output.
    pub output_data: Option<serde_json::Value>,
    /// Cost the handler reports.
    pub actual_cost: Option<f64>,
    /// Quality the handler reports.
    pub quality_score: Option<f64>,
    /// Measurements the handler reports.
    pub metrics: Option<TaskMetrics>,
}

/// Largest token count (exclusive) one completion may report: 1,000 of them
/// still sum below 2^63, so the statistics' HINCRBY cannot overflow. Mirrors
/// `MAX_TOKENS` in `lua/complete.lua`.
const MAX_TOKENS: u64 = 1 << 53;
/// Largest magnitude of actualCost and qualityScore (`MAX_ABS_NUMBER` in
/// `lua/complete.lua`): sums stay finite for HINCRBYFLOAT.
const MAX_ABS_NUMBER: f64 = 1e15;

/// The script's 8 arguments for one completion, or why it is refused.
fn encode(c: &Completion, limits: &Limits) -> Result<[String; 8]> {
    let output = match &c.output_data {
        Some(v) => {
            serde_json::to_string(v).map_err(|e| Error::Validation(format!("outputData: {e}")))?
        }
        None => String::new(),
    };
    if output.len() > limits.max_output_bytes {
        return Err(Error::Validation(format!(
            "outputData is {} bytes; the limit is {}",
            output.len(),
            limits.max_output_bytes
        )));
    }
    let number = |what: &str, x: Option<f64>| match x {
        Some(v) if !v.is_finite() || v.abs() > MAX_ABS_NUMBER => Err(Error::Validation(format!(
            "{what} must be a finite number within +-1e15"
        ))),
        Some(v) => Ok(v.to_string()),
        None => Ok(String::new()),
    };
    let metrics = c.metrics.as_ref();
    let count = |what: &str, x: Option<u64>| match x {
        Some(v) if v >= MAX_TOKENS => Err(Error::Validation(format!("{what} must be below 2^53"))),
        Some(v) => Ok(v.to_string()),
        None => Ok(String::new()),
    };
    Ok([
        c.id.clone(),
        c.token.clone(),
        output,
        number("actualCost", c.actual_cost)?,
        number("qualityScore", c.quality_score)?,
        match metrics {
            Some(m) => {
                serde_json::to_string(m).map_err(|e| Error::Validation(format!("metrics: {e}")))?
            }
            None => String::new(),
        },
        count("metrics.tokensIn", metrics.and_then(|m| m.tokens_in))?,
        count("metrics.tokensOut", metrics.and_then(|m| m.tokens_out))?,
    ])
}

impl Store {
    /// Completes each attempt independently; one result per item, in order:
    /// the ended attempt, or None for a repeat of an already stored
    /// completion (same token). A stale token is refused (`LeaseMismatch`)
    /// and changes nothing.
    pub async fn complete(&self, items: &[Completion]) -> Result<Vec<Result<Option<AttemptEnd>>>> {
        let limits = &self.inner.config.limits;
        let mut results: Vec<Result<Option<AttemptEnd>>> = Vec::with_capacity(items.len());
        let mut sent: Vec<usize> = Vec::with_capacity(items.len());
        let mut encoded = Vec::with_capacity(items.len());
        for (i, c) in items.iter().enumerate() {
            match encode(c, limits) {
                Ok(args) => {
                    sent.push(i);
                    encoded.push(args);
                    results.push(Ok(None));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let r = super::reply::Reply { script: "complete" };
        for (chunk, indexes) in encoded
            .chunks(super::claim::MAX_CLAIM)
            .zip(sent.chunks(super::claim::MAX_CLAIM))
        {
            let mut args = vec![self.now_arg(), chunk.len().to_string()];
            for item in chunk {
                args.extend(item.iter().cloned());
            }
            let codes = r.codes(self.call(Name::Complete, args).await?, chunk.len())?;
            for (code, &i) in codes.into_iter().zip(indexes) {
                if code == "ok" {
                    // A repeat of an already stored completion: counted once.
                } else if code.starts_with("ok|") {
                    results[i] = Ok(Some(AttemptEnd::parse(&r, &code)?));
                } else {
                    results[i] = Err(r.item_refusal(&code, &items[i].id)?);
                }
            }
        }
        Ok(results)
    }
}
