//! The REST task endpoints against a real node: happy paths, every error
//! status, limits, filters and paging, and that refused requests change
//! nothing.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use taskherd::api::ApiConfig;
use taskherd::auth::Role;
use taskherd::clock::Clock;
use taskherd::worker::{Registry, demo};

use crate::api_client::Api;
use crate::support::*;

/// A node without workers: tasks stay where the API puts them.
async fn api_node(redis: &TestRedis) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await
}

fn user(node: &TestNode, sub: &str) -> Api {
    Api::new(node, token(sub, Role::User, None))
}

async fn total_tasks(admin: &Api) -> u64 {
    admin.get("/api/ai/tasks/queue/status").await.expect(200)["totalTasks"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_task_is_created_read_cancelled_and_retried() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = user(&node, "alice@example.com");

    let task = alice
        .create(json!({"agentId": "writer", "taskType": "summarise",
                       "inputData": {"text": "hello"}, "estimatedCost": 0.05}))
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("task_"));
    assert_eq!(task["status"], "QUEUED");
    assert_eq!(task["priority"], "NORMAL");
    assert_eq!(task["ownerId"], "alice@example.com");
    assert_eq!(task["maxRetries"], 3);
    assert_eq!(task["retryCount"], 0);
    assert_eq!(task["inputData"], json!({"text": "hello"}));
    assert_eq!(task["estimatedCost"], json!(0.05));

    let read = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(read["id"], task["id"]);
    assert_eq!(read["createdAt"], task["createdAt"]);

    // Retry is only for ended tasks.
    alice
        .post_empty(&format!("/api/ai/tasks/{id}/retry"))
        .await
        .expect_error(409, "NOT_RETRYABLE");

    let cancelled = alice
        .put_empty(&format!("/api/ai/tasks/{id}/cancel"))
        .await
        .expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["errorMessage"], "cancelled by alice@example.com");
    alice
        .put_empty(&format!("/api/ai/tasks/{id}/cancel"))
        .await
        .expect_error(409, "ALREADY_TERMINAL");

    let retried = alice
        .post_empty(&format!("/api/ai/tasks/{id}/retry"))
        .await
        .expect(200);
    assert_eq!(retried["status"], "QUEUED");

    // The seeds' GET form still works.
    alice
        .put_empty(&format!("/api/ai/tasks/{id}/cancel"))
        .await
        .expect(200);
    let legacy = alice
        .get(&format!("/api/ai/tasks/{id}/retry"))
        .await
        .expect(200);
    assert_eq!(legacy["status"], "QUEUED");

    for missing in ["task_01JUNKJUNKJUNKJUNKJUNKJUNK", "not-a-task"] {
        alice
            .get(&format!("/api/ai/tasks/{missing}"))
            .await
            .expect_error(404, "TASK_NOT_FOUND");
        alice
            .put_empty(&format!("/api/ai/tasks/{missing}/cancel"))
            .await
            .expect_error(404, "TASK_NOT_FOUND");
        alice
            .post_empty(&format!("/api/ai/tasks/{missing}/retry"))
            .await
            .expect_error(404, "TASK_NOT_FOUND");
    }
    node.stop().await;
}

