//! The built-in HTTP executor against a local agent endpoint: agent records
//! registered while the node runs are picked up, and the endpoint's answer
//! decides the attempt (2xx completes, 4xx fails at once, 5xx and timeouts
//! are retried).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, Server, handler, post};
use serde_json::{Value, json};
use taskherd::clock::Clock;
use taskherd::store::{Agent, AgentKind, Store};
use taskherd::task::{NewTask, Task, TaskMetrics, TaskStatus};
use taskherd::worker::Registry;

use crate::support::*;

/// Requests the fake agent received: (route, JSON body).
#[derive(Default)]
struct Received(Mutex<Vec<(&'static str, Value)>>);

impl Received {
    fn record(&self, route: &'static str, body: Value) {
        self.0.lock().unwrap().push((route, body));
    }

    fn bodies(&self, route: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == route)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

#[handler]
async fn answer(Json(body): Json<Value>, Data(seen): Data<&Arc<Received>>) -> Json<Value> {
    let input = body["inputData"].clone();
    seen.record("ok", body);
    Json(json!({
        "outputData": { "answer": 42, "input": input },
        "actualCost": 0.25,
        "qualityScore": 0.9,
        "metrics": { "tokensIn": 10, "tokensOut": 5 },
    }))
}

#[handler]
async fn bad_request(Json(body): Json<Value>, Data(seen): Data<&Arc<Received>>) -> StatusCode {
    seen.record("bad", body);
    StatusCode::BAD_REQUEST
}

#[handler]
async fn server_error(Json(body): Json<Value>, Data(seen): Data<&Arc<Received>>) -> StatusCode {
    seen.record("boom", body);
    StatusCode::INTERNAL_SERVER_ERROR
}

#[handler]
async fn too_slow(Json(body): Json<Value>, Data(seen): Data<&Arc<Received>>) -> Json<Value> {
    seen.record("slow", body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    Json(json!({ "outputData": "too late" }))
}

/// 3 MB of reply (past the executor's 2 MB cap), then a body that never ends.
#[handler]
async fn endless(Json(body): Json<Value>, Data(seen): Data<&Arc<Received>>) -> poem::Response {
    use futures::StreamExt;
    seen.record("huge", body);
    let chunks =
        futures::stream::iter((0..48).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])))
            .chain(futures::stream::pending());
    poem::Response::builder()
        .content_type("application/json")
        .body(poem::Body::from_bytes_stream(chunks))
}

/// Starts the fake agent on 127.0.0.1:0; returns its base URL.
async fn start_agent_server() -> (String, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let seen = Arc::new(Received::default());
    let app = Route::new()
        .at("/ok", post(answer))
        .at("/bad", post(bad_request))
        .at("/boom", post(server_error))
        .at("/slow", post(too_slow))
        .at("/huge", post(endless))
        .data(seen.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (format!("http://{addr}"), seen)
}

/// A running node (no registered handlers), the fake agent, and an HTTP agent
/// record `agent` pointing at `route`, registered after the node started.
async fn setup(agent: &str, route: &str) -> (TestRedis, TestNode, Arc<Received>) {
    let redis = TestRedis::start();
    let node = TestNode::start(
        node_config(&redis.url(), Some(worker_config("http", 2)), Clock::redis()),
        Registry::new(),
    )
    .await;
    let (base, seen) = start_agent_server().await;
    node.store
        .upsert_agent(&Agent {
            id: agent.to_string(),
            kind: AgentKind::Http,
            endpoint: Some(format!("{base}/{route}")),
            ..Agent::default()
        })
        .await
        .unwrap();
    (redis, node, seen)
}

async fn wait_terminal(store: &Store, id: &str, deadline: Duration) -> Task {
    wait_until(&format!("task {id} ends"), deadline, || async {
        let t = store.get(id).await.unwrap()?;
        t.status.is_terminal().then_some(t)
    })
    .await
}

#[tokio::test]
async fn a_2xx_reply_completes_the_task_with_its_output_cost_and_quality() {
    let (_redis, node, seen) = setup("summarizer", "ok").await;
    let id = node
        .store
        .create(NewTask::new(
            "summarizer",
            "summarize",
            json!({ "text": "hi" }),
        ))
        .await
        .unwrap()
        .task
        .id;
    // The agent record is picked up by the runtime's refresher (500 ms here).
    let t = wait_terminal(&node.store, &id, Duration::from_secs(3)).await;
    assert_eq!(t.status, TaskStatus::Completed, "{t:?}");
    assert_eq!(
        t.output_data,
        Some(json!({ "answer": 42, "input": { "text": "hi" } }))
    );
    assert_eq!(t.actual_cost, Some(0.25));
    assert_eq!(t.quality_score, Some(0.9));
    assert_eq!(
        t.metrics,
        Some(TaskMetrics {
            tokens_in: Some(10),
            tokens_out: Some(5),
            ..TaskMetrics::default()
        })
    );
    assert_eq!(
        seen.bodies("ok"),
        vec![json!({ "taskId": id, "taskType": "summarize", "inputData": { "text": "hi" } })]
    );
    let stats = node.runtime.as_ref().unwrap().stats();
    assert!(stats.agents.contains(&"summarizer".to_string()));
    node.stop().await;
}

#[tokio::test]
async fn a_400_reply_fails_the_task_at_once_without_retrying() {
    let (_redis, node, seen) = setup("picky", "bad").await;
    let id = node
        .store
        .create(NewTask {
            max_retries: Some(3),
            ..NewTask::new("picky", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    let t = wait_terminal(&node.store, &id, Duration::from_secs(3)).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.retry_count, 0);
    assert!(
        t.error_message.as_deref().unwrap_or("").contains("400"),
        "{t:?}"
    );
    assert_eq!(seen.bodies("bad").len(), 1);
    let counts = event_counts(&all_events(&node.store).await, &id);
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("retrying"), None, "{counts:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_500_reply_is_retried_until_the_attempts_run_out() {
    let (_redis, node, seen) = setup("flaky", "boom").await;
    let id = node
        .store
        .create(NewTask {
            max_retries: Some(2),
            ..NewTask::new("flaky", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    let t = wait_terminal(&node.store, &id, Duration::from_secs(5)).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.retry_count, 2);
    assert!(
        t.error_message.as_deref().unwrap_or("").contains("500"),
        "{t:?}"
    );
    assert_eq!(seen.bodies("boom").len(), 3, "one request per attempt");
    let counts = event_counts(&all_events(&node.store).await, &id);
    assert_eq!(counts.get("retrying"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");
    node.stop().await;
}

#[tokio::test]
async fn an_endpoint_slower_than_timeout_ms_is_a_timed_out_attempt() {
    let (_redis, node, seen) = setup("sluggish", "slow").await;
    let id = node
        .store
        .create(NewTask {
            max_retries: Some(1),
            timeout_ms: Some(300),
            ..NewTask::new("sluggish", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    let t = wait_terminal(&node.store, &id, Duration::from_secs(5)).await;
    assert_eq!(t.status, TaskStatus::Timeout, "{t:?}");
    assert_eq!(t.retry_count, 1);
    assert_eq!(t.output_data, None);
    assert_eq!(seen.bodies("slow").len(), 2, "one request per attempt");
    let counts = event_counts(&all_events(&node.store).await, &id);
    assert_eq!(counts.get("retrying"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("timeout"), Some(&1), "{counts:?}");
    // The slot is freed although the endpoint never answered in time.
    let runtime = node.runtime.clone().unwrap();
    wait_until("the slot is free", Duration::from_secs(2), || async {
        (runtime.stats().in_flight == 0).then_some(())
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn an_oversized_reply_fails_the_task_as_soon_as_it_passes_the_cap() {
    let (_redis, node, seen) = setup("verbose", "huge").await;
    let id = node
        .store
        .create(NewTask {
            max_retries: Some(2),
            timeout_ms: Some(10_000),
            ..NewTask::new("verbose", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    // Not read to its (never coming) end: refused once past 2 MB, for good.
    let t = wait_terminal(&node.store, &id, Duration::from_secs(3)).await;
    assert_eq!(t.status, TaskStatus::Failed, "{t:?}");
    assert_eq!(t.retry_count, 0);
    assert!(
        t.error_message
            .as_deref()
            .unwrap_or("")
            .contains("too large"),
        "{t:?}"
    );
    assert_eq!(t.output_data, None);
    assert_eq!(seen.bodies("huge").len(), 1);
    node.stop().await;
}
