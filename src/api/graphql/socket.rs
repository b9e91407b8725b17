//! GraphQL over WebSocket at `/graphql/ws`, on the node's own port:
//! `graphql-transport-ws` (the protocol of npm's `graphql-ws`) and the
//! older `graphql-ws` subprotocol (subscriptions-transport-ws).
//!
//! The token is the `connection_init` payload's `token` (or its
//! `Authorization: "Bearer ..."`), else the upgrade request's
//! `Authorization` header. A refused token closes with 4401 `UNAUTHORIZED:
//! why`, the rate limit with 4429; no `connection_init` within 10 s closes
//! with 4408. When the token expires the connection closes with 4403
//! `TOKEN_EXPIRED`, and a draining node closes with 1012 `NODE_DRAINING`
//! (clients reconnect, to another node behind the same address).
//! Connections per node, subscriptions per connection and the message
//! size are the Socket.IO feed's limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use futures::{SinkExt, StreamExt};
use poem::http::{HeaderMap, StatusCode, header};
use poem::web::Data as PoemData;
use poem::web::websocket::{Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Response, handler};
use tokio::sync::oneshot;

use super::live::Live;
use super::observe::Observed;
use super::subscription::Slots;
use crate::api::AppState;
use crate::api::error::ApiError;

/// Where subscriptions are served.
pub const WS_PATH: &str = "/graphql/ws";
/// How long a connection may wait before its `connection_init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest close reason WebSocket allows (bytes).
const MAX_REASON: usize = 123;
/// How often the node pings each connection (browsers and `ws` answer).
const PING_EVERY: Duration = Duration::from_secs(25);
/// A connection silent this long (no pong, no message) is closed.
const SILENT_MAX: Duration = Duration::from_secs(60);
/// How long one message may take to go out: a client that stops reading
/// is closed, and holds nothing up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `message` unless the client stopped reading (the send takes
/// longer than [`SEND_TIMEOUT`]) or the node stops meanwhile; whether it
/// went out.
async fn send(
    sink: &mut futures::stream::SplitSink<WebSocketStream, Message>,
    message: Message,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        biased;
        sent = sink.send(message) => sent.is_ok(),
        _ = crate::api::stopped(stop) => false,
        _ = tokio::time::sleep(SEND_TIMEOUT) => false,
    }
}

fn refused(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).to_response()
}

/// One open connection, counted while it lives (from the upgrade's
/// acceptance: a failed upgrade drops it too).
struct Connection(Live);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::graphql_connections(-1.0);
    }
}

/// `GET /graphql/ws`: the WebSocket upgrade.
#[handler]
pub(super) async fn socket(
    PoemData(state): PoemData<&Arc<AppState>>,
    PoemData(schema): PoemData<&Observed>,
    headers: &HeaderMap,
    ws: poem::Result<WebSocket>,
) -> Response {
    // Named exactly (the upgrade answers with the name as offered).
    let protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',').map(str::trim).find_map(|p| match p {
                "graphql-transport-ws" => Some(WebSocketProtocols::GraphQLWS),
                "graphql-ws" => Some(WebSocketProtocols::SubscriptionsTransportWS),
                _ => None,
            })
        });
    let Ok(ws) = ws else {
        return refused(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "expected a WebSocket upgrade (subprotocol graphql-transport-ws or graphql-ws)",
        );
    };
    let Some(protocol) = protocol else {
        return refused(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Sec-WebSocket-Protocol must name graphql-transport-ws or graphql-ws",
        );
    };
    // Browsers may connect from FRONTEND_URL or the node's own origin (as
    // for the Socket.IO feed and CORS).
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !crate::api::ws::origin_allowed(&state.config.cors_origins, origin, host) {
            return refused(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                &format!("origin {origin} is not allowed (FRONTEND_URL)"),
            );
        }
    }
    let live = state.graphql.clone();
    if *live.inner.stop.borrow() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NODE_DRAINING",
            "the node is shutting down: connect to another",
        );
        e.retry_after_s = Some(1);
        return e.to_response();
    }
    let max = live.inner.config.max_connections;
    if live.inner.connections.fetch_add(1, Ordering::Relaxed) >= max {
        live.inner.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::feed_refused("graphql_connections");
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            format!("this node holds at most {max} GraphQL connections"),
        );
        e.retry_after_s = Some(1);
        return e.to_response();
    }
    crate::metrics::graphql_connections(1.0);
    let connection = Connection(live);
    let header_token = bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let bytes = state.config.feed.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(bytes))
        .max_frame_size(Some(bytes));
    let state = state.clone();
    let schema = schema.clone();
    ws.protocols(ALL_WEBSOCKET_PROTOCOLS)
        .config(config)
        .on_upgrade(move |stream| serve(stream, schema, state, protocol, header_token, connection))
        .into_response()
}

/// The token of an `Authorization` value (`Bearer` is optional).
fn bearer(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    let t = v.strip_prefix("Bearer ").unwrap_or(v).trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// The token of a `connection_init` payload.
fn payload_token(payload: &serde_json::Value) -> Option<String> {
    if let Some(t) = payload.get("token").and_then(|t| t.as_str()) {
        return bearer(Some(t));
    }
    ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|v| bearer(Some(v)))
}

/// What the connection does next.
enum Step {
    /// The `connection_init` check answered (None: it never will).
    Init(Option<InitOutcome>),
    /// A message for the client.
    Send(Message),
    /// Close, for this node's reason.
    Close(u16, String),
    /// async-graphql closes (a refused init, a bad message).
    Refused(u16, String),
}