#[tokio::test]
async fn bad_task_input_is_refused_and_changes_nothing() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());

    let bad_bodies = [
        json!({"taskType": "t"}),
        json!({"agentId": "a", "taskType": "t", "status": "COMPLETED"}),
        json!({"agentId": "a", "taskType": "t", "ownerId": "mallory"}),
        json!({"agentId": "a", "taskType": "t", "retryCount": 2}),
        json!({"agentId": "a", "taskType": "t", "priority": "SUPER"}),
        json!({"agentId": "a{b}", "taskType": "t"}),
        json!({"agentId": "a*", "taskType": "t"}),
        json!({"agentId": "", "taskType": "t"}),
        json!({"agentId": "a".repeat(129), "taskType": "t"}),
        json!({"agentId": "a", "taskType": "t", "maxRetries": 101}),
        json!({"agentId": "a", "taskType": "t", "timeoutMs": 0}),
        json!({"agentId": "a", "taskType": "t", "estimatedCost": -1}),
        json!({"agentId": "a", "taskType": "t", "runAt": -5}),
        json!({"agentId": "a", "taskType": "t", "maxRetries": "three"}),
        json!({"agentId": "a", "taskType": false}),
        json!({"agentId": 7, "taskType": "t"}),
        json!({"agentId": "a", "taskType": "t", "idempotencyKey": "a b"}),
        json!({"agentId": "a", "taskType": "t", "inputData": {"x": "y".repeat(1024 * 1024 + 1)}}),
        json!([1, 2]),
    ];
    for body in bad_bodies {
        let answer = admin.post("/api/ai/tasks", body.clone()).await;
        assert_eq!(answer.status.as_u16(), 400, "{body:.200}: {}", answer.body);
        answer.expect_error(400, "VALIDATION_ERROR");
    }

    // Not JSON at all.
    let req = admin
        .request(reqwest::Method::POST, "/api/ai/tasks")
        .header("content-type", "application/json")
        .body("{bad json");
    Api::send(req).await.expect_error(400, "VALIDATION_ERROR");

    // Larger than the body limit (2 MiB): 413, announced or chunked.
    let huge = format!(
        "{{\"agentId\":\"a\",\"taskType\":\"t\",\"inputData\":\"{}\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let req = admin
        .request(reqwest::Method::POST, "/api/ai/tasks")
        .header("content-type", "application/json")
        .body(huge.clone());
    Api::send(req).await.expect_error(413, "PAYLOAD_TOO_LARGE");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = huge
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let req = admin
        .request(reqwest::Method::POST, "/api/ai/tasks")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    Api::send(req).await.expect_error(413, "PAYLOAD_TOO_LARGE");

    assert_eq!(
        total_tasks(&admin).await,
        0,
        "a refused request created a task"
    );
    // Unknown routes and methods use the same error body.
    admin
        .get("/api/ai/nothing-here/x")
        .await
        .expect_error(404, "NOT_FOUND");
    let wrong_method = admin.delete("/api/ai/tasks").await;
    assert_eq!(wrong_method.headers["allow"], "GET, POST");
    wrong_method.expect_error(405, "METHOD_NOT_ALLOWED");
    let wrong_method = admin.delete("/api/ai/tasks/task_x/cancel").await;
    assert_eq!(wrong_method.headers["allow"], "PUT");
    node.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_task() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = user(&node, "alice");
    let body = json!({"agentId": "a", "taskType": "t"});

    let first = Api::send(
        alice
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("Idempotency-Key", "order-42")
            .json(&body),
    )
    .await
    .expect(201);
    let again = Api::send(
        alice
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("Idempotency-Key", "order-42")
            .json(&body),
    )
    .await
    .expect(200);
    assert_eq!(first["id"], again["id"]);
    // The field works like the header.
    let by_field = alice
        .post(
            "/api/ai/tasks",
            json!({"agentId": "a", "taskType": "t", "idempotencyKey": "order-42"}),
        )
        .await
        .expect(200);
    assert_eq!(by_field["id"], first["id"]);
    // The header wins over the field.
    let header_wins = Api::send(
        alice
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("Idempotency-Key", "order-42")
            .json(&json!({"agentId": "a", "taskType": "t", "idempotencyKey": "order-2"})),
    )
    .await
    .expect(200);
    assert_eq!(header_wins["id"], first["id"]);
    // A malformed key is refused.
    Api::send(
        alice
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("Idempotency-Key", "a b")
            .json(&body),
    )
    .await
    .expect_error(400, "VALIDATION_ERROR");
    let admin = Api::new(&node, admin_token());
    assert_eq!(total_tasks(&admin).await, 1);
    node.stop().await;
}

#[tokio::test]
async fn a_batch_is_created_whole_or_not_at_all() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());

    let ok = admin
        .post(
            "/api/ai/tasks/batch",
            json!({"tasks": [
                {"agentId": "a", "taskType": "t", "priority": "LOW"},
                {"agentId": "b", "taskType": "t", "idempotencyKey": "k1"},
                {"agentId": "c", "taskType": "t", "inputData": [1, 2, 3]},
            ]}),
        )
        .await
        .expect(201);
    assert_eq!(ok["createdCount"], 3);
    assert_eq!(ok["existingCount"], 0);
    let agents: Vec<&str> = ok["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["a", "b", "c"]);

    let refused = admin
        .post(
            "/api/ai/tasks/batch",
            json!({"tasks": [
                {"agentId": "a", "taskType": "t"},
                {"agentId": "bad agent", "taskType": "t"},
                {"agentId": "a", "taskType": "t"},
                {"agentId": "a", "taskType": "t", "maxRetries": 1000},
            ]}),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let items = refused["error"]["details"]["items"].as_array().unwrap();
    let indexes: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert!(indexes.contains(&1), "{refused}");
    assert_eq!(
        total_tasks(&admin).await,
        3,
        "a refused batch created tasks"
    );

    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"agentId": "a", "taskType": "t"}))
        .collect();
    admin
        .post("/api/ai/tasks/batch", json!({ "tasks": too_many }))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    admin
        .post("/api/ai/tasks/batch", json!({ "tasks": [] }))
        .await
        .expect_error(400, "VALIDATION_ERROR");
    // A repeat of an idempotent item reports it as existing.
    let repeat = admin
        .post(
            "/api/ai/tasks/batch",
            json!({"tasks": [{"agentId": "b", "taskType": "t", "idempotencyKey": "k1"}]}),
        )
        .await
        .expect(201);
    assert_eq!(repeat["existingCount"], 1);
    assert_eq!(repeat["tasks"][0]["id"], ok["tasks"][1]["id"]);
    assert_eq!(total_tasks(&admin).await, 3);
    node.stop().await;
}

