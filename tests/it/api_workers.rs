//! External workers speaking only HTTP: claim, start, heartbeat, complete,
//! fail, the lease fence, long-polling, and the rate limit shared by nodes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskherd::auth::Role;
use taskherd::clock::Clock;
use taskherd::worker::Registry;

use crate::api_client::Api;
use crate::support::*;

async fn api_node(redis: &TestRedis) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await
}

fn worker(node: &TestNode, sub: &str, agent: &str) -> Api {
    Api::new(node, token(sub, Role::Worker, Some(agent)))
}

#[tokio::test]
async fn an_http_worker_claims_heartbeats_and_completes() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, token("alice", Role::User, None));
    let w = worker(&node, "w1", "ext");
    let task = alice
        .create(json!({"agentId": "ext", "taskType": "translate", "inputData": {"text": "hallo"}}))
        .await;
    let id = task["id"].as_str().unwrap();

    let claimed = w
        .post(
            "/api/ai/agents/ext/claim",
            json!({"maxTasks": 5, "leaseMs": 5000}),
        )
        .await
        .expect(200);
    let leased = &claimed["tasks"].as_array().unwrap()[..];
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["id"], id);
    assert_eq!(leased[0]["inputData"], json!({"text": "hallo"}));
    let lease_token = leased[0]["token"].as_str().unwrap().to_string();
    let processing = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(processing["status"], "PROCESSING");
    assert_eq!(processing["workerId"], "w1");

    let beat = w
        .post(
            &format!("/api/ai/tasks/{id}/heartbeat"),
            json!({"token": lease_token, "leaseMs": 10000}),
        )
        .await
        .expect(200);
    assert_eq!(beat["held"], true);

    // Metrics past 2^53 - 1 (the spec's maximum) are refused; the task keeps running.
    for metrics in [
        json!({"durationMs": 9_007_199_254_740_992u64}),
        json!({"tokensIn": 9_007_199_254_740_992u64}),
        json!({"durationMs": 1.6e33}),
    ] {
        w.post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": lease_token, "metrics": metrics}),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    }
    let still = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(still["status"], "PROCESSING");

    let done = w
        .post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": lease_token, "outputData": {"text": "hello"},
                   "actualCost": 0.02, "qualityScore": 0.9,
                   "metrics": {"tokensIn": 12, "tokensOut": 9}}),
        )
        .await
        .expect(200);
    assert_eq!(done["status"], "COMPLETED");
    let seen = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(seen["outputData"], json!({"text": "hello"}));
    assert_eq!(seen["actualCost"], json!(0.02));
    assert_eq!(seen["metrics"]["tokensIn"], 12);

    // A repeat with the same token (a retry after a lost reply) is answered
    // with the stored result; another token is refused.
    let again = w
        .post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": lease_token, "outputData": "ignored"}),
        )
        .await
        .expect(200);
    assert_eq!(again["outputData"], json!({"text": "hello"}));
    w.post(
        &format!("/api/ai/tasks/{id}/complete"),
        json!({"token": "01JUNKJUNKJUNKJUNKJUNKJUNK"}),
    )
    .await
    .expect_error(409, "LEASE_MISMATCH");
    // Nothing else is ready.
    let empty = w
        .post("/api/ai/agents/ext/claim", json!({}))
        .await
        .expect(200);
    assert_eq!(empty["tasks"], json!([]));
    node.stop().await;
}

