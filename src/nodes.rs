//! The node registry: which nodes are alive, what they do, and how their
//! workers are doing (`GET /api/ai/nodes`).
//!
//! Each node keeps one entry in the store's node registry ([`NodeInfo`]),
//! rewritten every few seconds with `lastSeenAt` on the Redis clock, and
//! removed when the node shuts down. A node that dies without shutting
//! down stops refreshing its entry: [`list`] leaves out entries older than
//! its `stale_after` and deletes them, so dead nodes do not accumulate.

use std::time::Duration;

use crate::error::Result;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::worker::Runtime;

pub use crate::store::NodeInfo;

/// How often a node rewrites its entry.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// How old an entry may be before its node counts as gone (three missed
/// refreshes at [`DEFAULT_EVERY`]).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(15);

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
    if let Err(e) = store.remove_node(&info.node_id).await {
        // Not fatal: readers drop the entry once it is stale.
        tracing::warn!(node = %info.node_id, error = %e, "cannot remove node registry entry");
    }
}

async fn publish(store: &Store, info: &mut NodeInfo, runtime: Option<&Runtime>) -> Result<()> {
    info.last_seen_at = store.now_ms().await?;
    info.worker = runtime.and_then(|r| serde_json::to_value(r.stats()).ok());
    store.put_node(info).await
}

/// The nodes seen within `stale_after` (store clock), sorted by node id;
/// older entries and entries that do not parse are deleted (see
/// [`Store::live_nodes`]).
pub async fn list(store: &Store, stale_after: Duration) -> Result<Vec<NodeInfo>> {
    store.live_nodes(stale_after).await
}
