//! The Socket.IO event feed at `/ws/ai-tasks` (Socket.IO v4: WebSocket and
//! long-polling, on the node's own port).
//!
//! - **Handshake** ([`session`]): `auth: {token}` or an `Authorization:
//!   Bearer` header, checked by the node's [`Auth`]; the `Origin` against
//!   `FRONTEND_URL`; the node's connection limit. A refusal is a
//!   `connect_error` whose message is `CODE: why`. A connection is closed
//!   when its token expires.
//! - **Rooms**: `task:<id>`, `agent:<id>`, `queue` and `tasks` (every task
//!   the caller may see), joined with `subscribe:*` messages after the
//!   access policy allowed them ([`Queue`]'s `follow_*`), or listed in the
//!   handshake (`auth.subscriptions`) so that a reconnecting client has them
//!   from its first event.
//! - **Fan-out** ([`fanout`]): one [`Hub`] subscription per node, held
//!   while the node has clients; each event's task record is read once for
//!   all clients, in groups; each client's events are filtered by the
//!   access policy's scope. A client whose buffer is full is cut off, not
//!   waited for.
//! - **Replay**: a client that connects with `auth.lastEventId` gets the
//!   events after it that its subscriptions match, in order, before live
//!   ones, or `resync` when they are gone from the stream.
//! - **Queue status** ([`fanout::queue_ticker`]): computed once per node,
//!   every 5 s while anyone follows it and soon after changes.
//!
//! The wire names and payloads are in [`wire`].

mod fanout;
mod session;
mod upgrade;
mod wire;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socketioxide::SocketIo;
use tokio::sync::{Notify, watch};

use crate::auth::Auth;
use crate::events::{EventId, Hub};
use crate::queue::Queue;
use session::Session;

/// Largest long-polling payload, in and out.
const POLLING_PAYLOAD: u64 = 4 * 1024 * 1024;

/// How long a draining node gives its clients to fetch the closing notice.
const CLOSING_FLUSH: Duration = Duration::from_millis(300);

/// Where the feed is served.
pub const PATH: &str = "/ws/ai-tasks";

/// Limits and timings of a node's feed.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Connections one node holds; more are refused (`TOO_MANY_CONNECTIONS`).
    pub max_connections: usize,
    /// Rooms one connection may follow at once.
    pub max_subscriptions: usize,
    /// Messages buffered per client; a client this far behind is cut off.
    pub client_buffer: usize,
    /// Largest message a client may send over WebSocket (bytes; over
    /// long-polling, a poll's body is limited by the HTTP body limit).
    pub max_message_bytes: usize,
    /// How often `queue:update` is sent while anyone follows the queue.
    pub queue_every: Duration,
    /// How long after a change `queue:update` waits for more changes.
    pub queue_settle: Duration,
    /// Engine.io heartbeat: ping interval and the time a pong may take.
    pub ping_interval: Duration,
    /// See `ping_interval`.
    pub ping_timeout: Duration,
}

/// Default connections per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default rooms per connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100;
/// The smallest client buffer: one fan-out batch's messages must fit.
pub const MIN_CLIENT_BUFFER: usize = fanout::MIN_CLIENT_BUFFER;
/// Default messages buffered per client.
pub const DEFAULT_CLIENT_BUFFER: usize = 1024;

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            client_buffer: DEFAULT_CLIENT_BUFFER,
            max_message_bytes: 64 * 1024,
            queue_every: Duration::from_secs(5),
            queue_settle: Duration::from_millis(200),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

/// A room of the feed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RoomKey {
    Task(String),
    Agent(String),
    Queue,
    Tasks,
}

impl RoomKey {
    /// Its kind, as health and metrics count rooms.
    fn kind(&self) -> &'static str {
        match self {
            RoomKey::Task(_) => "task",
            RoomKey::Agent(_) => "agent",
            RoomKey::Queue => "queue",
            RoomKey::Tasks => "tasks",
        }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomKey::Task(id) => write!(f, "task:{id}"),
            RoomKey::Agent(id) => write!(f, "agent:{id}"),
            RoomKey::Queue => f.write_str("queue"),
            RoomKey::Tasks => f.write_str("tasks"),
        }
    }
}

/// Room kinds, in health's and the metrics' order.
const ROOM_KINDS: [&str; 4] = ["task", "agent", "queue", "tasks"];

/// Who follows what on this node.
#[derive(Default)]
struct Registry {
    /// By [`Session::key`] (socket ids can repeat: a client may leave the
    /// namespace and join it again over one engine.io connection).
    sessions: HashMap<u64, Arc<Session>>,
    rooms: HashMap<RoomKey, HashSet<u64>>,
    by_kind: [usize; 4],
}

impl Registry {
    fn kind_index(kind: &str) -> usize {
        ROOM_KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    fn join(&mut self, sid: u64, room: RoomKey) -> bool {
        let kind = Self::kind_index(room.kind());
        let joined = self.rooms.entry(room).or_default().insert(sid);
        if joined {
            self.by_kind[kind] += 1;
        }
        joined
    }

    fn leave(&mut self, sid: u64, room: &RoomKey) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        let left = members.remove(&sid);
        if members.is_empty() {
            self.rooms.remove(room);
        }
        if left {
            self.by_kind[Self::kind_index(room.kind())] -= 1;
        }
        left
    }

    fn members(&self, room: &RoomKey) -> impl Iterator<Item = &Arc<Session>> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|sid| self.sessions.get(sid))
    }
}

