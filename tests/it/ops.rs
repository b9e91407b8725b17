//! Operator tools: timing out attempts that have run too long (on the manual
//! clock), and the registry of live nodes.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use serde_json::json;
use taskherd::error::Error;
use taskherd::nodes::{self, NodeInfo};
use taskherd::shutdown;
use taskherd::signals::Signals;
use taskherd::store::{Completion, LeaseState, Store, TIMEOUT_STALE_BATCH};
use taskherd::task::{NewTask, TaskStatus};
use taskherd::worker::{Registry, Runtime};

use crate::store_support::*;
use crate::support::*;

/// A subscriber to the namespace's signal channel.
async fn listen_to_signals(redis: &TestRedis, store: &Store) -> SubscriberClient {
    raw_subscriber(&redis.url(), store.keys().signal()).await
}

/// Creates `n` tasks of `agent` in batches.
async fn create_many(store: &Store, agent: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let take = left.min(100);
        let created = store
            .create_batch((0..take).map(|_| task_for(agent)).collect())
            .await
            .unwrap();
        assert_eq!(created.len(), take);
        left -= take;
    }
}

/// Claims every ready task of `agent` with `lease`; returns how many.
async fn claim_all(store: &Store, agent: &str, lease: Duration) -> usize {
    let mut total = 0;
    loop {
        let got = store
            .claim(&claim_req("w1", agent, 1000, lease))
            .await
            .unwrap();
        if got.is_empty() {
            return total;
        }
        total += got.len();
    }
}

#[tokio::test]
async fn timeout_stale_ends_only_attempts_that_started_at_least_the_max_age_ago() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let subscriber = listen_to_signals(&redis, &store).await;
    let mut stops = subscriber.message_rx();
    let old = create(&store, task_for("a1")).await;
    let edge = create(&store, task_for("a1")).await;
    let young = create(&store, task_for("a1")).await;
    let c_old = claim_one(&store, "a1").await;
    advance_ms(&store, 1_000);
    let c_edge = claim_one(&store, "a1").await;
    advance_ms(&store, 1);
    let c_young = claim_one(&store, "a1").await;
    assert_eq!(
        (c_old.id.as_str(), c_edge.id.as_str(), c_young.id.as_str()),
        (old.id.as_str(), edge.id.as_str(), young.id.as_str())
    );

    // Now T0 + 11 s: with a 10 s max age, attempts started at or before
    // T0 + 1 s go; the one started 1 ms later stays.
    advance_ms(&store, 9_999);
    let at = now(&store);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        2
    );
    for c in [&c_old, &c_edge] {
        let task = store.get(&c.id).await.unwrap().unwrap();
        assert_eq!((task.status, task.retry_count), (TaskStatus::Queued, 1));
        assert_eq!(
            task.error_message.as_deref(),
            Some("attempt ran longer than 10000 ms (timed out by an operator)")
        );
        assert_eq!(task.run_at, Some(at + 1_000), "retried after the backoff");
        assert_eq!(
            zscore(&store, &store.keys().delayed(), &c.id).await,
            Some((at + 1_000) as f64)
        );
        assert_eq!(
            zscore(&store, &store.keys().processing(), &c.id).await,
            None
        );
        assert_eq!(
            events_of(&store, &c.id).await,
            vec!["created", "started", "retrying"]
        );
    }
    let held = store.get(&young.id).await.unwrap().unwrap();
    assert_eq!(held.status, TaskStatus::Processing);
    assert_eq!(
        zmembers(&store, &store.keys().processing()).await,
        vec![young.id.clone()]
    );
    assert_eq!(count(&store, "a1", "PROCESSING").await, 1);
    assert_eq!(count(&store, "a1", "QUEUED").await, 2);
    assert_eq!(stat(&store, at, "a1|summarise|timedOutAttempts").await, 2);
    assert_eq!(stat(&store, at, "a1|summarise|retries").await, 2);

    // Their workers are told to stop, as when the reaper ends an attempt.
    let mut expected = vec![
        format!("c:{}:{}", c_old.id, c_old.token),
        format!("c:{}:{}", c_edge.id, c_edge.token),
    ];
    expected.sort();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), stops.recv())
            .await
            .expect("stop signals arrive")
            .unwrap();
        let text = message.value.as_string().unwrap();
        if text.starts_with("c:") {
            seen.push(text);
        }
    }
    seen.sort();
    assert_eq!(seen, expected);

    // The young attempt is still held and can finish.
    complete_ok(&store, &c_young).await;
}

