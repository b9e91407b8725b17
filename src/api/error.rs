//! One error body for every failure the HTTP server answers:
//! `{"error": {"code": "TASK_NOT_FOUND", "message": "...", "details": ...}}`.
//!
//! Operations return [`Errors<S>`], whose type parameter lists exactly the
//! statuses the operation can answer (so the OpenAPI spec documents them);
//! everything else that fails (poem's own parse errors, unknown routes, a
//! refused token) is turned into the same body by [`render`], which the
//! server calls on every error. Internal causes are logged where they are
//! handled and never put in a body.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};
use serde_json::Value;

use crate::auth::AuthError;
use crate::error::Error;

/// The body of every error response.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Machine-readable code, human-readable message, optional details.
#[derive(Debug, Object)]
pub struct ErrorDetail {
    /// Stable code, e.g. `VALIDATION_ERROR`, `TASK_NOT_FOUND`, `UNAUTHORIZED`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Structured details (e.g. the refused items of a batch).
    #[oai(skip_serializing_if_is_none)]
    pub details: Option<Value>,
}

/// An error answer: status, code, message, details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message for people.
    pub message: String,
    /// Structured details.
    pub details: Option<Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }

    /// 400 VALIDATION_ERROR.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// 404 TASK_NOT_FOUND (also for tasks the caller may not see).
    pub fn task_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "TASK_NOT_FOUND",
            format!("task {id} not found"),
        )
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The response: JSON body, status, `Retry-After` when set.
    pub fn to_response(&self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        });
        let mut body = body;
        if self.details.is_none()
            && let Some(e) = body.get_mut("error").and_then(Value::as_object_mut)
        {
            e.remove("details");
        }
        let mut resp = poem::web::Json(body)
            .with_status(self.status)
            .into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = poem::http::HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut()
                .insert(poem::http::header::RETRY_AFTER, v);
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        self.to_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e {
            Error::Validation(m) => ApiError::validation(m),
            Error::BatchRejected(items) => {
                let details: Vec<Value> = items
                    .iter()
                    .map(|(index, message)| serde_json::json!({"index": index, "message": message}))
                    .collect();
                ApiError::validation(format!(
                    "batch refused: {} item(s) invalid; nothing was created",
                    items.len()
                ))
                .with_details(serde_json::json!({ "items": details }))
            }
            Error::TaskNotFound(id) => ApiError::task_not_found(&id),
            Error::AgentNotFound(id) => {
                ApiError::new(StatusCode::NOT_FOUND, code, format!("agent {id} not found"))
            }
            Error::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, code, m),
            e @ (Error::LeaseMismatch(_)
            | Error::TaskCancelled(_)
            | Error::NotProcessing(_)
            | Error::AlreadyTerminal(_)
            | Error::NotRetryable(_)
            | Error::NotReady(_)) => ApiError::new(StatusCode::CONFLICT, code, e.to_string()),
            e @ Error::Redis(_) => {
                let message = if e.is_out_of_memory() {
                    "the queue's Redis is out of memory: no new work is taken until \
                     tasks finish or are cleaned up; try again later"
                } else {
                    "the queue's Redis is unavailable; try again"
                };
                log_outage(&e);
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
                err.retry_after_s = Some(1);
                err
            }
            e @ (Error::Reply { .. } | Error::Config(_) | Error::Io(_)) => {
                tracing::error!(error = %e, "internal error while answering a request");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error",
                )
            }
        }
    }
}

/// Logs a Redis failure seen by a request: one warning per 10 s at most
/// (an outage fails every request; the log should say so once, not per
/// request), the rest at debug.
fn log_outage(e: &Error) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARNED_S: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_WARNED_S.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST_WARNED_S
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %e, "redis unavailable: requests answer 503");
    } else {
        tracing::debug!(error = %e, "redis unavailable while answering a request");
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
    }
}

/// Bit flags naming the statuses an operation can answer with an error.
pub mod status {
    /// 400: bad parameters or body.
    pub const BAD_REQUEST: u16 = 1;
    /// 401: no or bad token.
    pub const UNAUTHORIZED: u16 = 1 << 1;
    /// 403: role not allowed.
    pub const FORBIDDEN: u16 = 1 << 2;
    /// 404: no such task (or not yours).
    pub const NOT_FOUND: u16 = 1 << 3;
    /// 409: state conflict (lease, terminal status).
    pub const CONFLICT: u16 = 1 << 4;
    /// 413: body too large.
    pub const TOO_LARGE: u16 = 1 << 5;
    /// 429: rate limit.
    pub const TOO_MANY: u16 = 1 << 6;
    /// 503: Redis unavailable.
    pub const UNAVAILABLE: u16 = 1 << 7;
    /// 500: a bug.
    pub const INTERNAL: u16 = 1 << 8;
    /// 415: the body is not JSON (no or another Content-Type).
    pub const UNSUPPORTED: u16 = 1 << 9;

