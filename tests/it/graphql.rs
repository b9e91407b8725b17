//! The GraphQL API at `/graphql` against a real node: the same rules,
//! errors and results as REST.

use serde_json::{Value, json};
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

/// POSTs `query` (with `variables`) as `token` (none: anonymous); the
/// status and the body.
async fn gql(node: &TestNode, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut req = http_client()
        .post(node.url("/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

#[test]
fn the_schema_file_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let sdl = taskherd::api::graphql::sdl();
    if std::env::var_os("TASKHERD_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        file == sdl,
        "schema.graphql is not the served schema: run `TASKHERD_WRITE_SCHEMA=1 cargo test --test it the_schema_file_is_current`"
    );
}

const GET_TASKS: &str = r#"
query GetTasks {
  aiTasks(
    filter: { status: QUEUED, priority: HIGH }
    pagination: { page: 1, limit: 20 }
  ) {
    tasks {
      id
      taskType
      status
      priority
      createdAt
      agent {
        name
        type
      }
    }
    totalCount
    pageInfo {
      hasNextPage
      currentPage
      totalPages
    }
  }
}"#;

#[tokio::test]
async fn queries_answer_what_rest_answers_under_the_same_rules() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    admin
        .put(
            "/api/ai/agents/writer",
            json!({"name": "Writer", "type": "llm"}),
        )
        .await;
    let alice_token = token("alice", Role::User, None);
    let alice = Api::new(&node, alice_token.clone());
    let mut alices = Vec::new();
    for (agent, priority) in [("writer", "HIGH"), ("writer", "HIGH"), ("reader", "LOW")] {
        alices.push(
            alice
                .create(json!({"agentId": agent, "taskType": "summarise", "inputData": {"n": 1}, "priority": priority}))
                .await,
        );
    }
    let bobs = Api::new(&node, token("bob", Role::User, None))
        .create(json!({"agentId": "writer", "taskType": "summarise", "inputData": {}, "priority": "HIGH"}))
        .await;

    // The seeds' GetTasks, unchanged: alice's two HIGH tasks, newest first,
    // with their agent resolved.
    let (status, body) = gql(&node, Some(&alice_token), GET_TASKS, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let page = &body["data"]["aiTasks"];
    let rest = alice
        .get("/api/ai/tasks?status=QUEUED&priority=HIGH&page=1&limit=20")
        .await
        .expect(200);
    assert_eq!(page["totalCount"], rest["totalCount"]);
    assert_eq!(page["totalCount"], 2);
    let ids: Vec<&Value> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    let rest_ids: Vec<&Value> = rest["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(ids, rest_ids);
    assert_eq!(
        page["tasks"][0]["agent"],
        json!({"name": "Writer", "type": "llm"})
    );
    assert_eq!(page["tasks"][0]["status"], "QUEUED");
    assert_eq!(page["tasks"][0]["priority"], "HIGH");
    assert_eq!(page["tasks"][0]["createdAt"], alices[1]["createdAt"]);
    assert_eq!(
        page["pageInfo"],
        json!({"hasNextPage": false, "currentPage": 1, "totalPages": 1})
    );

    // One task: hers with every field; bob's is null, like a missing one.
    let one = "query($id: ID!) { aiTask(id: $id) { id agentId inputData ownerId status isTerminal agent { id } } }";
    let (_, own) = gql(
        &node,
        Some(&alice_token),
        one,
        json!({"id": alices[2]["id"]}),
    )
    .await;
    let t = &own["data"]["aiTask"];
    assert_eq!(t["id"], alices[2]["id"]);
    assert_eq!(t["inputData"], json!({"n": 1}));
    assert_eq!(t["ownerId"], "alice");
    assert_eq!(t["isTerminal"], false);
    assert_eq!(t["agent"], Value::Null, "reader has no agent record");
    for id in [
        bobs["id"].clone(),
        json!("task_01J0000000000000000000000Z"),
        json!("nope"),
    ] {
        let (status, theirs) = gql(&node, Some(&alice_token), one, json!({"id": id})).await;
        assert_eq!(status, 200);
        assert_eq!(theirs["data"]["aiTask"], Value::Null, "{theirs}");
        assert!(theirs["errors"].is_null(), "{theirs}");
    }
    // The admin sees bob's.
    let (_, seen) = gql(&node, Some(&admin_token()), one, json!({"id": bobs["id"]})).await;
    assert_eq!(seen["data"]["aiTask"]["ownerId"], "bob");

    // Queue status: the REST numbers.
    let (_, q) = gql(
        &node,
        Some(&alice_token),
        "{ taskQueueStatus { totalTasks queuedTasks queueHealth agents { agentId } } }",
        json!({}),
    )
    .await;
    let rest = admin.get("/api/ai/tasks/queue/status").await.expect(200);
    assert_eq!(
        q["data"]["taskQueueStatus"]["totalTasks"],
        rest["totalTasks"]
    );
    assert_eq!(q["data"]["taskQueueStatus"]["queuedTasks"], 4);
    assert_eq!(
        q["data"]["taskQueueStatus"]["queueHealth"],
        rest["queueHealth"]
    );

    // Statistics: REST's numbers for the same filter.
    let (_, st) = gql(
        &node,
        Some(&alice_token),
        "{ taskStatistics(filter: {agentId: \"writer\"}) { totalTasks successRate byAgent { key created } from to } }",
        json!({}),
    )
    .await;
    let rest = alice
        .get("/api/ai/tasks/statistics/summary?agentId=writer")
        .await
        .expect(200);
    let st = &st["data"]["taskStatistics"];
    assert_eq!(st["totalTasks"], rest["totalTasks"], "{st}");
    assert_eq!(st["totalTasks"], 3);
    assert_eq!(st["byAgent"], json!([{"key": "writer", "created": 3}]));
    assert_eq!(st["from"], rest["fromMs"]);
    assert_eq!(st["to"], rest["toMs"]);
    node.stop().await;
}

#[tokio::test]
async fn tokens_roles_and_limits_are_those_of_rest() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let q = "{ aiTasks { totalCount } }";
    let (status, body) = gql(&node, None, q, json!({})).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHORIZED"), "{body}");
    assert_eq!(body["errors"][0]["message"], "missing bearer token");
    let (status, body) = gql(&node, Some("not-a-token"), q, json!({})).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHORIZED"));
    // A metrics token reads no tasks: the REST refusal, as a field error.
    let (status, body) = gql(&node, Some(&token("p", Role::Metrics, None)), q, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert_eq!(body["data"], Value::Null);
    // A worker lists its agent's tasks only.
    Api::new(&node, admin_token())
        .create(json!({"agentId": "writer", "taskType": "t", "inputData": {}}))
        .await;
    Api::new(&node, admin_token())
        .create(json!({"agentId": "reader", "taskType": "t", "inputData": {}}))
        .await;
    let (_, body) = gql(
        &node,
        Some(&token("w", Role::Worker, Some("writer"))),
        q,
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["aiTasks"]["totalCount"], 1);
    // Bad arguments: the REST validation.
    let (_, body) = gql(
        &node,
        Some(&admin_token()),
        "{ aiTasks(pagination: {limit: 500}) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    let (_, body) = gql(
        &node,
        Some(&admin_token()),
        "{ aiTasks(filter: {agentId: \"no such/agent\"}) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");

    // Depth and complexity are limited. Introspection alone may nest
    // deeper (GraphiQL's query goes 13 levels), up to 15.
    let nested = |levels: usize| {
        format!(
            "__schema {{ types {{ fields {{ type {{ {}name{} }} }} }} }}",
            "ofType { ".repeat(levels),
            " }".repeat(levels)
        )
    };
    let too_deep = |body: &Value| {
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nested too deep")
            && code(body) == "VALIDATION_ERROR"
    };
    let admin = admin_token();
    let (_, body) = gql(
        &node,
        Some(&admin),
        &format!("{{ {} }}", nested(8)),
        json!({}),
    )
    .await;
    assert!(body["data"]["__schema"]["types"].is_array(), "{body}");
    let (_, body) = gql(
        &node,
        Some(&admin),
        &format!("{{ {} }}", nested(12)),
        json!({}),
    )
    .await;
    assert!(too_deep(&body), "{body}");
    let mixed = format!("{{ taskQueueStatus {{ totalTasks }} {} }}", nested(8));
    let (_, body) = gql(&node, Some(&admin), &mixed, json!({})).await;
    assert!(too_deep(&body), "{body}");
    let wide: String = (0..600)
        .map(|i| format!("q{i}: taskQueueStatus {{ totalTasks }} "))
        .collect();
    let (_, body) = gql(
        &node,
        Some(&admin_token()),
        &format!("{{ {wide} }}"),
        json!({}),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too complex"),
        "{body}"
    );
    // Operations are counted by outcome (this test made both kinds).
    let metrics = Api::new(&node, admin_token())
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for outcome in ["ok", "error"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("taskherd_graphql_operations_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
                    && l.contains("type=\"query\"")
            })
            .unwrap_or_else(|| panic!("no {outcome} series: {metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
    node.stop().await;
}

const CREATE_TASK: &str = r#"
mutation CreateTask {
  createAITask(input: {
    agentId: "agent_123"
    taskType: "translation"
    inputData: { text: "Hello", targetLanguage: "sw" }
    priority: NORMAL
  }) {
    id
    status
    taskType
  }
}"#;

#[tokio::test]
async fn submitters_mutations_change_what_rest_shows() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice_token = token("alice", Role::User, None);
    let alice = Api::new(&node, alice_token.clone());

    // The seeds' CreateTask, unchanged.
    let (status, body) = gql(&node, Some(&alice_token), CREATE_TASK, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let created = &body["data"]["createAITask"];
    assert_eq!(created["status"], "QUEUED", "{body}");
    assert_eq!(created["taskType"], "translation");
    let id = created["id"].as_str().unwrap().to_string();
    let rest = alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(
        rest["inputData"],
        json!({"text": "Hello", "targetLanguage": "sw"})
    );
    assert_eq!(rest["ownerId"], "alice");

    // Cancel and retry, as REST does them.
    let cancel = "mutation($id: ID!) { cancelAITask(id: $id) { id status } }";
    let retry = "mutation($id: ID!) { retryAITask(id: $id) { id status retryCount } }";
    let (_, body) = gql(&node, Some(&alice_token), cancel, json!({"id": id})).await;
    assert_eq!(
        body["data"]["cancelAITask"]["status"], "CANCELLED",
        "{body}"
    );
    let (_, body) = gql(&node, Some(&alice_token), cancel, json!({"id": id})).await;
    assert_eq!(code(&body), "ALREADY_TERMINAL", "{body}");
    let (_, body) = gql(&node, Some(&alice_token), retry, json!({"id": id})).await;
    assert_eq!(body["data"]["retryAITask"]["status"], "QUEUED", "{body}");
    assert_eq!(
        alice.get(&format!("/api/ai/tasks/{id}")).await.expect(200)["status"],
        "QUEUED"
    );

    // Another user's task is not found, like a missing one; a worker may
    // not create.
    let bob_token = token("bob", Role::User, None);
    for missing in [id.as_str(), "task_01J0000000000000000000000Z", "nope"] {
        let (_, body) = gql(&node, Some(&bob_token), cancel, json!({"id": missing})).await;
        assert_eq!(code(&body), "TASK_NOT_FOUND", "{body}");
    }
    let (_, body) = gql(
        &node,
        Some(&token("w", Role::Worker, Some("x"))),
        CREATE_TASK,
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    // A batch is all or nothing; a refusal names each bad item.
    let batch = "mutation($inputs: [CreateAITaskInput!]!) { createAITasksBatch(inputs: $inputs) { createdCount existingCount tasks { id agentId } } }";
    let good = json!({"agentId": "writer", "taskType": "t"});
    let bad = json!({"agentId": "no such/agent", "taskType": "t"});
    let before = alice.get("/api/ai/tasks").await.expect(200)["totalCount"].clone();
    let (_, body) = gql(
        &node,
        Some(&alice_token),
        batch,
        json!({"inputs": [good, bad]}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["details"]["items"][0]["index"], 1,
        "{body}"
    );
    assert_eq!(
        alice.get("/api/ai/tasks").await.expect(200)["totalCount"],
        before
    );
    let (_, body) = gql(
        &node,
        Some(&alice_token),
        batch,
        json!({"inputs": [good, good]}),
    )
    .await;
    let result = &body["data"]["createAITasksBatch"];
    assert_eq!(result["createdCount"], 2, "{body}");
    assert_eq!(result["existingCount"], 0);
    assert_eq!(result["tasks"][1]["agentId"], "writer");
    node.stop().await;
}

const START: &str = "mutation($id: ID!, $lease: Long) { startTaskProcessing(id: $id, leaseMs: $lease) { id status workerId leaseToken leaseUntil } }";

/// Creates a task of agent `writer` (with `max_retries`) and starts it as
/// `worker`: its id and lease token.
async fn start_one(node: &TestNode, worker: &str, max_retries: u32) -> (String, String) {
    let id = Api::new(node, admin_token())
        .create(json!({"agentId": "writer", "taskType": "t", "inputData": {"n": 1}, "maxRetries": max_retries}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, body) = gql(node, Some(worker), START, json!({"id": id})).await;
    let answer = &body["data"]["startTaskProcessing"];
    assert_eq!(answer["status"], "PROCESSING", "{body}");
    assert!(answer["leaseUntil"].is_i64(), "{body}");
    let lease = answer["leaseToken"].as_str().unwrap().to_string();
    (id, lease)
}

#[tokio::test]
async fn workers_and_admins_mutations_keep_the_lease_fence() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let worker = token("w1", Role::Worker, Some("writer"));
    let other_worker = token("w2", Role::Worker, Some("reader"));
    let user = token("alice", Role::User, None);
    let id = admin
        .create(json!({"agentId": "writer", "taskType": "t", "inputData": {"n": 1}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = START;

    // Only a worker of the task's agent (or an admin) runs it; another
    // agent's worker finds nothing, a user may not run tasks.
    let (_, body) = gql(&node, Some(&other_worker), start, json!({"id": id})).await;
    assert_eq!(code(&body), "TASK_NOT_FOUND", "{body}");
    let (_, body) = gql(&node, Some(&user), start, json!({"id": id})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = gql(&node, Some(&worker), start, json!({"id": id, "lease": 10})).await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    let (_, body) = gql(
        &node,
        Some(&worker),
        start,
        json!({"id": id, "lease": 5000}),
    )
    .await;
    let started = &body["data"]["startTaskProcessing"];
    assert_eq!(started["status"], "PROCESSING", "{body}");
    assert_eq!(started["workerId"], "w1");
    let lease = started["leaseToken"].as_str().unwrap().to_string();
    assert!(!lease.is_empty());
    // The token travels only in startTaskProcessing's answer.
    let (_, body) = gql(
        &node,
        Some(&admin_token()),
        "query($id: ID!) { aiTask(id: $id) { status leaseToken } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(
        body["data"]["aiTask"],
        json!({"status": "PROCESSING", "leaseToken": null})
    );
    let (_, body) = gql(&node, Some(&worker), start, json!({"id": id})).await;
    assert_eq!(code(&body), "TASK_NOT_READY", "{body}");

    let heartbeat = "mutation($id: ID!, $token: String!, $lease: Long) { heartbeatTask(id: $id, token: $token, leaseMs: $lease) { held leaseMs } }";
    let (_, body) = gql(
        &node,
        Some(&worker),
        heartbeat,
        json!({"id": id, "token": lease, "lease": 8000}),
    )
    .await;
    assert_eq!(
        body["data"]["heartbeatTask"],
        json!({"held": true, "leaseMs": 8000}),
        "{body}"
    );
    let (_, body) = gql(
        &node,
        Some(&worker),
        heartbeat,
        json!({"id": id, "token": "stale"}),
    )
    .await;
    assert_eq!(code(&body), "LEASE_MISMATCH", "{body}");

    // A stale token completes nothing; the current one stores the result.
    let complete = "mutation($id: ID!, $token: String!, $out: JSON, $m: TaskMetricsInput, $cost: Float) { completeTask(id: $id, token: $token, outputData: $out, metrics: $m, actualCost: $cost) { status outputData actualCost metrics { tokensIn tokensOut } } }";
    let (_, body) = gql(
        &node,
        Some(&worker),
        complete,
        json!({"id": id, "token": "stale", "out": {"ok": true}}),
    )
    .await;
    assert_eq!(code(&body), "LEASE_MISMATCH", "{body}");
    assert_eq!(
        admin.get(&format!("/api/ai/tasks/{id}")).await.expect(200)["status"],
        "PROCESSING"
    );
    let (_, body) = gql(
        &node,
        Some(&worker),
        complete,
        json!({"id": id, "token": lease, "m": {"tokensIn": -1}}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    let (_, body) = gql(
        &node,
        Some(&worker),
        complete,
        json!({"id": id, "token": lease, "cost": 1e16}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    let args = json!({"id": id, "token": lease, "out": {"summary": "done"}, "m": {"tokensIn": 5, "tokensOut": 7}, "cost": 0.25});
    let (_, body) = gql(&node, Some(&worker), complete, args.clone()).await;
    assert_eq!(
        body["data"]["completeTask"],
        json!({"status": "COMPLETED", "outputData": {"summary": "done"}, "actualCost": 0.25, "metrics": {"tokensIn": 5, "tokensOut": 7}}),
        "{body}"
    );
    let rest = admin.get(&format!("/api/ai/tasks/{id}")).await.expect(200);
    assert_eq!(rest["outputData"], json!({"summary": "done"}));
    assert_eq!(rest["metrics"]["tokensOut"], 7);
    // A repeat with the same token is harmless.
    let (_, body) = gql(&node, Some(&worker), complete, args).await;
    assert_eq!(
        body["data"]["completeTask"]["status"], "COMPLETED",
        "{body}"
    );

    // failTask: an empty message is refused; not retryable ends FAILED.
    let (id, lease) = start_one(&node, &worker, 3).await;
    let fail = "mutation($id: ID!, $token: String!, $msg: String!, $retry: Boolean) { failTask(id: $id, token: $token, errorMessage: $msg, retryable: $retry) { status errorMessage retryCount } }";
    let (_, body) = gql(
        &node,
        Some(&worker),
        fail,
        json!({"id": id, "token": lease, "msg": ""}),
    )
    .await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    let (_, body) = gql(
        &node,
        Some(&worker),
        fail,
        json!({"id": id, "token": lease, "msg": "model refused", "retry": false}),
    )
    .await;
    assert_eq!(
        body["data"]["failTask"],
        json!({"status": "FAILED", "errorMessage": "model refused", "retryCount": 0}),
        "{body}"
    );
    // A retryable failure with attempts left goes back to the queue.
    let (id, lease) = start_one(&node, &worker, 3).await;
    let (_, body) = gql(
        &node,
        Some(&worker),
        fail,
        json!({"id": id, "token": lease, "msg": "rate limited"}),
    )
    .await;
    assert_eq!(body["data"]["failTask"]["status"], "QUEUED", "{body}");
    assert_eq!(body["data"]["failTask"]["retryCount"], 1);

    // Admin mutations: refused for others, REST's numbers for admins.
    let cleanup = "mutation { cleanupOldTasks { deletedCount retentionDays } }";
    for t in [&user, &worker] {
        let (_, body) = gql(&node, Some(t), cleanup, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }
    let (_, body) = gql(&node, Some(&admin_token()), cleanup, json!({})).await;
    assert_eq!(
        body["data"]["cleanupOldTasks"],
        json!({"deletedCount": 0, "retentionDays": 7}),
        "{body}"
    );
    let stale = "mutation($ms: Long) { timeoutStaleTasks(timeoutMs: $ms) { timedOutCount } }";
    let (_, body) = gql(&node, Some(&user), stale, json!({"ms": 1000})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = gql(&node, Some(&admin_token()), stale, json!({"ms": 0})).await;
    assert_eq!(code(&body), "VALIDATION_ERROR", "{body}");
    // A running attempt older than timeoutMs ends (TIMEOUT: no retries).
    let (id, _) = start_one(&node, &worker, 0).await;
    // Ask until the attempt is more than 1 ms old on Redis' clock.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, body) = gql(&node, Some(&admin_token()), stale, json!({"ms": 1})).await;
        let n = body["data"]["timeoutStaleTasks"]["timedOutCount"].as_i64();
        assert!(n.is_some(), "{body}");
        if n == Some(1) {
            break;
        }
        assert_eq!(n, Some(0));
        assert!(tokio::time::Instant::now() < deadline, "never timed out");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        admin.get(&format!("/api/ai/tasks/{id}")).await.expect(200)["status"],
        "TIMEOUT"
    );
    node.stop().await;
}

#[tokio::test]
async fn graphiql_is_served_by_the_node_with_no_internet_needed() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    // No token needed for the page: it holds no data and asks for one.
    let resp = http_client()
        .get(node.url("/graphql"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let page = resp.text().await.unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    // Every file the page loads is the node's own.
    let files: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with("/graphql/assets/"))
        .collect();
    assert!(files.len() >= 7, "{files:?}");
    for file in files {
        let resp = http_client().get(node.url(file)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        let ty = resp.headers()["content-type"].to_str().unwrap().to_string();
        let want = if file.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(ty.starts_with(want), "{file}: {ty}");
        assert!(!resp.bytes().await.unwrap().is_empty(), "{file}");
    }
    let resp = http_client()
        .get(node.url("/graphql/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body}");
    node.stop().await;
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api.graphql.introspection = false;
    let node = TestNode::start(config, Registry::new()).await;
    let admin = admin_token();
    let (_, body) = gql(
        &node,
        Some(&admin),
        "{ __schema { types { name } } }",
        json!({}),
    )
    .await;
    // async-graphql answers a switched-off introspection with null.
    assert_eq!(body["data"]["__schema"], Value::Null, "{body}");
    let (_, body) = gql(
        &node,
        Some(&admin),
        "{ taskQueueStatus { totalTasks } }",
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["taskQueueStatus"]["totalTasks"], 0, "{body}");
    node.stop().await;
    // On by default: GraphiQL needs it.
    let node = api_node(&redis).await;
    let (_, body) = gql(
        &node,
        Some(&admin),
        "{ __schema { queryType { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
    node.stop().await;
}
