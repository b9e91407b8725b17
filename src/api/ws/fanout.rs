//! The node's one follower of the event hub (it fans each event out to the
//! node's clients), a reconnecting client's replay, and the queue-status
//! ticker.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::session::{self, Session};
use super::wire::{self, Payloads, names};
use super::{Registry, RoomKey, Shared};
use crate::api::error::ApiError;
use crate::events::{Delivery, Event, EventId};
use crate::task::Task;

/// Deliveries taken from the hub at once (their records are read
/// together). Each client's buffer must hold the messages of one batch
/// (up to three per event).
const BATCH: usize = 64;
/// Events one replay read takes.
const REPLAY_PAGE: usize = 500;
/// Events a replay reads at most (matched or not); a client further behind
/// gets `resync` and re-reads state: cheaper for Redis than the stream.
const MAX_REPLAY: usize = 20_000;
/// The smallest client buffer: one batch's messages (up to three per
/// event) must fit.
pub(super) const MIN_CLIENT_BUFFER: usize = 3 * BATCH;

/// Follows the hub while the node has clients, and fans events out.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        // Idle while nobody is connected: the hub then reads nothing.
        loop {
            let changed = shared.changed.notified();
            if *stop.borrow() {
                return;
            }
            if !shared.registry().sessions.is_empty() {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = stopped(&mut stop) => return,
            }
        }
        let mut sub = match shared.hub.subscribe(None).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "socket.io feed could not follow the event hub; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        *shared.gate.lock().await = Some(sub.position());
        // Wakes subscribers and replays waiting for the fan-out to follow.
        shared.changed.notify_waiters();
        loop {
            let changed = shared.changed.notified();
            if shared.registry().sessions.is_empty() {
                let mut gate = shared.gate.lock().await;
                if shared.registry().sessions.is_empty() {
                    *gate = None;
                    break;
                }
            }
            let batch = tokio::select! {
                b = sub.next_batch(BATCH) => b,
                // The loop's top sees whether anyone is left.
                _ = changed => continue,
                _ = stopped(&mut stop) => return,
            };
            // The hub stopped: the node is shutting down.
            let Some(batch) = batch else { return };
            dispatch(&shared, batch, &mut stop).await;
            // Let the clients' writers drain before the next batch.
            tokio::task::yield_now().await;
        }
    }
}

/// Sends one batch of deliveries to the clients they concern.
async fn dispatch(
    shared: &Shared,
    batch: Vec<crate::Result<Delivery>>,
    stop: &mut watch::Receiver<bool>,
) {
    let mut gate = shared.gate.lock().await;
    let mut events = Vec::new();
    for delivery in batch {
        match delivery {
            Ok(Delivery::Event(e)) => events.push(e),
            Ok(Delivery::Resync) | Ok(Delivery::Lagged { .. }) => {
                deliver(shared, std::mem::take(&mut events), &mut gate, stop).await;
                tracing::warn!("socket.io feed lost events: every client resyncs");
                crate::metrics::feed_dropped("lagged");
                resync_all(shared);
            }
            Err(e) => tracing::warn!(error = %e, "socket.io feed: event hub read failed"),
        }
    }
    deliver(shared, events, &mut gate, stop).await;
    shared.queue_dirty.notify_one();
}

fn resync_all(shared: &Shared) {
    let sessions: Vec<Arc<Session>> = shared.registry().sessions.values().cloned().collect();
    for s in sessions {
        if s.resync("the feed fell behind: re-read state").is_err() {
            shared.cut_off(&s);
        }
    }
}

/// Who gets `e`, with which messages: the members of the rooms it could
/// concern, each judged by [`Session::flags`] (the rule the replay uses).
fn targets(registry: &Registry, e: &Event) -> Vec<(Arc<Session>, u8)> {
    let rooms = [
        RoomKey::Task(e.task_id.clone()),
        RoomKey::Tasks,
        RoomKey::Agent(e.agent_id.clone()),
    ];
    let mut seen = std::collections::HashSet::new();
    rooms
        .iter()
        .flat_map(|room| registry.members(room))
        .filter(|s| seen.insert(s.key))
        .filter_map(|s| {
            let flags = s.flags(e);
            (flags != 0).then(|| (s.clone(), flags))
        })
        .collect()
}

/// Sends `events` (in order) to their clients; `gate` ends at the last.
async fn deliver(
    shared: &Shared,
    events: Vec<Arc<Event>>,
    gate: &mut Option<EventId>,
    stop: &mut watch::Receiver<bool>,
) {
    let Some(last) = events.last().map(|e| e.id) else {
        return;
    };
    let targets: Vec<_> = {
        let registry = shared.registry();
        events.iter().map(|e| targets(&registry, e)).collect()
    };
    let wanted: Vec<&Event> = events
        .iter()
        .zip(&targets)
        .filter(|(_, t)| !t.is_empty())
        .map(|(e, _)| &**e)
        .collect();
    let records = records(shared, &wanted, stop, &|| false).await;
    for (e, targets) in events.into_iter().zip(targets) {
        if targets.is_empty() {
            continue;
        }
        let task = records.get(e.task_id.as_str()).cloned().flatten();
        let payloads = Arc::new(Payloads::new(e, task));
        for (s, flags) in targets {
            if s.deliver(&payloads, flags).is_err() {
                shared.cut_off(&s);
            }
        }
    }
    *gate = Some(last);
}

