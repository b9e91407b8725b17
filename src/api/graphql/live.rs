//! The node's one follower of the event hub for GraphQL subscriptions.
//!
//! While any subscription is open it follows the hub, reads the records of
//! each batch's tasks once for all subscribers, and hands each changed task
//! to the subscriptions it concerns only: those of its id, and those of
//! every task a scope sees ([`crate::auth::Scope`], the Socket.IO feed's
//! rule: its owner's, its agent's, all). A subscription more than its
//! buffer behind is cut off. The
//! queue status `taskQueueUpdated` sends is computed once per node: after
//! changes (settled) and every few seconds while anyone follows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::api::stopped;
use crate::api::ws::FeedConfig;
use crate::events::{Delivery, Event, Hub};
use crate::queue::Queue;
use crate::store::QueueStatus;
use crate::task::Task;

/// Deliveries taken from the hub at once (their records are read together).
const BATCH: usize = 64;

/// What subscriptions receive.
#[derive(Clone, Debug)]
pub(super) enum Change {
    /// A task changed: its record as read after the change (changes that
    /// came faster than the read arrive as one, with the latest state).
    Task(Arc<Task>),
    /// The node's follower lost events: every subscription ends, telling
    /// its client to re-read and subscribe again.
    Missed,
}

/// What a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// One task.
    Task(String),
    /// Every task of an owner (a user's scope).
    Owner(String),
    /// Every task of an agent (a worker's scope).
    Agent(String),
    /// Every task (an admin's scope).
    All,
}

/// One open subscription's end of the follower.
struct Sub {
    tx: mpsc::Sender<Change>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Subs {
    by_key: HashMap<Key, HashMap<u64, Sub>>,
    count: usize,
    next: u64,
}

/// A subscription's registration: its changes arrive on `rx`; `rx` ends
/// early when it was cut off for falling behind (`cut`), or when the node
/// stops. Dropping it unregisters.
pub(super) struct Registration {
    pub(super) rx: mpsc::Receiver<Change>,
    pub(super) cut: Arc<std::sync::atomic::AtomicBool>,
    key: Key,
    id: u64,
    inner: Arc<Inner>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut guard = self.inner.subs();
        let subs = &mut *guard;
        if let Some(members) = subs.by_key.get_mut(&self.key)
            && members.remove(&self.id).is_some()
        {
            subs.count -= 1;
            if members.is_empty() {
                subs.by_key.remove(&self.key);
            }
        }
        drop(guard);
        // The follower sees whether anyone is left.
        self.inner.changed.notify_waiters();
    }
}

/// The queue status as last computed, and when.
pub(super) type Status = Option<(Instant, Arc<QueueStatus>)>;

/// GraphQL's live state on one node; cheap to clone.
#[derive(Clone)]
pub struct Live {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) queue: Queue,
    hub: Hub,
    pub(super) config: FeedConfig,
    /// GraphQL's settings (for [`Live::execute_stream`]).
    graphql: super::GraphqlConfig,
    /// The open subscriptions, by what they follow.
    subs: std::sync::Mutex<Subs>,
    /// Whether the follower follows the hub (subscriptions opened before
    /// this is true may miss what happened before it), and how many times
    /// it began to.
    following: watch::Sender<(bool, u64)>,
    pub(super) status: watch::Sender<Status>,
    /// A subscription opened or ended.
    pub(super) changed: Notify,
    /// An event arrived: the queue status may have changed.
    dirty: Notify,
    pub(super) stop: watch::Sender<bool>,
    /// Open WebSocket connections.
    pub(super) connections: AtomicUsize,
    /// Every agent record, as last read, and when: shared by the
    /// operations over WebSocket (a subscription's events included).
    agents: std::sync::Mutex<Option<(Instant, Agents)>>,
}

/// Agent records by id.
pub(super) type Agents = Arc<HashMap<String, crate::store::Agent>>;

/// How long read agent records are reused over WebSocket.
const AGENTS_FOR: Duration = Duration::from_secs(1);

impl Live {
    /// The follower of `hub` for `queue`, with the Socket.IO feed's limits
    /// (`config`: connections, subscriptions per connection, buffer,
    /// message size, queue status timing) and GraphQL's settings.
    pub fn start(
        queue: Queue,
        hub: Hub,
        config: FeedConfig,
        graphql: super::GraphqlConfig,
    ) -> Live {
        let live = Live {
            inner: Arc::new(Inner {
                queue,
                hub,
                config,
                graphql,
                subs: std::sync::Mutex::new(Subs::default()),
                following: watch::channel((false, 0)).0,
                status: watch::channel(None).0,
                changed: Notify::new(),
                dirty: Notify::new(),
                stop: watch::channel(false).0,
                connections: AtomicUsize::new(0),
                agents: std::sync::Mutex::new(None),
            }),
        };
        let inner = live.inner.clone();
        tokio::spawn(async move {
            follow(&inner).await;
            // Gone for good (the node stops): nobody may count on it.
            inner.following.send_modify(|f| f.0 = false);
        });
        tokio::spawn(queue_ticker(live.inner.clone()));
        live
    }

