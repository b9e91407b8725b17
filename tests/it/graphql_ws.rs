//! GraphQL subscriptions at `/graphql/ws`, driven by the real `graphql-ws`
//! client from npm (and a bare `ws` for the older subprotocol) against real
//! nodes on one Redis.

use std::time::Duration;

use serde_json::{Value, json};
use taskherd::auth::Role;
use taskherd::clock::Clock;
use taskherd::worker::Registry;

use crate::api_client::Api;
use crate::support::sio::Sio;
use crate::support::*;

async fn api_node(redis: &TestRedis, max_subscriptions: Option<usize>) -> TestNode {
    let mut config = node_config(&redis.url(), None, Clock::redis());
    if let Some(max) = max_subscriptions {
        config.api.feed.max_subscriptions = max;
    }
    TestNode::start(config, Registry::new()).await
}

fn ws_url(node: &TestNode) -> String {
    format!("ws://{}/graphql/ws", node.addr)
}

/// The seeds' subscription, unchanged.
const TASK_UPDATES: &str = r#"
subscription TaskUpdates {
  aiTaskStatusChanged {
    id
    status
    errorMessage
    completedAt
  }
}"#;

/// Connects `c` as `token` and waits for the server's ack.
async fn connected(d: &mut Sio, c: &str, node: &TestNode, token: &str) {
    let from = d.seen.len();
    d.send(json!({"op": "connect", "c": c, "url": ws_url(node), "params": {"token": token}}))
        .await;
    let r = d
        .wait_from(
            from,
            &format!("{c} connected"),
            Duration::from_secs(20),
            |r| r["c"] == c && (r["type"] == "connected" || r["type"] == "closed"),
        )
        .await;
    assert_eq!(r["type"], "connected", "{r}");
}

async fn subscribe(d: &mut Sio, c: &str, s: &str, query: &str, variables: Value) {
    d.send(json!({"op": "subscribe", "c": c, "s": s, "query": query, "variables": variables}))
        .await;
}

/// The next report of subscription `c`/`s` from `from` on that `pred` accepts.
async fn next_of(
    d: &mut Sio,
    from: usize,
    c: &str,
    s: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    d.wait_from(from, &format!("{c}/{s}"), Duration::from_secs(20), |r| {
        r["c"] == c && r["s"] == s && pred(r)
    })
    .await
}

