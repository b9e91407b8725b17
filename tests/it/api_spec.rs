//! The served OpenAPI document is one that client generators read (plain
//! `$ref`s, nullable refs 3.0 understands, no rustdoc syntax, every `$ref`
//! resolves), and the input forms it documents beside the seeds' own are
//! accepted: RFC 3339 dates in list and statistics queries, and a batch body
//! that is a bare array of tasks.

use serde_json::{Value, json};
use taskherd::auth::Role;
use taskherd::clock::Clock;
use taskherd::worker::Registry;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::api_client::Api;
use crate::support::*;

const DAY_MS: i64 = 86_400_000;

/// A node without workers: tasks stay where the API puts them.
async fn api_node(redis: &TestRedis) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await
}

async fn total_tasks(api: &Api) -> u64 {
    api.get("/api/ai/tasks/queue/status").await.expect(200)["totalTasks"]
        .as_u64()
        .unwrap()
}

/// `ms` as RFC 3339 at `offset_minutes` east of UTC, ready for a query
/// string (`+` escaped).
fn rfc3339(ms: i64, offset_minutes: i32) -> String {
    let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .to_offset(offset)
        .format(&Rfc3339)
        .unwrap()
        .replace('+', "%2B")
}

/// Every node of the document with its JSON pointer.
fn walk<'a>(node: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                walk(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push((at, node));
}

/// Rustdoc links in a text: ``[`name`]`` not followed by a Markdown URL, or
/// `[crate::...]`-style paths.
fn rustdoc_links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let after = &rest[start + 2..];
        match after.find("`]") {
            Some(end) => {
                let tail = &after[end + 2..];
                if !tail.starts_with('(') {
                    found.push(rest[start..start + 2 + end + 2].to_string());
                }
                rest = tail;
            }
            None => break,
        }
    }
    for path in ["[crate::", "[Self::", "[super::", "[self::"] {
        if text.contains(path) {
            found.push(path.to_string());
        }
    }
    found
}

const ANNOTATIONS: [&str; 3] = ["description", "title", "example"];

#[tokio::test]
async fn the_served_spec_has_plain_refs_no_rustdoc_links_and_every_ref_resolves() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let spec = Api::anonymous(&node)
        .get("/api/openapi.json")
        .await
        .expect(200);
    let mut nodes = Vec::new();
    walk(&spec, String::new(), &mut nodes);

    let mut refs = 0;
    for (at, value) in &nodes {
        if let Some(text) = value.as_str() {
            let links = rustdoc_links(text);
            assert!(
                links.is_empty(),
                "{at}: rustdoc link syntax {links:?} in {text:?}"
            );
        }
        let Some(map) = value.as_object() else {
            continue;
        };
        if let Some(target) = map.get("$ref") {
            refs += 1;
            let target = target.as_str().unwrap();
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: $ref {target} is not local to the document"));
            assert!(
                spec.pointer(pointer).is_some(),
                "{at}: $ref {target} resolves to nothing"
            );
            assert_eq!(
                map.len(),
                1,
                "{at}: keys beside a $ref are ignored in 3.0: {value}"
            );
        }
        if let Some(all_of) = map.get("allOf").and_then(Value::as_array) {
            let wraps_one_ref = all_of.iter().filter(|p| p.get("$ref").is_some()).count() == 1
                && all_of.iter().all(|p| {
                    p.get("$ref").is_some()
                        || p.as_object()
                            .unwrap()
                            .keys()
                            .all(|k| ANNOTATIONS.contains(&k.as_str()))
                });
            assert!(!wraps_one_ref, "{at}: allOf around a single $ref: {value}");
        }
        // A schema without a type takes null anyway; a composed one does not.
        let composed = ["allOf", "anyOf", "oneOf"]
            .iter()
            .any(|k| map.contains_key(*k));
        if map.get("nullable") == Some(&json!(true)) && composed {
            assert!(
                map.get("type").is_some(),
                "{at}: nullable beside a composition without a type means nothing in \
                 OpenAPI 3.0: {value}"
            );
        }
    }
    assert!(refs > 50, "the document uses references ({refs})");

    // A nullable reference is the reference or null.
    let priority = &spec["components"]["schemas"]["CreateTaskRequest"]["properties"]["priority"];
    assert_eq!(
        priority["anyOf"],
        json!([
            {"$ref": "#/components/schemas/Priority"},
            {"type": "string", "nullable": true, "enum": [null]},
        ])
    );
    assert_eq!(priority["description"], "Claim priority (default NORMAL).");
    assert_eq!(
        spec["components"]["schemas"]["Task"]["properties"]["status"],
        json!({"$ref": "#/components/schemas/TaskStatus"})
    );

    // Both date forms and both batch forms are documented.
    let date_schemas = [
        ("/api/ai/tasks", "startDate"),
        ("/api/ai/tasks", "endDate"),
        ("/api/ai/tasks/statistics/summary", "startDate"),
        ("/api/ai/tasks/statistics/summary", "endDate"),
    ];
    for (path, name) in date_schemas {
        let param = spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no {name}"));
        let forms = param["schema"]["oneOf"].as_array().unwrap();
        assert_eq!(forms[0]["type"], "integer", "{path} {name}");
        assert_eq!(forms[0]["minimum"], json!(0.0), "{path} {name}");
        assert_eq!(forms[1]["type"], "string", "{path} {name}");
        assert_eq!(forms[1]["format"], "date-time", "{path} {name}");
    }
    let batch = &spec["paths"]["/api/ai/tasks/batch"]["post"]["requestBody"]["content"]["application/json; charset=utf-8"]
        ["schema"]["oneOf"];
    assert_eq!(
        batch[0],
        json!({"$ref": "#/components/schemas/BatchCreateRequest"})
    );
    assert_eq!(batch[1]["type"], "array");
    assert_eq!(
        batch[1]["items"],
        json!({"$ref": "#/components/schemas/CreateTaskRequest"})
    );
    assert_eq!(
        (batch[1]["minItems"].clone(), batch[1]["maxItems"].clone()),
        (json!(1), json!(100))
    );
    node.stop().await;
}

