//! One client: its handshake (token, origin, limits, `lastEventId`,
//! `subscriptions`), its messages, and what it is sent.

use std::collections::{HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use poem::http::StatusCode;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio_util::sync::CancellationToken;

use super::wire::{self, Payloads, messages, names};
use super::{RoomKey, Shared};
use crate::api::error::ApiError;
use crate::auth::{Principal, Scope, TaskRef};
use crate::events::EventId;
use crate::ids::{AgentId, TaskId};

/// Events a replaying client may fall behind the live feed before it is
/// cut off.
const MAX_PENDING: usize = 4096;
/// How often a closing connection whose buffer is full is tried again:
/// every 100 ms for 5 s, then every second until it is closed.
const CLOSE_RETRY: Duration = Duration::from_millis(100);
const FAST_CLOSE_TRIES: u32 = 50;

/// How long an admitted handshake may take to connect before its session
/// is swept.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// What a client's events are, per event (bit flags).
pub(super) const STATUS: u8 = 1;
pub(super) const AGENT: u8 = 2;

/// What the handshake established, kept in the socket's extensions from
/// the check to the connect handler.
///
/// Nothing the socket holds (its extensions, its handlers) holds the
/// session strongly: the session holds the socket, and a cycle would keep
/// both after the connection ends. The registry holds the session.
#[derive(Clone)]
struct Handshake {
    session: std::sync::Weak<Session>,
    /// Unix seconds at which the token stops being valid.
    expires_at: u64,
    last_event_id: Option<EventId>,
    subscriptions: Vec<String>,
}

/// A connected client.
pub(super) struct Session {
    /// Its key in the registry, unique for the feed's lifetime.
    pub(super) key: u64,
    socket: SocketRef,
    pub(super) principal: Principal,
    state: Mutex<State>,
    ended: CancellationToken,
    /// When its handshake was admitted (the sweep of sessions whose connect
    /// never completed goes by it).
    admitted: std::time::Instant,
    /// The feed's count of sessions in memory.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct State {
    rooms: HashSet<RoomKey>,
    /// The last event sent: later duplicates are not sent again.
    cursor: EventId,
    /// While the client replays: live events held back until the replay
    /// is done.
    pending: Option<VecDeque<Held>>,
    /// Cut off (too slow, or closing): nothing more is sent.
    cut: bool,
    /// Why the connection is closing, once it is: later messages are refused.
    closing: Option<&'static str>,
}

/// A live event held back for a replaying client.
enum Held {
    Event(Arc<Payloads>),
    Resync,
}

/// Why a delivery failed.
pub(super) enum Refused {
    /// The client's buffer is full: it is cut off.
    Full,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this client is sent `task` at all (its scope).
    pub(super) fn sees(&self, task: TaskRef<'_>) -> bool {
        Scope::of(&self.principal).admits(task)
    }

    /// Whether its connection has ended.
    pub(super) fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Marks its connection ended (its expiry watch and retries stop).
    pub(super) fn end(&self) {
        self.ended.cancel();
    }

    /// Whether nothing more is sent to it (cut off or closing).
    pub(super) fn is_cut(&self) -> bool {
        self.state().cut
    }

    /// Why its connection is closing, if it is.
    fn closing(&self) -> Option<&'static str> {
        self.state().closing
    }

    /// A session whose connect never completed (the client went away
    /// during the handshake): no disconnect handler will ever run for it.
    pub(super) fn is_stale(&self) -> bool {
        !self.socket.connected() && self.admitted.elapsed() > STALE_AFTER
    }

    /// What `event` gives this client by the rooms it follows now
    /// ([`flags_for`]).
    pub(super) fn flags(&self, event: &crate::events::Event) -> u8 {
        flags_for(&self.state().rooms, self, event)
    }

    /// Sends one event's messages (`flags`: [`STATUS`], [`AGENT`]), or
    /// holds them while the client replays.
    pub(super) fn deliver(&self, p: &Arc<Payloads>, flags: u8) -> Result<(), Refused> {
        let mut st = self.state();
        if st.cut {
            return Ok(());
        }
        if let Some(pending) = &mut st.pending {
            if pending.len() >= MAX_PENDING {
                st.cut = true;
                return Err(Refused::Full);
            }
            pending.push_back(Held::Event(p.clone()));
            return Ok(());
        }
        self.send_event(&mut st, p, flags)
    }

    fn send_event(&self, st: &mut State, p: &Payloads, flags: u8) -> Result<(), Refused> {
        if p.event.id <= st.cursor {
            return Ok(());
        }
        st.cursor = p.event.id;
        let mut sent = Vec::with_capacity(3);
        if flags & STATUS != 0 {
            sent.push((names::TASK_STATUS, &p.status));
        }
        if flags & AGENT != 0 {
            sent.push((names::AGENT_TASK_UPDATE, &p.status));
        }
        if let Some(failed) = &p.failed {
            sent.push((names::TASK_FAILED, failed));
        }
        for (event, payload) in sent {
            if let Err(Refused::Full) = self.emit(event, payload) {
                st.cut = true;
                return Err(Refused::Full);
            }
        }
        Ok(())
    }

    /// Tells the client its events were lost (or holds that while it
    /// replays).
    pub(super) fn resync(&self, reason: &str) -> Result<(), Refused> {
        let mut st = self.state();
        if st.cut {
            return Ok(());
        }
        if let Some(pending) = &mut st.pending {
            pending.push_back(Held::Resync);
            return Ok(());
        }
        let r = self.emit(names::RESYNC, &wire::resync(reason));
        if r.is_err() {
            st.cut = true;
        }
        r
    }

    /// Emits one message now.
    pub(super) fn emit(&self, event: &'static str, payload: &Value) -> Result<(), Refused> {
        match self.socket.emit(event, payload) {
            Ok(()) => {
                crate::metrics::feed_sent(event);
                Ok(())
            }
            Err(SendError::Socket(SocketError::InternalChannelFull)) => Err(Refused::Full),
            // Closed meanwhile: its disconnect handler cleans up.
            Err(_) => Ok(()),
        }
    }

    /// Says why the connection closes and closes it; a client whose buffer
    /// is full is given a few seconds to make room, then left to the
    /// heartbeat (which closes a connection it cannot ping).
    pub(super) fn close_with(self: &Arc<Self>, code: &'static str, message: &'static str) {
        {
            let mut st = self.state();
            st.cut = true;
            st.closing = Some(code);
        }
        let session = self.clone();
        tokio::spawn(async move {
            // Until it is closed: by this, or by the heartbeat (which cannot
            // ping a client whose buffer stays full), or by the client.
            let mut tries = 0u32;
            while !session.ended.is_cancelled() && session.socket.connected() {
                if session
                    .emit(names::CLOSING, &wire::closing(code, message))
                    .is_ok()
                    && session.socket.clone().disconnect().is_ok()
                {
                    return;
                }
                tries += 1;
                let wait = if tries < FAST_CLOSE_TRIES {
                    CLOSE_RETRY
                } else {
                    Duration::from_secs(1)
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Says why the connection closes, without closing it (the caller
    /// closes the transport).
    pub(super) fn tell_closing(&self, code: &'static str, message: &'static str) {
        {
            let mut st = self.state();
            st.cut = true;
            st.closing = Some(code);
        }
        let _ = self.emit(names::CLOSING, &wire::closing(code, message));
    }
}

/// Registers the namespace: the handshake check (which also installs the
/// message handlers, before the client can send any), then the rest of the
/// connection's set-up.
pub(super) fn install(io: &SocketIo, shared: &Arc<Shared>) {
    let check = {
        let shared = shared.clone();
        move |s: SocketRef, TryData(auth): TryData<Value>| {
            let shared = shared.clone();
            async move { admit(&shared, &s, auth) }
        }
    };
    let connect = {
        let shared = shared.clone();
        move |s: SocketRef| {
            let shared = shared.clone();
            async move { on_connect(&shared, s).await }
        }
    };
    io.ns("/", connect.with(check));
}

/// A refused handshake: its `connect_error` message is `CODE: why`.
#[derive(Debug)]
struct Refusal(&'static str, String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

/// Checks a handshake; an admitted client's session is registered and its
/// message handlers installed.
fn admit(
    shared: &Arc<Shared>,
    s: &SocketRef,
    auth: Result<Value, socketioxide::ParserError>,
) -> Result<(), Refusal> {
    let auth =
        auth.map_err(|_| Refusal("VALIDATION_ERROR", "auth must be a JSON object".into()))?;
    if shared.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Refusal(
            "NODE_DRAINING",
            "the node is shutting down: connect to another".into(),
        ));
    }
    let headers = &s.req_parts().headers;
    let host = headers.get("host").and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok())
        && !super::origin_allowed(&shared.origins, origin, host)
    {
        return Err(Refusal(
            "FORBIDDEN",
            format!("origin {origin} is not allowed (FRONTEND_URL)"),
        ));
    }
    let token = match auth.get("token") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Null) | None => None,
        Some(_) => {
            return Err(Refusal(
                "VALIDATION_ERROR",
                "auth.token must be a string".into(),
            ));
        }
    };
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(token) = token.or(header).map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(Refusal(
            "UNAUTHORIZED",
            "missing token: pass auth: {token} or an Authorization: Bearer header".into(),
        ));
    };
    let (principal, expires_at) = shared
        .auth
        .verify_until(token)
        .map_err(|e| Refusal("UNAUTHORIZED", e.to_string()))?;
    let last_event_id = match auth.get("lastEventId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(EventId::from_str(id).map_err(|_| {
            Refusal(
                "VALIDATION_ERROR",
                format!("lastEventId {id:?} is not an event id (<ms>-<seq>-<index>)"),
            )
        })?),
        Some(_) => {
            return Err(Refusal(
                "VALIDATION_ERROR",
                "lastEventId must be a string".into(),
            ));
        }
    };
    let subscriptions = match auth.get("subscriptions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= shared.config.max_subscriptions => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Refusal(
                    "VALIDATION_ERROR",
                    "auth.subscriptions must be room names (task:<id>, agent:<id>, queue, tasks)"
                        .into(),
                )
            })?,
        Some(Value::Array(_)) => {
            return Err(Refusal(
                "TOO_MANY_SUBSCRIPTIONS",
                format!(
                    "at most {} subscriptions per connection",
                    shared.config.max_subscriptions
                ),
            ));
        }
        Some(_) => {
            return Err(Refusal(
                "VALIDATION_ERROR",
                "auth.subscriptions must be an array of room names".into(),
            ));
        }
    };
    if shared.registry().sessions.len() >= shared.config.max_connections {
        crate::metrics::feed_refused("connections");
        return Err(Refusal(
            "TOO_MANY_CONNECTIONS",
            format!(
                "this node holds {} connections already: try again or another node",
                shared.config.max_connections
            ),
        ));
    }
    let session = Arc::new(Session {
        key: shared
            .keys
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1,
        socket: s.clone(),
        principal: principal.clone(),
        state: Mutex::new(State {
            rooms: HashSet::new(),
            cursor: EventId::ZERO,
            pending: last_event_id.is_some().then(VecDeque::new),
            cut: false,
            closing: None,
        }),
        admitted: std::time::Instant::now(),
        live: {
            shared
                .live
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared.live.clone()
        },
        ended: CancellationToken::new(),
    });
    install_handlers(shared, s, &session);
    {
        let mut registry = shared.registry();
        registry.sessions.insert(session.key, session.clone());
        shared.publish_gauges(&registry);
    }
    shared.changed.notify_waiters();
    s.extensions.insert(Handshake {
        session: Arc::downgrade(&session),
        expires_at,
        last_event_id,
        subscriptions,
    });
    Ok(())
}