#[tokio::test]
async fn timeout_stale_retries_while_attempts_remain_then_times_out_the_last_and_refuses_late_results()
 {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(
        &store,
        NewTask {
            max_retries: Some(1),
            ..task_for("a1")
        },
    )
    .await;
    let c1 = claim_one(&store, "a1").await;
    advance_ms(&store, 5_000);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(5))
            .await
            .unwrap()
            .len(),
        1
    );
    let task = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((task.status, task.retry_count), (TaskStatus::Queued, 1));

    // The first attempt's worker is fenced off: nothing it sends is taken.
    let before = snapshot(&store).await;
    let r = store
        .complete(&[Completion {
            id: c1.id.clone(),
            token: c1.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    let r = store.fail(&[failure(&c1, true, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_eq!(
        store
            .heartbeat(&[(c1.id.clone(), c1.token.clone())], LEASE)
            .await
            .unwrap(),
        vec![LeaseState::Lost]
    );
    assert_unchanged(&before, &snapshot(&store).await);

    // The last attempt runs too long as well: TIMEOUT for good.
    advance_ms(&store, 1_000);
    assert_eq!(store.promote(100).await.unwrap().handled, 1);
    let c2 = claim_one(&store, "a1").await;
    assert_eq!((c2.id.as_str(), c2.retry_count), (t.id.as_str(), 1));
    advance_ms(&store, 4_999);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(5))
            .await
            .unwrap()
            .len(),
        0
    );
    advance_ms(&store, 1);
    let at = now(&store);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(5))
            .await
            .unwrap()
            .len(),
        1
    );
    let task = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((task.status, task.retry_count), (TaskStatus::Timeout, 1));
    assert_eq!(task.completed_at, Some(at));
    assert_eq!(
        task.error_message.as_deref(),
        Some("attempt ran longer than 5000 ms (timed out by an operator)")
    );
    assert_eq!(
        zscore(&store, &store.keys().finished(), &t.id).await,
        Some(at as f64)
    );
    assert_eq!(
        events_of(&store, &t.id).await,
        vec!["created", "started", "retrying", "started", "timeout"]
    );
    assert_eq!(count(&store, "a1", "TIMEOUT").await, 1);
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(stat(&store, at, "a1|summarise|TIMEOUT").await, 1);

    let before = snapshot(&store).await;
    let r = store
        .complete(&[Completion {
            id: c2.id.clone(),
            token: c2.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(5))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(store.reap(100).await.unwrap().handled, 0);
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn timeout_stale_handles_a_processing_set_many_chunks_long() {
    const OLD: usize = 2_500;
    const YOUNG: usize = 700;
    const _: () = assert!(OLD > 2 * TIMEOUT_STALE_BATCH && YOUNG > TIMEOUT_STALE_BATCH);
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    // The old attempts' lease ends after the young ones', so the processing
    // set (ordered by deadline) holds the young first: the walk must pass
    // more than a chunk of entries it keeps before it reaches the old ones,
    // and then go on correctly after every chunk it removes entries from.
    create_many(&store, "a1", OLD).await;
    assert_eq!(claim_all(&store, "a1", Duration::from_secs(60)).await, OLD);
    advance_ms(&store, 20_000);
    create_many(&store, "a1", YOUNG).await;
    assert_eq!(
        claim_all(&store, "a1", Duration::from_secs(30)).await,
        YOUNG
    );
    let processing = zmembers(&store, &store.keys().processing()).await;
    assert_eq!(processing.len(), OLD + YOUNG);
    let young_first: Vec<_> = processing[..YOUNG].to_vec();
    for id in &young_first[..3] {
        let started = store.get(id).await.unwrap().unwrap().started_at;
        assert_eq!(started, Some(T0_MS + 20_000), "young attempts lead the set");
    }

    advance_ms(&store, 10_000);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(20))
            .await
            .unwrap()
            .len(),
        OLD
    );
    let mut left = zmembers(&store, &store.keys().processing()).await;
    left.sort();
    let mut young = young_first;
    young.sort();
    assert_eq!(
        left, young,
        "exactly the young attempts are still processing"
    );
    assert_eq!(count(&store, "a1", "PROCESSING").await, YOUNG as i64);
    assert_eq!(count(&store, "a1", "QUEUED").await, OLD as i64);
    assert_eq!(zmembers(&store, &store.keys().delayed()).await.len(), OLD);
    assert_eq!(
        store
            .timeout_stale(Duration::from_secs(20))
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn timeout_stale_refuses_a_bad_max_age_and_writes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    claim_one(&store, "a1").await;
    advance_ms(&store, 60_000);
    let before = snapshot(&store).await;
    let longest = Duration::from_millis(store.config().limits.max_timeout_ms);
    for bad in [
        Duration::ZERO,
        Duration::from_micros(999),
        longest + Duration::from_millis(1),
    ] {
        let r = store.timeout_stale(bad).await;
        assert!(
            matches!(&r, Err(Error::Validation(m)) if m.contains("timeoutMs")),
            "{bad:?}: {r:?}"
        );
        let r = store.timeout_stale_chunk(bad, 0, 100).await;
        assert!(matches!(r, Err(Error::Validation(_))), "{bad:?}: {r:?}");
    }
    // The script checks its own arguments too: now, base, cap, max age, start, limit.
    for args in [
        ["", "1000", "30000", "0", "0", "100"],
        ["", "1000", "30000", "x", "0", "100"],
        ["", "1000", "30000", "1000", "-1", "100"],
        ["", "1000", "30000", "1000", "0", "0"],
        ["", "1000", "30000", "1000", "0", "1001"],
        ["", "-1", "30000", "1000", "0", "100"],
    ] {
        let err = eval_script(&store, "timeout_stale", &args)
            .await
            .unwrap_err();
        assert!(err.contains("BAD_ARGS"), "{args:?}: {err}");
    }
    assert_unchanged(&before, &snapshot(&store).await);

    // The longest allowed age is accepted (and this attempt is younger).
    assert_eq!(store.timeout_stale(longest).await.unwrap().len(), 0);
    assert_unchanged(&before, &snapshot(&store).await);
}

fn node(id: &str, roles: &[&str]) -> NodeInfo {
    NodeInfo {
        node_id: id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: 1,
        last_seen_at: 0,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        worker: None,
    }
}

async fn node_ids(store: &Store) -> Vec<String> {
    nodes::list(store, nodes::DEFAULT_STALE_AFTER)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect()
}

async fn entries(store: &Store) -> Vec<String> {
    let mut fields: Vec<String> = raw_redis(store.redis_url())
        .await
        .hkeys(store.keys().nodes())
        .await
        .unwrap();
    fields.sort();
    fields
}

#[tokio::test]
async fn running_nodes_are_listed_with_their_workers_until_they_shut_down() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let every = Duration::from_millis(20);
    let runtime = Runtime::new(
        store.clone(),
        Registry::new(),
        worker_config("n2", 4),
        Signals::default(),
    );
    let (stop_n1, shutdown_n1) = shutdown::channel();
    let (stop_n2, shutdown_n2) = shutdown::channel();
    let n1 = tokio::spawn(nodes::run(
        store.clone(),
        node("n1", &["api", "maintenance"]),
        None,
        every,
        shutdown_n1,
    ));
    let n2 = tokio::spawn(nodes::run(
        store.clone(),
        node("n2", &["worker"]),
        Some(runtime),
        every,
        shutdown_n2,
    ));

    let listed = wait_until("both nodes are listed", Duration::from_secs(10), || async {
        let listed = nodes::list(&store, nodes::DEFAULT_STALE_AFTER)
            .await
            .unwrap();
        (listed.len() == 2).then_some(listed)
    })
    .await;
    assert_eq!(listed[0].node_id, "n1");
    assert_eq!(listed[0].roles, vec!["api", "maintenance"]);
    assert_eq!(listed[0].worker, None);
    assert_eq!(listed[1].node_id, "n2");
    let worker = listed[1].worker.as_ref().expect("n2 reports its workers");
    assert_eq!(worker["nodeId"], json!("n2"));
    assert_eq!(worker["concurrency"], json!(4));
    assert_eq!(worker["inFlight"], json!(0));
    let now = store.now_ms().await.unwrap();
    assert!(listed[0].last_seen_at <= now && listed[0].last_seen_at > now - 10_000);

    // Entries are refreshed, not written once.
    let first_seen = listed[0].last_seen_at;
    wait_until(
        "n1 refreshes its entry",
        Duration::from_secs(10),
        || async {
            let listed = nodes::list(&store, nodes::DEFAULT_STALE_AFTER)
                .await
                .unwrap();
            listed
                .iter()
                .any(|n| n.node_id == "n1" && n.last_seen_at > first_seen)
                .then_some(())
        },
    )
    .await;

    // A node that shuts down removes its entry before its loop returns.
    stop_n1.trigger();
    tokio::time::timeout(Duration::from_secs(10), n1)
        .await
        .expect("n1's loop ends at shutdown")
        .unwrap();
    assert_eq!(node_ids(&store).await, vec!["n2"]);
    assert_eq!(entries(&store).await, vec!["n2"]);

    stop_n2.trigger();
    tokio::time::timeout(Duration::from_secs(10), n2)
        .await
        .expect("n2's loop ends at shutdown")
        .unwrap();
    assert!(node_ids(&store).await.is_empty());
    assert!(entries(&store).await.is_empty());
}

#[tokio::test]
async fn a_stale_or_unreadable_node_entry_is_left_out_and_deleted() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let now = store.now_ms().await.unwrap();
    let stale_after = Duration::from_secs(15);
    let mut fresh = node("fresh", &["worker"]);
    fresh.last_seen_at = now - 14_000;
    let mut old = node("old", &["worker"]);
    old.last_seen_at = now - 16_000;
    store.put_node(&fresh).await.unwrap();
    store.put_node(&old).await.unwrap();
    let _: i64 = raw_redis(&redis.url())
        .await
        .hset(store.keys().nodes(), ("garbled", "{not json"))
        .await
        .unwrap();

    assert_eq!(nodes::list(&store, stale_after).await.unwrap(), vec![fresh]);
    assert_eq!(entries(&store).await, vec!["fresh"]);
}

#[tokio::test]
async fn a_node_writes_its_entry_again_after_redis_comes_back() {
    let mut redis = TestRedis::start();
    let store = redis.store().await;
    let (stop, shutdown) = shutdown::channel();
    let run = tokio::spawn(nodes::run(
        store.clone(),
        node("n1", &["api"]),
        None,
        Duration::from_millis(20),
        shutdown,
    ));
    wait_until("n1 is listed", Duration::from_secs(10), || async {
        (node_ids(&store).await == vec!["n1"]).then_some(())
    })
    .await;

    redis.restart();
    wait_until("redis answers again", Duration::from_secs(20), || async {
        store.remove_node("n1").await.ok()
    })
    .await;
    wait_until(
        "n1 writes its entry again",
        Duration::from_secs(20),
        || async { (node_ids(&store).await == vec!["n1"]).then_some(()) },
    )
    .await;
    assert!(!run.is_finished());

    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the loop ends at shutdown")
        .unwrap();
    assert!(entries(&store).await.is_empty());
}
