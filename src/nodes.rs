//! The node registry: which nodes are alive, what they do, and how their
//! workers are doing (`GET /api/ai/nodes`).
//!
//! Each node keeps one entry in the `nodes` hash (node id -> [`NodeInfo`] as
//! JSON), rewritten every few seconds with `lastSeenAt` on the Redis clock,
//! and removed when the node shuts down. A node that dies without shutting
//! down stops refreshing its entry: [`list`] leaves out entries older than
//! its `stale_after` and deletes them, so dead nodes do not accumulate.

use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::worker::Runtime;

/// How often a node rewrites its entry.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// How old an entry may be before its node counts as gone (three missed
/// refreshes at [`DEFAULT_EVERY`]).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15);

/// One live node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, poem_openapi::Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct NodeInfo {
    /// Node id (unique per running node).
    pub node_id: String,
    /// taskherd version the node runs.
    pub version: String,
    /// When the node started (Unix ms).
    pub started_at: i64,
    /// When the node last refreshed its entry (Unix ms, Redis clock).
    pub last_seen_at: i64,
    /// What the node runs: `api`, `worker`, `maintenance`.
    pub roles: Vec<String>,
    /// The node's worker statistics, when it runs workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<serde_json::Value>,
}

/// Keeps this node's entry fresh until shutdown, then removes it.
///
/// The entry is written at once and then every `every`, with `lastSeenAt`
/// from the store clock and, when `runtime` is given, its current worker
/// statistics. Redis errors do not stop the loop: the first of an outage is
/// logged, the entry is written again once Redis answers.
pub async fn run(
    store: Store,
    mut info: NodeInfo,
    runtime: Option<Runtime>,
    every: Duration,
    mut shutdown: Shutdown,
) {
    let mut failing = false;
    while !shutdown.is_triggered() {
        match publish(&store, &mut info, runtime.as_ref()).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(node = %info.node_id, "node registry entry written again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(node = %info.node_id, error = %e, "cannot write node registry entry");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => {}
        }
    }
    let removed: std::result::Result<i64, _> = store
        .pool()
        .hdel(store.keys().nodes(), info.node_id.as_str())
        .await;
    if let Err(e) = removed {
        // Not fatal: readers drop the entry once it is stale.
        tracing::warn!(node = %info.node_id, error = %e, "cannot remove node registry entry");
    }
}

async fn publish(store: &Store, info: &mut NodeInfo, runtime: Option<&Runtime>) -> Result<()> {
    info.last_seen_at = store.now_ms().await?;
    info.worker = runtime.and_then(|r| serde_json::to_value(r.stats()).ok());
    // Cannot fail (string keys only); mapped rather than unwrapped all the same.
    let json = serde_json::to_string(&*info).map_err(std::io::Error::from)?;
    let _: i64 = store
        .pool()
        .hset(store.keys().nodes(), (info.node_id.as_str(), json))
        .await?;
    Ok(())
}

/// The nodes seen within `stale_after` (store clock), sorted by node id.
///
/// Entries older than that, and entries that do not parse, are deleted. A
/// node that writes again between this read and the delete loses its entry
/// until its next refresh; it can only happen to a node that stalled for
/// `stale_after`.
pub async fn list(store: &Store, stale_after: Duration) -> Result<Vec<NodeInfo>> {
    let entries: Vec<(String, String)> = store
        .pool()
        .hgetall::<std::collections::HashMap<String, String>, _>(store.keys().nodes())
        .await?
        .into_iter()
        .collect();
    let now = store.now_ms().await?;
    let oldest = now.saturating_sub(stale_after.as_millis().min(i64::MAX as u128) as i64);
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for (field, json) in entries {
        match serde_json::from_str::<NodeInfo>(&json) {
            Ok(node) if node.last_seen_at >= oldest => live.push(node),
            _ => dead.push(field),
        }
    }
    if !dead.is_empty() {
        let _: i64 = store.pool().hdel(store.keys().nodes(), dead).await?;
    }
    live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(live)
}