/// A client's message handlers; they must be in place before the connect
/// packet goes out (a message right after it must find them).
fn install_handlers(shared: &Arc<Shared>, s: &SocketRef, session: &Arc<Session>) {
    for (message, kind, joins) in [
        (messages::SUBSCRIBE_TASK, Kind::Task, true),
        (messages::SUBSCRIBE_AGENT, Kind::Agent, true),
        (messages::SUBSCRIBE_QUEUE, Kind::Queue, true),
        (messages::SUBSCRIBE_TASKS, Kind::Tasks, true),
        (messages::UNSUBSCRIBE_TASK, Kind::Task, false),
        (messages::UNSUBSCRIBE_AGENT, Kind::Agent, false),
        (messages::UNSUBSCRIBE_QUEUE, Kind::Queue, false),
        (messages::UNSUBSCRIBE_TASKS, Kind::Tasks, false),
    ] {
        let (shared, session) = (shared.clone(), Arc::downgrade(session));
        s.on(
            message,
            move |TryData(arg): TryData<Value>, ack: AckSender| async move {
                crate::metrics::feed_received();
                let Some(session) = session.upgrade() else {
                    return;
                };
                let arg = arg.ok();
                let answer = if joins {
                    subscribe(&shared, &session, kind, arg.clone()).await
                } else {
                    unsubscribe(&shared, &session, kind, arg.clone())
                };
                answer_message(&session, kind, message, &arg, answer, ack);
            },
        );
    }
    let (shared, session) = (shared.clone(), Arc::downgrade(session));
    s.on_disconnect(move || async move {
        if let Some(session) = session.upgrade() {
            session.ended.cancel();
            shared.forget(&session);
        }
    });
}

