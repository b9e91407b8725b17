//! A bare poem server: the baseline of the HTTP benchmark (`bench/http/`).
//!
//! It serves the two routes the benchmark loads on taskherd, with the same
//! poem version and the same Tokio runtime, but each handler only returns a
//! small constant JSON: no auth, no Redis, no middleware. What taskherd adds
//! on top (auth, rate limit, request ids, CORS, validation, Redis round trips)
//! is the difference between the two.
//!
//! ```sh
//! cargo run --release --example bare_poem -- 4100     # listens on 127.0.0.1:4100
//! curl -s localhost:4100/api/ai/tasks/x
//! ```

use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::Path;
use poem::{Response, Route, Server, get, handler, post};

const TASK_JSON: &str = r#"{"id":"task_bare","agentId":"bench","taskType":"bench","status":"QUEUED","inputData":{"n":1}}"#;

fn constant(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(TASK_JSON)
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(4100);
    let app = Route::new()
        .at("/api/ai/tasks", post(create))
        .at("/api/ai/tasks/:id", get(fetch));
    eprintln!("bare_poem: listening on 127.0.0.1:{port}");
    Server::new(TcpListener::bind(("127.0.0.1", port)))
        .run(app)
        .await
}