#[tokio::test]
async fn an_http_worker_starts_a_named_task_and_completes_it() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, token("alice", Role::User, None));
    let w = worker(&node, "w1", "ext");
    let oldest = alice
        .create(json!({"agentId": "ext", "taskType": "t", "inputData": {"n": 1}}))
        .await;
    let named = alice
        .create(
            json!({"agentId": "ext", "taskType": "t", "inputData": {"n": 2}, "priority": "LOW"}),
        )
        .await;
    let id = named["id"].as_str().unwrap();
    let path = format!("/api/ai/tasks/{id}/start");

    // Bad bodies, other agents' workers and users change nothing.
    for body in [
        json!({"leaseMs": 10}),
        json!({"workerId": "a b"}),
        json!({"extra": 1}),
    ] {
        w.post(&path, body)
            .await
            .expect_error(400, "VALIDATION_ERROR");
    }
    worker(&node, "w2", "other")
        .post(&path, json!({}))
        .await
        .expect_error(404, "TASK_NOT_FOUND");
    alice
        .post(&path, json!({}))
        .await
        .expect_error(403, "FORBIDDEN");
    let unknown = format!("/api/ai/tasks/{}/start", taskherd::task::new_task_id());
    w.post(&unknown, json!({}))
        .await
        .expect_error(404, "TASK_NOT_FOUND");
    let queued = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(queued["status"], "QUEUED");

    let leased = w
        .post(&path, json!({"leaseMs": 5000, "workerId": "w1-a"}))
        .await
        .expect(200);
    assert_eq!(leased["id"], id);
    assert_eq!(leased["inputData"], json!({"n": 2}));
    let lease_token = leased["token"].as_str().unwrap().to_string();
    let running = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(running["status"], "PROCESSING");
    assert_eq!(running["workerId"], "w1-a");
    w.post(&path, json!({}))
        .await
        .expect_error(409, "TASK_NOT_READY");

    // A claim takes the other task; the start's token completes the named one.
    let claimed = w
        .post("/api/ai/agents/ext/claim", json!({}))
        .await
        .expect(200);
    assert_eq!(claimed["tasks"][0]["id"], oldest["id"]);
    let done = w
        .post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": lease_token, "outputData": {"ok": true}}),
        )
        .await
        .expect(200);
    assert_eq!(done["status"], "COMPLETED");
    w.post(&path, json!({}))
        .await
        .expect_error(409, "TASK_NOT_READY");
    node.stop().await;
}

