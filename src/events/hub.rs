//! The node's event hub: one [`crate::store::EventReader`] per node follows
//! the lifecycle stream, and the hub fans each event out in memory to any
//! number of subscribers (the Socket.IO feed, GraphQL subscriptions, tests,
//! the benchmark). Redis is read once per node, whatever the number of
//! subscribers.
//!
//! A [`Subscription`] can start from an event id: it gets the events after
//! that id from the stream first (replay), then live ones, in order, each
//! once. A subscriber that falls more than the hub's buffer behind is told
//! how many events it missed ([`Delivery::Lagged`]); one whose start was
//! trimmed from the stream, or that was subscribed while the hub itself
//! lost events, is told to re-read state ([`Delivery::Resync`]). Nothing is
//! skipped silently.
//!
//! The hub reads Redis only while it has subscribers: with none, its reader
//! pauses, and the next subscriber resumes it from the newest event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::store::{Event, EventId, Read, Store};

/// Events a subscriber may be behind before it is told it lagged (the
/// default of [`Hub::start`]).
pub const DEFAULT_BUFFER: usize = 4096;

/// Events one replay read takes from the stream.
const REPLAY_PAGE: usize = 500;

/// What the hub sends its subscribers.
#[derive(Clone, Debug)]
enum Item {
    Event(Arc<Event>),
    /// The hub's reader lost events (trimmed before it read them).
    Resync,
}

/// What a subscriber receives.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// The next event.
    Event(Arc<Event>),
    /// The subscriber fell behind and `missed` events were dropped for it;
    /// later events follow.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// Events the subscriber should have seen are gone from the stream:
    /// re-read state, then go on with the events that follow.
    Resync,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Held while an event is sent, so a subscriber joins between two events.
    sender: Mutex<Sent>,
    /// Wakes the paused reader when a subscriber arrives.
    wake: Notify,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Sent {
    /// None once the hub has stopped.
    tx: Option<broadcast::Sender<Item>>,
    /// The last event sent (or where the hub started or resumed).
    position: EventId,
    /// Nobody listens: the reader is not reading.
    paused: bool,
    /// Where the paused reader goes on from when it resumes.
    resume_from: Option<EventId>,
}

impl Hub {
    /// Starts following the stream from its newest event, with a buffer of
    /// `buffer` events per subscriber.
    pub async fn start(store: &Store, buffer: usize) -> Result<Hub> {
        let position = store.last_event_id().await?;
        let reader = store.event_reader(position)?;
        let (tx, _) = broadcast::channel(buffer.max(1));
        let (stop, stopped) = watch::channel(false);
        let hub = Hub {
            inner: Arc::new(Inner {
                store: store.clone(),
                sender: Mutex::new(Sent {
                    tx: Some(tx),
                    position,
                    paused: false,
                    resume_from: None,
                }),
                wake: Notify::new(),
                stop,
                task: Mutex::new(None),
            }),
        };
        let task = tokio::spawn(follow(Arc::downgrade(&hub.inner), reader, stopped));
        if let Ok(mut slot) = hub.inner.task.lock() {
            *slot = Some(task);
        }
        Ok(hub)
    }

    /// The last event the hub has sent.
    pub fn position(&self) -> EventId {
        self.inner
            .sender
            .lock()
            .map(|s| s.position)
            .unwrap_or_default()
    }

    /// Whether the hub is reading the stream (false while nobody
    /// subscribes, and once stopped).
    pub fn is_reading(&self) -> bool {
        let sent = self.lock();
        sent.tx.is_some() && !sent.paused
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.inner
            .sender
            .lock()
            .ok()
            .and_then(|s| s.tx.as_ref().map(broadcast::Sender::receiver_count))
            .unwrap_or(0)
    }

