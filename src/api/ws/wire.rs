//! The feed's messages as the client sees them: event names and payloads.
//! Tasks and the queue status have their REST shapes (`Task`,
//! `QueueStatus` of the OpenAPI document); times are Unix milliseconds.

use std::sync::Arc;

use poem_openapi::types::ToJSON;
use serde_json::{Value, json};

use crate::api::error::ApiError;
use crate::api::rest::models::{QueueStatusBody, TaskBody};
use crate::store::{Event, EventKind, QueueStatus};
use crate::task::Task;

/// Server → client event names.
pub(super) mod names {
    /// A task changed: `{taskId, task, ...}` (task room, `tasks` room).
    pub(crate) const TASK_STATUS: &str = "task:status";
    /// An attempt failed (retrying), or the task failed or timed out for good.
    pub(crate) const TASK_FAILED: &str = "task:failed";
    /// A task of a followed agent changed.
    pub(crate) const AGENT_TASK_UPDATE: &str = "agent:task:update";
    /// The queue's status.
    pub(crate) const QUEUE_UPDATE: &str = "queue:update";
    /// A task or agent message was refused.
    pub(crate) const TASK_ERROR: &str = "task:error";
    /// A queue message was refused.
    pub(crate) const QUEUE_ERROR: &str = "queue:error";
    /// Events were lost for this client: re-read state.
    pub(crate) const RESYNC: &str = "resync";
    /// The server is about to close the connection, and why.
    pub(crate) const CLOSING: &str = "server:closing";
}

/// Client → server message names.
pub(super) mod messages {
    pub(crate) const SUBSCRIBE_TASK: &str = "subscribe:task";
    pub(crate) const UNSUBSCRIBE_TASK: &str = "unsubscribe:task";
    pub(crate) const SUBSCRIBE_TASKS: &str = "subscribe:tasks";
    pub(crate) const UNSUBSCRIBE_TASKS: &str = "unsubscribe:tasks";
    pub(crate) const SUBSCRIBE_AGENT: &str = "subscribe:agent";
    pub(crate) const UNSUBSCRIBE_AGENT: &str = "unsubscribe:agent";
    pub(crate) const SUBSCRIBE_QUEUE: &str = "subscribe:queue";
    pub(crate) const UNSUBSCRIBE_QUEUE: &str = "unsubscribe:queue";
}

/// Whether an event is a failure the `task:failed` event reports.
pub(super) fn is_failure(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Retrying | EventKind::Failed | EventKind::TimedOut
    )
}

/// The payloads of one event, serialized once for every client.
#[derive(Debug)]
pub(super) struct Payloads {
    /// The event.
    pub(super) event: Arc<Event>,
    /// `task:status`, and `agent:task:update` (the same fields).
    pub(super) status: Value,
    /// `task:failed`, for failures.
    pub(super) failed: Option<Value>,
}

impl Payloads {
    /// The payloads of `event`, with the task record as read after it
    /// (None when the task is gone: deleted by cleanup).
    pub(super) fn new(event: Arc<Event>, task: Option<Task>) -> Self {
        let retry_count = task.as_ref().map(|t| t.retry_count);
        let max_retries = task.as_ref().map(|t| t.max_retries);
        let task = task
            .and_then(|t| TaskBody::from(t).to_json())
            .unwrap_or(Value::Null);
        let e = &*event;
        let status = json!({
            "taskId": e.task_id,
            "agentId": e.agent_id,
            "taskType": e.task_type,
            "status": e.status.as_str(),
            "previousStatus": e.previous_status.map(|s| s.as_str()),
            "event": e.kind.as_str(),
            "eventId": e.id.to_string(),
            "timestamp": e.at_ms,
            "task": task,
        });
        let failed = is_failure(e.kind).then(|| {
            json!({
                "taskId": e.task_id,
                "agentId": e.agent_id,
                "taskType": e.task_type,
                "status": e.status.as_str(),
                "errorMessage": e.error_message,
                "retryCount": retry_count.or(e.attempt.map(|a| a.saturating_sub(1))),
                "maxRetries": max_retries,
                "willRetry": e.kind == EventKind::Retrying,
                "runAt": e.run_at_ms,
                "event": e.kind.as_str(),
                "eventId": e.id.to_string(),
                "timestamp": e.at_ms,
            })
        });
        Self {
            status,
            failed,
            event,
        }
    }
}

/// `queue:update`.
pub(super) fn queue_update(status: QueueStatus, at_ms: i64) -> Value {
    json!({
        "status": QueueStatusBody::from(status).to_json(),
        "timestamp": at_ms,
    })
}

/// `task:error` / `queue:error`: the REST error's code and message, and
/// which message was refused.
pub(super) fn error(e: &ApiError, message: &str, subject: Option<(&str, &str)>) -> Value {
    let mut v = json!({
        "code": e.code,
        "message": e.message,
        "event": message,
    });
    if let (Some((key, id)), Some(o)) = (subject, v.as_object_mut()) {
        o.insert(key.into(), id.into());
    }
    v
}

/// A message's acknowledgement: `{ok: true, ...}` or `{ok: false, error}`.
pub(super) fn ack_ok(extra: Value) -> Value {
    let mut v = json!({ "ok": true });
    if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), extra) {
        o.extend(extra);
    }
    v
}

/// A refused message's acknowledgement.
pub(super) fn ack_err(e: &ApiError) -> Value {
    json!({ "ok": false, "error": { "code": e.code, "message": e.message } })
}

/// `resync`: why, and the last event the client had seen, if known.
pub(super) fn resync(reason: &str) -> Value {
    json!({ "reason": reason })
}

/// `server:closing`.
pub(super) fn closing(code: &str, message: &str) -> Value {
    json!({ "code": code, "message": message })
}