    /// What every authenticated operation can answer.
    pub const AUTHED: u16 = UNAUTHORIZED | TOO_MANY | UNAVAILABLE | INTERNAL;
    /// ... plus a JSON body (parse errors and the size limit).
    pub const WITH_BODY: u16 = AUTHED | BAD_REQUEST | TOO_LARGE | UNSUPPORTED;
}

const STATUSES: [(u16, u16, &str); 10] = [
    (
        status::BAD_REQUEST,
        400,
        "Invalid parameters or body (VALIDATION_ERROR)",
    ),
    (
        status::UNAUTHORIZED,
        401,
        "Missing, malformed, expired or wrongly signed token (UNAUTHORIZED)",
    ),
    (
        status::FORBIDDEN,
        403,
        "The token's role may not do this (FORBIDDEN)",
    ),
    (
        status::NOT_FOUND,
        404,
        "No such task or agent, or not visible to this token",
    ),
    (
        status::CONFLICT,
        409,
        "The task's state does not allow this (LEASE_MISMATCH, NOT_PROCESSING, ALREADY_TERMINAL, NOT_RETRYABLE, TASK_NOT_READY)",
    ),
    (
        status::TOO_LARGE,
        413,
        "Request body larger than the limit (PAYLOAD_TOO_LARGE)",
    ),
    (
        status::TOO_MANY,
        429,
        "Rate limit reached; see Retry-After (RATE_LIMITED)",
    ),
    (
        status::UNAVAILABLE,
        503,
        "Redis unavailable; see Retry-After (REDIS_UNAVAILABLE)",
    ),
    (status::INTERNAL, 500, "Internal error (INTERNAL)"),
    (
        status::UNSUPPORTED,
        415,
        "The body must be JSON with Content-Type application/json (UNSUPPORTED_MEDIA_TYPE)",
    ),
];

/// An operation's error, documented as exactly the statuses in `S` (a set of
/// [`status`] flags).
#[derive(Debug)]
pub struct Errors<const S: u16>(pub ApiError);

impl<const S: u16, E: Into<ApiError>> From<E> for Errors<S> {
    fn from(e: E) -> Self {
        Errors(e.into())
    }
}

impl<const S: u16> From<Errors<S>> for poem::Error {
    fn from(e: Errors<S>) -> Self {
        poem::Error::from(e.0)
    }
}

impl<const S: u16> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        let responses = STATUSES
            .iter()
            .filter(|(flag, _, _)| S & flag != 0)
            .map(|&(_, code, description)| MetaResponse {
                description,
                status: Some(code),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: ErrorBody::schema_ref(),
                }],
                headers: if code == 429 || code == 503 {
                    vec![MetaHeader {
                        name: "Retry-After".into(),
                        description: Some("Seconds to wait before trying again".into()),
                        required: false,
                        deprecated: false,
                        schema: u64::schema_ref(),
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// Any error the server is about to answer, in the one error format.
/// Errors raised as [`ApiError`] keep their body; poem's own (parse errors,
/// unknown route, wrong method) get a code from their status.
pub fn render(err: poem::Error) -> Response {
    let operation = err.data::<poem_openapi::OperationId>().copied();
    let mut resp = render_body(err);
    if let Some(op) = operation {
        resp.set_data(op);
    }
    resp
}

fn render_body(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.to_response();
    }
    let status = err.status();
    let (code, message) = match status.as_u16() {
        400 => ("VALIDATION_ERROR", err.to_string()),
        401 => ("UNAUTHORIZED", "missing bearer token".to_string()),
        403 => ("FORBIDDEN", err.to_string()),
        404 => ("NOT_FOUND", "no such route".to_string()),
        405 => (
            "METHOD_NOT_ALLOWED",
            "method not allowed on this route".to_string(),
        ),
        413 => ("PAYLOAD_TOO_LARGE", err.to_string()),
        415 => ("UNSUPPORTED_MEDIA_TYPE", err.to_string()),
        s if s >= 500 => {
            tracing::error!(error = %err, status = s, "internal error");
            ("INTERNAL", "internal error".to_string())
        }
        _ => ("BAD_REQUEST", err.to_string()),
    };
    ApiError::new(status, code, message).to_response()
}