#[tokio::test]
async fn lists_filter_page_and_count_correctly() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = user(&node, "alice");
    let priorities = ["URGENT", "HIGH", "NORMAL", "LOW"];
    let mut ids = Vec::new();
    for i in 0..25 {
        let t = alice
            .create(json!({
                "agentId": if i % 2 == 0 { "even" } else { "odd" },
                "taskType": if i % 3 == 0 { "three" } else { "other" },
                "priority": priorities[i % 4],
            }))
            .await;
        ids.push(t["id"].as_str().unwrap().to_string());
    }
    // Cancel five so statuses differ.
    for id in &ids[..5] {
        alice
            .put_empty(&format!("/api/ai/tasks/{id}/cancel"))
            .await
            .expect(200);
    }

    let page = alice.get("/api/ai/tasks?limit=10").await.expect(200);
    assert_eq!(page["totalCount"], 25);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(page["currentPage"], 1);
    assert_eq!(page["hasNextPage"], true);
    let first: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let newest: Vec<&str> = ids.iter().rev().take(10).map(String::as_str).collect();
    assert_eq!(first, newest, "newest first");

    let last = alice.get("/api/ai/tasks?limit=10&page=3").await.expect(200);
    assert_eq!(last["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(last["hasNextPage"], false);

    // The cursor walks every task once.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/ai/tasks?limit=7&cursor={c}"),
            None => "/api/ai/tasks?limit=7".to_string(),
        };
        let page = alice.get(&path).await.expect(200);
        for t in page["tasks"].as_array().unwrap() {
            assert!(seen.insert(t["id"].as_str().unwrap().to_string()));
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);

    let count = |q: &'static str| {
        let alice = alice.clone();
        async move {
            alice.get(&format!("/api/ai/tasks?{q}")).await.expect(200)["totalCount"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(count("status=CANCELLED").await, 5);
    assert_eq!(count("status=QUEUED").await, 20);
    assert_eq!(count("agentId=even").await, 13);
    assert_eq!(count("taskType=three").await, 9);
    assert_eq!(count("priority=URGENT").await, 7);
    assert_eq!(count("agentId=odd&priority=HIGH&status=QUEUED").await, 5);
    let created: Vec<i64> = {
        let all = alice.get("/api/ai/tasks?limit=100").await.expect(200);
        all["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["createdAt"].as_i64().unwrap())
            .collect()
    };
    let newest_ms = created.iter().max().unwrap();
    let q = format!("/api/ai/tasks?startDate={newest_ms}&endDate={newest_ms}");
    let at_newest = created.iter().filter(|c| *c == newest_ms).count() as u64;
    assert_eq!(
        alice.get(&q).await.expect(200)["totalCount"],
        json!(at_newest)
    );
    // Year 2000, and an empty range (end before start): nothing matches.
    for q in [
        "startDate=946684800000&endDate=946771200000",
        "startDate=946771200000&endDate=946684800000",
    ] {
        let page = alice.get(&format!("/api/ai/tasks?{q}")).await.expect(200);
        assert_eq!(page["totalCount"], 0, "{q}");
    }

    for bad in [
        "limit=101",
        "limit=0",
        "page=0",
        "status=DONE",
        "priority=MEGA",
        "startDate=yesterday",
        // RFC 3339 needs a valid time and an offset (accepted forms: api_spec.rs).
        "startDate=2000-01-02T24:00:00Z",
        "startDate=2000-01-02T00:00:00",
        "startDate=2000-01-02",
        "startDate=-1",
        "page=101",
        "cursor=garbage",
        "agentId=a%7Bb%7D",
    ] {
        let answer = alice.get(&format!("/api/ai/tasks?{bad}")).await;
        assert_eq!(answer.status.as_u16(), 400, "{bad}: {}", answer.body);
        answer.expect_error(400, "VALIDATION_ERROR");
    }
    node.stop().await;
}

#[tokio::test]
async fn queue_status_statistics_and_nodes_describe_the_work() {
    let redis = TestRedis::start();
    let mut registry = Registry::new();
    demo::register(&mut registry);
    let node = TestNode::with_workers(&redis.url(), "api-n1", 4, registry).await;
    let alice = user(&node, "alice");
    let done = alice
        .create(json!({"agentId": "echo", "taskType": "greet", "inputData": {"hi": 1}}))
        .await;
    let id = done["id"].as_str().unwrap().to_string();
    let finished = wait_until("echo task completes", Duration::from_secs(10), || {
        let alice = alice.clone();
        let id = id.clone();
        async move {
            let t = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
            (t["status"] == "COMPLETED").then_some(t)
        }
    })
    .await;
    assert_eq!(finished["outputData"], json!({"hi": 1}));
    alice
        .create(json!({"agentId": "nobody-runs-this", "taskType": "t", "priority": "HIGH"}))
        .await;

    let status = alice.get("/api/ai/tasks/queue/status").await.expect(200);
    assert_eq!(status["totalTasks"], 2);
    assert_eq!(status["completedTasks"], 1);
    assert_eq!(status["queuedTasks"], 1);
    assert_eq!(status["readyByPriority"]["HIGH"], 1);
    assert_eq!(status["queueHealth"], "healthy");
    let waiting = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agentId"] == "nobody-runs-this")
        .expect("an agent without workers shows up");
    assert_eq!(waiting["byStatus"]["QUEUED"], 1);

    let stats = alice
        .get("/api/ai/tasks/statistics/summary?agentId=echo")
        .await
        .expect(200);
    assert_eq!(stats["completedTasks"], 1);
    assert_eq!(stats["totalTasks"], 1);
    assert_eq!(stats["successRate"], json!(100.0));
    assert_eq!(stats["byTaskType"]["greet"]["completed"], 1);
    alice
        .get("/api/ai/tasks/statistics/summary?startDate=2020-01-01T00:00:00")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    // A range longer than 366 days counts its last 366 days.
    let long = alice
        .get("/api/ai/tasks/statistics/summary?startDate=0")
        .await
        .expect(200);
    let days = (long["toMs"].as_i64().unwrap() - long["fromMs"].as_i64().unwrap()) / 86_400_000;
    assert_eq!(days, 365);
    assert_eq!(long["completedTasks"], 1);

    let nodes = alice.get("/api/ai/nodes").await.expect(200);
    let listed = nodes["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["nodeId"], "api-n1");
    assert_eq!(listed[0]["roles"], json!(["api", "worker", "maintenance"]));
    node.stop().await;
}

#[tokio::test]
async fn admins_clean_up_old_tasks_and_time_out_stale_attempts() {
    let redis = TestRedis::start();
    let clock = Clock::manual(T0_MS);
    // No maintenance: only the admin operations end attempts here.
    let mut config = node_config(&redis.url(), None, clock.clone());
    config.maintenance = None;
    let node = TestNode::start(config, Registry::new()).await;
    let admin = Api::new(&node, admin_token());
    let old = admin.create(json!({"agentId": "a", "taskType": "t"})).await;
    let old_id = old["id"].as_str().unwrap().to_string();
    admin
        .put_empty(&format!("/api/ai/tasks/{old_id}/cancel"))
        .await
        .expect(200);
    let running = admin
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let claimed = admin
        .post("/api/ai/agents/ext/claim", json!({"leaseMs": 600000}))
        .await
        .expect(200);
    assert_eq!(claimed["tasks"][0]["id"], running["id"]);

    clock.advance(Duration::from_secs(8 * 86_400));
    let cleaned = admin
        .post_empty("/api/ai/tasks/cleanup/old")
        .await
        .expect(200);
    assert_eq!(cleaned["deletedCount"], 1);
    assert_eq!(cleaned["retentionDays"], 7);
    admin
        .get(&format!("/api/ai/tasks/{old_id}"))
        .await
        .expect_error(404, "TASK_NOT_FOUND");

    // 8 days passed: the first claim's lease is over (the reaper's rule).
    let stale = admin
        .post_empty("/api/ai/tasks/cleanup/timeout-stale")
        .await
        .expect(200);
    assert_eq!(
        stale["timedOutCount"], 1,
        "the reaper's rule: lease expired"
    );
    let fresh = admin
        .create(json!({"agentId": "ext2", "taskType": "t"}))
        .await;
    admin
        .post("/api/ai/agents/ext2/claim", json!({"leaseMs": 600000}))
        .await
        .expect(200);
    // 60 s later neither its lease (600 s) nor its timeoutMs (1 h) is over:
    // only an explicit age ends it.
    clock.advance(Duration::from_secs(60));
    let none = admin
        .post_empty("/api/ai/tasks/cleanup/timeout-stale")
        .await
        .expect(200);
    assert_eq!(none["timedOutCount"], 0);
    let by_age = admin
        .post_empty("/api/ai/tasks/cleanup/timeout-stale?timeoutMs=30000")
        .await
        .expect(200);
    assert_eq!(by_age["timedOutCount"], 1);
    let after = admin
        .get(&format!("/api/ai/tasks/{}", fresh["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(after["status"], "QUEUED", "retried: attempts remain");
    assert_eq!(after["retryCount"], 1);
    admin
        .post_empty("/api/ai/tasks/cleanup/timeout-stale?timeoutMs=0")
        .await
        .expect_error(400, "VALIDATION_ERROR");
    node.stop().await;
}

#[tokio::test]
async fn agents_are_created_updated_listed_and_deleted() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let body = json!({"name": "Writer", "type": "llm", "kind": "EXTERNAL", "concurrency": 3});
    let created = admin
        .put("/api/ai/agents/writer", body.clone())
        .await
        .expect(201);
    assert_eq!(created["id"], "writer");
    assert_eq!(created["type"], "llm");
    let updated = admin
        .put(
            "/api/ai/agents/writer",
            json!({"name": "Writer 2", "kind": "EXTERNAL"}),
        )
        .await
        .expect(200);
    assert_eq!(updated["name"], "Writer 2");
    assert_eq!(
        admin.get("/api/ai/agents/writer").await.expect(200),
        updated
    );
    let list = admin.get("/api/ai/agents").await.expect(200);
    assert_eq!(list["agents"].as_array().unwrap().len(), 1);

    for bad in [
        json!({"kind": "HTTP"}),
        json!({"kind": "HTTP", "endpoint": "ftp://x"}),
        json!({"kind": "ROBOT"}),
        json!({"concurrency": 0}),
        json!({"id": "other"}),
    ] {
        let answer = admin.put("/api/ai/agents/writer", bad.clone()).await;
        assert_eq!(answer.status.as_u16(), 400, "{bad}: {}", answer.body);
    }
    admin
        .put("/api/ai/agents/bad%7Bid%7D", json!({}))
        .await
        .expect_error(400, "VALIDATION_ERROR");

    admin.delete("/api/ai/agents/writer").await.expect(204);
    admin
        .delete("/api/ai/agents/writer")
        .await
        .expect_error(404, "AGENT_NOT_FOUND");
    admin
        .get("/api/ai/agents/writer")
        .await
        .expect_error(404, "AGENT_NOT_FOUND");
    node.stop().await;
}

#[tokio::test]
async fn responses_carry_request_ids_and_cors_follows_frontend_url() {
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api = ApiConfig {
        cors_origins: vec!["http://app.example".into()],
        ..config.api
    };
    let node = TestNode::start(config, Registry::new()).await;
    let admin = Api::new(&node, admin_token());

    let mine = Api::send(
        admin
            .request(reqwest::Method::GET, "/api/ai/tasks")
            .header("x-request-id", "client-id-1"),
    )
    .await;
    assert_eq!(mine.headers["x-request-id"], "client-id-1");
    let bad = Api::send(
        admin
            .request(reqwest::Method::GET, "/api/ai/tasks")
            .header("x-request-id", "has spaces and {braces}"),
    )
    .await;
    let generated = bad.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 26, "a ULID replaces a malformed id");
    let a = admin.get("/api/ai/tasks").await;
    let b = admin.get("/api/ai/tasks").await;
    assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"]);

    let preflight = |origin: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .request(reqwest::Method::OPTIONS, "/api/ai/tasks")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("http://app.example").await;
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let denied = preflight("http://evil.example").await;
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // A foreign origin's request is refused in the project's error format;
    // the node's own origin (its pages: GraphiQL) needs no CORS.
    let foreign = Api::send(
        admin
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("origin", "http://evil.example")
            .json(&json!({"agentId": "a", "taskType": "t"})),
    )
    .await;
    assert_eq!(foreign.status.as_u16(), 403);
    assert_eq!(
        foreign.body["error"]["code"], "FORBIDDEN",
        "{}",
        foreign.body
    );
    let own = Api::send(
        admin
            .request(reqwest::Method::POST, "/api/ai/tasks")
            .header("origin", format!("http://{}", node.addr))
            .json(&json!({"agentId": "a", "taskType": "t"})),
    )
    .await;
    assert_eq!(own.status.as_u16(), 201, "{}", own.body);
    node.stop().await;
}

#[tokio::test]
async fn the_spec_documents_every_operation_and_the_docs_are_served() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let anon = Api::anonymous(&node);
    let spec = anon.get("/api/openapi.json").await.expect(200);
    assert!(spec["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{method} {path}");
            assert!(op["summary"].is_string(), "{what}: no summary");
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what}: no tag"
            );
            assert!(op["operationId"].is_string(), "{what}: no operationId");
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/api/ai/tasks/health") {
                assert!(op.get("security").is_none(), "{what} needs no token");
                continue;
            }
            assert!(op["security"].is_array(), "{what}: no security");
            for status in ["401", "429", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{what}: {status} undocumented"
                );
                let schema = &responses[status]["content"]["application/json; charset=utf-8"]["schema"]
                    ["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{what} {status}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413"] {
                    assert!(
                        responses.contains_key(status),
                        "{what}: {status} undocumented"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 25, "operations in the spec");
    // Request bodies are closed, and task limits are in the schema.
    let create = &spec["components"]["schemas"]["CreateTaskRequest"];
    assert_eq!(create["additionalProperties"], false);
    assert_eq!(
        create["properties"]["agentId"]["pattern"],
        "^[A-Za-z0-9_.-]+$"
    );
    assert_eq!(create["properties"]["agentId"]["maxLength"], 128);
    assert_eq!(create["properties"]["maxRetries"]["nullable"], true);
    assert_eq!(create["properties"]["maxRetries"]["maximum"], 100);
    for closed in ["ClaimRequest", "StartRequest"] {
        assert_eq!(
            spec["components"]["schemas"][closed]["additionalProperties"], false,
            "{closed}"
        );
    }
    assert_eq!(
        spec["paths"]["/api/ai/tasks/{id}/retry"]["get"]["deprecated"],
        true
    );
    let docs = anon
        .request(reqwest::Method::GET, "/api/docs/")
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "the docs page is Swagger UI");
    node.stop().await;
}

#[tokio::test]
async fn probes_separate_liveness_from_readiness() {
    let mut redis = TestRedis::start();
    let node = api_node(&redis).await;
    let anon = Api::anonymous(&node);
    assert_eq!(
        anon.get("/api/ai/tasks/health/live").await.expect(200)["status"],
        "alive"
    );
    assert_eq!(
        anon.get("/api/ai/tasks/health/ready").await.expect(200)["status"],
        "ready"
    );

    let port = redis.redis.port();
    let dir = redis.data_dir();
    redis.redis.stop();
    let ready = anon.get("/api/ai/tasks/health/ready").await.expect(503);
    assert_eq!(ready["reason"], "redis unreachable");
    anon.get("/api/ai/tasks/health/live").await.expect(200);
    anon.get("/api/ai/tasks/health").await.expect(503);

    // With Redis known to be away, calls that need it answer 503 at once
    // instead of queueing for the 10 s command timeout, and a scrape still
    // answers with the node's own series.
    let admin = Api::new(&node, admin_token());
    let at_once = Duration::from_secs(5);
    let started = std::time::Instant::now();
    admin
        .get("/api/ai/tasks/task_01JAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .expect_error(503, "REDIS_UNAVAILABLE");
    admin
        .post("/api/ai/tasks", json!({"agentId": "a", "taskType": "t"}))
        .await
        .expect_error(503, "REDIS_UNAVAILABLE");
    admin
        .get("/api/ai/tasks/statistics/summary")
        .await
        .expect_error(503, "REDIS_UNAVAILABLE");
    let scrape = admin
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(
        started.elapsed() < at_once,
        "four calls during the outage took {:?}",
        started.elapsed()
    );

    redis.redis = taskherd::local_redis::LocalRedis::start_on(&dir, port).unwrap();
    wait_until("ready again", Duration::from_secs(10), || {
        let anon = anon.clone();
        async move {
            let a = anon.get("/api/ai/tasks/health/ready").await;
            (a.status == 200).then_some(())
        }
    })
    .await;
    node.stop().await;
}
