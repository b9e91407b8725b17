//! Subscriptions, served over WebSocket at `/graphql/ws` ([`super::socket`])
//! and fed by the node's one follower of the event hub ([`Live`]):
//! `aiTaskStatusChanged(taskId)` and `taskQueueUpdated`.
//!
//! A subscription ends with an error (then `complete`) when its client
//! fell too far behind (`SLOW_CONSUMER`) or the node lost events
//! (`RESYNC`): re-read, then subscribe again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::{Context, ErrorExtensions, ID, Result, Subscription};
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::live::{Change, Inner, Key, Live, Registration, Status};
use super::types::{AiTask, TaskQueueStatus};
use super::{caller, error};
use crate::auth::{Principal, Scope, TaskRef};
use crate::ids::TaskId;
use crate::task::Task;

/// One connection's subscriptions: how many are open, how many may be.
pub(super) struct Slots {
    pub(super) open: Arc<AtomicUsize>,
    pub(super) max: usize,
}

/// A subscription's hold on its connection's slot and the node's gauges;
/// released when the subscription's stream is dropped.
struct Held {
    field: &'static str,
    open: Arc<AtomicUsize>,
    live: Arc<Inner>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::graphql_subscriptions(self.field, -1.0);
        // The follower and the ticker see whether anyone is left.
        self.live.changed.notify_waiters();
    }
}

fn coded(code: &'static str, message: &str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code))
}

fn hold(ctx: &Context<'_>, field: &'static str) -> Result<Held> {
    let Some(slots) = ctx.data_opt::<Slots>() else {
        return Err(coded(
            "VALIDATION_ERROR",
            "subscriptions are served over WebSocket at /graphql/ws",
        ));
    };
    if slots.open.fetch_add(1, Ordering::Relaxed) >= slots.max {
        slots.open.fetch_sub(1, Ordering::Relaxed);
        return Err(coded(
            "TOO_MANY_SUBSCRIPTIONS",
            &format!(
                "at most {} subscriptions per connection: complete one first",
                slots.max
            ),
        ));
    }
    crate::metrics::graphql_subscriptions(field, 1.0);
    Ok(Held {
        field,
        open: slots.open.clone(),
        live: ctx.data_unchecked::<Live>().inner.clone(),
    })
}

fn draining() -> async_graphql::Error {
    coded(
        "NODE_DRAINING",
        "the node is shutting down: subscribe again",
    )
}

/// Counts a subscription opened (a refusal is counted by
/// [`super::observe`], with those of validation).
fn count(refusal: Option<&async_graphql::Error>) {
    if refusal.is_none() {
        crate::metrics::graphql_operation("subscription", "ok", None);
    }
}

/// The subscription root.
pub(crate) struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// With `taskId`: that task as it is now, then after each of its
    /// changes. Without: every task the caller may see (users their own,
    /// workers their agent's, admins all) after each change. Changes that
    /// come faster than the node reads the record arrive as one, with the
    /// latest state. Another user's task is `TASK_NOT_FOUND`, like a
    /// missing one.
    #[graphql(name = "aiTaskStatusChanged")]
    async fn ai_task_status_changed(
        &self,
        ctx: &Context<'_>,
        task_id: Option<ID>,
    ) -> Result<impl Stream<Item = Result<AiTask>> + use<>> {
        let opened = task_changes(ctx, task_id).await;
        count(opened.as_ref().err());
        opened
    }

    /// The queue's status (counts, oldest wait, health) now, then after
    /// changes (a moment after, so bursts send one) and at least every 5
    /// seconds. Computed once per node for all its subscribers.
    #[graphql(name = "taskQueueUpdated")]
    async fn task_queue_updated(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Result<TaskQueueStatus>> + use<>> {
        let opened = queue_changes(ctx).await;
        count(opened.as_ref().err());
        opened
    }
}

/// What one `aiTaskStatusChanged` stream holds.
struct TaskFollow {
    changes: Registration,
    stop: watch::Receiver<bool>,
    principal: Principal,
    /// The one task followed, if one is.
    task: Option<String>,
    /// Sent first: the followed task as it was when following began.
    first: Option<Task>,
    /// The last state sent of the followed task: a record read twice is
    /// sent once, and one older than what was sent is not sent.
    last_sent: Option<Task>,
    done: bool,
    _held: Held,
}

impl TaskFollow {
    fn wants(&self, task: &Task) -> bool {
        match &self.task {
            Some(id) => {
                *id == task.id
                    && self
                        .last_sent
                        .as_ref()
                        .is_none_or(|last| task.updated_at >= last.updated_at && task != last)
            }
            None => Scope::of(&self.principal).admits(TaskRef::of(task)),
        }
    }

