//! `/metrics` of a real node process (its own recorder): every documented
//! series is there, the counters equal what the test did, and promtool
//! accepts the exposition.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::json;
use taskherd::auth::Role;
use taskherd::metrics::names;

use crate::api_client::Api;
use crate::support::*;

/// Samples of an exposition: "name{labels}" (labels sorted as rendered) -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include all of `labels`
/// (0 when there is none; panics when several match).
fn value(all: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = all
        .iter()
        .filter(|(key, _)| {
            let (n, rest) = key.split_once('{').unwrap_or((key.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {matching:?}"
    );
    matching.first().copied().unwrap_or(0.0)
}

async fn status_of(api: &Api, id: &str) -> String {
    api.get(&format!("/api/ai/tasks/{id}")).await.expect(200)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn metrics_count_what_the_node_did_and_pass_promtool() {
    let redis = TestRedis::start();
    let node = ChildNode::spawn(
        &redis.url(),
        &["--backoff-base-ms", "20", "--backoff-cap-ms", "40"],
    );
    wait_until("child node answers", Duration::from_secs(20), || async {
        node.health().await.map(|_| ())
    })
    .await;
    let base = format!("http://127.0.0.1:{}", node.port);
    let user = Api::at(&base, token("alice", Role::User, None));
    let worker = Api::at(&base, token("w1", Role::Worker, Some("ext")));
    let scraper = Api::at(&base, token("prometheus", Role::Metrics, None));

    // Three echo tasks run by the node's own workers.
    let mut echo = Vec::new();
    for i in 0..3 {
        let t = user
            .create(
                json!({"agentId": "echo", "taskType": "greet", "priority": "HIGH",
                           "inputData": {"i": i}}),
            )
            .await;
        echo.push(t["id"].as_str().unwrap().to_string());
    }
    // ext: one completed with cost and tokens, one failed twice (retried,
    // then for good), one cancelled and retried by hand, one reaped.
    let ok = user
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let claim = |lease: u64| {
        let worker = worker.clone();
        async move {
            let c = worker
                .post(
                    "/api/ai/agents/ext/claim",
                    json!({"waitMs": 5000, "leaseMs": lease}),
                )
                .await
                .expect(200);
            let t = &c["tasks"][0];
            (
                t["id"].as_str().unwrap().to_string(),
                t["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let (id, tok) = claim(30_000).await;
    assert_eq!(id, ok["id"].as_str().unwrap());
    worker
        .post(
            &format!("/api/ai/tasks/{id}/complete"),
            json!({"token": tok, "outputData": 1, "actualCost": 0.5,
                   "metrics": {"tokensIn": 10, "tokensOut": 20}}),
        )
        .await
        .expect(200);
    let bad = user
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let (id, tok) = claim(30_000).await;
    assert_eq!(id, bad["id"].as_str().unwrap());
    worker
        .post(
            &format!("/api/ai/tasks/{id}/fail"),
            json!({"token": tok, "errorMessage": "x"}),
        )
        .await
        .expect(200);
    let (id2, tok) = claim(30_000).await;
    assert_eq!(id2, id);
    worker
        .post(
            &format!("/api/ai/tasks/{id}/fail"),
            json!({"token": tok, "errorMessage": "y", "retryable": false}),
        )
        .await
        .expect(200);
    let cancelled = user
        .create(json!({"agentId": "ext", "taskType": "t"}))
        .await;
    let cid = cancelled["id"].as_str().unwrap();
    user.put_empty(&format!("/api/ai/tasks/{cid}/cancel"))
        .await
        .expect(200);
    user.post_empty(&format!("/api/ai/tasks/{cid}/retry"))
        .await
        .expect(200);
    // The retried task is claimed with a short lease and left to the reaper.
    let (rid, _) = claim(1_000).await;
    assert_eq!(rid, cid);
    wait_until(
        "the reaper hands the task back",
        Duration::from_secs(10),
        || {
            let user = user.clone();
            async move { (status_of(&user, cid).await == "QUEUED").then_some(()) }
        },
    )
    .await;
    // An attempt past its timeoutMs with no retries left ends TIMEOUT
    // (URGENT: claimed before the reaped task, which is ready again).
    let slow = user
        .create(
            json!({"agentId": "ext", "taskType": "slow", "timeoutMs": 500,
                       "maxRetries": 0, "priority": "URGENT"}),
        )
        .await;
    let (sid, _) = claim(30_000).await;
    assert_eq!(sid, slow["id"].as_str().unwrap());
    wait_until(
        "the reaper times the task out",
        Duration::from_secs(10),
        || {
            let user = user.clone();
            let sid = sid.clone();
            async move { (status_of(&user, &sid).await == "TIMEOUT").then_some(()) }
        },
    )
    .await;
    for id in &echo {
        wait_until("echo completes", Duration::from_secs(10), || {
            let user = user.clone();
            async move { (status_of(&user, id).await == "COMPLETED").then_some(()) }
        })
        .await;
    }

    // Only admin and metrics tokens scrape; a metrics token reads no tasks.
    user.get("/metrics").await.expect_error(403, "FORBIDDEN");
    scraper
        .get("/api/ai/tasks")
        .await
        .expect_error(403, "FORBIDDEN");
    scraper.get("/api/ai/tasks/queue/status").await.expect(200);
    scraper
        .post(
            &format!("/api/ai/tasks/{cid}/heartbeat"),
            json!({"token": "t"}),
        )
        .await
        .expect_error(403, "FORBIDDEN");
    // A GraphQL query: counted and timed like REST's requests.
    let answer = user
        .post(
            "/graphql",
            json!({"query": "{ taskQueueStatus { totalTasks } }"}),
        )
        .await
        .expect(200);
    assert!(answer["data"]["taskQueueStatus"]["totalTasks"].is_number());
    let resp = scraper
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let all = samples(&text);

    for name in names::ALL {
        assert!(
            text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} ")),
            "{name} is not described in /metrics"
        );
    }
    let v = |name: &str, labels: &[(&str, &str)]| value(&all, name, labels);
    let echo_l = [("agent", "echo"), ("task_type", "greet")];
    let ext_l = [("agent", "ext"), ("task_type", "t")];
    assert_eq!(
        v(
            names::TASKS_CREATED,
            &[("agent", "echo"), ("priority", "HIGH")]
        ),
        3.0
    );
    assert_eq!(v(names::TASKS_CREATED, &ext_l), 3.0);
    assert_eq!(v(names::TASKS_STARTED, &echo_l), 3.0);
    assert_eq!(v(names::TASKS_STARTED, &ext_l), 4.0);
    assert_eq!(v(names::TASKS_COMPLETED, &echo_l), 3.0);
    assert_eq!(v(names::TASKS_COMPLETED, &ext_l), 1.0);
    assert_eq!(v(names::TASKS_FAILED, &ext_l), 1.0);
    assert_eq!(v(names::TASKS_CANCELLED, &ext_l), 1.0);
    assert_eq!(v(names::TASKS_TIMED_OUT, &ext_l), 0.0);
    let slow_l = [("agent", "ext"), ("task_type", "slow")];
    assert_eq!(v(names::TASKS_TIMED_OUT, &slow_l), 1.0);
    assert_eq!(
        v(
            names::LEASE_EXPIRIES,
            &[("agent", "ext"), ("cause", "deadline")]
        ),
        1.0
    );
    // Automatic: the first failure and the reaped attempt; manual: one.
    assert_eq!(
        v(names::TASKS_RETRIED, &[("agent", "ext"), ("kind", "auto")]),
        2.0
    );
    assert_eq!(
        v(
            names::TASKS_RETRIED,
            &[("agent", "ext"), ("kind", "manual")]
        ),
        1.0
    );
    assert_eq!(
        v(
            names::LEASE_EXPIRIES,
            &[("agent", "ext"), ("cause", "lease")]
        ),
        1.0
    );
    let count = |name: &str| format!("{name}_count");
    assert_eq!(
        v(
            &count(names::ATTEMPT_DURATION),
            &[("agent", "echo"), ("outcome", "completed")]
        ),
        3.0
    );
    assert_eq!(
        v(
            &count(names::ATTEMPT_DURATION),
            &[("agent", "ext"), ("task_type", "t"), ("outcome", "failed")]
        ),
        3.0,
        "two reported failures and the reaped attempt"
    );
    assert_eq!(v(&count(names::QUEUE_WAIT), &[("agent", "echo")]), 3.0);
    // First attempts only: ok, bad, slow and the cancelled one (its manual
    // retry started from scratch, with retryCount 0).
    assert_eq!(
        v(
            &count(names::QUEUE_WAIT),
            &[("agent", "ext"), ("priority", "NORMAL")]
        ),
        3.0
    );
    assert_eq!(
        v(
            &count(names::QUEUE_WAIT),
            &[("agent", "ext"), ("priority", "URGENT")]
        ),
        1.0
    );
    assert_eq!(
        v(&format!("{}_sum", names::TASK_COST), &[("agent", "ext")]),
        0.5
    );
    assert_eq!(
        v(names::TOKENS, &[("agent", "ext"), ("direction", "in")]),
        10.0
    );
    assert_eq!(
        v(names::TOKENS, &[("agent", "ext"), ("direction", "out")]),
        20.0
    );
    assert_eq!(
        v(
            names::HTTP_REQUESTS,
            &[("operation", "createTask"), ("status", "201")]
        ),
        7.0
    );
    assert_eq!(
        v(
            names::HTTP_REQUESTS,
            &[("operation", "metrics"), ("status", "403")]
        ),
        1.0
    );
    assert!(v(names::SCRIPT_CALLS, &[("script", "create")]) >= 1.0);
    assert!(v(names::SCRIPT_CALLS, &[("script", "claim")]) >= 4.0);
    assert_eq!(v(names::SCRIPT_ERRORS, &[("script", "create")]), 0.0);
    // Shared gauges: the reaped task waits for its retry.
    assert_eq!(
        v(
            names::QUEUE_TASKS,
            &[("agent", "ext"), ("status", "QUEUED")]
        ),
        1.0
    );
    assert_eq!(
        v(
            names::QUEUE_TASKS,
            &[("agent", "echo"), ("status", "COMPLETED")]
        ),
        3.0
    );
    assert!(v(names::STREAM_LENGTH, &[]) >= 20.0);
    assert_eq!(v(names::QUEUE_READ_OK, &[]), 1.0);
    assert_eq!(v(names::QUEUE_DELAYED, &[]), 0.0);
    assert_eq!(v(names::WORKER_SLOTS, &[]), 10.0);
    assert_eq!(
        v(names::NODE_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // promtool (Debian package prometheus) lints the exposition.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/dev test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
