//! The node's HTTP server: one poem `Route` tree on one port.
//!
//! - `/api/ai/...`: the REST API (poem-openapi, `rest/`: one file per
//!   resource, their request and response types in `rest/models.rs`), spec
//!   at `/api/openapi.json`, Swagger UI at `/api/docs` (served by the node,
//!   no internet needed);
//! - GraphQL and the Socket.IO feed mount beside it in [`routes`], as
//!   `graphql/` and `ws/` beside `rest/`.
//!
//! Shared by every API: [`AppState`] (the service, auth, the limiter, the
//! node), the one error body and code table ([`error`]), the rate limit
//! ([`ratelimit`]) and the middleware (`middleware.rs`).
//!
//! Every request passes, outermost first: CORS (origins from
//! `FRONTEND_URL`), the request id (`X-Request-Id`, taken from the client
//! when well-formed, else a fresh ULID; on every response and in the request's
//! log span), the body size limit (413), and the error renderer that gives
//! every failure the one error body of [`error`].

pub mod error;
mod middleware;
pub mod ratelimit;
pub mod rest;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Route};

use crate::auth::Auth;
use crate::queue::Queue;
use crate::worker::Runtime;
use middleware::{AllowTable, body_limit, cors, request_id};
use ratelimit::RateLimiter;
pub use rest::{IDENT_PATTERN, spec_json};

/// HTTP settings of a node.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests per second per token subject, shared by all nodes; 0: off.
    pub rate_limit_per_s: u32,
    /// Origins allowed by CORS (`FRONTEND_URL`, comma-separated); none: no
    /// cross-origin access.
    pub cors_origins: Vec<String>,
}

/// Default request body limit: 2 MiB (a 1 MiB inputData plus JSON escaping).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Default rate limit per principal (requests per second).
pub const DEFAULT_RATE_LIMIT_PER_S: u32 = 200;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            rate_limit_per_s: DEFAULT_RATE_LIMIT_PER_S,
            cors_origins: Vec::new(),
        }
    }
}

/// What every HTTP handler can reach.
pub struct AppState {
    /// The service every operation goes through.
    pub queue: Queue,
    /// Token verification.
    pub auth: Auth,
    /// Shared rate limit.
    pub limiter: RateLimiter,
    /// This node, as health and metrics report it.
    pub node: NodeContext,
    /// HTTP settings.
    pub config: ApiConfig,
}

/// The node an HTTP server runs in.
pub struct NodeContext {
    /// This node's id.
    pub id: String,
    /// Redis' eviction policy as read at start-up.
    pub maxmemory_policy: String,
    /// This node's workers (None when switched off).
    pub runtime: Option<Runtime>,
}

/// Every route of the node. Installs the metrics recorder on first use.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    crate::metrics::handle();
    let api = rest::openapi();
    let spec_text = spec_json();
    let allow = Arc::new(AllowTable::from_spec(&spec_text));
    let spec = poem::endpoint::make_sync(move |_| {
        poem::IntoResponse::with_content_type(spec_text.clone(), "application/json; charset=utf-8")
    });
    let docs = api.swagger_ui();
    let max_body = state.config.max_body_bytes;
    let cors = cors(&state.config.cors_origins);
    Route::new()
        .at("/api/openapi.json", spec)
        .nest("/api/docs", docs)
        .nest("/", api)
        .data(state)
        .catch_all_error(|e| async move { error::render(e) })
        .around(move |ep, req| body_limit(ep, req, max_body))
        .around(move |ep, req| request_id(ep, req, allow.clone()))
        .with(cors)
}
