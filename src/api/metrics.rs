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
use crate::task::{Priority, TaskStatus};

pub(super) struct MetricsApi;

/// Sets the shared queue gauges from Redis; a Redis error leaves them as they
/// were (the scrape still answers with the node's own series).
async fn refresh_shared(state: &AppState) {
    gauge!(names::NODE_INFO, "version" => env!("CARGO_PKG_VERSION"),
        "node" => state.node_id.clone())
    .set(1.0);
    let status = state.store.queue_status().await;
    gauge!(names::QUEUE_READ_OK).set(if status.is_ok() { 1.0 } else { 0.0 });
    if let Ok(status) = status {
        gauge!(names::QUEUE_DELAYED).set(status.delayed_tasks as f64);
        for agent in &status.agents {
            let a = agent.agent_id.clone();
            for st in TaskStatus::ALL {
                let n = agent.by_status.get(st.as_str()).copied().unwrap_or(0);
                gauge!(names::QUEUE_TASKS, "agent" => a.clone(), "status" => st.as_str())
                    .set(n as f64);
            }
            for p in Priority::ALL {
                let n = agent
                    .ready_by_priority
                    .get(p.as_str())
                    .copied()
                    .unwrap_or(0);
                gauge!(names::QUEUE_READY, "agent" => a.clone(), "priority" => p.as_str())
                    .set(n as f64);
            }
            let oldest = agent.oldest_waiting_ms.unwrap_or(0).max(0) as f64 / 1000.0;
            gauge!(names::QUEUE_OLDEST, "agent" => a).set(oldest);
        }
        if let Ok((len, newest)) = state.store.event_stream_info().await {
            gauge!(names::STREAM_LENGTH).set(len as f64);
            let lag = newest.map_or(0, |ms| (status.timestamp - ms).max(0));
            gauge!(names::STREAM_LAG).set(lag as f64 / 1000.0);
        }
    }
    if let Some(rt) = &state.runtime {
        let stats = rt.stats();
        gauge!(names::WORKER_IN_FLIGHT).set(stats.in_flight as f64);
        gauge!(names::WORKER_SLOTS).set(stats.concurrency as f64);
    } else {
        gauge!(names::WORKER_IN_FLIGHT).set(0.0);
        gauge!(names::WORKER_SLOTS).set(0.0);
    }
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
        principal.require_metrics_reader()?;
        refresh_shared(state).await;
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
