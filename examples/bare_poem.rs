//! A bare poem server: the baseline of the HTTP benchmark (`bench/http/`).
//!
//! It serves the two routes the benchmark loads on taskherd, with the same
//! poem version and the same Tokio runtime, but each handler only returns a
//! small constant JSON: no auth, no Redis, no middleware. What taskherd adds
//! on top (auth, rate limit, request ids, CORS, validation, Redis round trips)
//! is the difference between the two.
//!
//! With a Redis URL as second argument it is the benchmark's floor instead:
//! the same handlers, each making exactly one Redis round trip through fred
//! before it answers the constant (`GET` reads the task record with
//! `HGETALL {taskherd}:task:<id>`, `POST` does one `INCR`). That is the least
//! any Redis-backed handler pays on this machine.
//!
//! ```sh
//! cargo run --release --example bare_poem -- 4100     # listens on 127.0.0.1:4100
//! cargo run --release --example bare_poem -- 4101 redis://127.0.0.1:7711
//! curl -s localhost:4100/api/ai/tasks/x
//! ```

use std::collections::HashMap;

use fred::prelude::*;
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::{Data, Path};
use poem::{EndpointExt, Response, Route, Server, get, handler, post};

const TASK_JSON: &str = r#"{"id":"task_bare","agentId":"bench","taskType":"bench","status":"QUEUED","inputData":{"n":1}}"#;

fn constant(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(TASK_JSON)
}

fn redis_failed(e: &fred::error::Error) -> Response {
    eprintln!("bare_poem: redis: {e}");
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .finish()
}

/// `POST /api/ai/tasks`: reads the body (as any real handler must), answers 201.
#[handler]
fn create(_body: Vec<u8>) -> Response {
    constant(StatusCode::CREATED)
}

/// `GET /api/ai/tasks/:id`: answers 200.
#[handler]
fn fetch(Path(_id): Path<String>) -> Response {
    constant(StatusCode::OK)
}

/// The floor's `POST`: the body, one `INCR`, 201.
#[handler]
async fn create_redis(_body: Vec<u8>, Data(redis): Data<&Client>) -> Response {
    match redis.incr::<i64, _>("bare-poem:creates").await {
        Ok(_) => constant(StatusCode::CREATED),
        Err(e) => redis_failed(&e),
    }
}

/// The floor's `GET`: one `HGETALL` of the task's record, 200.
#[handler]
async fn fetch_redis(Path(id): Path<String>, Data(redis): Data<&Client>) -> Response {
    let key = format!("{{taskherd}}:task:{id}");
    match redis.hgetall::<HashMap<String, String>, _>(key).await {
        Ok(_) => constant(StatusCode::OK),
        Err(e) => redis_failed(&e),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(4100);
    let listener = TcpListener::bind(("127.0.0.1", port));
    match args.next() {
        None => {
            let app = Route::new()
                .at("/api/ai/tasks", post(create))
                .at("/api/ai/tasks/:id", get(fetch));
            eprintln!("bare_poem: listening on 127.0.0.1:{port}");
            Server::new(listener).run(app).await
        }
        Some(url) => {
            let config = Config::from_url(&url).map_err(std::io::Error::other)?;
            let redis = Client::new(config, None, None, None);
            redis.init().await.map_err(std::io::Error::other)?;
            let app = Route::new()
                .at("/api/ai/tasks", post(create_redis))
                .at("/api/ai/tasks/:id", get(fetch_redis))
                .data(redis);
            eprintln!(
                "bare_poem: listening on 127.0.0.1:{port}, one round trip to {url} per request"
            );
            Server::new(listener).run(app).await
        }
    }
}