#[tokio::test]
async fn list_and_statistics_take_rfc3339_dates_as_well_as_unix_ms() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, token("alice", Role::User, None));
    let mut created = Vec::new();
    for i in 0..3 {
        let task = alice
            .create(json!({"agentId": "a", "taskType": format!("t{i}")}))
            .await;
        created.push(task["createdAt"].as_i64().unwrap());
    }
    let (oldest, newest) = (created[0], created[2]);
    let count = |query: String| {
        let alice = alice.clone();
        async move {
            let page = alice
                .get(&format!("/api/ai/tasks?{query}"))
                .await
                .expect(200);
            page["totalCount"].as_u64().unwrap()
        }
    };
    let at_newest = created.iter().filter(|c| **c == newest).count() as u64;

    // The same instants as Unix ms, in UTC and at offsets east and west.
    assert_eq!(count(format!("startDate={oldest}")).await, 3);
    assert_eq!(count(format!("startDate={}", rfc3339(oldest, 0))).await, 3);
    assert_eq!(
        count(format!("startDate={}", rfc3339(oldest, 330))).await,
        3
    );
    assert_eq!(
        count(format!(
            "startDate={}&endDate={}",
            rfc3339(newest, -600),
            rfc3339(newest, 120)
        ))
        .await,
        at_newest
    );
    // One millisecond later, written as a date-time: the newest is out.
    assert_eq!(
        count(format!("startDate={}", rfc3339(newest + 1, 0))).await,
        0
    );
    // Forms mixed, and a range in the year 2000 that holds nothing.
    assert_eq!(
        count(format!(
            "startDate={oldest}&endDate={}",
            rfc3339(newest, 60)
        ))
        .await,
        3
    );
    assert_eq!(
        count("startDate=2000-01-01T00:00:00Z&endDate=2000-01-02T00:00:00.5%2B01:00".into()).await,
        0
    );

    // Statistics count whole UTC days: an offset moves the instant, not the day.
    let day_start = |ms: i64| ms.div_euclid(DAY_MS) * DAY_MS;
    let stats = alice
        .get(&format!(
            "/api/ai/tasks/statistics/summary?startDate={}&endDate={}",
            rfc3339(oldest, -300),
            rfc3339(newest, 540)
        ))
        .await
        .expect(200);
    assert_eq!(stats["totalTasks"], 3);
    assert_eq!(stats["fromMs"], json!(day_start(oldest)));
    assert_eq!(stats["toMs"], json!(day_start(newest)));
    let before = day_start(oldest) - 1;
    let stats = alice
        .get(&format!(
            "/api/ai/tasks/statistics/summary?startDate={}&endDate={before}",
            rfc3339(before, 0)
        ))
        .await
        .expect(200);
    assert_eq!(stats["totalTasks"], 0);
    assert_eq!(stats["fromMs"], json!(day_start(oldest) - DAY_MS));

    // A date that is not one is refused on both endpoints, in the one format.
    for path in ["/api/ai/tasks", "/api/ai/tasks/statistics/summary"] {
        for bad in [
            "startDate=2026-02-30T00:00:00Z",
            "endDate=2026-12-01T10:00:00",
            "endDate=2026-12-01%2010:00:00Z",
            "startDate=2026-12-01T10:00:00%2B24:00",
            "startDate=yesterday",
            "endDate=253402300800000",
        ] {
            let answer = alice.get(&format!("{path}?{bad}")).await;
            assert_eq!(answer.status.as_u16(), 400, "{path}?{bad}: {}", answer.body);
            let body = answer.expect_error(400, "VALIDATION_ERROR");
            assert!(
                body["error"]["message"].as_str().unwrap().contains("Date"),
                "{path}?{bad}: the message names the parameter: {body}"
            );
        }
    }
    node.stop().await;
}