    /// Ends every subscription and connection (the node is shutting down).
    pub fn close(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Runs `request` (a subscription, or any operation) as `principal`
    /// in process, with async-graphql's own executor: the responses a
    /// WebSocket client would get, under the same rules and the same
    /// limit on open subscriptions (one caller's, like one connection's).
    /// Builds the schema each call: for embedding programs and tests, not
    /// for every event.
    pub fn execute_stream(
        &self,
        principal: crate::auth::Principal,
        request: impl Into<async_graphql::Request>,
    ) -> futures::stream::BoxStream<'static, async_graphql::Response> {
        let schema = super::schema(&self.inner.graphql, self.clone(), false);
        let mut data = async_graphql::Data::default();
        data.insert(principal);
        data.insert(super::subscription::Slots {
            open: Arc::new(AtomicUsize::new(0)),
            max: self.inner.config.max_subscriptions,
        });
        async_graphql::Executor::execute_stream(
            &super::observe::Observed(schema, Arc::default()),
            request.into(),
            Some(Arc::new(data)),
        )
    }
}

impl Inner {
    fn subs(&self) -> std::sync::MutexGuard<'_, Subs> {
        self.subs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a subscription to `key`'s changes, with a buffer of the
    /// feed's client buffer.
    pub(super) fn register(self: &Arc<Self>, key: Key) -> Registration {
        let (tx, rx) = mpsc::channel(self.config.client_buffer.max(BATCH));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut subs = self.subs();
        subs.next += 1;
        let id = subs.next;
        subs.count += 1;
        subs.by_key.entry(key.clone()).or_default().insert(
            id,
            Sub {
                tx,
                cut: cut.clone(),
            },
        );
        Registration {
            rx,
            cut,
            key,
            id,
            inner: self.clone(),
        }
    }

    /// Hands `change` to the subscriptions of `keys`; one whose buffer is
    /// full is cut off (its channel closes once it has read what it has).
    fn send_to(&self, keys: &[Key], change: &Change) {
        let mut guard = self.subs();
        let subs = &mut *guard;
        let mut cut = Vec::new();
        for key in keys {
            let Some(members) = subs.by_key.get(key) else {
                continue;
            };
            for (id, sub) in members {
                if sub.tx.try_send(change.clone()).is_err() {
                    sub.cut.store(true, std::sync::atomic::Ordering::Relaxed);
                    cut.push((key.clone(), *id));
                }
            }
        }
        for (key, id) in cut {
            if let Some(members) = subs.by_key.get_mut(&key)
                && members.remove(&id).is_some()
            {
                subs.count -= 1;
                if members.is_empty() {
                    subs.by_key.remove(&key);
                }
                crate::metrics::graphql_subscription_cut(1);
            }
        }
    }

    fn send_task(&self, task: Arc<Task>) {
        let mut keys = vec![
            Key::Task(task.id.clone()),
            Key::Agent(task.agent_id.clone()),
            Key::All,
        ];
        if let Some(owner) = &task.owner_id {
            keys.push(Key::Owner(owner.clone()));
        }
        self.send_to(&keys, &Change::Task(task));
    }

    fn send_all(&self, change: Change) {
        let keys: Vec<Key> = self.subs().by_key.keys().cloned().collect();
        self.send_to(&keys, &change);
    }

    fn wanted(&self) -> bool {
        self.subs().count > 0 || self.status.receiver_count() > 0
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits until the follower follows the hub: every event committed
    /// after this returns reaches the subscriptions opened before it.
    /// False when the node stops first.
    ///
    /// Having begun to follow since the call counts too: a subscription
    /// cut off (and so no longer wanted) before it looked still sees its
    /// changes end, rather than waiting for ever.
    pub(super) async fn until_following(&self) -> bool {
        let mut following = self.following.subscribe();
        let began = following.borrow().1;
        self.changed.notify_waiters();
        let mut stop = self.stop.subscribe();
        tokio::select! {
            r = following.wait_for(|(on, times)| *on || *times > began) => r.is_ok(),
            _ = stopped(&mut stop) => false,
        }
    }

    /// Every agent record, read at most once a second for all the
    /// operations over WebSocket; authorized for each caller.
    pub(super) async fn agents(&self, principal: &crate::auth::Principal) -> crate::Result<Agents> {
        let cached = self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < AGENTS_FOR)
            .map(|(_, a)| a.clone());
        if let Some(agents) = cached {
            crate::auth::authorize(principal, crate::auth::Action::ReadQueue)
                .map_err(|d| crate::Error::Forbidden(d.to_string()))?;
            return Ok(agents);
        }
        let agents: Agents = Arc::new(
            self.queue
                .agents(principal)
                .await?
                .into_iter()
                .map(|a| (a.id.clone(), a))
                .collect(),
        );
        *self
            .agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), agents.clone()));
        Ok(agents)
    }

    /// The queue status, computed now when the last one is older than
    /// `max_age`, and shared with every follower of it.
    pub(super) async fn fresh_status(&self, max_age: Duration) -> crate::Result<Arc<QueueStatus>> {
        if let Some((at, status)) = &*self.status.borrow()
            && at.elapsed() < max_age
        {
            return Ok(status.clone());
        }
        let status = Arc::new(self.queue.shared_queue_status().await?);
        self.status
            .send_replace(Some((Instant::now(), status.clone())));
        Ok(status)
    }
}