/// After the connect packet: the token's expiry, the handshake's
/// subscriptions, the replay.
async fn on_connect(shared: &Arc<Shared>, s: SocketRef) {
    let Some(hs) = s.extensions.remove::<Handshake>() else {
        return;
    };
    let Some(session) = hs.session.upgrade() else {
        return;
    };
    watch_expiry(shared, &session, hs.expires_at);
    for room in &hs.subscriptions {
        let answer = match parse_room(room) {
            Ok((kind, arg)) => subscribe(shared, &session, kind, Some(arg))
                .await
                .map_err(|e| (kind, e)),
            Err(e) => Err((Kind::Task, e)),
        };
        if let Err((kind, e)) = answer {
            let _ = session.emit(kind.error_event(), &wire::error(&e, "subscriptions", None));
        }
    }
    if let Some(after) = hs.last_event_id {
        super::fanout::replay(shared, &session, after).await;
    }
}

/// Closes the connection when its token expires.
fn watch_expiry(shared: &Arc<Shared>, session: &Arc<Session>, expires_at: u64) {
    // An `exp` beyond what the clock can hold never comes.
    let Some(at) = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(expires_at)) else {
        return;
    };
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let (shared, session) = (shared.clone(), session.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(left) => {
                session.close_with("TOKEN_EXPIRED", "the token expired: reconnect with a new one");
                shared.forget(&session);
            }
            _ = session.ended.cancelled() => {}
        }
    });
}