    async fn next(&mut self) -> Option<Result<AiTask>> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            self.last_sent = Some(first.clone());
            return Some(Ok(first.into()));
        }
        loop {
            let received = tokio::select! {
                r = self.changes.rx.recv() => r,
                _ = crate::api::stopped(&mut self.stop) => {
                    self.done = true;
                    return Some(Err(draining()));
                }
            };
            match received {
                Some(Change::Task(task)) => {
                    if self.wants(&task) {
                        if self.task.is_some() {
                            self.last_sent = Some((*task).clone());
                        }
                        return Some(Ok((*task).clone().into()));
                    }
                }
                Some(Change::Missed) => {
                    self.done = true;
                    return Some(Err(coded(
                        "RESYNC",
                        "the node lost events: re-read the task(s), then subscribe again",
                    )));
                }
                None if self.changes.cut.load(Ordering::Relaxed) => {
                    self.done = true;
                    return Some(Err(coded(
                        "SLOW_CONSUMER",
                        "this subscription fell too far behind: re-read, then subscribe again",
                    )));
                }
                None => return None,
            }
        }
    }
}

async fn task_changes(
    ctx: &Context<'_>,
    task_id: Option<ID>,
) -> Result<BoxStream<'static, Result<AiTask>>> {
    let principal = caller(ctx)?.clone();
    let live = ctx.data_unchecked::<Live>().inner.clone();
    let queue = &live.queue;
    let task = match &task_id {
        Some(id) => Some(
            TaskId::parse(id.as_str())
                .map_err(|_| error(crate::Error::TaskNotFound(id.to_string())))?,
        ),
        None => {
            queue.follow_all_tasks(&principal).map_err(error)?;
            None
        }
    };
    if let Some(id) = &task {
        // Refused before a slot is taken: another's task is "not found".
        queue.follow_task(&principal, id).await.map_err(error)?;
    }
    let held = hold(ctx, "aiTaskStatusChanged")?;
    let key = match &task {
        Some(id) => Key::Task(id.to_string()),
        None => match Scope::of(&principal) {
            Scope::All => Key::All,
            Scope::Owner(owner) => Key::Owner(owner.to_string()),
            Scope::Agent(agent) => Key::Agent(agent.to_string()),
            // follow_all_tasks refused it above.
            Scope::Nothing => {
                return Err(error(crate::Error::Forbidden("no tasks to follow".into())));
            }
        },
    };
    let changes = live.register(key);
    if !live.until_following().await {
        return Err(draining());
    }
    // Read after following began: no change after this read is missed.
    let first = match &task {
        Some(id) => Some(queue.follow_task(&principal, id).await.map_err(error)?),
        None => None,
    };
    let follow = TaskFollow {
        changes,
        stop: live.stop.subscribe(),
        principal,
        task: task.map(TaskId::into_string),
        first,
        last_sent: None,
        done: false,
        _held: held,
    };
    Ok(Box::pin(futures::stream::unfold(
        follow,
        |mut f| async move { f.next().await.map(|item| (item, f)) },
    )))
}

/// What one `taskQueueUpdated` stream holds.
struct QueueFollow {
    rx: watch::Receiver<Status>,
    stop: watch::Receiver<bool>,
    first: Option<Arc<crate::store::QueueStatus>>,
    _held: Held,
}

async fn queue_changes(ctx: &Context<'_>) -> Result<BoxStream<'static, Result<TaskQueueStatus>>> {
    let principal = caller(ctx)?;
    let live = ctx.data_unchecked::<Live>().inner.clone();
    live.queue.follow_queue(principal).map_err(error)?;
    let held = hold(ctx, "taskQueueUpdated")?;
    let mut rx = live.status.subscribe();
    // The follower and the ticker start for this subscriber.
    if !live.until_following().await {
        return Err(draining());
    }
    live.fresh_status(live.config.queue_every)
        .await
        .map_err(error)?;
    let first = rx.borrow_and_update().as_ref().map(|(_, s)| s.clone());
    let follow = QueueFollow {
        rx,
        stop: live.stop.subscribe(),
        first,
        _held: held,
    };
    Ok(Box::pin(futures::stream::unfold(
        follow,
        |mut f| async move {
            if let Some(first) = f.first.take() {
                return Some((Ok(TaskQueueStatus::from((*first).clone())), f));
            }
            loop {
                tokio::select! {
                    r = f.rx.changed() => r.ok()?,
                    _ = crate::api::stopped(&mut f.stop) => return None,
                }
                let status = f.rx.borrow_and_update().as_ref().map(|(_, s)| s.clone());
                if let Some(status) = status {
                    return Some((Ok(TaskQueueStatus::from((*status).clone())), f));
                }
            }
        },
    )))
}