    /// A subscription to events after `after` (replayed from the stream,
    /// then live), or to live events only when `after` is None. While
    /// nobody subscribes the hub does not read the stream; the first
    /// subscriber resumes it from the newest event (one Redis read).
    pub async fn subscribe(&self, after: Option<EventId>) -> Result<Subscription> {
        loop {
            let paused = self.lock().paused;
            let newest = match paused {
                true => Some(self.inner.store.last_event_id().await?),
                false => None,
            };
            let mut sent = self.lock();
            if sent.paused != paused {
                // Paused or resumed meanwhile: look again.
                continue;
            }
            if let Some(newest) = newest {
                sent.position = newest;
                sent.resume_from = Some(newest);
                sent.paused = false;
                self.inner.wake.notify_one();
            }
            let live_from = sent.position;
            let rx = match &sent.tx {
                Some(tx) => tx.subscribe(),
                // Stopped: a subscription that ends after its replay.
                None => broadcast::channel(1).1,
            };
            drop(sent);
            let replay = after.filter(|a| *a < live_from).map(|a| Replaying {
                after: a,
                until: live_from,
                page: VecDeque::new(),
            });
            return Ok(Subscription {
                store: self.inner.store.clone(),
                rx,
                replay,
                last: after.unwrap_or(live_from),
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.inner
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops following; open subscriptions end after the events already
    /// sent to them.
    pub async fn stop(&self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        // Dropping the sender ends the subscriptions once drained.
        if let Ok(mut s) = self.inner.sender.lock() {
            s.tx = None;
        }
    }
}

/// The hub's reader loop: reads, sends, until told to stop.
async fn follow(
    hub: std::sync::Weak<Inner>,
    mut reader: crate::store::EventReader,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let Some(inner) = hub.upgrade() else { break };
        // Nobody listens: stop reading until a subscriber resumes the hub
        // (from the newest event; what happened meanwhile has no audience).
        let idle = {
            let Ok(mut sent) = inner.sender.lock() else {
                break;
            };
            if let Some(from) = sent.resume_from.take() {
                reader.seek(from);
            }
            let idle = sent.tx.as_ref().is_none_or(|tx| tx.receiver_count() == 0);
            sent.paused = idle;
            idle
        };
        if idle {
            // `notify_one` keeps a permit: a wake-up between the unlock
            // above and this wait is not lost.
            // The wait ends every second too, so a hub dropped without
            // `stop` lets its reader end (it holds the hub meanwhile).
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
        drop(inner);
        let read = tokio::select! {
            read = reader.next() => read,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Some(hub) = hub.upgrade() else { break };
        let Ok(mut sent) = hub.sender.lock() else {
            break;
        };
        match read {
            Read::Events(events) => {
                for event in events {
                    sent.position = event.id;
                    if let Some(tx) = &sent.tx {
                        // No subscriber: nobody to tell.
                        let _ = tx.send(Item::Event(Arc::new(event)));
                    }
                }
            }
            Read::Trimmed {
                lost_after,
                resumed_after,
            } => {
                tracing::warn!(%lost_after, %resumed_after, "event hub fell behind the stream's retention; subscribers resync");
                sent.position = resumed_after;
                if let Some(tx) = &sent.tx {
                    let _ = tx.send(Item::Resync);
                }
            }
        }
    }
    reader.close().await;
}

/// Replay still to do: events after `after`, up to `until` (where the live
/// part starts).
struct Replaying {
    after: EventId,
    until: EventId,
    page: VecDeque<Event>,
}

/// One subscriber's view of the hub.
pub struct Subscription {
    store: Store,
    rx: broadcast::Receiver<Item>,
    replay: Option<Replaying>,
    /// The last event delivered: later duplicates are dropped.
    last: EventId,
}

impl Subscription {
    /// The last event delivered, or where the live part starts while
    /// nothing has been: every later event is delivered.
    pub fn position(&self) -> EventId {
        self.last
    }

    /// The next delivery; None once the hub has stopped and everything sent
    /// was delivered. A replay read that fails is returned as the error (the
    /// subscription can be asked again, it goes on where it was).
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        if let Some(delivery) = self.next_replayed().await {
            return Some(delivery);
        }
        loop {
            match self.rx.recv().await {
                Ok(Item::Event(event)) => {
                    if event.id <= self.last {
                        continue;
                    }
                    self.last = event.id;
                    return Some(Ok(Delivery::Event(event)));
                }
                Ok(Item::Resync) => return Some(Ok(Delivery::Resync)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Ok(Delivery::Lagged { missed }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next delivery and those already waiting after it, `max` at most
    /// (a fan-out reads their records together); None as [`Self::next`].
    /// Only the first is waited for, so this is as cancel-safe as `next`.
    pub async fn next_batch(&mut self, max: usize) -> Option<Vec<Result<Delivery>>> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max {
            match self.next().now_or_never() {
                Some(Some(d)) => batch.push(d),
                _ => break,
            }
        }
        Some(batch)
    }

    /// The next replayed event, while the replay lasts.
    async fn next_replayed(&mut self) -> Option<Result<Delivery>> {
        let replay = self.replay.as_mut()?;
        if replay.page.is_empty() {
            let page = match self.store.replay_events(replay.after, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(e) => return Some(Err(e)),
            };
            if page.trimmed {
                // Gone from the stream: resync, then the live part.
                self.last = replay.until;
                self.replay = None;
                return Some(Ok(Delivery::Resync));
            }
            replay.page = page
                .events
                .into_iter()
                .filter(|e| e.id <= replay.until)
                .collect();
            if replay.page.is_empty() {
                self.last = self.last.max(replay.until);
                self.replay = None;
                return None;
            }
        }
        let event = replay.page.pop_front()?;
        replay.after = event.id;
        if event.id >= replay.until {
            self.replay = None;
        }
        self.last = event.id;
        Some(Ok(Delivery::Event(Arc::new(event))))
    }
}
