//! The reaper keeps lease and attempt deadlines within a bound of their time
//! (README, "Leases"), whatever lease lengths are granted and on whichever
//! node: a sleeping reaper writes when it passes next, and a script granting
//! an earlier deadline wakes every reaper with the `r` signal.

use std::time::Duration;

use fred::prelude::*;
use taskherd::clock::Clock;
use taskherd::maintenance::MaintenanceConfig;
use taskherd::store::Store;
use taskherd::task::TaskStatus;
use taskherd::worker::Registry;

use crate::store_support::*;
use crate::support::raw::RawRedis;
use crate::support::*;

/// How far past its deadline an attempt may be ended (README, "Leases").
const REAP_BOUND_MS: i64 = 250;

/// The reapers' plan: when one passes next (ms, store clock).
async fn planned_wake(store: &Store, raw: &RawRedis) -> Option<i64> {
    raw.get(store.keys().reaper_wake()).await.unwrap()
}

/// Claims one task of agent `a1` with `lease` for worker "w2".
async fn claim_for(store: &Store, lease: Duration) -> taskherd::store::ClaimedTask {
    store
        .claim(&claim_req("w2", "a1", 1, lease))
        .await
        .unwrap()
        .pop()
        .expect("a task to claim")
}

#[tokio::test]
async fn only_a_deadline_before_the_reapers_plan_signals_and_lowers_it() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let subscriber = raw_subscriber(&redis.url(), store.keys().signal()).await;
    let mut messages = subscriber.message_rx();

    // No plan yet: the first deadline signals (a reaper may be asleep since
    // before a Redis restart) and becomes the plan.
    create(&store, task_for("a1")).await;
    let first = claim_for(&store, Duration::from_secs(30)).await;
    assert_eq!(planned_wake(&store, &raw).await, Some(first.lease_until));

    // A reaper's pass writes its plan: the next deadline, at most its sleep.
    let pass = store
        .reap_and_plan(100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pass.wake_ms, Some(T0_MS + 5_000));
    assert_eq!(planned_wake(&store, &raw).await, Some(T0_MS + 5_000));

    // Later than the plan: nothing to say. Earlier: the plan is lowered and
    // the reapers told, once; a deadline after the lowered plan says nothing.
    for (lease_ms, plan) in [(10_000, 5_000), (1_000, 1_000), (2_000, 1_000)] {
        create(&store, task_for("a1")).await;
        claim_for(&store, Duration::from_millis(lease_ms)).await;
        assert_eq!(
            planned_wake(&store, &raw).await,
            Some(T0_MS + plan),
            "after a lease of {lease_ms} ms"
        );
    }
    let reap_signals = reap_signals_until_marker(&store, &raw, &mut messages, "mark-1").await;
    assert_eq!(reap_signals, 2, "the first deadline and the 1 s lease");

    // The next pass plans for the nearest deadline; a full batch passes
    // again at once; a pass by no sleeping reaper leaves the plan alone.
    let pass = store
        .reap_and_plan(100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pass.wake_ms, Some(T0_MS + 1_000));
    advance_ms(&store, 2_000);
    let pass = store
        .reap_and_plan(1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((pass.handled, pass.wake_ms), (1, Some(T0_MS + 2_000)));
    let pass = store.reap(100).await.unwrap();
    assert_eq!((pass.handled, pass.wake_ms), (1, None));
    assert_eq!(planned_wake(&store, &raw).await, Some(T0_MS + 2_000));

    // A heartbeat with a shorter lease moves a deadline earlier: it lowers
    // the plan too (left: the first task until T0 + 30 s, another to 10 s).
    let pass = store
        .reap_and_plan(100, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(pass.wake_ms, Some(T0_MS + 7_000));
    let beat = [(first.id.clone(), first.token.clone())];
    store
        .heartbeat(&beat, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(planned_wake(&store, &raw).await, Some(T0_MS + 5_000));
    // A plan whose time passed with no reaper renewing it (its node
    // stopped) holds nothing back: the next deadline signals, however late.
    advance_ms(&store, 4_000);
    create(&store, task_for("a1")).await;
    let late = claim_for(&store, Duration::from_secs(30)).await;
    assert_eq!(planned_wake(&store, &raw).await, Some(late.lease_until));
    assert_eq!(
        reap_signals_until_marker(&store, &raw, &mut messages, "mark-2").await,
        2,
        "the heartbeat and the claim after a stale plan"
    );
}

/// The `r` signals published before `marker`, which this publishes.
async fn reap_signals_until_marker(
    store: &Store,
    raw: &RawRedis,
    messages: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
    marker: &str,
) -> usize {
    let _: i64 = raw.publish(store.keys().signal(), marker).await.unwrap();
    let mut reap_signals = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .expect("the marker arrives")
            .unwrap();
        match m.value.as_str().as_deref() {
            Some(s) if s == marker => return reap_signals,
            Some("r") => reap_signals += 1,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_short_lease_is_reaped_on_time_while_another_nodes_reaper_slept_longer() {
    let redis = TestRedis::start();
    // Node A runs maintenance with the default 5 s longest sleep.
    let node = TestNode::start(
        taskherd::node::NodeConfig {
            maintenance: Some(MaintenanceConfig::default()),
            ..node_config(&redis.url(), None, Clock::redis())
        },
        Registry::new(),
    )
    .await;
    // Another node's worker (a store of its own, no maintenance) holds one
    // task on a 20 s lease: node A's reaper goes to sleep for 5 s.
    let other = redis.store().await;
    let raw = raw_redis(&redis.url()).await;
    other.create(task_for("a1")).await.unwrap();
    let long = claim_for(&other, Duration::from_secs(20)).await;
    let slept_from = wait_until("node A's reaper to plan a long sleep", WAIT, || async {
        let wake = planned_wake(&other, &raw).await?;
        let now = other.now_ms().await.unwrap();
        (wake - now > 2_000 && wake < long.lease_until).then_some(now)
    })
    .await;

    // Then it takes a task on a 500 ms lease and stops heartbeating.
    let t = other.create(task_for("a1")).await.unwrap().task;
    let short = claim_for(&other, Duration::from_millis(500)).await;
    assert_eq!(short.id, t.id);
    assert_eq!(
        planned_wake(&other, &raw).await,
        Some(short.lease_until),
        "the claim lowered the plan (and signalled)"
    );
    let reaped = wait_until("the short lease to be reaped", WAIT, || async {
        let task = other.get(&t.id).await.unwrap().unwrap();
        (task.status != TaskStatus::Processing).then_some(task)
    })
    .await;
    assert_eq!(reaped.status, TaskStatus::Queued);
    assert!(
        reaped
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("lease expired")
    );
    // `updatedAt` is the reaper's pass on Redis' clock, as `leaseUntil` is.
    let late = reaped.updated_at - short.lease_until;
    assert!(
        (0..=REAP_BOUND_MS).contains(&late),
        "reaped {late} ms after the lease ended (the reaper's sleep began at {slept_from})"
    );
    assert_eq!(
        other.get(&long.id).await.unwrap().unwrap().status,
        TaskStatus::Processing,
        "the long lease is kept"
    );
    node.stop().await;
}

/// Deadline of the waits above (far beyond the bound: a failure says how late).
const WAIT: Duration = Duration::from_secs(10);
