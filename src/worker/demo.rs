//! Built-in demo agents, so a fresh node does real work with no external
//! service: `echo` returns its input; `sleep` waits `inputData.ms`
//! (default 100, at most 60 000) and honours cancellation.

use std::time::Duration;

use super::{HandlerError, Output, Registry, TaskContext};
use crate::task::TaskMetrics;

/// Agent id of the echo demo.
pub const ECHO: &str = "echo";
/// Agent id of the sleep demo.
pub const SLEEP: &str = "sleep";

/// Registers `echo` and `sleep`.
pub fn register(registry: &mut Registry) {
    registry.register_fn(ECHO, |ctx: TaskContext| async move {
        Ok(Output {
            output_data: Some(ctx.task.input_data.clone()),
            actual_cost: Some(0.0),
            metrics: Some(TaskMetrics::default()),
            ..Output::default()
        })
    });
    registry.register_fn(SLEEP, |ctx: TaskContext| async move {
        let ms = ctx
            .task
            .input_data
            .get("ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(100);
        if ms > 60_000 {
            return Err(HandlerError::permanent("sleep: ms must be at most 60000"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Output {
                output_data: Some(serde_json::json!({ "sleptMs": ms })),
                metrics: Some(TaskMetrics { duration_ms: Some(ms), ..TaskMetrics::default() }),
                ..Output::default()
            }),
            _ = ctx.cancel.cancelled() => Err(HandlerError::retryable("sleep: cancelled")),
        }
    });
}