async fn follow(inner: &Inner) {
    let mut stop = inner.stop.subscribe();
    loop {
        // Idle while nobody subscribes: the hub then reads nothing for us.
        loop {
            let changed = inner.changed.notified();
            if inner.stopping() {
                return;
            }
            if inner.wanted() {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = stopped(&mut stop) => return,
            }
        }
        let mut sub = match inner.hub.subscribe(None).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "graphql subscriptions could not follow the event hub; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        inner.following.send_modify(|f| *f = (true, f.1 + 1));
        loop {
            let changed = inner.changed.notified();
            if !inner.wanted() {
                inner.following.send_modify(|f| f.0 = false);
                // A subscription that came in between may have seen
                // `following` still true: keep following for it.
                if inner.wanted() {
                    inner.following.send_modify(|f| f.0 = true);
                    continue;
                }
                break;
            }
            let batch = tokio::select! {
                b = sub.next_batch(BATCH) => b,
                _ = changed => continue,
                _ = stopped(&mut stop) => return,
            };
            // The hub stopped: the node is shutting down.
            let Some(batch) = batch else { return };
            dispatch(inner, batch, &mut stop).await;
        }
    }
}

/// Broadcasts one batch: each changed task once, after the batch's last
/// event about it.
async fn dispatch(
    inner: &Inner,
    batch: Vec<crate::Result<Delivery>>,
    stop: &mut watch::Receiver<bool>,
) {
    let mut events = Vec::new();
    for delivery in batch {
        match delivery {
            Ok(Delivery::Event(e)) => events.push(e),
            Ok(Delivery::Resync) | Ok(Delivery::Lagged { .. }) => {
                send_tasks(inner, std::mem::take(&mut events), stop).await;
                tracing::warn!("graphql subscriptions lost events: every subscription ends");
                inner.send_all(Change::Missed);
            }
            Err(e) => tracing::warn!(error = %e, "graphql subscriptions: event hub read failed"),
        }
    }
    send_tasks(inner, events, stop).await;
    inner.dirty.notify_one();
}

async fn send_tasks(inner: &Inner, events: Vec<Arc<Event>>, stop: &mut watch::Receiver<bool>) {
    // The last event of each task decides its place.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        last.insert(e.task_id.as_str(), i);
    }
    let mut order: Vec<(&str, usize)> = last.into_iter().collect();
    order.sort_unstable_by_key(|(_, i)| *i);
    let ids: Vec<&str> = order.iter().map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(50);
    let records = loop {
        match inner.queue.event_records(&ids).await {
            Ok(records) => break records,
            Err(e) => {
                // A Redis outage is waited out: the events wait with it.
                tracing::warn!(error = %e, "graphql subscriptions: reading task records failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => return,
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    };
    for task in records.into_iter().flatten() {
        inner.send_task(Arc::new(task));
    }
}

/// Recomputes the shared queue status while anyone follows it: a settle
/// time after changes, and at least every `queue_every`.
async fn queue_ticker(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let every = inner.config.queue_every;
    let settle = inner.config.queue_settle;
    // One deadline across wake-ups: subscriptions coming and going do not
    // put the periodic refresh off.
    let mut due = Instant::now() + every;
    loop {
        let changed = inner.changed.notified();
        if inner.stopping() {
            return;
        }
        if inner.status.receiver_count() == 0 {
            tokio::select! {
                _ = changed => continue,
                _ = stopped(&mut stop) => return,
            }
        }
        let dirty = tokio::select! {
            _ = inner.dirty.notified() => true,
            _ = tokio::time::sleep_until(due) => false,
            _ = changed => continue,
            _ = stopped(&mut stop) => return,
        };
        if dirty {
            tokio::select! {
                _ = tokio::time::sleep(settle) => {}
                _ = stopped(&mut stop) => return,
            }
        }
        due = Instant::now() + every;
        // A failed read is logged; followers keep the last status.
        if let Err(e) = inner.fresh_status(settle.min(every)).await {
            tracing::warn!(error = %e, "graphql taskQueueUpdated: reading the queue status failed");
        }
    }
}
