//! The node's HTTP server. One poem `Route` tree; the health endpoint is here
//! now, and the REST API, GraphQL and the Socket.IO feed mount beside it on
//! the same port (see [`routes`]).

mod health;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use poem::{EndpointExt, Route};

use crate::store::Store;
use crate::worker::Runtime;

/// What every HTTP handler can reach.
pub struct AppState {
    /// The queue.
    pub store: Store,
    /// This node's workers (None when switched off).
    pub runtime: Option<Runtime>,
    /// This node's id.
    pub node_id: String,
    /// Set when shutdown began (health then reports `draining` and status
    /// `degraded`; separate liveness/readiness probes come with operations).
    pub draining: AtomicBool,
    /// Redis' eviction policy as read at start-up.
    pub maxmemory_policy: String,
}

/// Every route of the node.
pub fn routes(state: Arc<AppState>) -> impl poem::Endpoint {
    Route::new()
        .at("/api/ai/tasks/health", poem::get(health::health))
        .data(state)
}
