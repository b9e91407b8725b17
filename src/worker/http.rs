//! The built-in HTTP executor: POSTs `{taskId, taskType, inputData}` to the
//! agent's endpoint with the task's timeout and takes `outputData`,
//! `actualCost`, `qualityScore` and `metrics` from the JSON reply.
//! Non-2xx or a timeout is a failed attempt; a 4xx other than 408 and 429 is
//! not retried (the request itself is wrong).

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Handler, HandlerError, Output, TaskContext};
use crate::task::TaskMetrics;

/// Most bytes read from an agent's reply.
const MAX_REPLY_BYTES: usize = 2 * 1024 * 1024;

/// Executor for one endpoint.
#[derive(Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
    endpoint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentReply {
    #[serde(default)]
    output_data: Option<serde_json::Value>,
    #[serde(default)]
    actual_cost: Option<f64>,
    #[serde(default)]
    quality_score: Option<f64>,
    #[serde(default)]
    metrics: Option<TaskMetrics>,
}

impl HttpExecutor {
    /// An executor POSTing to `endpoint`.
    pub fn new(client: reqwest::Client, endpoint: impl Into<String>) -> Self {
        Self {
            client,
            endpoint: endpoint.into(),
        }
    }
}

/// Whether an HTTP status deserves another attempt.
pub fn status_is_retryable(status: u16) -> bool {
    !(400..500).contains(&status) || status == 408 || status == 429
}

/// Reads a reply body, refusing it as soon as it passes [`MAX_REPLY_BYTES`]
/// (announced or streamed), so an endless or huge reply costs at most the cap.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HandlerError> {
    let too_large = || HandlerError::permanent("agent reply is too large");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_REPLY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| HandlerError::retryable("agent reply could not be read"))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Handler for HttpExecutor {
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Output, HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            let task = &ctx.task;
            let body = serde_json::json!({
                "taskId": task.id,
                "taskType": task.task_type,
                "inputData": task.input_data,
            });
            let response = this
                .client
                .post(&this.endpoint)
                .timeout(Duration::from_millis(task.timeout_ms.max(1)))
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    let what = if e.is_timeout() {
                        "timed out"
                    } else {
                        "request failed"
                    };
                    HandlerError::retryable(format!("agent endpoint {what}"))
                })?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                let message = format!("agent endpoint answered HTTP {status}");
                return Err(HandlerError {
                    message,
                    retryable: status_is_retryable(status),
                });
            }
            let bytes = read_capped(response).await?;
            if bytes.is_empty() {
                return Ok(Output::default());
            }
            let reply: AgentReply = serde_json::from_slice(&bytes).map_err(|_| {
                HandlerError::permanent("agent reply is not the expected JSON object")
            })?;
            Ok(Output {
                output_data: reply.output_data,
                actual_cost: reply.actual_cost,
                quality_score: reply.quality_score,
                metrics: reply.metrics,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_not_retried_except_timeouts_and_rate_limits() {
        assert!(!status_is_retryable(400));
        assert!(!status_is_retryable(404));
        assert!(status_is_retryable(408));
        assert!(status_is_retryable(429));
        assert!(status_is_retryable(500));
        assert!(status_is_retryable(503));
    }
}
