//! The Socket.IO feed at `/ws/ai-tasks`, driven by the real
//! `socket.io-client` from npm against real nodes on one Redis.

use std::time::Duration;

use serde_json::{Value, json};
use taskherd::auth::Role;
use taskherd::clock::Clock;
use taskherd::worker::Registry;

use crate::api_client::Api;
use crate::support::sio::Sio;
use crate::support::*;

async fn api_node(redis: &TestRedis) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await
}

fn user_token(sub: &str) -> String {
    token(sub, Role::User, None)
}

fn auth(token: &str) -> Value {
    json!({ "auth": { "token": token } })
}

fn over(transport: &str, token: &str) -> Value {
    json!({ "auth": { "token": token }, "transports": [transport], "upgrade": false })
}

fn task_body(agent: &str) -> Value {
    json!({"agentId": agent, "taskType": "summarise", "inputData": {"text": "hi"}})
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap().to_string()
}

/// Connects `first` to `addr` following every task, creates one task
/// through `admin`, and leaves once its event arrived: the task and that
/// event's id (what a client that reconnects passes as `lastEventId`).
async fn seen_one_then_left(
    sio: &mut Sio,
    addr: std::net::SocketAddr,
    admin: &Api,
) -> (Value, String) {
    sio.connected("first", addr, auth(&admin_token())).await;
    assert_eq!(
        sio.call("first", "subscribe:tasks", json!([])).await["ok"],
        true
    );
    let one = admin.create(task_body("writer")).await;
    let seen = sio
        .event_from(0, "first", "task:status", |d| d["taskId"] == one["id"])
        .await;
    sio.close("first").await;
    (one, seen["eventId"].as_str().unwrap().to_string())
}