/// The tasks `c`/`s` received so far, as `(id, status)`.
fn received(d: &Sio, c: &str, s: &str) -> Vec<(String, String)> {
    d.seen
        .iter()
        .filter(|r| r["c"] == c && r["s"] == s && r["type"] == "next")
        .map(|r| {
            let t = &r["data"]["aiTaskStatusChanged"];
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_subscription_on_one_node_sees_changes_made_through_another() {
    let redis = TestRedis::start();
    let a = api_node(&redis, None).await;
    let b = api_node(&redis, None).await;
    let alice_token = token("alice", Role::User, None);
    let alice = Api::new(&a, alice_token.clone());
    let bob = Api::new(&a, token("bob", Role::User, None));
    let admin = Api::new(&a, admin_token());
    let task =
        json!({"agentId": "writer", "taskType": "translation", "inputData": {"text": "Hello"}});

    let mut d = Sio::graphql_ws().await;
    connected(&mut d, "alice", &b, &alice_token).await;
    subscribe(&mut d, "alice", "all", TASK_UPDATES, json!({})).await;
    // No subscribe ack exists in the protocol: create until one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        let id = alice.create(task.clone()).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let from = d.seen.len();
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            next_of(&mut d, from, "alice", "all", |r| r["type"] == "next"),
        )
        .await;
        if got.is_ok() {
            break id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event arrived");
    };
    // Live from here: every change through node A reaches node B's client,
    // in order, and only alice's tasks.
    let bobs = bob.create(task.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t1 = alice.create(task.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let from = d.seen.len();
    let r = next_of(&mut d, from.saturating_sub(2), "alice", "all", |r| {
        r["data"]["aiTaskStatusChanged"]["id"] == t1.as_str()
    })
    .await;
    assert_eq!(r["data"]["aiTaskStatusChanged"]["status"], "QUEUED", "{r}");
    assert!(
        !received(&d, "alice", "all")
            .iter()
            .any(|(id, _)| *id == bobs),
        "alice saw bob's task"
    );

    // One task: its state now, then its changes.
    subscribe(
        &mut d,
        "alice",
        "one",
        "subscription($id: ID) { aiTaskStatusChanged(taskId: $id) { id status agent { id } isTerminal } }",
        json!({"id": t1}),
    )
    .await;
    let r = next_of(&mut d, 0, "alice", "one", |r| r["type"] == "next").await;
    assert_eq!(
        r["data"]["aiTaskStatusChanged"],
        json!({"id": t1, "status": "QUEUED", "agent": null, "isTerminal": false}),
        "{r}"
    );
    let from = d.seen.len();
    admin
        .put(&format!("/api/ai/tasks/{t1}/cancel"), json!({}))
        .await
        .expect(200);
    let r = next_of(&mut d, from, "alice", "one", |r| r["type"] == "next").await;
    assert_eq!(
        r["data"]["aiTaskStatusChanged"]["status"], "CANCELLED",
        "{r}"
    );
    assert_eq!(r["data"]["aiTaskStatusChanged"]["isTerminal"], true);
    let r = next_of(&mut d, from, "alice", "all", |r| {
        r["data"]["aiTaskStatusChanged"]["id"] == t1.as_str()
    })
    .await;
    assert_eq!(
        r["data"]["aiTaskStatusChanged"]["status"], "CANCELLED",
        "{r}"
    );
    assert_eq!(
        received(&d, "alice", "all")
            .first()
            .map(|(id, _)| id.clone()),
        Some(first)
    );

    // Another user's task is not found, exactly like a missing one.
    for (s, id) in [
        ("bobs", bobs.as_str()),
        ("missing", "task_01JAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        subscribe(
            &mut d,
            "alice",
            s,
            "subscription($id: ID) { aiTaskStatusChanged(taskId: $id) { id } }",
            json!({"id": id}),
        )
        .await;
        // graphql-ws reports a refused subscription as `error` or as a
        // `next` carrying errors, depending on the server's framing.
        let r = next_of(&mut d, 0, "alice", s, |r| r["errors"].is_array()).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "TASK_NOT_FOUND",
            "{r}"
        );
        assert!(r["data"].is_null(), "{r}");
    }

    // The queue's status: now, then after changes.
    subscribe(
        &mut d,
        "alice",
        "queue",
        "subscription { taskQueueUpdated { totalTasks queueHealth } }",
        json!({}),
    )
    .await;
    let r = next_of(&mut d, 0, "alice", "queue", |r| r["type"] == "next").await;
    let total = r["data"]["taskQueueUpdated"]["totalTasks"]
        .as_i64()
        .unwrap();
    let from = d.seen.len();
    alice.create(task.clone()).await;
    let r = next_of(&mut d, from, "alice", "queue", |r| {
        r["data"]["taskQueueUpdated"]["totalTasks"].as_i64() == Some(total + 1)
    })
    .await;
    assert_eq!(r["type"], "next");

    // Over POST a subscription is refused with a code.
    let resp = http_client()
        .post(a.url("/graphql"))
        .bearer_auth(&alice_token)
        .json(&json!({"query": TASK_UPDATES}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["errors"][0]["extensions"]["code"].is_string(),
        "{body}"
    );

    // A draining node closes its connections with NODE_DRAINING.
    let from = d.seen.len();
    b.stop().await;
    let r = d
        .wait_from(from, "alice closed", Duration::from_secs(20), |r| {
            r["c"] == "alice" && r["type"] == "closed"
        })
        .await;
    assert_eq!(r["code"], 1012, "{r}");
    assert!(
        r["reason"].as_str().unwrap().starts_with("NODE_DRAINING"),
        "{r}"
    );
    d.quit().await;
    a.stop().await;
}

#[tokio::test]
async fn tokens_and_limits_hold_on_the_websocket() {
    let redis = TestRedis::start();
    let node = api_node(&redis, Some(2)).await;
    let mut d = Sio::graphql_ws().await;

    // A bad or missing token is refused at connection_init, for good.
    for (c, params) in [
        ("none", json!({})),
        ("bad", json!({"token": "not-a-token"})),
    ] {
        let from = d.seen.len();
        d.send(json!({"op": "connect", "c": c, "url": ws_url(&node), "params": params}))
            .await;
        let r = d
            .wait_from(from, c, Duration::from_secs(20), |r| {
                r["c"] == c && (r["type"] == "connected" || r["type"] == "closed")
            })
            .await;
        assert_eq!(r["type"], "closed", "{r}");
        assert_eq!(r["code"], 4401, "{r}");
        assert!(
            r["reason"].as_str().unwrap().starts_with("UNAUTHORIZED"),
            "{r}"
        );
    }

    // A metrics token follows no tasks; a user follows no other agent's.
    connected(&mut d, "m", &node, &token("p", Role::Metrics, None)).await;
    subscribe(&mut d, "m", "s", TASK_UPDATES, json!({})).await;
    let r = next_of(&mut d, 0, "m", "s", |r| r["type"] != "complete").await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN", "{r}");

    // Subscriptions per connection are limited; completing one frees it.
    let user = token("alice", Role::User, None);
    connected(&mut d, "u", &node, &user).await;
    let queue = "subscription { taskQueueUpdated { totalTasks } }";
    for s in ["q1", "q2"] {
        subscribe(&mut d, "u", s, queue, json!({})).await;
        next_of(&mut d, 0, "u", s, |r| r["type"] == "next").await;
    }
    subscribe(&mut d, "u", "q3", queue, json!({})).await;
    let r = next_of(&mut d, 0, "u", "q3", |r| r["type"] != "complete").await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{r}"
    );
    d.send(json!({"op": "unsubscribe", "c": "u", "s": "q1"}))
        .await;
    // The slot is free once the server has dropped q1: ask until it is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let s = format!("again{n}");
        let from = d.seen.len();
        subscribe(&mut d, "u", &s, queue, json!({})).await;
        let r = next_of(&mut d, from, "u", &s, |r| r["type"] != "complete").await;
        if r["type"] == "next" && r["errors"].is_null() {
            break;
        }
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
            "{r}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
    }

    // Depth is limited over WebSocket too, with a code.
    subscribe(
        &mut d,
        "u",
        "deep",
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } }",
        json!({}),
    )
    .await;
    let r = next_of(&mut d, 0, "u", "deep", |r| r["type"] != "complete").await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
        "{r}"
    );

    // The older subprotocol (subscriptions-transport-ws) works as well.
    d.send(json!({"op": "raw", "c": "old", "url": ws_url(&node), "protocol": "graphql-ws"}))
        .await;
    d.wait("old open", Duration::from_secs(20), |r| {
        r["c"] == "old" && r["type"] == "raw_open"
    })
    .await;
    d.send(json!({"op": "raw_send", "c": "old", "msg": {"type": "connection_init", "payload": {"token": user}}}))
        .await;
    d.wait("old ack", Duration::from_secs(20), |r| {
        r["c"] == "old" && r["data"]["type"] == "connection_ack"
    })
    .await;
    d.send(json!({"op": "raw_send", "c": "old", "msg": {"id": "1", "type": "start", "payload": {"query": queue}}}))
        .await;
    let r = d
        .wait("old data", Duration::from_secs(20), |r| {
            r["c"] == "old" && r["data"]["type"] == "data"
        })
        .await;
    assert!(
        r["data"]["payload"]["data"]["taskQueueUpdated"]["totalTasks"].is_number(),
        "{r}"
    );

    // Without a GraphQL subprotocol, or without an upgrade: a clear error.
    let resp = http_client()
        .get(node.url("/graphql/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
    d.send(json!({"op": "raw", "c": "plain", "url": ws_url(&node), "protocol": "chat"}))
        .await;
    let r = d
        .wait("plain refused", Duration::from_secs(20), |r| {
            r["c"] == "plain" && r["type"] == "raw_refused"
        })
        .await;
    assert_eq!(r["status"], 400, "{r}");

    // Protocol errors close with graphql-transport-ws' codes.
    for (c, msg, want) in [
        (
            "early",
            json!({"id": "1", "type": "subscribe", "payload": {"query": queue}}),
            4401,
        ),
        ("garbled", json!({"type": "no such message"}), 4400),
    ] {
        d.send(
            json!({"op": "raw", "c": c, "url": ws_url(&node), "protocol": "graphql-transport-ws"}),
        )
        .await;
        d.wait("open", Duration::from_secs(20), |r| {
            r["c"] == c && r["type"] == "raw_open"
        })
        .await;
        d.send(json!({"op": "raw_send", "c": c, "msg": msg})).await;
        let r = d
            .wait("closed", Duration::from_secs(20), |r| {
                r["c"] == c && r["type"] == "raw_closed"
            })
            .await;
        assert_eq!(r["code"], want, "{r}");
    }
    // The older protocol's refused init closes with 4401 too.
    d.send(json!({"op": "raw", "c": "oldbad", "url": ws_url(&node), "protocol": "graphql-ws"}))
        .await;
    d.wait("open", Duration::from_secs(20), |r| {
        r["c"] == "oldbad" && r["type"] == "raw_open"
    })
    .await;
    d.send(json!({"op": "raw_send", "c": "oldbad", "msg": {"type": "connection_init", "payload": {"token": "bad"}}}))
        .await;
    let r = d
        .wait("closed", Duration::from_secs(20), |r| {
            r["c"] == "oldbad" && r["type"] == "raw_closed"
        })
        .await;
    assert_eq!(r["code"], 4401, "{r}");

    // Browsers connect from FRONTEND_URL or the node's own origin only.
    d.send(json!({"op": "raw", "c": "evil", "url": ws_url(&node), "protocol": "graphql-transport-ws", "origin": "http://evil.example"}))
        .await;
    let r = d
        .wait("evil refused", Duration::from_secs(20), |r| {
            r["c"] == "evil" && r["type"] == "raw_refused"
        })
        .await;
    assert_eq!(r["status"], 403, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    let own = format!("http://{}", node.addr);
    d.send(json!({"op": "raw", "c": "own", "url": ws_url(&node), "protocol": "graphql-transport-ws", "origin": own}))
        .await;
    d.wait("own open", Duration::from_secs(20), |r| {
        r["c"] == "own" && r["type"] == "raw_open"
    })
    .await;
    d.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn operations_over_the_websocket_are_rate_limited_one_by_one() {
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api.rate_limit_per_s = 3;
    let node = TestNode::start(config, Registry::new()).await;
    let mut d = Sio::graphql_ws().await;
    connected(&mut d, "u", &node, &token("alice", Role::User, None)).await;
    for i in 0..12 {
        subscribe(
            &mut d,
            "u",
            &format!("q{i}"),
            "{ taskQueueStatus { totalTasks } }",
            json!({}),
        )
        .await;
    }
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = next_of(&mut d, 0, "u", &format!("q{i}"), |r| {
            r["type"] == "next" || r["type"] == "error"
        })
        .await;
        codes.push(
            r["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("ok")
                .to_string(),
        );
    }
    assert!(codes.iter().any(|c| c == "RATE_LIMITED"), "{codes:?}");
    assert!(codes.iter().any(|c| c == "ok"), "{codes:?}");
    assert!(
        codes.iter().all(|c| c == "ok" || c == "RATE_LIMITED"),
        "{codes:?}"
    );
    d.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn async_graphqls_own_executor_on_node_b_sees_changes_made_through_node_a() {
    use futures::StreamExt;
    use taskherd::auth::Principal;
    let redis = TestRedis::start();
    let a = api_node(&redis, None).await;
    let b = api_node(&redis, None).await;
    let alice = Principal {
        sub: "alice".into(),
        role: Role::User,
        agent: None,
    };
    let api = Api::new(&a, token("alice", Role::User, None));
    let id = api
        .create(json!({"agentId": "writer", "taskType": "t"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let query = format!("subscription {{ aiTaskStatusChanged(taskId: \"{id}\") {{ id status }} }}");
    let mut stream = b.graphql.execute_stream(alice.clone(), query.as_str());
    let next = |r: Option<async_graphql::Response>| {
        let r = r.expect("the stream goes on");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.data.into_json().unwrap()["aiTaskStatusChanged"]["status"].clone()
    };
    let first = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap();
    assert_eq!(next(first), "QUEUED");
    Api::new(&a, admin_token())
        .put(&format!("/api/ai/tasks/{id}/cancel"), json!({}))
        .await
        .expect(200);
    let changed = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap();
    assert_eq!(next(changed), "CANCELLED");
    // Another user follows nothing of alice's.
    let bob = Principal {
        sub: "bob".into(),
        role: Role::User,
        agent: None,
    };
    let mut refused = b.graphql.execute_stream(bob, query.as_str());
    let r = tokio::time::timeout(Duration::from_secs(20), refused.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.errors[0].extensions.as_ref().and_then(|e| e.get("code")),
        Some(&async_graphql::Value::from("TASK_NOT_FOUND")),
        "{:?}",
        r.errors
    );
    drop(stream);
    drop(refused);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_subscription_that_falls_behind_is_cut_off_with_slow_consumer() {
    use futures::StreamExt;
    use taskherd::auth::Principal;
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    // The smallest buffer: 64 changes.
    config.api.feed.client_buffer = 1;
    let node = TestNode::start(config, Registry::new()).await;
    let admin = Principal {
        sub: "root".into(),
        role: Role::Admin,
        agent: None,
    };
    let api = Api::new(&node, admin_token());
    let mut stream = node
        .graphql
        .execute_stream(admin, "subscription { aiTaskStatusChanged { id } }");
    // Live once a change arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        api.create(json!({"agentId": "a", "taskType": "t"})).await;
        if tokio::time::timeout(Duration::from_millis(500), stream.next())
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never live");
    }
    // 100 changes while the subscriber reads nothing: more than its buffer.
    let tasks: Vec<Value> = (0..100)
        .map(|i| json!({"agentId": "a", "taskType": "t", "inputData": {"i": i}}))
        .collect();
    api.post("/api/ai/tasks/batch", json!({"tasks": tasks}))
        .await
        .expect(201);
    // Still reading nothing until the node has cut it off (the only
    // GraphQL subscription that falls behind in these tests).
    wait_until(
        "the subscription is cut off",
        Duration::from_secs(20),
        || {
            let api = api.clone();
            async move {
                let text = api
                    .request(reqwest::Method::GET, "/metrics")
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.lines()
                    .find(|l| {
                        l.starts_with("taskherd_websocket_events_dropped_total{reason=\"graphql\"}")
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .filter(|n| *n >= 1.0)
            }
        },
    )
    .await;
    let mut delivered = 0;
    let ending = loop {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("the stream answers ({delivered} delivered)"))
            .expect("it ends with an error, not silently");
        if r.errors.is_empty() {
            delivered += 1;
            continue;
        }
        break r;
    };
    assert_eq!(
        ending.errors[0]
            .extensions
            .as_ref()
            .and_then(|e| e.get("code")),
        Some(&async_graphql::Value::from("SLOW_CONSUMER")),
        "{:?}",
        ending.errors
    );
    // What its buffer held (64), then the refusal.
    assert!(delivered <= 64, "{delivered} delivered");
    assert!(
        tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    node.stop().await;
}

#[tokio::test]
async fn a_silent_connection_and_a_too_fast_one_are_closed_with_their_codes() {
    let redis = TestRedis::start();
    let mut config = node_config(&redis.url(), None, Clock::redis());
    config.api.rate_limit_per_s = 1;
    let node = TestNode::start(config, Registry::new()).await;
    let mut d = Sio::graphql_ws().await;
    // No connection_init within 10 s: 4408.
    d.send(json!({"op": "raw", "c": "silent", "url": ws_url(&node), "protocol": "graphql-transport-ws"}))
        .await;
    // connection_init is rate limited per subject: 1/s here, five at once.
    let user = token("alice", Role::User, None);
    for i in 0..5 {
        d.send(json!({"op": "connect", "c": format!("c{i}"), "url": ws_url(&node), "params": {"token": user}}))
            .await;
    }
    let mut limited = 0;
    for i in 0..5 {
        let c = format!("c{i}");
        let r = d
            .wait(&c, Duration::from_secs(20), |r| {
                r["c"] == c.as_str() && (r["type"] == "connected" || r["type"] == "closed")
            })
            .await;
        if r["type"] == "closed" {
            assert_eq!(r["code"], 4429, "{r}");
            assert!(
                r["reason"].as_str().unwrap().starts_with("RATE_LIMITED"),
                "{r}"
            );
            limited += 1;
        }
    }
    assert!(limited >= 1, "none of five was limited");
    let r = d
        .wait("silent closed", Duration::from_secs(20), |r| {
            r["c"] == "silent" && r["type"] == "raw_closed"
        })
        .await;
    assert_eq!(r["code"], 4408, "{r}");
    d.quit().await;
    node.stop().await;
}
