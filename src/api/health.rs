//! `GET /api/ai/tasks/health`: no auth. Redis reachability and latency, the
//! eviction-policy warning, this node's workers, version and node id.
//! 200 when Redis answers, 503 when it does not.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, handler};
use serde_json::json;

use super::AppState;

#[handler]
pub(super) async fn health(Data(state): Data<&Arc<AppState>>) -> Response {
    let started = Instant::now();
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
        Ok(Ok(()))
    );
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let policy_ok = state.maxmemory_policy == "noeviction";
    let draining = state.draining.load(Ordering::Relaxed);
    let status = if !reachable {
        "unavailable"
    } else if draining || !policy_ok {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "nodeId": state.node_id,
        "draining": draining,
        "redis": {
            "reachable": reachable,
            "latencyMs": (latency_ms * 100.0).round() / 100.0,
            "maxmemoryPolicy": state.maxmemory_policy,
            "warning": (!policy_ok).then_some("maxmemory-policy is not noeviction: Redis may evict queued tasks"),
        },
        "worker": state.runtime.as_ref().map(|r| r.stats()),
    });
    let code = if reachable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Json(body).with_status(code).into_response()
}