#[tokio::test]
async fn a_batch_may_be_a_bare_array_of_tasks_with_the_same_limits() {
    let redis = TestRedis::start();
    let node = api_node(&redis).await;
    let alice = Api::new(&node, token("alice", Role::User, None));

    let ok = alice
        .post(
            "/api/ai/tasks/batch",
            json!([
                {"agentId": "a", "taskType": "t", "priority": "HIGH"},
                {"agentId": "b", "taskType": "t", "idempotencyKey": "bare-1"},
            ]),
        )
        .await
        .expect(201);
    assert_eq!(ok["createdCount"], 2);
    assert_eq!(ok["existingCount"], 0);
    let agents: Vec<&str> = ok["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["a", "b"]);
    assert_eq!(ok["tasks"][0]["ownerId"], "alice");
    assert_eq!(ok["tasks"][0]["priority"], "HIGH");

    // All or nothing, with the refused items named.
    let refused = alice
        .post(
            "/api/ai/tasks/batch",
            json!([
                {"agentId": "a", "taskType": "t"},
                {"agentId": "bad agent", "taskType": "t"},
                {"agentId": "a", "taskType": "t", "timeoutMs": 0},
            ]),
        )
        .await
        .expect_error(400, "VALIDATION_ERROR");
    let indexes: Vec<u64> = refused["error"]["details"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2], "{refused}");
    assert_eq!(
        total_tasks(&alice).await,
        2,
        "a refused batch created tasks"
    );

    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"agentId": "a", "taskType": "t"}))
        .collect();
    for body in [
        Value::Array(too_many),
        json!([]),
        json!([{"agentId": "a", "taskType": "t", "status": "COMPLETED"}]),
        json!([{"agentId": 7, "taskType": "t"}]),
        json!("tasks"),
    ] {
        let answer = alice.post("/api/ai/tasks/batch", body.clone()).await;
        assert_eq!(answer.status.as_u16(), 400, "{body}: {}", answer.body);
        answer.expect_error(400, "VALIDATION_ERROR");
    }
    assert_eq!(
        total_tasks(&alice).await,
        2,
        "a refused batch created tasks"
    );

    // Idempotency keys hold across the two forms.
    let repeat = alice
        .post(
            "/api/ai/tasks/batch",
            json!({"tasks": [{"agentId": "b", "taskType": "t", "idempotencyKey": "bare-1"}]}),
        )
        .await
        .expect(201);
    assert_eq!(repeat["existingCount"], 1);
    assert_eq!(repeat["tasks"][0]["id"], ok["tasks"][1]["id"]);
    assert_eq!(total_tasks(&alice).await, 2);
    node.stop().await;
}