/// Connections and subscriptions of a node's feed, as health shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Connected clients.
    pub connections: usize,
    /// Subscriptions by room kind (`task`, `agent`, `queue`, `tasks`).
    pub subscriptions: Vec<(&'static str, usize)>,
}

/// The feed of a node; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    io: SocketIo,
    queue: Queue,
    auth: Auth,
    hub: Hub,
    config: FeedConfig,
    origins: Arc<[String]>,
    registry: Mutex<Registry>,
    /// The last event the fan-out has dispatched (None while it does not
    /// follow the hub), held by the fan-out while it dispatches a batch. A
    /// replaying client (its session holds live events back from its
    /// admission on) reads it once its rooms are joined: the replay covers
    /// the stream up to it, the held-back events what follows.
    gate: tokio::sync::Mutex<Option<EventId>>,
    /// A client came or went, or joined or left a room.
    changed: Notify,
    /// An event arrived: the queue status may have changed.
    queue_dirty: Notify,
    /// The last `queue:update` payload, for a client that subscribes.
    last_queue: Mutex<Option<(tokio::time::Instant, serde_json::Value)>>,
    /// The node drains: new connections are refused.
    closing: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    /// Sessions in memory (connected, or still being let go).
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// The last session key handed out.
    keys: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes connection and subscription gauges.
    fn publish_gauges(&self, registry: &Registry) {
        crate::metrics::feed_gauges(registry.sessions.len(), &ROOM_KINDS, &registry.by_kind);
    }
}

impl Feed {
    /// The feed of a node: Socket.IO over `queue` and `hub`, with tokens
    /// checked by `auth` and browser origins limited to `origins`.
    pub fn start(
        queue: Queue,
        auth: Auth,
        hub: Hub,
        config: FeedConfig,
        origins: Vec<String>,
    ) -> (Feed, impl poem::Endpoint<Output = poem::Response> + use<>) {
        let (svc, io) = SocketIo::builder()
            .req_path(PATH)
            .max_buffer_size(config.client_buffer.max(MIN_CLIENT_BUFFER))
            // Also the most one long-polling response carries (a larger
            // message goes alone): a task record can be 2 MiB.
            .max_payload(POLLING_PAYLOAD)
            .ws_max_message_size(config.max_message_bytes)
            .ws_max_frame_size(config.max_message_bytes)
            .ping_interval(config.ping_interval)
            .ping_timeout(config.ping_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build_svc();
        let (stop, _) = watch::channel(false);
        let origins: Arc<[String]> = origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect();
        let shared = Arc::new(Shared {
            io: io.clone(),
            queue,
            auth,
            hub,
            config,
            origins: origins.clone(),
            registry: Mutex::new(Registry::default()),
            gate: tokio::sync::Mutex::new(None),
            changed: Notify::new(),
            queue_dirty: Notify::new(),
            last_queue: Mutex::new(None),
            closing: Arc::default(),
            stop,
            live: Arc::default(),
            keys: Default::default(),
        });
        session::install(&io, &shared);
        tokio::spawn(fanout::run(shared.clone()));
        tokio::spawn(fanout::queue_ticker(shared.clone()));
        tokio::spawn(sweep(shared.clone()));
        let transport = upgrade::Transport::new(svc, origins, shared.closing.clone());
        (Feed { shared }, transport)
    }

    /// Connections and subscriptions now.
    pub fn stats(&self) -> FeedStats {
        let registry = self.shared.registry();
        FeedStats {
            connections: registry.sessions.len(),
            subscriptions: ROOM_KINDS
                .iter()
                .copied()
                .zip(registry.by_kind.iter().copied())
                .collect(),
        }
    }

    /// Client sessions still in memory: connected ones, and ones being let
    /// go (a closing notice in flight). Back to 0 once every client has
    /// left, or something holds on to them.
    pub fn live_sessions(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// Closes every connection (the node is shutting down): each client is
    /// told why (`server:closing`, `NODE_DRAINING`), then its transport is
    /// closed, which Socket.IO clients answer by reconnecting (to another
    /// node behind the same address). New connections are refused.
    pub async fn close(&self) {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let sessions: Vec<Arc<Session>> =
            self.shared.registry().sessions.values().cloned().collect();
        for s in &sessions {
            s.tell_closing("NODE_DRAINING", "the node is shutting down: reconnect");
        }
        if !sessions.is_empty() {
            // Long-polling clients fetch the notice with their next poll.
            tokio::time::sleep(CLOSING_FLUSH).await;
        }
        let _ = self.shared.stop.send(true);
        // Also drops the namespace, whose handlers hold the feed.
        self.shared.io.close().await;
        let mut registry = self.shared.registry();
        registry.sessions.clear();
        registry.rooms.clear();
        registry.by_kind = [0; 4];
        self.shared.publish_gauges(&registry);
    }
}

/// Whether a browser `Origin` is admitted: one of `FRONTEND_URL`'s, or the
/// node's own (`host`: a page the node served).
pub(crate) fn origin_allowed(origins: &[String], origin: &str, host: Option<&str>) -> bool {
    let origin = origin.trim_end_matches('/');
    origins.iter().any(|o| o == origin)
        || host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        })
}

/// Drops, every few seconds, the sessions whose connect never completed
/// (the client left during the handshake, so no disconnect handler runs).
async fn sweep(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = fanout::stopped(&mut stop) => return,
        }
        let stale: Vec<Arc<Session>> = shared
            .registry()
            .sessions
            .values()
            .filter(|s| s.is_stale())
            .cloned()
            .collect();
        for s in stale {
            tracing::debug!("socket.io: dropping a session whose connect never completed");
            s.end();
            shared.forget(&s);
        }
    }
}