/// The records of the tasks of `events`, each read once; a Redis outage is
/// waited out (the events wait with it), unless the node stops or the
/// reader is `abandoned` (a replaying client that left).
async fn records(
    shared: &Shared,
    events: &[&Event],
    stop: &mut watch::Receiver<bool>,
    abandoned: &(dyn Fn() -> bool + Sync),
) -> HashMap<String, Option<Task>> {
    let mut ids: Vec<&str> = events.iter().map(|e| e.task_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return HashMap::new();
    }
    let mut wait = Duration::from_millis(50);
    loop {
        match shared.queue.event_records(&ids).await {
            Ok(tasks) => {
                return ids.iter().map(|id| id.to_string()).zip(tasks).collect();
            }
            Err(_) if abandoned() => return HashMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "socket.io feed: reading task records failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(stop) => return HashMap::new(),
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Replays to a client that connected with `after` the events its rooms
/// match, from the stream, up to where the live fan-out took over; then
/// what the fan-out held back for it.
pub(super) async fn replay(shared: &Arc<Shared>, session: &Arc<Session>, after: EventId) {
    // Where the fan-out's dispatch stands: events after it reach this
    // client through the fan-out (held back until the replay is done).
    // The fan-out notifies `changed` when it starts following, a client's
    // disconnect when it leaves.
    let mut stop = shared.stop.subscribe();
    let until = loop {
        let changed = shared.changed.notified();
        if let Some(p) = *shared.gate.lock().await {
            break p;
        }
        if session.is_ended() {
            return;
        }
        tokio::select! {
            _ = changed => {}
            _ = stopped(&mut stop) => return,
        }
    };
    let rooms = session::rooms_of(session);
    let mut cursor = after;
    let mut wait = Duration::from_millis(50);
    let mut read = 0;
    // At least one read: an id ahead of everything the stream held (another
    // Redis, or a stream emptied meanwhile) is told apart from a recent one
    // only by the stream.
    loop {
        if session.is_ended() || session.is_cut() {
            return;
        }
        let page = match shared.queue.events_after(cursor, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                if session.is_ended() {
                    return;
                }
                tracing::warn!(error = %e, "socket.io replay read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut stop) => return,
                }
                wait = (wait * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let too_far = read >= MAX_REPLAY;
        if page.trimmed || too_far {
            crate::metrics::feed_dropped("trimmed");
            let reason = if too_far {
                "lastEventId is too far behind to replay: re-read state"
            } else {
                "lastEventId is older than the stream keeps: re-read state"
            };
            if session.emit(names::RESYNC, &wire::resync(reason)).is_err() {
                shared.cut_off(session);
                return;
            }
            cursor = cursor.max(until);
            break;
        }
        let more = page.more;
        let events: Vec<Arc<Event>> = page
            .events
            .into_iter()
            .filter(|e| e.id <= until)
            .map(Arc::new)
            .collect();
        let reached = events.last().map(|e| e.id);
        read += events.len();
        let matched: Vec<(Arc<Event>, u8)> = events
            .into_iter()
            .filter_map(|e| {
                let flags = session::flags_for(&rooms, session, &e);
                (flags != 0).then_some((e, flags))
            })
            .collect();
        let wanted: Vec<&Event> = matched.iter().map(|(e, _)| &**e).collect();
        let records = records(shared, &wanted, &mut stop, &|| session.is_ended()).await;
        for (e, flags) in matched {
            let task = records.get(e.task_id.as_str()).cloned().flatten();
            if session::send_replayed(session, &Payloads::new(e, task), flags).is_err() {
                shared.cut_off(session);
                return;
            }
        }
        match reached {
            Some(id) if more && id < until => cursor = id,
            _ => {
                cursor = cursor.max(until);
                break;
            }
        }
    }
    if session::finish_replay(session, cursor.max(until)).is_err() {
        shared.cut_off(session);
    }
}

/// Sends `queue:update` to the queue room: computed once per node, every
/// `queue_every` while anyone follows it and `queue_settle` after changes.
pub(super) async fn queue_ticker(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut failing = false;
    loop {
        loop {
            let changed = shared.changed.notified();
            if *stop.borrow() {
                return;
            }
            if shared.registry().rooms.contains_key(&RoomKey::Queue) {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = stopped(&mut stop) => return,
            }
        }
        let (event, payload) = match shared.queue.shared_queue_status().await {
            Ok(status) => {
                failing = false;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let v = wire::queue_update(status, now);
                *shared
                    .last_queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((tokio::time::Instant::now(), v.clone()));
                (names::QUEUE_UPDATE, Some(v))
            }
            Err(e) => {
                let first = !failing;
                failing = true;
                let e = ApiError::from(e);
                (
                    names::QUEUE_ERROR,
                    first.then(|| wire::error(&e, "queue:update", None)),
                )
            }
        };
        if let Some(payload) = payload {
            let members: Vec<Arc<Session>> = shared
                .registry()
                .members(&RoomKey::Queue)
                .cloned()
                .collect();
            for s in members {
                if s.emit(event, &payload).is_err() {
                    shared.cut_off(&s);
                }
            }
        }
        let every = if failing {
            Duration::from_secs(1)
        } else {
            shared.config.queue_every
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.queue_dirty.notified() => {
                tokio::select! {
                    _ = tokio::time::sleep(shared.config.queue_settle) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

pub(super) use crate::api::stopped;

/// Waits (at most 5 s: while Redis is away the fan-out cannot resume)
/// until the fan-out follows the hub.
pub(super) async fn following(shared: &Shared) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let changed = shared.changed.notified();
        if shared.gate.lock().await.is_some() {
            return;
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}
