//! A node (the real binary) started while its Redis cannot serve yet, not
//! there or still loading its data after a restart, waits for it: liveness
//! answers, readiness says not ready, the APIs answer 503, each attempt is
//! logged; then it serves. Past `--redis-wait-s` it gives up with a clear
//! error.

use std::path::Path;
use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value, json};
use taskherd::local_redis::{LocalRedis, free_port};

use crate::support::*;

/// Status and JSON body of a GET (None while nothing answers).
async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let response = http.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// The lines of the node's log that report a wait for Redis.
fn waiting_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("waiting for Redis"))
        .map(str::to_string)
        .collect()
}

/// Waits until the node is ready, then has it run an `echo` task through.
async fn serves_a_task(node: &ChildNode) {
    let http = http_client();
    let base = format!("http://127.0.0.1:{}", node.port);
    wait_ready(node.port, Duration::from_secs(30)).await;
    let created: Value = http
        .post(format!("{base}/api/ai/tasks"))
        .bearer_auth(admin_token())
        .json(&json!({"agentId": "echo", "taskType": "t", "inputData": {"n": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("a task id").to_string();
    wait_until("the task completes", Duration::from_secs(10), || async {
        let t: Value = http
            .get(format!("{base}/api/ai/tasks/{id}"))
            .bearer_auth(admin_token())
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (t["status"] == "COMPLETED").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_node_started_before_its_redis_answers_meanwhile_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let log = dir.path().join("node.log");
    let mut node = ChildNode::spawn_logged(&format!("redis://127.0.0.1:{port}"), &[], &log);
    let http = http_client();
    let base = format!("http://127.0.0.1:{}", node.port);

    let live_url = format!("{base}/api/ai/tasks/health/live");
    let (status, live) = wait_until("liveness", Duration::from_secs(20), || {
        get(&http, &live_url)
    })
    .await;
    assert_eq!((status, live), (200, json!({"status": "alive"})));
    let (status, ready) = get(&http, &format!("{base}/api/ai/tasks/health/ready"))
        .await
        .unwrap();
    assert_eq!(
        (status, ready),
        (
            503,
            json!({"status": "not-ready", "reason": "waiting for redis"})
        )
    );
    let (status, health) = get(&http, &format!("{base}/api/ai/tasks/health"))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["redis"]["reachable"], false);
    let refused = http
        .post(format!("{base}/api/ai/tasks"))
        .bearer_auth(admin_token())
        .json(&json!({"agentId": "echo", "taskType": "t", "inputData": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().contains_key("x-request-id"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "REDIS_UNAVAILABLE");
    let (status, spec) = get(&http, &format!("{base}/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(status, 200, "the docs need no Redis");
    assert!(spec["paths"].is_object());
    wait_until("two attempts logged", Duration::from_secs(10), || async {
        (waiting_lines(&log).len() >= 2).then_some(())
    })
    .await;

    let _redis = LocalRedis::start_on(&dir.path().join("redis"), port).unwrap();
    serves_a_task(&node).await;
    assert!(node.child.try_wait().unwrap().is_none(), "the node runs on");
}

#[tokio::test]
async fn a_node_started_against_a_redis_still_loading_waits_then_serves() {
    let mut redis = TestRedis::start();
    {
        // Enough data that loading it, slowed per key, takes several seconds.
        let raw = raw_redis(&redis.url()).await;
        let _: () = raw
            .eval(
                "for i = 1, 10000 do redis.call('SET', 'filler:' .. i, 'x') end",
                Vec::<String>::new(),
                Vec::<String>::new(),
            )
            .await
            .unwrap();
        let _: String = raw.bgrewriteaof().await.unwrap();
        wait_until("the AOF rewrite", Duration::from_secs(20), || async {
            let info: String = raw
                .info(Some(fred::types::InfoKind::Persistence))
                .await
                .ok()?;
            info.contains("aof_rewrite_in_progress:0").then_some(())
        })
        .await;
    }
    let (dir, port) = (redis.data_dir(), redis.redis.port());
    redis.redis.stop();
    redis.redis = LocalRedis::start_answering_on(
        &dir,
        port,
        &[
            "--key-load-delay",
            "500",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    )
    .unwrap();

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("node.log");
    let node = ChildNode::spawn_logged(&redis.url(), &[], &log);
    serves_a_task(&node).await;
    let waits = waiting_lines(&log);
    assert!(
        waits.iter().any(|l| l.contains("LOADING")),
        "the node saw Redis loading and waited: {waits:?}"
    );
}

#[tokio::test]
async fn a_node_gives_up_on_a_redis_that_stays_away_past_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let port = free_port().unwrap();
    let mut node = ChildNode::spawn_logged(
        &format!("redis://127.0.0.1:{port}"),
        &["--redis-wait-s", "1"],
        &log,
    );
    let child = std::sync::Mutex::new(&mut node.child);
    let status = wait_until("the node gives up", Duration::from_secs(20), || async {
        child.lock().unwrap().try_wait().unwrap()
    })
    .await;
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Redis did not become ready within 1 s"),
        "{text}"
    );
}