/// What a subscribe message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Task,
    Agent,
    Queue,
    Tasks,
}

impl Kind {
    fn error_event(self) -> &'static str {
        match self {
            Kind::Queue => names::QUEUE_ERROR,
            _ => names::TASK_ERROR,
        }
    }
}

/// `task:<id>`, `agent:<id>`, `queue`, `tasks`.
fn parse_room(room: &str) -> Result<(Kind, Value), ApiError> {
    match room.split_once(':') {
        Some(("task", id)) => Ok((Kind::Task, Value::String(id.into()))),
        Some(("agent", id)) => Ok((Kind::Agent, Value::String(id.into()))),
        None if room == "queue" => Ok((Kind::Queue, Value::Null)),
        None if room == "tasks" => Ok((Kind::Tasks, Value::Null)),
        _ => Err(ApiError::validation(format!(
            "unknown subscription {room:?}: use task:<id>, agent:<id>, queue or tasks"
        ))),
    }
}

/// The id a message carries: the seeds' plain string, or `{taskId}` /
/// `{agentId}`.
fn id_arg<'a>(arg: &'a Option<Value>, key: &str) -> Option<&'a str> {
    match arg {
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(o)) => o.get(key).and_then(Value::as_str),
        _ => None,
    }
}

/// The room a message names, checked by the access policy.
async fn room_of(
    shared: &Shared,
    session: &Session,
    kind: Kind,
    arg: &Option<Value>,
) -> Result<(RoomKey, Value), ApiError> {
    let p = &session.principal;
    match kind {
        Kind::Task => {
            let raw = id_arg(arg, "taskId")
                .ok_or_else(|| ApiError::validation("expected a task id (\"task_...\")"))?;
            let id = TaskId::parse(raw).map_err(|_| ApiError::task_not_found(raw))?;
            let task = shared.queue.follow_task(p, &id).await?;
            let task = poem_openapi::types::ToJSON::to_json(
                &crate::api::rest::models::TaskBody::from(task),
            );
            Ok((
                RoomKey::Task(id.to_string()),
                serde_json::json!({ "task": task }),
            ))
        }
        Kind::Agent => {
            let raw = id_arg(arg, "agentId")
                .ok_or_else(|| ApiError::validation("expected an agent id"))?;
            let id = AgentId::parse(raw).map_err(|e| ApiError::validation(e.to_string()))?;
            shared.queue.follow_agent(p, &id)?;
            Ok((RoomKey::Agent(id.to_string()), Value::Null))
        }
        Kind::Queue => {
            shared.queue.follow_queue(p)?;
            Ok((RoomKey::Queue, Value::Null))
        }
        Kind::Tasks => {
            shared.queue.follow_all_tasks(p)?;
            Ok((RoomKey::Tasks, Value::Null))
        }
    }
}