#[tokio::test]
async fn a_worker_that_stops_heartbeating_loses_the_task_and_its_token() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let slow = worker(&node, "slow", "ext");
    let fast = worker(&node, "fast", "ext");
    let task = admin
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();

    let first = slow
        .post("/api/ai/agents/ext/claim", json!({"leaseMs": 1000}))
        .await
        .expect(200);
    let stale_token = first["tasks"][0]["token"].as_str().unwrap().to_string();
    // The slow worker goes quiet; the reaper hands the task back and the
    // fast worker gets it (long-poll until it is ready again).
    let second = wait_until(
        "the task is claimable again",
        Duration::from_secs(10),
        || {
            let fast = fast.clone();
            async move {
                let c = fast
                    .post(
                        "/api/ai/agents/ext/claim",
                        json!({"waitMs": 500, "leaseMs": 10000}),
                    )
                    .await
                    .expect(200);
                (!c["tasks"].as_array().unwrap().is_empty()).then_some(c)
            }
        },
    )
    .await;
    assert_eq!(second["tasks"][0]["id"], id.as_str());
    assert_eq!(
        second["tasks"][0]["retryCount"], 1,
        "the lost lease cost an attempt"
    );
    let fresh_token = second["tasks"][0]["token"].as_str().unwrap().to_string();
    assert_ne!(fresh_token, stale_token);

    for path in ["complete", "heartbeat"] {
        slow.post(
            &format!("/api/ai/tasks/{id}/{path}"),
            json!({"token": stale_token}),
        )
        .await
        .expect_error(409, "LEASE_MISMATCH");
    }
    slow.post(
        &format!("/api/ai/tasks/{id}/fail"),
        json!({"token": stale_token, "errorMessage": "late"}),
    )
    .await
    .expect_error(409, "LEASE_MISMATCH");

    let done = fast
        .post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": fresh_token, "outputData": "ok"}),
        )
        .await
        .expect(200);
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["outputData"], "ok");
    node.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_until_a_permanent_failure() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let w = worker(&node, "w", "ext");
    let admin = Api::new(&node, admin_token());
    let task = admin
        .create(json!({"agentId": "ext", "taskType": "t", "maxRetries": 5}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();

    let claim = w
        .post("/api/ai/agents/ext/claim", json!({}))
        .await
        .expect(200);
    let t1 = claim["tasks"][0]["token"].as_str().unwrap().to_string();
    let after = w
        .post(
            &format!("/api/ai/tasks/{id}/fail"),
            json!({"token": t1, "errorMessage": "model overloaded"}),
        )
        .await
        .expect(200);
    assert_eq!(after["status"], "QUEUED");
    assert_eq!(after["retryCount"], 1);
    assert_eq!(after["errorMessage"], "model overloaded");

    // After the backoff (50 ms in tests) the task is ready again.
    let claim = w
        .post("/api/ai/agents/ext/claim", json!({"waitMs": 5000}))
        .await
        .expect(200);
    let t2 = claim["tasks"][0]["token"].as_str().unwrap().to_string();
    let failed = w
        .post(
            &format!("/api/ai/tasks/{id}/fail"),
            json!({"token": t2, "errorMessage": "bad input", "retryable": false}),
        )
        .await
        .expect(200);
    assert_eq!(failed["status"], "FAILED");

    // Bad bodies.
    for body in [
        json!({"errorMessage": "no token"}),
        json!({"token": t2}),
        json!({"token": t2, "errorMessage": "x", "extra": 1}),
    ] {
        w.post(&format!("/api/ai/tasks/{id}/fail"), body)
            .await
            .expect_error(400, "VALIDATION_ERROR");
    }
    for body in [
        json!({"maxTasks": 0}),
        json!({"maxTasks": 101}),
        json!({"waitMs": 30001}),
        json!({"leaseMs": 10}),
        json!({"workerId": "a b"}),
    ] {
        let answer = w.post("/api/ai/agents/ext/claim", body.clone()).await;
        assert_eq!(answer.status.as_u16(), 400, "{body}: {}", answer.body);
    }
    node.stop().await;
}

#[tokio::test]
async fn a_long_polling_claim_is_woken_by_a_new_task() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let w = worker(&node, "w", "ext");
    let admin = Api::new(&node, admin_token());

    // Nothing arrives: the claim answers empty once the wait is over.
    let started = Instant::now();
    let empty = w
        .post("/api/ai/agents/ext/claim", json!({"waitMs": 300}))
        .await
        .expect(200);
    assert_eq!(empty["tasks"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A task created while the claim waits is handed to it.
    let waiting = {
        let w = w.clone();
        tokio::spawn(async move {
            w.post("/api/ai/agents/ext/claim", json!({"waitMs": 20000}))
                .await
                .expect(200)
        })
    };
    let created = admin
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let claimed = waiting.await.unwrap();
    assert_eq!(claimed["tasks"][0]["id"], created["id"]);
    node.stop().await;
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_all_nodes() {
    let redis = TestRedis::start();
    let start = |limit: u32| {
        let url = redis.url();
        async move {
            let mut config = node_config(&url, None, Clock::redis());
            config.api.rate_limit_per_s = limit;
            TestNode::start(config, Registry::new()).await
        }
    };
    let a = start(5).await;
    let b = start(5).await;
    let tok = token("busy", Role::User, None);
    let on_a = Api::new(&a, tok.clone());
    let on_b = Api::new(&b, tok);

    let second = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let first_window = second();
    let answers = futures::future::join_all((0..60).map(|i| {
        let api = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        async move { api.get("/api/ai/tasks").await }
    }))
    .await;
    let windows = second() - first_window + 1;
    let ok = answers.iter().filter(|a| a.status == 200).count() as u64;
    let limited: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok + limited.len() as u64, 60, "only 200 and 429 expected");
    assert!(ok >= 5, "the first five pass");
    // Each node admits at most the limit per window on its own (before its
    // counts reach Redis, every 50 ms), so two nodes at most twice that.
    assert!(
        ok <= 2 * 5 * windows,
        "{ok} requests passed in {windows} one-second window(s) across two nodes"
    );
    // That both nodes count into the same Redis keys is shown by the unit
    // test `nodes_share_the_count_through_redis` in src/api/ratelimit.rs.
    let refused = limited.first().expect("some requests were limited");
    assert_eq!(refused.code(), "RATE_LIMITED");
    assert_eq!(refused.headers["retry-after"], "1");

    // Another principal has its own budget.
    let other = Api::new(&a, token("calm", Role::User, None));
    other.get("/api/ai/tasks").await.expect(200);
    // Health needs no token and is not limited.
    Api::anonymous(&a)
        .get("/api/ai/tasks/health")
        .await
        .expect(200);
    a.stop().await;
    b.stop().await;
}