/// What the `connection_init` check tells the connection: when the token
/// expires (Unix seconds), or the close code of its refusal.
type InitOutcome = Result<u64, u16>;

fn close_message(code: u16, reason: &str) -> Message {
    let mut reason = reason.to_string();
    while reason.len() > MAX_REASON {
        reason.pop();
    }
    Message::close_with(code, reason)
}

fn until_unix(exp: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Duration::from_secs(exp.saturating_sub(now).min(365 * 86_400))
}

async fn serve(
    stream: WebSocketStream,
    schema: Observed,
    state: Arc<AppState>,
    protocol: WebSocketProtocols,
    header_token: Option<String>,
    connection: Connection,
) {
    let live = connection.0.clone();
    let (mut sink, source) = stream.split();
    let (told, mut init) = oneshot::channel::<InitOutcome>();
    let on_init = move |payload: serde_json::Value| async move {
        let token = payload_token(&payload).or(header_token);
        let verified = match token {
            None => Err(crate::auth::AuthError::Missing),
            Some(t) => state.auth.verify_until(&t),
        };
        let (principal, exp) = match verified {
            Ok(v) => v,
            Err(e) => {
                let e = ApiError::from(e);
                let _ = told.send(Err(4401));
                return Err(async_graphql::Error::new(format!(
                    "{}: {}",
                    e.code, e.message
                )));
            }
        };
        if let Err(e) = state
            .limiter
            .check(state.queue.store(), &principal.sub)
            .await
        {
            let _ = told.send(Err(4429));
            return Err(async_graphql::Error::new(format!(
                "{}: {}",
                e.code, e.message
            )));
        }
        let _ = told.send(Ok(exp));
        let mut data = Data::default();
        data.insert(principal);
        data.insert(super::Throttled(state.clone()));
        data.insert(Slots {
            open: Arc::new(AtomicUsize::new(0)),
            max: state.config.feed.max_subscriptions,
        });
        Ok(data)
    };
    // When the client was last heard from (any frame, pongs included).
    let opened = tokio::time::Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let heard_in = heard.clone();
    let incoming = source
        .take_while(|m| futures::future::ready(m.is_ok()))
        .inspect(move |_| heard_in.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed))
        .filter_map(|m| {
            futures::future::ready(match m {
                Ok(m) if m.is_text() || m.is_binary() => Some(m.into_bytes()),
                _ => None,
            })
        });
    let mut out =
        async_graphql::http::WebSocket::new(schema, incoming, protocol).on_connection_init(on_init);
    let mut stop = live.inner.stop.subscribe();
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let expiry = tokio::time::sleep(Duration::from_secs(365 * 86_400));
    tokio::pin!(expiry);
    let mut ping = tokio::time::interval_at(opened + PING_EVERY, PING_EVERY);
    let mut initialised = false;
    let mut refusal: Option<u16> = None;
    loop {
        let step = tokio::select! {
            biased;
            outcome = &mut init, if !initialised => Step::Init(outcome.ok()),
            _ = crate::api::stopped(&mut stop) => Step::Close(
                1012,
                "NODE_DRAINING: the node is shutting down: reconnect".into(),
            ),
            _ = &mut init_deadline, if !initialised => {
                Step::Close(4408, "Connection initialisation timeout".into())
            }
            _ = &mut expiry, if initialised && refusal.is_none() => Step::Close(
                4403,
                "TOKEN_EXPIRED: the token expired: reconnect with a new one".into(),
            ),
            _ = ping.tick() => {
                let silent = opened.elapsed().as_millis() as u64 - heard.load(Ordering::Relaxed);
                if silent > SILENT_MAX.as_millis() as u64 {
                    Step::Close(1001, "the client stopped answering pings".into())
                } else {
                    Step::Send(Message::Ping(Vec::new()))
                }
            }
            m = out.next() => match m {
                None => match refusal {
                    // The older protocol's refusal was a message: close
                    // with its code too.
                    Some(code) => Step::Close(code, "connection_init refused".into()),
                    None => break,
                },
                Some(WsMessage::Text(text)) => Step::Send(Message::text(text)),
                Some(WsMessage::Close(code, reason)) => Step::Refused(code, reason),
            },
        };
        let (code, reason) = match step {
            Step::Init(outcome) => {
                initialised = true;
                match outcome {
                    Some(Ok(exp)) => expiry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + until_unix(exp)),
                    Some(Err(code)) => refusal = Some(code),
                    None => {}
                }
                continue;
            }
            Step::Send(message) => {
                if !send(&mut sink, message, &mut stop).await {
                    break;
                }
                continue;
            }
            Step::Close(code, reason) => (code, reason),
            Step::Refused(code, reason) => {
                // The init check may have answered in the same poll.
                if !initialised && let Ok(Err(c)) = init.try_recv() {
                    refusal = Some(c);
                }
                match (refusal, code) {
                    (Some(refused), _) => (refused, reason),
                    // graphql-transport-ws: a subscribe before the ack is
                    // 4401, a message that is not the protocol's 4400.
                    (None, 1011) => (4401, "Unauthorized: connection_init first".into()),
                    (None, 1002) => (4400, reason),
                    (None, code) => (code, reason),
                }
            }
        };
        let _ = send(&mut sink, close_message(code, &reason), &mut stop).await;
        break;
    }
    let _ = sink.close().await;
    drop(connection);
}
