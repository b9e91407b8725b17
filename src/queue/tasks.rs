//! Tasks as their submitters see them: create, get, list, cancel, retry.

use super::{Queue, allow};
use crate::auth::{Action, Principal, Scope, TaskRef};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::store::{Created, ListFilter, TaskPage, TaskScope};
use crate::task::{NewTask, Task};

impl Queue {
    /// Creates a task owned by the caller; a repeated idempotency key of
    /// the same owner returns the first task (`created: false`).
    pub async fn create(&self, principal: &Principal, mut task: NewTask) -> Result<Created> {
        allow(principal, Action::CreateTasks, "")?;
        task.owner_id = Some(principal.owner_id().to_string());
        let created = self.store().create(task).await?;
        if created.created {
            crate::metrics::task_created(&created.task);
        }
        Ok(created)
    }

    /// Creates 1 to 100 tasks owned by the caller, all or nothing.
    pub async fn create_batch(
        &self,
        principal: &Principal,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Created>> {
        allow(principal, Action::CreateTasks, "")?;
        let owner = principal.owner_id();
        let tasks = tasks
            .into_iter()
            .map(|mut t| {
                t.owner_id = Some(owner.to_string());
                t
            })
            .collect();
        let created = self.store().create_batch(tasks).await?;
        for c in created.iter().filter(|c| c.created) {
            crate::metrics::task_created(&c.task);
        }
        Ok(created)
    }

    /// One task the caller may see; another's is "not found" like a missing
    /// one.
    pub async fn get(&self, principal: &Principal, id: &TaskId) -> Result<Task> {
        let task = self
            .store()
            .get(id.as_str())
            .await?
            .ok_or_else(|| Error::TaskNotFound(id.to_string()))?;
        allow(principal, Action::ReadTask(TaskRef::of(&task)), id.as_str())?;
        Ok(task)
    }

    /// A page of the tasks the caller may see: users their own, workers
    /// their agent's (another agent's filter gives an empty page), admins
    /// all.
    pub async fn list(&self, principal: &Principal, mut filter: ListFilter) -> Result<TaskPage> {
        allow(principal, Action::ListTasks, "")?;
        match Scope::of(principal) {
            Scope::All => {}
            Scope::Owner(owner) => filter.owner_id = Some(owner.to_string()),
            Scope::Agent(agent) => {
                if filter.agent_id.as_deref().is_some_and(|a| a != agent) {
                    return Ok(empty_page(&filter));
                }
                filter.agent_id = Some(agent.to_string());
            }
            Scope::Nothing => return Ok(empty_page(&filter)),
        }
        self.store().list(&filter).await
    }

    /// Cancels a QUEUED or PROCESSING task the caller may change (its worker
    /// is told to stop; its late result is refused); the task as it is now.
    /// One round trip: the caller's scope is checked inside the script.
    pub async fn cancel(&self, principal: &Principal, id: &TaskId) -> Result<Task> {
        allow(principal, Action::ChangeTasks, id.as_str())?;
        let reason = format!("cancelled by {}", principal.sub);
        let changed = self
            .store()
            .cancel_in(id.as_str(), Some(&reason), change_scope(principal, id)?)
            .await?;
        crate::metrics::task_cancelled(&changed.task);
        Ok(changed.task)
    }

    /// Puts a FAILED, TIMEOUT or CANCELLED task back in its queue with
    /// fresh attempts; the task as it is now. One round trip, like cancel.
    pub async fn retry(&self, principal: &Principal, id: &TaskId) -> Result<Task> {
        allow(principal, Action::ChangeTasks, id.as_str())?;
        let changed = self
            .store()
            .retry_in(id.as_str(), change_scope(principal, id)?)
            .await?;
        crate::metrics::task_retried_manually(&changed.task);
        Ok(changed.task)
    }
}

/// The caller's [`Scope`] as the store's script-side check.
fn change_scope<'a>(principal: &'a Principal, id: &TaskId) -> Result<TaskScope<'a>> {
    Ok(match Scope::of(principal) {
        Scope::All => TaskScope::ANY,
        Scope::Owner(owner) => TaskScope {
            owner_id: Some(owner),
            agent_id: None,
        },
        Scope::Agent(agent) => TaskScope {
            owner_id: None,
            agent_id: Some(agent),
        },
        Scope::Nothing => return Err(Error::TaskNotFound(id.to_string())),
    })
}

fn empty_page(filter: &ListFilter) -> TaskPage {
    TaskPage {
        tasks: Vec::new(),
        total_count: 0,
        current_page: filter.page,
        total_pages: 0,
        limit: filter.limit,
        has_next_page: false,
        next_cursor: None,
    }
}
