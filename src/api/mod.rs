//! The node's HTTP server: one poem `Route` tree on one port.
//!
//! - `/api/ai/...`: the REST API (poem-openapi, `rest/`: one file per
//!   resource, their request and response types in `rest/models.rs`), spec
//!   at `/api/openapi.json`, Swagger UI at `/api/docs` (served by the node,
//!   no internet needed);
//! - `/graphql`: the GraphQL API ([`graphql`]), over the same service;
//! - `/ws/ai-tasks`: the Socket.IO feed ([`ws`]), outside CORS (it answers
//!   browser origins itself).
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
pub mod graphql;
mod middleware;
pub mod ratelimit;
pub mod rest;
pub mod ws;

use std::sync::{Arc, OnceLock};

use poem::endpoint::BoxEndpoint;
use poem::{Endpoint, EndpointExt, Middleware, Request, Response, Route};

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
    /// cross-origin access. The Socket.IO feed admits the same browser
    /// origins.
    pub cors_origins: Vec<String>,
    /// The Socket.IO feed's limits (GraphQL's WebSocket has the same).
    pub feed: ws::FeedConfig,
    /// GraphQL's settings.
    pub graphql: graphql::GraphqlConfig,
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
            feed: ws::FeedConfig::default(),
            graphql: graphql::GraphqlConfig::default(),
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
    /// The Socket.IO feed (health reports its clients).
    pub feed: ws::Feed,
    /// GraphQL subscriptions' follower of the event hub.
    pub graphql: graphql::Live,
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

/// Every route of the node, served from the moment it listens: the spec and
/// the docs at once, the APIs once `gate` is opened (until then, see
/// [`Gate`]). Installs the metrics recorder on first use.
pub fn routes(config: &ApiConfig, gate: Gate) -> impl Endpoint + use<> {
    crate::metrics::handle();
    let spec_text = spec_json();
    let allow = Arc::new(AllowTable::from_spec(&spec_text));
    let spec = poem::endpoint::make_sync(move |_| {
        poem::IntoResponse::with_content_type(spec_text.clone(), "application/json; charset=utf-8")
    });
    let docs = rest::openapi().swagger_ui();
    let max_body = config.max_body_bytes;
    let cors = cors(&config.cors_origins);
    let all = Arc::new(
        Route::new()
            .at("/api/openapi.json", spec)
            .nest("/api/docs", docs)
            .nest("/", gate)
            .catch_all_error(|e| async move { error::render(e) })
            .around(move |ep, req| body_limit(ep, req, max_body))
            .around(move |ep, req| request_id(ep, req, allow.clone()))
            .boxed(),
    );
    CorsExceptFeed {
        cors: cors
            .transform(all.clone())
            // A refused origin gets the project's error format.
            .catch_all_error(|e| async move { error::render(e) })
            .boxed(),
        all,
    }
}

/// CORS on everything but the Socket.IO feed, which answers browser
/// origins itself (a refused origin gets a `connect_error` saying so, not a
/// bare 403), and but the node's own origin.
struct CorsExceptFeed {
    all: Arc<BoxEndpoint<'static>>,
    cors: BoxEndpoint<'static>,
}

impl Endpoint for CorsExceptFeed {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        let feed = path
            .strip_prefix(ws::PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        // The node's own pages (GraphiQL) call it from its own origin:
        // same-origin requests need no CORS, and the browser sends Origin
        // on their POSTs.
        let headers = req.headers();
        let same_origin = headers
            .get(poem::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|origin| {
                let host = headers
                    .get(poem::http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                ws::origin_allowed(&[], origin, host)
            });
        if feed || same_origin {
            self.all.call(req).await
        } else {
            self.cors.call(req).await
        }
    }
}

/// Resolves once `stop` says so, at once if it has (or if its sender is
/// gone): the stop signal of the feeds' background work.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The APIs of a node that may still be starting. Until [`Gate::open`] (the
/// node waits for Redis and its scripts), health answers alive, not ready
/// and unavailable, and every other request gets 503 `REDIS_UNAVAILABLE`
/// with `Retry-After`; from then on every request reaches the APIs.
#[derive(Clone)]
pub struct Gate {
    apis: Arc<OnceLock<BoxEndpoint<'static>>>,
    node_id: Arc<str>,
}

impl Gate {
    /// A closed gate of the node `node_id`.
    pub fn new(node_id: &str) -> Self {
        Self {
            apis: Arc::new(OnceLock::new()),
            node_id: node_id.into(),
        }
    }

    /// Lets requests through to the APIs over `state`, with the Socket.IO
    /// feed served by `feed` (once; later calls do nothing).
    pub fn open(&self, state: Arc<AppState>, feed: impl Endpoint<Output = Response> + 'static) {
        let apis = Route::new()
            .nest_no_strip(ws::PATH, feed)
            .nest_no_strip(graphql::PATH, graphql::routes(&state))
            .nest("/", rest::openapi())
            .data(state)
            .catch_all_error(|e| async move { error::render(e) })
            .boxed();
        let _ = self.apis.set(apis);
    }
}

impl Endpoint for Gate {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(apis) = self.apis.get() {
            return apis.call(req).await;
        }
        Ok(
            rest::while_starting(req.uri().path(), &self.node_id).unwrap_or_else(|| {
                let mut e = error::ApiError::new(
                    poem::http::StatusCode::SERVICE_UNAVAILABLE,
                    "REDIS_UNAVAILABLE",
                    "the node is starting: waiting for Redis",
                );
                e.retry_after_s = Some(1);
                e.to_response()
            }),
        )
    }
}
