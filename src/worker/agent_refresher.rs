//! The agent refresher: which agents this node serves besides its
//! registered handlers.
//!
//! It re-reads the agent records every `agent_refresh`: agents whose record
//! says HTTP get the HTTP executor, agents with a concurrency limit get it
//! applied by the dispatcher, and a newly served agent (or a changed limit)
//! wakes the dispatcher so that its ready tasks are claimed at once.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::http::HttpExecutor;
use super::{Handler, Runtime};
use crate::store::AgentKind;

impl Runtime {
    pub(super) async fn agent_refresher(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.agent_refresh) => self.refresh_agents().await,
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Reads agent records: HTTP agents get the executor; concurrency limits apply.
    pub(super) async fn refresh_agents(&self) {
        let agents = match self.inner.store.list_agents().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "could not read agent records");
                return;
            }
        };
        let mut http: HashMap<String, Arc<dyn Handler>> = HashMap::new();
        let mut limits = HashMap::new();
        for agent in agents {
            if let Some(n) = agent.concurrency {
                limits.insert(agent.id.clone(), n as usize);
            }
            if let (AgentKind::Http, Some(endpoint)) = (&agent.kind, &agent.endpoint) {
                http.insert(
                    agent.id.clone(),
                    Arc::new(HttpExecutor::new(
                        self.inner.http_client.clone(),
                        endpoint.clone(),
                    )),
                );
            }
        }
        if let Ok(mut h) = self.inner.http_agents.write() {
            *h = http;
        }
        let mut limits_changed = false;
        if let Ok(mut l) = self.inner.agent_limits.write() {
            limits_changed = *l != limits;
            *l = limits;
        }
        let now_served: std::collections::HashSet<String> =
            self.served_agents().into_iter().collect();
        let mut newly_served = false;
        if let Ok(mut served) = self.inner.signals.served.write() {
            newly_served = !now_served.is_subset(&served);
            *served = now_served;
        }
        // Wake-ups for an agent this node did not serve yet were ignored, so
        // its ready tasks would wait for the idle recheck: claim now.
        if newly_served || limits_changed {
            self.inner.signals.work.notify_one();
        }
    }
}
