//! `GET /metrics`: Prometheus text format, for admin and metrics tokens.
//! Shared queue gauges are read from Redis at scrape time (see
//! [`crate::metrics`] for how to aggregate them over nodes).

use std::sync::Arc;

use metrics::gauge;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::payload::PlainText;

use super::error::{Errors, status as s};
use super::models::ApiTags;
use super::{AppState, BearerAuth};
use crate::metrics::names;

pub(super) struct MetricsApi;

/// This node's own gauges: its version and id, its workers.
fn refresh_node(state: &AppState) {
    gauge!(names::NODE_INFO, "version" => env!("CARGO_PKG_VERSION"),
        "node" => state.node.id.clone())
    .set(1.0);
    let (in_flight, slots) = state.node.runtime.as_ref().map_or((0, 0), |rt| {
        let stats = rt.stats();
        (stats.in_flight, stats.concurrency)
    });
    gauge!(names::WORKER_IN_FLIGHT).set(in_flight as f64);
    gauge!(names::WORKER_SLOTS).set(slots as f64);
}

#[OpenApi(tag = "ApiTags::Monitoring")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// Text exposition format. Needs an admin token or one with role
    /// `metrics` (`taskherd token --sub prometheus --role metrics`).
    /// Per-node series sum over nodes; `taskherd_queue_*` and
    /// `taskherd_event_stream_*` describe the shared queue and are the same on
    /// every node (aggregate them with max).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
    ) -> Result<PlainText<String>, Errors<{ s::AUTHED | s::FORBIDDEN }>> {
        state.queue.refresh_shared_metrics(&principal).await?;
        refresh_node(state);
        let body = match crate::metrics::handle() {
            Some(handle) => {
                handle.run_upkeep();
                handle.render()
            }
            None => String::new(),
        };
        Ok(PlainText(body))
    }
}
