//! Health, no auth:
//! - `GET /api/ai/tasks/health`: Redis reachability and latency, the
//!   eviction-policy warning, this node's workers, version and node id; 200
//!   when Redis answers, 503 when it does not;
//! - `GET /api/ai/tasks/health/live`: liveness, 200 while the process serves
//!   HTTP (a Redis outage does not make a node dead: restarting it would not
//!   help);
//! - `GET /api/ai/tasks/health/ready`: readiness, 200 when Redis answers and
//!   the node is not draining (the function library is loaded at start-up
//!   and again whenever Redis lost it, so a reachable Redis is a ready one),
//!   else 503.
//!
//! While a node waits for Redis at start-up these answer from
//! [`while_starting`]: alive, not ready, unavailable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::IntoResponse;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::AppState;
use super::models::ApiTags;

pub(super) struct HealthApi;

/// The node's Redis as seen from here.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct RedisHealth {
    /// Whether Redis answered a PING within 2 s.
    reachable: bool,
    /// PING round trip (ms).
    latency_ms: f64,
    /// Redis' maxmemory-policy (should be noeviction).
    maxmemory_policy: String,
    /// Set when the policy may evict tasks.
    warning: Option<String>,
}

/// A node's health.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct HealthReport {
    /// `ok`, `degraded` (draining, or Redis may evict) or `unavailable`
    /// (Redis unreachable).
    status: String,
    /// taskherd version.
    version: String,
    /// This node's id.
    node_id: String,
    /// Shutting down.
    draining: bool,
    /// Redis.
    redis: RedisHealth,
    /// This node's workers (absent when the node runs none).
    worker: Option<serde_json::Value>,
    /// This node's Socket.IO feed (absent while the node starts).
    feed: Option<FeedHealth>,
}

/// A node's Socket.IO feed.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
struct FeedHealth {
    /// Connected clients.
    connections: u64,
    /// Subscriptions by room kind: `task`, `agent`, `queue`, `tasks`.
    subscriptions: std::collections::BTreeMap<String, u64>,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Redis answers (status `ok` or `degraded`).
    #[oai(status = 200)]
    Ok(Json<HealthReport>),
    /// Redis does not answer.
    #[oai(status = 503)]
    Unavailable(Json<HealthReport>),
}

/// A probe's answer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
struct Probe {
    /// `alive`, `ready` or `not-ready`.
    status: String,
    /// Why the node is not ready.
    reason: Option<String>,
}

#[derive(ApiResponse)]
enum ProbeResponse {
    /// Alive / ready.
    #[oai(status = 200)]
    Ok(Json<Probe>),
    /// Not ready (Redis unreachable or draining).
    #[oai(status = 503)]
    Unavailable(Json<Probe>),
}

/// The health answers of a node still waiting for Redis at start-up (see
/// `crate::node`), `None` for any other path: alive, not ready ("waiting for
/// redis"), and health `unavailable`, in the shapes documented below.
pub(crate) fn while_starting(path: &str, node_id: &str) -> Option<poem::Response> {
    let (status, body) = match path {
        "/api/ai/tasks/health/live" => (
            StatusCode::OK,
            Probe {
                status: "alive".into(),
                reason: None,
            }
            .to_json(),
        ),
        "/api/ai/tasks/health/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Probe {
                status: "not-ready".into(),
                reason: Some("waiting for redis".into()),
            }
            .to_json(),
        ),
        "/api/ai/tasks/health" => (
            StatusCode::SERVICE_UNAVAILABLE,
            HealthReport {
                status: "unavailable".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                node_id: node_id.into(),
                draining: false,
                redis: RedisHealth {
                    reachable: false,
                    latency_ms: 0.0,
                    maxmemory_policy: "unknown".into(),
                    warning: None,
                },
                worker: None,
                feed: None,
            }
            .to_json(),
        ),
        _ => return None,
    };
    Some(poem::web::Json(body).with_status(status).into_response())
}

async fn redis_reachable(state: &AppState) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), state.queue.ping()).await,
        Ok(Ok(()))
    )
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness probe (no auth)
    ///
    /// 200 while the process serves HTTP.
    #[oai(
        path = "/api/ai/tasks/health/live",
        method = "get",
        operation_id = "liveness"
    )]
    async fn live(&self) -> ProbeResponse {
        ProbeResponse::Ok(Json(Probe {
            status: "alive".into(),
            reason: None,
        }))
    }

    /// Readiness probe (no auth)
    ///
    /// 200 when Redis answers and the node is not shutting down; 503
    /// otherwise, so a load balancer stops sending it requests.
    #[oai(
        path = "/api/ai/tasks/health/ready",
        method = "get",
        operation_id = "readiness"
    )]
    async fn ready(&self, Data(state): Data<&Arc<AppState>>) -> ProbeResponse {
        let reason = if state.queue.is_draining() {
            Some("draining")
        } else if !redis_reachable(state).await {
            Some("redis unreachable")
        } else {
            None
        };
        match reason {
            None => ProbeResponse::Ok(Json(Probe {
                status: "ready".into(),
                reason: None,
            })),
            Some(r) => ProbeResponse::Unavailable(Json(Probe {
                status: "not-ready".into(),
                reason: Some(r.into()),
            })),
        }
    }

    /// Node health (no auth)
    #[oai(path = "/api/ai/tasks/health", method = "get", operation_id = "health")]
    async fn health(&self, Data(state): Data<&Arc<AppState>>) -> HealthResponse {
        let started = Instant::now();
        let reachable = redis_reachable(state).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // "unknown": the Redis service refuses CONFIG; warned about at start.
        let policy_ok = matches!(
            state.node.maxmemory_policy.as_str(),
            "noeviction" | "unknown"
        );
        let draining = state.queue.is_draining();
        let status = if !reachable {
            "unavailable"
        } else if draining || !policy_ok {
            "degraded"
        } else {
            "ok"
        };
        let report = HealthReport {
            status: status.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            node_id: state.node.id.clone(),
            draining,
            redis: RedisHealth {
                reachable,
                latency_ms: (latency_ms * 100.0).round() / 100.0,
                maxmemory_policy: state.node.maxmemory_policy.clone(),
                warning: (!policy_ok).then(|| {
                    "maxmemory-policy is not noeviction: Redis may evict queued tasks".into()
                }),
            },
            worker: state
                .node
                .runtime
                .as_ref()
                .and_then(|r| serde_json::to_value(r.stats()).ok()),
            feed: Some({
                let stats = state.feed.stats();
                FeedHealth {
                    connections: stats.connections as u64,
                    subscriptions: stats
                        .subscriptions
                        .into_iter()
                        .map(|(kind, n)| (kind.to_string(), n as u64))
                        .collect(),
                }
            }),
        };
        if reachable {
            HealthResponse::Ok(Json(report))
        } else {
            HealthResponse::Unavailable(Json(report))
        }
    }
}
