//! Socket.IO on poem's port: long-polling through poem's tower
//! compatibility, WebSocket through a small upgrade of our own (poem keeps
//! the connection upgrade to itself, so the tower service alone would see
//! no WebSocket).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engineioxide::service::NotFoundService;
use poem::endpoint::TowerCompatExt;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use socketioxide::service::SocketIoService;

use crate::api::error::ApiError;

/// Serves `/ws/ai-tasks`: engine.io's polling requests and WebSocket
/// upgrades.
pub(super) struct Transport {
    svc: SocketIoService<NotFoundService>,
    origins: Arc<[String]>,
    /// Set while the node drains.
    closing: Arc<AtomicBool>,
}

impl Transport {
    pub(super) fn new(
        svc: SocketIoService<NotFoundService>,
        origins: Arc<[String]>,
        closing: Arc<AtomicBool>,
    ) -> Self {
        Self {
            svc,
            origins,
            closing,
        }
    }

    /// The browser origin of a request the node admits (CORS for polling);
    /// None for other clients and refused origins (their handshake is
    /// answered with a `connect_error` saying so).
    fn admitted_origin(&self, req: &Request) -> Option<HeaderValue> {
        let origin = req.headers().get(header::ORIGIN)?;
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        super::origin_allowed(&self.origins, origin.to_str().ok()?, host).then(|| origin.clone())
    }
}

/// CORS answers for an admitted origin.
fn allow_origin(resp: &mut Response, origin: HeaderValue) {
    let headers = resp.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// Whether a request asks to become a WebSocket.
fn wants_websocket(req: &Request) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

/// The engine.io query a WebSocket upgrade must carry (`EIO=4`,
/// `transport=websocket`): checked before answering 101, because
/// socketioxide checks it only once the connection is ours.
fn valid_ws_query(req: &Request) -> Result<(), &'static str> {
    if query_param(req, "EIO") != Some("4") {
        return Err("Socket.IO v4 clients only (EIO=4)");
    }
    if query_param(req, "transport") != Some("websocket") {
        return Err("a WebSocket upgrade needs transport=websocket");
    }
    Ok(())
}

/// The value of `key` in the request's query.
fn query_param<'a>(req: &'a Request, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

impl Endpoint for Transport {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // A draining node takes no new connection: an HTTP error, which
        // Socket.IO clients retry (a connect_error they would not).
        let new_session = query_param(&req, "sid").is_none();
        if new_session && self.closing.load(Ordering::SeqCst) {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NODE_DRAINING",
                "the node is shutting down: connect to another",
            );
            e.retry_after_s = Some(1);
            return Ok(e.to_response());
        }
        if !wants_websocket(&req) {
            let origin = self.admitted_origin(&req);
            if req.method() == poem::http::Method::OPTIONS {
                let Some(origin) = origin else {
                    return Ok(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "FORBIDDEN",
                        "this origin is not allowed (FRONTEND_URL)",
                    )
                    .to_response());
                };
                let mut resp = StatusCode::NO_CONTENT.into_response();
                allow_origin(&mut resp, origin);
                let headers = resp.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                return Ok(resp);
            }
            let mut resp = self.svc.clone().compat().call(req).await?;
            if let Some(origin) = origin {
                allow_origin(&mut resp, origin);
            }
            return Ok(resp);
        }
        if let Err(why) = valid_ws_query(&req) {
            return Ok(ApiError::validation(why).to_response());
        }
        let Some(accept) = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|key| {
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
        }) else {
            return Ok(ApiError::validation("missing Sec-WebSocket-Key").to_response());
        };
        let Ok(upgrade) = req.take_upgrade() else {
            return Ok(ApiError::validation("this connection cannot be upgraded").to_response());
        };
        let mut head = http::Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.version_mut() = req.version();
        *head.headers_mut() = req.headers().clone();
        let svc = self.svc.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(stream) => {
                    use tower_service::Service;
                    let mut svc = svc;
                    if let Err(e) = svc.call((stream, head)).await {
                        tracing::debug!(error = %e, "socket.io refused a websocket");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = resp.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        Ok(resp)
    }
}