/// A node's health document.
async fn health(node: &TestNode) -> Option<Value> {
    http_client()
        .get(node.url("/api/ai/tasks/health"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test]
async fn a_change_through_one_node_reaches_clients_of_another_over_both_transports() {
    let redis = TestRedis::start();
    let a = api_node(&redis).await;
    let b = api_node(&redis).await;
    let alice = user_token("alice");
    let task = Api::new(&a, alice.clone())
        .create(task_body("writer"))
        .await;
    let id = id_of(&task);

    let mut sio = Sio::start().await;
    let ws = sio.connected("ws", b.addr, over("websocket", &alice)).await;
    assert_eq!(ws["transport"], "websocket");
    let poll = sio.connected("poll", b.addr, over("polling", &alice)).await;
    assert_eq!(poll["transport"], "polling");
    for c in ["ws", "poll"] {
        let ack = sio.call(c, "subscribe:task", json!([id])).await;
        assert_eq!(ack["ok"], true, "{ack}");
        assert_eq!(ack["subscription"], format!("task:{id}"));
        assert_eq!(ack["task"]["id"], id.as_str());
        assert_eq!(ack["task"]["status"], "QUEUED");
    }

    let from = sio.seen.len();
    Api::new(&a, alice.clone())
        .put_empty(&format!("/api/ai/tasks/{id}/cancel"))
        .await
        .expect(200);
    for c in ["ws", "poll"] {
        let ev = sio.event_from(from, c, "task:status", |_| true).await;
        assert_eq!(ev["taskId"], id.as_str());
        assert_eq!(ev["status"], "CANCELLED");
        assert_eq!(ev["previousStatus"], "QUEUED");
        assert_eq!(ev["event"], "cancelled");
        assert_eq!(ev["task"]["status"], "CANCELLED");
        assert_eq!(ev["task"]["ownerId"], "alice");
        assert!(ev["timestamp"].as_i64().unwrap() > 0);
        let event_id = ev["eventId"].as_str().unwrap();
        assert_eq!(event_id.split('-').count(), 3, "{event_id}");
    }
    sio.quit().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn handshakes_without_a_valid_token_or_from_a_foreign_origin_are_refused() {
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api.cors_origins = vec!["http://app.example".into()];
    let node = TestNode::start(config, Registry::new()).await;
    let mut sio = Sio::start().await;

    let message = sio.refused("none", node.addr, json!({})).await;
    assert!(
        message.starts_with("UNAUTHORIZED: missing token"),
        "{message}"
    );
    let message = sio.refused("bad", node.addr, auth("not-a-token")).await;
    assert!(
        message.starts_with("UNAUTHORIZED: invalid token"),
        "{message}"
    );
    let other_secret = taskherd::auth::Auth::new(taskherd::auth::AuthConfig::random())
        .unwrap()
        .mint("alice", Role::User, None, Duration::from_secs(60))
        .unwrap();
    let message = sio.refused("forged", node.addr, auth(&other_secret)).await;
    assert_eq!(message, "UNAUTHORIZED: invalid token: bad signature");
    let message = sio
        .refused(
            "lastid",
            node.addr,
            json!({"auth": {"token": user_token("alice"), "lastEventId": "yesterday"}}),
        )
        .await;
    assert!(
        message.starts_with("VALIDATION_ERROR: lastEventId"),
        "{message}"
    );
    for transport in ["websocket", "polling"] {
        let mut opts = over(transport, &user_token("alice"));
        opts["extraHeaders"] = json!({"Origin": "http://evil.example"});
        let c = format!("evil-{transport}");
        let message = sio.refused(&c, node.addr, opts).await;
        assert_eq!(
            message,
            "FORBIDDEN: origin http://evil.example is not allowed (FRONTEND_URL)"
        );
    }
    // The configured origin, and a token in the Authorization header.
    let opts = json!({"extraHeaders": {"Origin": "http://app.example",
                                        "Authorization": format!("Bearer {}", user_token("alice"))},
                      "transports": ["polling"]});
    sio.connected("app", node.addr, opts).await;
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn another_users_task_is_refused_like_a_missing_one_and_roles_hold() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alices = Api::new(&node, user_token("alice"))
        .create(task_body("writer"))
        .await;
    let mut sio = Sio::start().await;
    sio.connected("bob", node.addr, auth(&user_token("bob")))
        .await;

    let from = sio.seen.len();
    let theirs = sio
        .call("bob", "subscribe:task", json!([id_of(&alices)]))
        .await;
    let missing = sio
        .call(
            "bob",
            "subscribe:task",
            json!(["task_01J0000000000000000000000Z"]),
        )
        .await;
    for (ack, id) in [
        (&theirs, id_of(&alices)),
        (&missing, "task_01J0000000000000000000000Z".into()),
    ] {
        assert_eq!(ack["ok"], false);
        assert_eq!(ack["error"]["code"], "TASK_NOT_FOUND");
        assert_eq!(ack["error"]["message"], format!("task {id} not found"));
    }
    let error = sio.event_from(from, "bob", "task:error", |_| true).await;
    assert_eq!(error["code"], "TASK_NOT_FOUND");
    assert_eq!(error["event"], "subscribe:task");
    assert_eq!(error["taskId"], id_of(&alices).as_str());
    let bad = sio
        .call("bob", "subscribe:task", json!([{"nope": 1}]))
        .await;
    assert_eq!(bad["error"]["code"], "VALIDATION_ERROR");

    // A worker follows its own agent only; a metrics token follows no task.
    sio.connected(
        "worker",
        node.addr,
        auth(&token("w", Role::Worker, Some("writer"))),
    )
    .await;
    let own = sio
        .call("worker", "subscribe:agent", json!(["writer"]))
        .await;
    assert_eq!(own["ok"], true, "{own}");
    // Its agent's task, whoever owns it; another agent's is not found.
    let its = sio
        .call("worker", "subscribe:task", json!([id_of(&alices)]))
        .await;
    assert_eq!(its["ok"], true, "{its}");
    sio.connected(
        "other-worker",
        node.addr,
        auth(&token("w2", Role::Worker, Some("reader"))),
    )
    .await;
    let not_its = sio
        .call("other-worker", "subscribe:task", json!([id_of(&alices)]))
        .await;
    assert_eq!(not_its["error"]["code"], "TASK_NOT_FOUND");
    let other = sio
        .call("worker", "subscribe:agent", json!(["reader"]))
        .await;
    assert_eq!(other["error"]["code"], "FORBIDDEN");
    sio.connected("prom", node.addr, auth(&token("p", Role::Metrics, None)))
        .await;
    let all = sio.call("prom", "subscribe:tasks", json!([])).await;
    assert_eq!(all["error"]["code"], "FORBIDDEN");
    let queue = sio.call("prom", "subscribe:queue", json!([])).await;
    assert_eq!(queue["ok"], true);
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn agent_and_all_task_rooms_carry_only_what_the_caller_may_see() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let mut sio = Sio::start().await;
    sio.connected("alice", node.addr, auth(&user_token("alice")))
        .await;
    sio.connected("admin", node.addr, auth(&admin_token()))
        .await;
    for c in ["alice", "admin"] {
        assert_eq!(
            sio.call(c, "subscribe:agent", json!(["writer"])).await["ok"],
            true
        );
        assert_eq!(sio.call(c, "subscribe:tasks", json!([])).await["ok"], true);
    }
    let bobs = Api::new(&node, user_token("bob"))
        .create(task_body("writer"))
        .await;
    let alices = Api::new(&node, user_token("alice"))
        .create(task_body("writer"))
        .await;
    // The admin sees both, in order; alice only hers, in both rooms.
    for (event, key) in [("agent:task:update", "agentId"), ("task:status", "taskId")] {
        sio.event_from(0, "admin", event, |d| d["taskId"] == alices["id"])
            .await;
        let got: Vec<Value> = sio
            .events("admin", event)
            .iter()
            .map(|d| d["taskId"].clone())
            .collect();
        assert_eq!(
            got,
            vec![bobs["id"].clone(), alices["id"].clone()],
            "{event}"
        );
        sio.event_from(0, "alice", event, |d| d["taskId"] == alices["id"])
            .await;
        let got: Vec<Value> = sio
            .events("alice", event)
            .iter()
            .map(|d| d["taskId"].clone())
            .collect();
        assert_eq!(got, vec![alices["id"].clone()], "{event}");
        assert!(
            sio.events("alice", event)
                .iter()
                .all(|d| d[key].is_string())
        );
    }
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn unsubscribing_stops_delivery() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, user_token("alice"));
    let one = alice.create(task_body("writer")).await;
    let two = alice.create(task_body("writer")).await;
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&user_token("alice")))
        .await;
    for t in [&one, &two] {
        assert_eq!(
            sio.call("c", "subscribe:task", json!([id_of(t)])).await["ok"],
            true
        );
    }
    let left = sio
        .call("c", "unsubscribe:task", json!([id_of(&one)]))
        .await;
    assert_eq!(
        left,
        json!({"ok": true, "subscription": format!("task:{}", id_of(&one)), "was": true})
    );
    let from = sio.seen.len();
    alice
        .put_empty(&format!("/api/ai/tasks/{}/cancel", id_of(&one)))
        .await
        .expect(200);
    alice
        .put_empty(&format!("/api/ai/tasks/{}/cancel", id_of(&two)))
        .await
        .expect(200);
    // The second task's event came after the first's: had the first been
    // sent, it would be here by now.
    sio.event_from(from, "c", "task:status", |d| d["taskId"] == two["id"])
        .await;
    assert!(
        sio.seen[from..]
            .iter()
            .all(|r| r["data"]["taskId"] != one["id"]),
        "an unsubscribed task's event was delivered"
    );
    sio.quit().await;
    node.stop().await;
}

