//! The registry of live nodes in Redis: one entry per node in the `nodes`
//! hash (node id -> the node as JSON), written by the node itself and
//! removed when it shuts down (the refresh loop is `crate::nodes`).

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::Result;

/// One live node, as it describes itself.
#[derive(Clone, Debug, PartialEq)]
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
    /// The node's worker statistics (a JSON object), when it runs workers.
    pub worker: Option<serde_json::Value>,
}

/// The entry's encoding in the hash (JSON, camelCase); nodes of older and
/// newer versions read each other's entries.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    node_id: String,
    version: String,
    started_at: i64,
    last_seen_at: i64,
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    worker: Option<serde_json::Value>,
}

impl From<&NodeInfo> for Entry {
    fn from(n: &NodeInfo) -> Self {
        Self {
            node_id: n.node_id.clone(),
            version: n.version.clone(),
            started_at: n.started_at,
            last_seen_at: n.last_seen_at,
            roles: n.roles.clone(),
            worker: n.worker.clone(),
        }
    }
}

impl From<Entry> for NodeInfo {
    fn from(e: Entry) -> Self {
        Self {
            node_id: e.node_id,
            version: e.version,
            started_at: e.started_at,
            last_seen_at: e.last_seen_at,
            roles: e.roles,
            worker: e.worker,
        }
    }
}

impl Store {
    /// Writes (or rewrites) a node's entry as given.
    pub async fn put_node(&self, node: &NodeInfo) -> Result<()> {
        // Cannot fail (string keys only); mapped rather than unwrapped all the same.
        let json = serde_json::to_string(&Entry::from(node)).map_err(std::io::Error::from)?;
        let _: i64 = self
            .inner
            .pool
            .hset(self.keys().nodes(), (node.node_id.as_str(), json))
            .await?;
        Ok(())
    }

    /// Removes a node's entry (a node that is gone is no error).
    pub async fn remove_node(&self, node_id: &str) -> Result<()> {
        let _: i64 = self.inner.pool.hdel(self.keys().nodes(), node_id).await?;
        Ok(())
    }

    /// The nodes seen within `stale_after` (store clock), sorted by node id.
    ///
    /// Entries older than that, and entries that do not parse, are deleted.
    /// A node that writes again between this read and the delete loses its
    /// entry until its next refresh; it can only happen to a node that
    /// stalled for `stale_after`.
    pub async fn live_nodes(&self, stale_after: Duration) -> Result<Vec<NodeInfo>> {
        let entries: HashMap<String, String> = self.inner.pool.hgetall(self.keys().nodes()).await?;
        let now = self.now_ms().await?;
        let oldest = now.saturating_sub(stale_after.as_millis().min(i64::MAX as u128) as i64);
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (field, json) in entries {
            match serde_json::from_str::<Entry>(&json) {
                Ok(entry) if entry.last_seen_at >= oldest => live.push(NodeInfo::from(entry)),
                _ => dead.push(field),
            }
        }
        if !dead.is_empty() {
            let _: i64 = self.inner.pool.hdel(self.keys().nodes(), dead).await?;
        }
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(live)
    }
}
