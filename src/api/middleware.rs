//! The middleware every request passes, outermost first: CORS (origins from
//! `FRONTEND_URL`), the request id (`X-Request-Id`, taken from the client
//! when well-formed, else a fresh ULID; on every response and in the
//! request's log span; 405 answers get their `Allow` header here), and the
//! body size limit (413).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use poem::http::{HeaderValue, Method, StatusCode};
use poem::middleware::Cors;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

use super::error::{self, ApiError};

/// The methods each path of the spec serves, for the `Allow` header of 405
/// answers: (path segments, `None` for a `{param}`), methods.
pub(super) struct AllowTable(Vec<(Vec<Option<String>>, String)>);

impl AllowTable {
    pub(super) fn from_spec(spec: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut rows = Vec::new();
        if let Some(paths) = v["paths"].as_object() {
            for (path, item) in paths {
                let segments = path
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect();
                let methods: Vec<String> = item
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_ascii_uppercase()).collect())
                    .unwrap_or_default();
                rows.push((segments, methods.join(", ")));
            }
        }
        Self(rows)
    }

    fn allow(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .filter(|(pattern, _)| {
                pattern.len() == segments.len()
                    && pattern
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p.as_deref().is_none_or(|p| p == *s))
            })
            // A literal segment beats a parameter (as in the router).
            .max_by_key(|(pattern, _)| pattern.iter().filter(|p| p.is_some()).count())
            .map(|(_, methods)| methods.as_str())
    }
}

pub(super) fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ])
        .expose_headers(["x-request-id", "retry-after"])
        .max_age(600);
    for origin in origins {
        cors = cors.allow_origin(origin.as_str());
    }
    if origins.is_empty() {
        // No FRONTEND_URL: no browser origin is allowed.
        cors = cors.allow_origins_fn(|_| false);
    }
    cors
}

/// Request ids clients may choose: 1..=64 of `[A-Za-z0-9_.-]`.
fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(super) async fn request_id<E: Endpoint>(
    ep: E,
    req: Request,
    allow: Arc<AllowTable>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    let id = req
        .header("x-request-id")
        .filter(|id| valid_request_id(id))
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        sub = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let result = ep.call(req).instrument(span.clone()).await;
    let mut resp = match result {
        Ok(r) => r.into_response(),
        Err(e) => error::render(e),
    };
    let status = resp.status().as_u16();
    if status == 405
        && let Some(methods) = allow.allow(&path)
        && let Ok(v) = HeaderValue::from_str(methods)
    {
        resp.headers_mut().insert(poem::http::header::ALLOW, v);
    }
    let operation = resp
        .data::<poem_openapi::OperationId>()
        .map_or("unmatched", |op| op.0);
    crate::metrics::http_request(operation, method.as_str(), status, started.elapsed());
    span.in_scope(|| {
        tracing::debug!(
            status,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

pub(super) async fn body_limit<E: Endpoint>(
    ep: E,
    mut req: Request,
    max: usize,
) -> poem::Result<Response> {
    let declared = req
        .header(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Ok(too_large(max));
    }
    if declared.is_none() && !matches!(*req.method(), Method::GET | Method::HEAD) {
        // A body of unknown length (chunked): count it while it is read.
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = req.take_body();
        req.set_body(limited_body(body, max, exceeded.clone()));
        let resp = ep.call(req).await.map(IntoResponse::into_response);
        if exceeded.load(Ordering::Relaxed) {
            return Ok(too_large(max));
        }
        return resp;
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

fn too_large(max: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("request body larger than {max} bytes"),
    )
    .to_response()
}

fn limited_body(body: poem::Body, max: usize, exceeded: Arc<AtomicBool>) -> poem::Body {
    use futures::StreamExt;
    let mut seen = 0usize;
    let stream = body.into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len());
        if seen > max {
            exceeded.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("request body too large"));
        }
        Ok(chunk)
    });
    poem::Body::from_bytes_stream(stream)
}