fn worker_api(node: &TestNode, agent: &str) -> Api {
    Api::new(node, token("w1", Role::Worker, Some(agent)))
}

async fn claim_one(w: &Api, agent: &str) -> Value {
    let claimed = w
        .post(
            &format!("/api/ai/agents/{agent}/claim"),
            json!({"maxTasks": 1, "leaseMs": 5000, "waitMs": 5000}),
        )
        .await
        .expect(200);
    claimed["tasks"][0].clone()
}

#[tokio::test]
async fn failed_attempts_and_the_final_failure_are_reported() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, user_token("alice"));
    let task = alice
        .create(json!({"agentId": "ext", "taskType": "classify", "inputData": {}, "maxRetries": 1}))
        .await;
    let id = id_of(&task);
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&user_token("alice")))
        .await;
    assert_eq!(
        sio.call("c", "subscribe:task", json!([{"taskId": id}]))
            .await["ok"],
        true
    );
    let w = worker_api(&node, "ext");
    for attempt in 0..2 {
        let leased = claim_one(&w, "ext").await;
        assert_eq!(leased["id"], id.as_str(), "attempt {attempt}");
        w.post(
            &format!("/api/ai/tasks/{id}/fail"),
            json!({"token": leased["token"], "errorMessage": format!("boom {attempt}")}),
        )
        .await
        .expect(200);
    }
    sio.event_from(0, "c", "task:failed", |d| d["status"] == "FAILED")
        .await;
    let failed = |n: usize| sio.events("c", "task:failed").get(n).cloned();
    let first = failed(0).unwrap();
    assert_eq!(first["taskId"], id.as_str());
    assert_eq!(first["taskType"], "classify");
    assert_eq!(first["errorMessage"], "boom 0");
    assert_eq!(first["willRetry"], true);
    assert_eq!(first["status"], "QUEUED");
    let last = failed(1).unwrap();
    assert_eq!(last["errorMessage"], "boom 1");
    assert_eq!(last["willRetry"], false);
    assert_eq!(last["retryCount"], 1);
    assert_eq!(last["maxRetries"], 1);
    assert!(failed(2).is_none());
    // Each failure is also a status change, with the same event id.
    let statuses = sio.events("c", "task:status");
    let kinds: Vec<&str> = statuses
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "retrying", "started", "failed"]);
    assert_eq!(statuses[1]["eventId"], first["eventId"]);
    assert_eq!(statuses[3]["eventId"], last["eventId"]);
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_client_reconnecting_with_its_last_event_id_gets_exactly_what_it_missed() {
    let redis = TestRedis::start();
    let a = api_node(&redis).await;
    let b = api_node(&redis).await;
    let admin = Api::new(&a, admin_token());
    let mut sio = Sio::start().await;
    let (one, last_event_id) = seen_one_then_left(&mut sio, a.addr, &admin).await;

    // Missed while away: two creates and a cancel.
    let two = admin.create(task_body("writer")).await;
    let three = admin.create(task_body("reader")).await;
    admin
        .put_empty(&format!("/api/ai/tasks/{}/cancel", id_of(&one)))
        .await
        .expect(200);
    let missed: Vec<(Value, &str)> = vec![
        (two["id"].clone(), "created"),
        (three["id"].clone(), "created"),
        (one["id"].clone(), "cancelled"),
    ];

    // Back, on the other node, with its subscription in the handshake.
    let from = sio.seen.len();
    sio.connected(
        "again",
        b.addr,
        json!({"auth": {"token": admin_token(), "lastEventId": last_event_id,
                        "subscriptions": ["tasks"]}}),
    )
    .await;
    let four = admin.create(task_body("writer")).await;
    sio.event_from(from, "again", "task:status", |d| d["taskId"] == four["id"])
        .await;
    let got: Vec<(Value, String)> = sio
        .events("again", "task:status")
        .iter()
        .map(|d| {
            (
                d["taskId"].clone(),
                d["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(Value, String)> = missed
        .into_iter()
        .map(|(id, k)| (id, k.to_string()))
        .collect();
    want.push((four["id"].clone(), "created".into()));
    assert_eq!(got, want, "replayed, in order, each once, then live");
    let ids: Vec<String> = sio
        .events("again", "task:status")
        .iter()
        .map(|d| d["eventId"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|id| *id > last_event_id), "{ids:?}");
    assert!(sio.events("again", "resync").is_empty());
    sio.quit().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_last_event_id_trimmed_from_the_stream_gets_resync() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let mut sio = Sio::start().await;
    let (_, seen_id) = seen_one_then_left(&mut sio, node.addr, &admin).await;
    for _ in 0..3 {
        admin.create(task_body("writer")).await;
    }
    let raw = crate::support::raw::raw_redis(&redis.url()).await;
    let trimmed: u64 =
        fred::prelude::StreamsInterface::xtrim(&*raw, node.store.keys().events(), ("MAXLEN", 1))
            .await
            .expect("XTRIM");
    assert!(trimmed >= 3, "{trimmed}");

    let from = sio.seen.len();
    sio.connected(
        "again",
        node.addr,
        json!({"auth": {"token": admin_token(), "lastEventId": seen_id,
                        "subscriptions": ["tasks"]}}),
    )
    .await;
    let resync = sio.event_from(from, "again", "resync", |_| true).await;
    assert!(
        resync["reason"].as_str().unwrap().contains("lastEventId"),
        "{resync}"
    );
    let next = admin.create(task_body("writer")).await;
    sio.event_from(from, "again", "task:status", |d| d["taskId"] == next["id"])
        .await;
    // Nothing from before the resync was sent after it.
    assert_eq!(sio.events("again", "task:status").len(), 1);
    sio.quit().await;
    node.stop().await;
}

async fn feed_health(node: &TestNode) -> Value {
    health(node).await.expect("health answers")["feed"].clone()
}

fn feed_node_config(
    redis: &TestRedis,
    feed: taskherd::api::ws::FeedConfig,
) -> taskherd::node::NodeConfig {
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api.feed = feed;
    config
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_the_others_keep_receiving() {
    let redis = TestRedis::start();
    let node = TestNode::start(
        feed_node_config(
            &redis,
            taskherd::api::ws::FeedConfig {
                client_buffer: 256,
                ..Default::default()
            },
        ),
        Registry::new(),
    )
    .await;
    let mut sio = Sio::start().await;
    for c in ["slow", "fast"] {
        sio.connected(c, node.addr, over("websocket", &admin_token()))
            .await;
        assert_eq!(sio.call(c, "subscribe:tasks", json!([])).await["ok"], true);
    }
    sio.send(json!({"op": "stall", "c": "slow"})).await;
    sio.wait("the slow client stalls", Duration::from_secs(10), |r| {
        r["type"] == "stalled"
    })
    .await;
    // About 25 MB of events: more than the kernel's socket buffers and the
    // client's buffer hold.
    let admin = Api::new(&node, admin_token());
    let text = "x".repeat(50_000);
    let mut last = Value::Null;
    for _ in 0..20 {
        let batch: Vec<Value> = (0..25)
            .map(|_| json!({"agentId": "writer", "taskType": "t", "inputData": {"text": text}}))
            .collect();
        let created = admin
            .post("/api/ai/tasks/batch", json!({ "tasks": batch }))
            .await
            .expect(201);
        last = created["tasks"][24]["id"].clone();
    }
    sio.event_from(0, "fast", "task:status", |d| d["taskId"] == last)
        .await;
    assert_eq!(
        sio.events("fast", "task:status").len(),
        500,
        "the fast client got every event"
    );
    // Cut off, not waited for: the node lets it go at once (the heartbeat,
    // 25 s, has not run out).
    let health = wait_until(
        "the slow client is cut off",
        Duration::from_secs(15),
        || async {
            let feed = feed_health(&node).await;
            (feed["connections"] == 1).then_some(feed)
        },
    )
    .await;
    assert_eq!(health["subscriptions"]["tasks"], 1);
    // Reading again, it gets what was buffered, then why it was closed.
    let from = sio.seen.len();
    sio.send(json!({"op": "resume", "c": "slow"})).await;
    let closing = sio
        .event_from(from, "slow", "server:closing", |_| true)
        .await;
    assert_eq!(closing["code"], "SLOW_CONSUMER");
    let gone = sio
        .wait_from(
            from,
            "the slow client's disconnect",
            Duration::from_secs(20),
            |r| r["c"] == "slow" && r["type"] == "disconnect",
        )
        .await;
    assert_eq!(gone["reason"], "io server disconnect");
    let got = sio.events("slow", "task:status").len();
    assert!(
        got < 500,
        "the slow client was sent everything ({got}): it was not cut off"
    );
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let short = taskherd::auth::Auth::new(test_auth_config())
        .unwrap()
        .mint("alice", Role::User, None, Duration::from_secs(1))
        .unwrap();
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&short)).await;
    // exp is 1 s away; the leeway tokens get everywhere (5 s) applies.
    let closing = sio.event_from(0, "c", "server:closing", |_| true).await;
    assert_eq!(closing["code"], "TOKEN_EXPIRED");
    let gone = sio
        .wait("the disconnect", Duration::from_secs(20), |r| {
            r["c"] == "c" && r["type"] == "disconnect"
        })
        .await;
    assert_eq!(
        gone["reason"], "io server disconnect",
        "not retried by the client"
    );
    let message = sio.refused("again", node.addr, auth(&short)).await;
    assert_eq!(message, "UNAUTHORIZED: token expired");
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn queue_updates_come_on_subscribe_and_soon_after_changes() {
    let redis = TestRedis::start();
    // The periodic update is a minute away: only a change brings one
    // within the wait below.
    let node = TestNode::start(
        feed_node_config(
            &redis,
            taskherd::api::ws::FeedConfig {
                queue_every: Duration::from_secs(60),
                ..Default::default()
            },
        ),
        Registry::new(),
    )
    .await;
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&user_token("alice")))
        .await;
    assert_eq!(
        sio.call("c", "subscribe:queue", json!([])).await["ok"],
        true
    );
    let first = sio.event_from(0, "c", "queue:update", |_| true).await;
    assert_eq!(first["status"]["totalTasks"], 0);
    assert!(first["timestamp"].as_i64().unwrap() > 0);
    let rest = Api::new(&node, admin_token())
        .get("/api/ai/tasks/queue/status")
        .await
        .expect(200);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&first["status"]), keys(&rest), "the REST shape");
    Api::new(&node, user_token("alice"))
        .create(task_body("writer"))
        .await;
    let after = sio
        .event_from(0, "c", "queue:update", |d| d["status"]["totalTasks"] == 1)
        .await;
    assert_eq!(after["status"]["queuedTasks"], 1);
    assert_eq!(
        sio.call("c", "unsubscribe:queue", json!([])).await["was"],
        true
    );
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn subscriptions_and_connections_are_limited() {
    let redis = TestRedis::start();
    let node = TestNode::start(
        feed_node_config(
            &redis,
            taskherd::api::ws::FeedConfig {
                max_connections: 2,
                max_subscriptions: 2,
                ..Default::default()
            },
        ),
        Registry::new(),
    )
    .await;
    let mut sio = Sio::start().await;
    sio.connected("a", node.addr, auth(&admin_token())).await;
    assert_eq!(
        sio.call("a", "subscribe:queue", json!([])).await["ok"],
        true
    );
    assert_eq!(
        sio.call("a", "subscribe:agent", json!(["x"])).await["ok"],
        true
    );
    // Again the same: not a new one.
    assert_eq!(
        sio.call("a", "subscribe:agent", json!(["x"])).await["ok"],
        true
    );
    let third = sio.call("a", "subscribe:agent", json!(["y"])).await;
    assert_eq!(third["error"]["code"], "TOO_MANY_SUBSCRIPTIONS");
    let message = sio
        .refused(
            "many",
            node.addr,
            json!({"auth": {"token": admin_token(), "subscriptions": ["queue", "tasks", "agent:z"]}}),
        )
        .await;
    assert!(message.starts_with("TOO_MANY_SUBSCRIPTIONS"), "{message}");
    // A room the handshake names but the caller may not follow is refused
    // on its own; the connection stays.
    sio.connected(
        "b",
        node.addr,
        json!({"auth": {"token": token("w", Role::Worker, Some("x")), "subscriptions": ["agent:y", "nope"]}}),
    )
    .await;
    let errors: Vec<Value> = {
        sio.event_from(0, "b", "task:error", |d| d["code"] == "VALIDATION_ERROR")
            .await;
        sio.events("b", "task:error")
    };
    assert_eq!(errors[0]["code"], "FORBIDDEN");
    assert_eq!(errors[0]["event"], "subscriptions");
    let message = sio.refused("c", node.addr, auth(&admin_token())).await;
    assert!(message.starts_with("TOO_MANY_CONNECTIONS"), "{message}");
    assert_eq!(feed_health(&node).await["connections"], 2);
    // A message over 64 KiB closes its connection, which frees a place.
    let from = sio.seen.len();
    sio.emit("a", "subscribe:task", json!(["x".repeat(70_000)]))
        .await;
    sio.wait_from(
        from,
        "the oversized message's connection closes",
        Duration::from_secs(20),
        |r| r["c"] == "a" && r["type"] == "disconnect",
    )
    .await;
    wait_until("the node lets it go", Duration::from_secs(10), || async {
        (feed_health(&node).await["connections"] == 1).then_some(())
    })
    .await;
    sio.connected("c", node.addr, auth(&admin_token())).await;
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_redis_restart_mid_stream_loses_no_event_for_a_connected_client() {
    let mut redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&admin_token())).await;
    assert_eq!(
        sio.call("c", "subscribe:tasks", json!([])).await["ok"],
        true
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(admin.create(task_body("writer")).await["id"].clone());
    }
    redis.restart();
    for _ in 0..5 {
        let created = wait_until(
            "a create after the restart",
            Duration::from_secs(20),
            || async {
                let a = admin.post("/api/ai/tasks", task_body("writer")).await;
                (a.status == 201).then(|| a.body["id"].clone())
            },
        )
        .await;
        ids.push(created);
    }
    let last = ids.last().unwrap().clone();
    sio.event_from(0, "c", "task:status", |d| d["taskId"] == last)
        .await;
    let got: Vec<Value> = sio
        .events("c", "task:status")
        .iter()
        .map(|d| d["taskId"].clone())
        .collect();
    assert_eq!(got, ids, "every event, in order, once");
    sio.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_draining_node_closes_sockets_with_a_reason_clients_reconnect_on() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let mut sio = Sio::start().await;
    for transport in ["websocket", "polling"] {
        sio.connected(transport, node.addr, over(transport, &admin_token()))
            .await;
    }
    node.stop().await;
    for transport in ["websocket", "polling"] {
        let closing = sio
            .event_from(0, transport, "server:closing", |_| true)
            .await;
        assert_eq!(closing["code"], "NODE_DRAINING");
        let gone = sio
            .wait("the disconnect", Duration::from_secs(20), |r| {
                r["c"] == transport && r["type"] == "disconnect"
            })
            .await;
        assert_eq!(
            gone["reason"], "transport close",
            "{transport}: a reason clients reconnect on"
        );
    }
    sio.quit().await;
}