async fn subscribe(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    kind: Kind,
    arg: Option<Value>,
) -> Result<Value, ApiError> {
    refuse_if_closing(session)?;
    let (room, extra) = room_of(shared, session, kind, &arg).await?;
    {
        let mut registry = shared.registry();
        if !registry.sessions.contains_key(&session.key) {
            // Closed meanwhile.
            refuse_if_closing(session)?;
            return Err(closing_error());
        }
        let mut st = session.state();
        if !st.rooms.contains(&room) && st.rooms.len() >= shared.config.max_subscriptions {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_SUBSCRIPTIONS",
                format!(
                    "at most {} subscriptions per connection: unsubscribe first",
                    shared.config.max_subscriptions
                ),
            ));
        }
        st.rooms.insert(room.clone());
        drop(st);
        registry.join(session.key, room.clone());
        shared.publish_gauges(&registry);
    }
    shared.changed.notify_waiters();
    // Acknowledged once the fan-out follows the hub: every event committed
    // after the ack reaches the client (an idle fan-out starts from the
    // newest event when it resumes).
    super::fanout::following(shared).await;
    if room == RoomKey::Queue {
        shared.send_last_queue(session);
    }
    let mut answer = serde_json::json!({ "subscription": room.to_string() });
    if let (Some(o), Value::Object(extra)) = (answer.as_object_mut(), extra) {
        o.extend(extra);
    }
    Ok(answer)
}

/// A closing connection takes no more messages.
fn refuse_if_closing(session: &Session) -> Result<(), ApiError> {
    match session.closing() {
        None => Ok(()),
        Some("TOKEN_EXPIRED") => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "token expired",
        )),
        Some(_) => Err(closing_error()),
    }
}

fn closing_error() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "CONNECTION_CLOSING",
        "this connection is closing: reconnect",
    )
}

fn unsubscribe(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    kind: Kind,
    arg: Option<Value>,
) -> Result<Value, ApiError> {
    let room = match kind {
        Kind::Task => RoomKey::Task(
            id_arg(&arg, "taskId")
                .ok_or_else(|| ApiError::validation("expected a task id (\"task_...\")"))?
                .to_string(),
        ),
        Kind::Agent => RoomKey::Agent(
            id_arg(&arg, "agentId")
                .ok_or_else(|| ApiError::validation("expected an agent id"))?
                .to_string(),
        ),
        Kind::Queue => RoomKey::Queue,
        Kind::Tasks => RoomKey::Tasks,
    };
    let was = {
        let mut registry = shared.registry();
        let was = session.state().rooms.remove(&room);
        registry.leave(session.key, &room);
        shared.publish_gauges(&registry);
        was
    };
    shared.changed.notify_waiters();
    Ok(serde_json::json!({ "subscription": room.to_string(), "was": was }))
}

