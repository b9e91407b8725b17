//! A first end-to-end pass: a node runs the demo echo agent.

use std::time::Duration;

use serde_json::json;
use taskherd::clock::Clock;
use taskherd::task::{NewTask, TaskStatus};
use taskherd::worker::{Registry, demo};

use crate::support::*;

#[tokio::test]
async fn a_node_runs_an_echo_task_to_completion() {
    let redis = TestRedis::start();
    let mut registry = Registry::new();
    demo::register(&mut registry);
    let node = TestNode::with_workers(&redis.url(), "n1", 4, registry).await;
    let created = node
        .store
        .create(NewTask::new("echo", "test", json!({"hello": "world"})))
        .await
        .unwrap();
    let id = created.task.id.clone();
    let done = wait_until("task completes", Duration::from_secs(5), || async {
        let t = node.store.get(&id).await.unwrap().unwrap();
        (t.status == TaskStatus::Completed).then_some(t)
    })
    .await;
    assert_eq!(done.output_data, Some(json!({"hello": "world"})));
    assert_eq!(done.retry_count, 0);
    let health = health(&node).await;
    assert_eq!(health["redis"]["reachable"], json!(true));
    assert_eq!(health["worker"]["completedTotal"], json!(1));
    node.stop().await;
}

#[tokio::test]
async fn health_warns_when_redis_may_evict_tasks() {
    let redis = TestRedis::start();
    let _: () = fred::interfaces::ConfigInterface::config_set(
        &*raw_redis(&redis.url()).await,
        "maxmemory-policy",
        "allkeys-lru",
    )
    .await
    .unwrap();
    let node = TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await;
    let health = health(&node).await;
    assert_eq!(health["status"], json!("degraded"));
    assert_eq!(health["redis"]["maxmemoryPolicy"], json!("allkeys-lru"));
    assert!(
        health["redis"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("noeviction"))
    );
    node.stop().await;
}

async fn health(node: &TestNode) -> serde_json::Value {
    reqwest::get(node.url("/api/ai/tasks/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
