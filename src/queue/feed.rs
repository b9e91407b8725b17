//! What the event feeds (Socket.IO today, GraphQL subscriptions next) ask
//! of the service: may this caller follow this room, and the records and
//! the queue status they send, read once per node for all their clients.

use super::{Queue, allow};
use crate::auth::{Action, Principal, Room, TaskRef};
use crate::error::Result;
use crate::ids::{AgentId, TaskId};
use crate::store::{EventId, QueueStatus, Replay};
use crate::task::Task;

impl Queue {
    /// The task `id`, if the caller may follow it; another's task is "not
    /// found", like a missing one.
    pub async fn follow_task(&self, principal: &Principal, id: &TaskId) -> Result<Task> {
        let task = self.get(principal, id).await?;
        allow(
            principal,
            Action::Subscribe(Room::Task(TaskRef::of(&task))),
            id.as_str(),
        )?;
        Ok(task)
    }

    /// Whether the caller may follow the tasks of agent `id` (each event
    /// still filtered by what the caller may see).
    pub fn follow_agent(&self, principal: &Principal, id: &AgentId) -> Result<()> {
        allow(principal, Action::Subscribe(Room::Agent(id.as_str())), "")
    }

    /// Whether the caller may follow the queue's status.
    pub fn follow_queue(&self, principal: &Principal) -> Result<()> {
        allow(principal, Action::Subscribe(Room::Queue), "")
    }

    /// Whether the caller may follow every task it may see.
    pub fn follow_all_tasks(&self, principal: &Principal) -> Result<()> {
        allow(principal, Action::ListTasks, "")
    }

    /// The records of tasks events were about, in the order asked (None:
    /// gone). For feeds, which filter each event by the access policy's
    /// [`crate::auth::Scope`] themselves; concurrent reads share round
    /// trips.
    pub async fn event_records(&self, ids: &[&str]) -> Result<Vec<Option<Task>>> {
        futures::future::try_join_all(ids.iter().map(|id| self.store().get(id))).await
    }

    /// The queue's status for a feed's subscribers, each authorized by
    /// [`Queue::follow_queue`] when it subscribed: computed once per node
    /// and shared, not once per client.
    pub async fn shared_queue_status(&self) -> Result<QueueStatus> {
        self.store().queue_status().await
    }
}

impl Queue {
    /// Events after `after`, at most `limit`, for a feed's client that
    /// reconnects with its last event id (`trimmed` when some are gone).
    pub async fn events_after(&self, after: EventId, limit: usize) -> Result<Replay> {
        self.store().replay_events(after, limit).await
    }
}