/// Acknowledges a message when the client asked for it; a refusal is also
/// sent as `task:error` / `queue:error`.
fn answer_message(
    session: &Session,
    kind: Kind,
    message: &'static str,
    arg: &Option<Value>,
    answer: Result<Value, ApiError>,
    ack: AckSender,
) {
    match answer {
        Ok(v) => {
            let _ = ack.send(&wire::ack_ok(v));
        }
        Err(e) => {
            let key = match kind {
                Kind::Task => Some("taskId"),
                Kind::Agent => Some("agentId"),
                _ => None,
            };
            let subject = key.and_then(|k| id_arg(arg, k).map(|id| (k, id)));
            let _ = session.emit(kind.error_event(), &wire::error(&e, message, subject));
            let _ = ack.send(&wire::ack_err(&e));
        }
    }
}

impl Shared {
    /// Drops a client from every room.
    pub(super) fn forget(&self, session: &Session) {
        // Under the registry's lock throughout: a subscribe (which joins
        // under it, if the session is still registered) comes before or
        // after, never between.
        let mut registry = self.registry();
        let rooms: Vec<RoomKey> = session.state().rooms.drain().collect();
        for room in &rooms {
            registry.leave(session.key, room);
        }
        registry.sessions.remove(&session.key);
        self.publish_gauges(&registry);
        drop(registry);
        self.changed.notify_waiters();
    }

    /// Cuts off a client that cannot keep up.
    pub(super) fn cut_off(&self, session: &Arc<Session>) {
        crate::metrics::feed_cut_off();
        tracing::info!(session = session.key, sub = %session.principal.sub, "socket.io client too slow: cut off");
        session.close_with(
            "SLOW_CONSUMER",
            "this client fell too far behind: reconnect with lastEventId",
        );
        self.forget(session);
    }

    /// Sends the last computed queue status to a new subscriber, if fresh.
    fn send_last_queue(&self, session: &Session) {
        let last = self
            .last_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match last {
            Some((at, v)) if at.elapsed() < self.config.queue_every => {
                let _ = session.emit(names::QUEUE_UPDATE, &v);
            }
            _ => self.queue_dirty.notify_one(),
        }
    }
}

/// Flushes what a replaying client's live events held back, after its
/// replay sent everything up to `cursor`.
pub(super) fn finish_replay(session: &Session, cursor: EventId) -> Result<(), Refused> {
    let mut st = session.state();
    st.cursor = st.cursor.max(cursor);
    let Some(pending) = st.pending.take() else {
        return Ok(());
    };
    for held in pending {
        if st.cut {
            break;
        }
        match held {
            // Rooms left during the replay are not sent to any more.
            Held::Event(p) => {
                let flags = flags_for(&st.rooms, session, &p.event);
                if flags != 0 {
                    session.send_event(&mut st, &p, flags)?;
                }
            }
            Held::Resync => {
                if session
                    .emit(names::RESYNC, &wire::resync("events were lost"))
                    .is_err()
                {
                    st.cut = true;
                    return Err(Refused::Full);
                }
            }
        }
    }
    Ok(())
}

/// What `event` gives a client following `rooms` ([`STATUS`], [`AGENT`];
/// 0: nothing). A task room was allowed when joined: its task's owner and
/// agent do not change.
pub(super) fn flags_for(
    rooms: &HashSet<RoomKey>,
    session: &Session,
    event: &crate::events::Event,
) -> u8 {
    let task = TaskRef {
        owner_id: event.owner_id.as_deref(),
        agent_id: &event.agent_id,
    };
    let mut flags = 0;
    if rooms.contains(&RoomKey::Task(event.task_id.clone()))
        || (rooms.contains(&RoomKey::Tasks) && session.sees(task))
    {
        flags |= STATUS;
    }
    if rooms.contains(&RoomKey::Agent(event.agent_id.clone())) && session.sees(task) {
        flags |= AGENT;
    }
    flags
}

/// Sends replayed events (the replay reads them; `cursor` advances).
pub(super) fn send_replayed(session: &Session, p: &Payloads, flags: u8) -> Result<(), Refused> {
    let mut st = session.state();
    if st.cut {
        return Ok(());
    }
    session.send_event(&mut st, p, flags)
}

/// The rooms a client follows (for the replay's filter).
pub(super) fn rooms_of(session: &Session) -> HashSet<RoomKey> {
    session.state().rooms.clone()
}