#[tokio::test]
async fn a_replay_while_events_keep_coming_delivers_each_once_in_order() {
    let redis = TestRedis::start();
    let a = api_node(&redis).await;
    let b = api_node(&redis).await;
    let admin = Api::new(&a, admin_token());
    let mut sio = Sio::start().await;
    let (_, seen_id) = seen_one_then_left(&mut sio, b.addr, &admin).await;
    let after: taskherd::events::EventId = seen_id.parse().unwrap();

    // Creates keep coming before, during and after the reconnect.
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creator = {
        let (made, api) = (made.clone(), Api::new(&a, admin_token()));
        tokio::spawn(async move {
            for _ in 0..150 {
                api.create(task_body("writer")).await;
                made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    wait_until(
        "some creates while away",
        Duration::from_secs(20),
        || async { (made.load(std::sync::atomic::Ordering::SeqCst) >= 30).then_some(()) },
    )
    .await;
    let from = sio.seen.len();
    sio.connected(
        "again",
        b.addr,
        json!({"auth": {"token": admin_token(), "lastEventId": after.to_string(),
                        "subscriptions": ["tasks"]}}),
    )
    .await;
    creator.await.unwrap();

    // What the stream holds after `after`: exactly what the client must get.
    let mut want = Vec::new();
    let mut cursor = after;
    loop {
        let page = a.store.replay_events(cursor, 500).await.unwrap();
        assert!(!page.trimmed);
        want.extend(page.events.iter().map(|e| e.id.to_string()));
        match page.events.last() {
            Some(e) if page.more => cursor = e.id,
            _ => break,
        }
    }
    assert_eq!(want.len(), 150);
    let last = want.last().unwrap().clone();
    sio.event_from(from, "again", "task:status", |d| {
        d["eventId"] == last.as_str()
    })
    .await;
    let got: Vec<String> = sio
        .events("again", "task:status")
        .iter()
        .map(|d| d["eventId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "each event once, in the stream's order");
    sio.quit().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn leaving_agent_and_all_task_rooms_stops_them_and_an_unreadable_queue_is_told() {
    let mut redis = TestRedis::start();
    let node = api_node(&redis).await;
    let admin = Api::new(&node, admin_token());
    let mut sio = Sio::start().await;
    sio.connected("c", node.addr, auth(&admin_token())).await;
    for (message, arg) in [
        ("subscribe:agent", json!(["writer"])),
        ("subscribe:tasks", json!([])),
    ] {
        assert_eq!(sio.call("c", message, arg).await["ok"], true);
    }
    let first = admin.create(task_body("writer")).await;
    sio.event_from(0, "c", "agent:task:update", |d| d["taskId"] == first["id"])
        .await;
    sio.event_from(0, "c", "task:status", |d| d["taskId"] == first["id"])
        .await;
    let left = sio
        .call("c", "unsubscribe:agent", json!([{"agentId": "writer"}]))
        .await;
    assert_eq!(left["was"], true, "{left}");
    // Still following every task: the next event shows the agent room is gone.
    let from = sio.seen.len();
    let second = admin.create(task_body("writer")).await;
    sio.event_from(from, "c", "task:status", |d| d["taskId"] == second["id"])
        .await;
    assert!(
        sio.seen[from..]
            .iter()
            .all(|r| r["event"] != "agent:task:update")
    );
    assert_eq!(
        sio.call("c", "unsubscribe:tasks", json!([])).await["was"],
        true
    );
    assert_eq!(feed_health(&node).await["subscriptions"]["tasks"], 0);

    // Redis away: a queue subscriber is told, with the REST error code.
    redis.redis.stop();
    wait_until(
        "the node sees Redis gone",
        Duration::from_secs(20),
        || async { (health(&node).await?["redis"]["reachable"] == false).then_some(()) },
    )
    .await;
    assert_eq!(
        sio.call("c", "subscribe:queue", json!([])).await["ok"],
        true
    );
    let error = sio.event_from(0, "c", "queue:error", |_| true).await;
    assert_eq!(error["code"], "REDIS_UNAVAILABLE");
    assert_eq!(error["event"], "queue:update");
    sio.quit().await;
    // Back, so that the node stops without waiting out Redis timeouts.
    redis.restart();
    node.stop().await;
}

#[tokio::test]
async fn sigterm_closes_the_binarys_sockets_with_the_draining_reason() {
    let redis = TestRedis::start();
    let mut child = ChildNode::spawn(&redis.url(), &["--no-demo-agents"]);
    wait_ready(child.port, Duration::from_secs(30)).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", child.port).parse().unwrap();
    let mut sio = Sio::start().await;
    sio.connected("c", addr, over("websocket", &admin_token()))
        .await;
    assert_eq!(
        sio.call("c", "subscribe:tasks", json!([])).await["ok"],
        true
    );
    let exited = tokio::task::spawn_blocking(move || child.terminate());
    let closing = sio.event_from(0, "c", "server:closing", |_| true).await;
    assert_eq!(closing["code"], "NODE_DRAINING");
    let gone = sio
        .wait("the disconnect", Duration::from_secs(20), |r| {
            r["c"] == "c" && r["type"] == "disconnect"
        })
        .await;
    assert_eq!(gone["reason"], "transport close");
    assert!(exited.await.unwrap().success());
    sio.quit().await;
}

#[tokio::test]
async fn a_client_that_leaves_leaves_nothing_behind() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let task = Api::new(&node, user_token("alice"))
        .create(task_body("writer"))
        .await;
    let mut sio = Sio::start().await;
    let short = taskherd::auth::Auth::new(test_auth_config())
        .unwrap()
        .mint("alice", Role::User, None, Duration::from_secs(1))
        .unwrap();
    for (c, transport) in [("ws", "websocket"), ("poll", "polling")] {
        sio.connected(c, node.addr, over(transport, &user_token("alice")))
            .await;
        assert_eq!(
            sio.call(c, "subscribe:task", json!([id_of(&task)])).await["ok"],
            true
        );
        assert_eq!(sio.call(c, "subscribe:queue", json!([])).await["ok"], true);
    }
    sio.connected(
        "replaying",
        node.addr,
        json!({"auth": {"token": user_token("alice"), "lastEventId": "0-0-0", "subscriptions": ["tasks"]}}),
    )
    .await;
    sio.connected("expiring", node.addr, auth(&short)).await;
    assert_eq!(node.feed.live_sessions(), 4);
    for c in ["ws", "poll", "replaying"] {
        sio.close(c).await;
    }
    // The expiring one is closed by the node, the others by their clients.
    wait_until("every session let go", Duration::from_secs(30), || async {
        (node.feed.live_sessions() == 0).then_some(())
    })
    .await;
    let feed = feed_health(&node).await;
    assert_eq!(feed["connections"], 0);
    assert_eq!(feed["subscriptions"]["task"], 0);
    assert_eq!(feed["subscriptions"]["queue"], 0);
    sio.quit().await;
    node.stop().await;
}
