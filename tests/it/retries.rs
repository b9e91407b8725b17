//! Failed attempts on the manual clock (no sleeping): exponential backoff
//! capped at `backoff_cap`, promotion at the due time, final FAILED or
//! TIMEOUT, and the reaper ending attempts whose lease or deadline ran out —
//! with a stale worker's late result refused.

use std::time::Duration;

use taskherd::error::Error;
use taskherd::store::{
    ClaimedTask, Completion, FailOutcome, Failed, LeaseState, Store, StoreConfig,
};
use taskherd::task::{NewTask, TaskStatus};

use crate::store_support::*;
use crate::support::*;

fn with_retries(agent: &str, max_retries: u32) -> NewTask {
    NewTask {
        max_retries: Some(max_retries),
        ..task_for(agent)
    }
}

/// Promotes at `due - 1` (nothing moves) and at `due` (the task moves).
async fn promote_exactly_at(store: &Store, id: &str, due: i64) {
    let now = now(store);
    assert!(due > now, "due {due} is not in the future ({now})");
    advance_ms(store, (due - now - 1) as u64);
    let pass = store.promote(100).await.unwrap();
    assert_eq!(pass.handled, 0, "promoted before due");
    assert_eq!(pass.next_due_ms, Some(due));
    assert!(
        claim(store, "a1", 1).await.is_empty(),
        "claimable before due"
    );
    advance_ms(store, 1);
    let pass = store.promote(100).await.unwrap();
    assert_eq!(pass.handled, 1, "not promoted at due");
    assert_eq!(zscore(store, &store.keys().delayed(), id).await, None);
}

#[tokio::test]
async fn a_retryable_failure_backs_off_exponentially_up_to_the_cap_then_fails_for_good() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    assert_eq!(store.config().backoff_cap, Duration::from_secs(30));
    let t = create(&store, with_retries("a1", 7)).await;
    let mut delays = Vec::new();
    for attempt in 0..8u32 {
        let c = claim_one(&store, "a1").await;
        assert_eq!(c.id, t.id);
        assert_eq!(c.retry_count, attempt);
        let failed_at = now(&store);
        let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
        let task = store.get(&t.id).await.unwrap().unwrap();
        if attempt < 7 {
            assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Retrying);
            assert_eq!(task.status, TaskStatus::Queued);
            assert_eq!(task.retry_count, attempt + 1);
            assert_eq!(task.error_message.as_deref(), Some("boom"));
            let due = task.run_at.unwrap();
            assert_eq!(
                zscore(&store, &store.keys().delayed(), &t.id).await,
                Some(due as f64)
            );
            delays.push(due - failed_at);
            promote_exactly_at(&store, &t.id, due).await;
        } else {
            assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Failed);
            assert_eq!(task.status, TaskStatus::Failed);
            assert_eq!(task.retry_count, 7);
            assert_eq!(task.completed_at, Some(failed_at));
        }
    }
    assert_eq!(
        delays,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
    );

    // No more retries after the last attempt.
    assert!(zmembers(&store, &store.keys().delayed()).await.is_empty());
    advance_ms(&store, 3_600_000);
    assert_eq!(store.promote(100).await.unwrap().handled, 0);
    assert!(claim(&store, "a1", 1).await.is_empty());
    let kinds = events_of(&store, &t.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "started").count(), 8);
    assert_eq!(kinds.iter().filter(|k| *k == "retrying").count(), 7);
    assert_eq!(kinds.last().unwrap(), "failed");
    assert_eq!(stat(&store, T0_MS, "a1|summarise|retries").await, 7);
    assert_eq!(stat(&store, T0_MS, "a1|summarise|FAILED").await, 1);
    assert_eq!(count(&store, "a1", "FAILED").await, 1);
    assert_eq!(count(&store, "a1", "QUEUED").await, 0);
}

#[tokio::test]
async fn a_non_retryable_failure_fails_the_task_at_once() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, with_retries("a1", 5)).await;
    let c = claim_one(&store, "a1").await;
    let r = store.fail(&[failure(&c, false, false)]).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Failed);
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((t.status, t.retry_count), (TaskStatus::Failed, 0));
    assert!(zmembers(&store, &store.keys().delayed()).await.is_empty());
    assert_eq!(
        zmembers(&store, &store.keys().finished()).await,
        vec![t.id.clone()]
    );
    assert_eq!(stat(&store, T0_MS, "a1|summarise|retries").await, 0);

    // With no retries allowed, even a retryable failure is final.
    let once = create(&store, with_retries("a1", 0)).await;
    let c = claim_one(&store, "a1").await;
    let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Failed);
    let once = store.get(&once.id).await.unwrap().unwrap();
    assert_eq!(once.status, TaskStatus::Failed);
}

#[tokio::test]
async fn a_timed_out_attempt_retries_while_attempts_remain_then_ends_as_timeout() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, with_retries("a1", 1)).await;
    let c = claim_one(&store, "a1").await;
    let r = store.fail(&[failure(&c, true, true)]).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Retrying);
    let due = store.get(&t.id).await.unwrap().unwrap().run_at.unwrap();
    assert_eq!(due, now(&store) + 1_000);
    promote_exactly_at(&store, &t.id, due).await;
    let c = claim_one(&store, "a1").await;
    let r = store.fail(&[failure(&c, true, true)]).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::TimedOut);
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((t.status, t.retry_count), (TaskStatus::Timeout, 1));
    assert_eq!(events_of(&store, &t.id).await.last().unwrap(), "timeout");
    assert_eq!(count(&store, "a1", "TIMEOUT").await, 1);
    assert_eq!(stat(&store, T0_MS, "a1|summarise|TIMEOUT").await, 1);
    assert_eq!(
        stat(&store, T0_MS, "a1|summarise|timedOutAttempts").await,
        1
    );
}

#[tokio::test]
async fn an_expired_lease_counts_as_a_failed_attempt_and_is_retried() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let lease = Duration::from_secs(10);
    let c = store
        .claim(&claim_req("w1", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);

    advance_ms(&store, 9_999);
    let before = snapshot(&store).await;
    let pass = store.reap(100).await.unwrap();
    assert_eq!(pass.handled, 0, "reaped before the lease ran out");
    assert_eq!(pass.next_due_ms, Some(T0_MS + 10_000));
    assert_unchanged(&before, &snapshot(&store).await);

    advance_ms(&store, 1);
    let pass = store.reap(100).await.unwrap();
    assert_eq!((pass.handled, pass.next_due_ms), (1, None));
    let task = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.retry_count, 1, "an expired lease spends an attempt");
    assert_eq!(task.run_at, Some(T0_MS + 10_000 + 1_000));
    assert!(task.error_message.unwrap().contains("lease expired"));
    assert!(
        zmembers(&store, &store.keys().processing())
            .await
            .is_empty()
    );
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(count(&store, "a1", "QUEUED").await, 1);
    assert_eq!(stat(&store, T0_MS, "a1|summarise|retries").await, 1);

    // The stalled worker learns it lost the lease.
    let leases = [(c.id.clone(), c.token.clone())];
    assert_eq!(
        store.heartbeat(&leases, lease).await.unwrap(),
        vec![LeaseState::Lost]
    );
    // A second reaper pass (another node) finds nothing to do.
    assert_eq!(store.reap(100).await.unwrap().handled, 0);
}

#[tokio::test]
async fn a_task_completed_after_failed_attempts_carries_no_error_of_theirs() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, with_retries("a1", 3)).await;

    // Attempt 1 fails (retryable), attempt 2 loses its lease to the reaper.
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, true, false)]).await.unwrap();
    let due = store.get(&t.id).await.unwrap().unwrap().run_at.unwrap();
    promote_exactly_at(&store, &t.id, due).await;
    let lease = Duration::from_secs(10);
    store
        .claim(&claim_req("w1", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);
    advance_ms(&store, 10_000);
    assert_eq!(store.reap(100).await.unwrap().handled, 1);
    let queued = store.get(&t.id).await.unwrap().unwrap();
    assert!(
        queued.error_message.unwrap().contains("lease expired"),
        "a retrying task says why it retries"
    );
    promote_exactly_at(&store, &t.id, queued.run_at.unwrap()).await;

    // Attempt 3 succeeds: the record says what the task is now.
    let c = claim_one(&store, "a1").await;
    assert_eq!(c.retry_count, 2);
    complete_ok(&store, &c).await;
    let done = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.retry_count, 2);
    assert_eq!(done.error_message, None);
    assert!(!task_hash(&store, &t.id).await.contains_key("errorMessage"));
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive_past_its_first_end() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let lease = Duration::from_secs(10);
    let c = store
        .claim(&claim_req("w1", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);
    let leases = [(c.id.clone(), c.token.clone())];
    for _ in 0..5 {
        advance_ms(&store, 8_000);
        assert_eq!(
            store.heartbeat(&leases, lease).await.unwrap(),
            vec![LeaseState::Held]
        );
        assert_eq!(store.reap(100).await.unwrap().handled, 0);
    }
    complete_ok(&store, &c).await;
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((t.status, t.retry_count), (TaskStatus::Completed, 0));
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_ended_by_the_reaper_on_the_timeout_path() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(
        &store,
        NewTask {
            timeout_ms: Some(5_000),
            max_retries: Some(1),
            ..task_for("a1")
        },
    )
    .await;
    let lease = Duration::from_secs(30);
    let c = store
        .claim(&claim_req("w1", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(c.deadline_at, T0_MS + 5_000);
    // Heartbeats cannot carry the attempt past its deadline.
    advance_ms(&store, 4_000);
    let leases = [(c.id.clone(), c.token.clone())];
    assert_eq!(
        store.heartbeat(&leases, lease).await.unwrap(),
        vec![LeaseState::Held]
    );
    advance_ms(&store, 1_000);
    assert_eq!(store.reap(100).await.unwrap().handled, 1);
    let task = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((task.status, task.retry_count), (TaskStatus::Queued, 1));
    assert_eq!(
        task.error_message.as_deref(),
        Some("attempt exceeded its timeout")
    );
    assert_eq!(
        stat(&store, T0_MS, "a1|summarise|timedOutAttempts").await,
        1
    );
    // The late result of the overrun attempt is refused.
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");

    // The last attempt overruns too: TIMEOUT for good.
    promote_exactly_at(&store, &t.id, task.run_at.unwrap()).await;
    let c2 = claim_one(&store, "a1").await;
    advance_ms(&store, 5_000);
    assert_eq!(store.reap(100).await.unwrap().handled, 1);
    let task = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((task.status, task.retry_count), (TaskStatus::Timeout, 1));
    assert_eq!(events_of(&store, &t.id).await.last().unwrap(), "timeout");
    let r = store.fail(&[failure(&c2, true, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_eq!(store.reap(100).await.unwrap().handled, 0);
    assert_eq!(count(&store, "a1", "TIMEOUT").await, 1);
}

#[tokio::test]
async fn a_stale_worker_cannot_finish_a_task_another_worker_holds() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let lease = Duration::from_secs(10);
    let stale = store
        .claim(&claim_req("stalled", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);
    advance_ms(&store, 10_000);
    assert_eq!(store.reap(100).await.unwrap().handled, 1);
    let due = store.get(&t.id).await.unwrap().unwrap().run_at.unwrap();
    promote_exactly_at(&store, &t.id, due).await;
    let fresh = store
        .claim(&claim_req("fresh", "a1", 1, lease))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.id, t.id);
    assert_ne!(fresh.token, stale.token);
    assert_eq!(fresh.retry_count, 1);

    let before = snapshot(&store).await;
    let r = store
        .complete(&[Completion {
            id: stale.id.clone(),
            token: stale.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    let r = store.fail(&[failure(&stale, false, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    let r = store
        .requeue(&[(stale.id.clone(), stale.token.clone())])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert_eq!(
        store
            .heartbeat(&[(stale.id.clone(), stale.token.clone())], lease)
            .await
            .unwrap(),
        vec![LeaseState::Lost]
    );
    assert_unchanged(&before, &snapshot(&store).await);
    let held = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(held.worker_id.as_deref(), Some("fresh"));

    complete_ok(&store, &fresh).await;
    let done = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.retry_count), (TaskStatus::Completed, 1));
    assert_eq!(count(&store, "a1", "COMPLETED").await, 1);
    let kinds = events_of(&store, &t.id).await;
    assert_eq!(
        kinds,
        vec!["created", "started", "retrying", "started", "completed"]
    );
}

#[tokio::test]
async fn a_task_whose_worker_dies_every_time_fails_after_its_attempts() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, with_retries("a1", 2)).await;
    let lease = Duration::from_secs(5);
    for attempt in 0..3 {
        let got = store
            .claim(&claim_req("doomed", "a1", 1, lease))
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt} not claimable");
        advance_ms(&store, 5_000);
        assert_eq!(store.reap(100).await.unwrap().handled, 1);
        if attempt < 2 {
            let due = store.get(&t.id).await.unwrap().unwrap().run_at.unwrap();
            promote_exactly_at(&store, &t.id, due).await;
        }
    }
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!((t.status, t.retry_count), (TaskStatus::Failed, 2));
    advance_ms(&store, 3_600_000);
    assert_eq!(store.promote(100).await.unwrap().handled, 0);
    assert_eq!(store.reap(100).await.unwrap().handled, 0);
    assert!(claim(&store, "a1", 1).await.is_empty());
}

#[tokio::test]
async fn a_batch_fail_backs_off_each_task_by_its_own_attempt_count() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let a = create(&store, with_retries("a1", 5)).await;
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, true, false)]).await.unwrap();
    advance_ms(&store, 1_000);
    store.promote(10).await.unwrap();
    let b = create(&store, with_retries("a1", 5)).await;
    let held = claim(&store, "a1", 2).await;
    let failures: Vec<_> = held.iter().map(|c| failure(c, true, false)).collect();
    let r = store.fail(&failures).await.unwrap();
    assert!(
        r.iter()
            .all(|x| x.as_ref().unwrap().outcome == FailOutcome::Retrying)
    );
    let now = now(&store);
    let a = store.get(&a.id).await.unwrap().unwrap();
    let b = store.get(&b.id).await.unwrap().unwrap();
    assert_eq!((a.retry_count, a.run_at), (2, Some(now + 2_000)));
    assert_eq!((b.retry_count, b.run_at), (1, Some(now + 1_000)));
}

// ---- results racing the reaper (RELIABILITY.md, fault 3) ------------------

/// How many tasks each race runs.
const RACES: usize = 20;

/// A second store on the same manual clock with its own connections, so its
/// calls really race the first store's in Redis.
async fn rival(redis: &TestRedis, store: &Store) -> Store {
    Store::connect(
        &redis.url(),
        2,
        StoreConfig::default(),
        store.clock().clone(),
    )
    .await
    .unwrap()
}

/// Claims `RACES` tasks made by `new`, then moves the clock by `ms`.
async fn claimed_then_due(store: &Store, new: impl Fn() -> NewTask, ms: u64) -> Vec<ClaimedTask> {
    for _ in 0..RACES {
        create(store, new()).await;
    }
    let claimed = claim(store, "a1", RACES).await;
    assert_eq!(claimed.len(), RACES);
    advance_ms(store, ms);
    claimed
}

/// Reaps one attempt per call, `RACES` calls, on the rival store.
async fn reap_one_by_one(reaper: &Store) -> u64 {
    let mut reaped = 0;
    for _ in 0..RACES {
        reaped += reaper.reap(1).await.unwrap().handled;
    }
    reaped
}

#[tokio::test]
async fn heartbeats_racing_the_reaper_at_the_lease_end_have_one_outcome_each() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let reaper = rival(&redis, &store).await;
    let claimed = claimed_then_due(&store, || task_for("a1"), LEASE.as_millis() as u64).await;

    let beats = async {
        let mut states = Vec::new();
        for c in &claimed {
            let lease = [(c.id.clone(), c.token.clone())];
            states.push(store.heartbeat(&lease, LEASE).await.unwrap()[0]);
        }
        states
    };
    let (states, reaped) = tokio::join!(beats, reap_one_by_one(&reaper));

    let mut lost = 0;
    for (c, state) in claimed.iter().zip(&states) {
        let t = store.get(&c.id).await.unwrap().unwrap();
        let evs = events_of(&store, &c.id).await;
        match state {
            LeaseState::Held => {
                assert_eq!(t.status, TaskStatus::Processing, "{evs:?}");
                assert_eq!(evs, ["created", "started"]);
            }
            LeaseState::Lost => {
                lost += 1;
                assert_eq!((t.status, t.retry_count), (TaskStatus::Queued, 1));
                assert_eq!(evs, ["created", "started", "retrying"]);
            }
            other => panic!("unexpected heartbeat answer {other:?}"),
        }
    }
    assert_eq!(reaped, lost, "each reaped attempt is a lost heartbeat");
    assert_eq!(
        stat(&store, now(&store), "a1|summarise|retries").await,
        lost as i64
    );
}

#[tokio::test]
async fn completes_racing_a_timeout_have_one_outcome_each() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let reaper = rival(&redis, &store).await;
    let timed = || NewTask {
        timeout_ms: Some(1_000),
        ..task_for("a1")
    };
    let claimed = claimed_then_due(&store, timed, 1_000).await;

    let completes = async {
        let mut results = Vec::new();
        for c in &claimed {
            let item = [Completion {
                id: c.id.clone(),
                token: c.token.clone(),
                ..Completion::default()
            }];
            results.push(store.complete(&item).await.unwrap().remove(0));
        }
        results
    };
    let (results, reaped) = tokio::join!(completes, reap_one_by_one(&reaper));

    let mut refused = 0;
    for (c, result) in claimed.iter().zip(&results) {
        let t = store.get(&c.id).await.unwrap().unwrap();
        let evs = events_of(&store, &c.id).await;
        match result {
            Ok(Some(_)) => {
                assert_eq!(t.status, TaskStatus::Completed);
                assert_eq!(evs, ["created", "started", "completed"]);
            }
            Err(Error::NotProcessing(_)) => {
                refused += 1;
                assert_eq!((t.status, t.retry_count), (TaskStatus::Queued, 1));
                assert_eq!(evs, ["created", "started", "retrying"]);
            }
            other => panic!("unexpected complete answer {other:?}"),
        }
    }
    let day = now(&store);
    assert_eq!(reaped, refused);
    assert_eq!(
        stat(&store, day, "a1|summarise|COMPLETED").await,
        (RACES as u64 - refused) as i64
    );
    assert_eq!(
        stat(&store, day, "a1|summarise|timedOutAttempts").await,
        refused as i64
    );
}

#[tokio::test]
async fn fails_racing_a_timeout_on_the_last_attempt_end_the_task_once() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let reaper = rival(&redis, &store).await;
    let last_try = || NewTask {
        timeout_ms: Some(1_000),
        max_retries: Some(0),
        ..task_for("a1")
    };
    let claimed = claimed_then_due(&store, last_try, 1_000).await;

    let fails = async {
        let mut results = Vec::new();
        for c in &claimed {
            let item = [failure(c, true, false)];
            results.push(store.fail(&item).await.unwrap().remove(0));
        }
        results
    };
    let (results, reaped) = tokio::join!(fails, reap_one_by_one(&reaper));

    let mut timed_out = 0;
    for (c, result) in claimed.iter().zip(&results) {
        let t = store.get(&c.id).await.unwrap().unwrap();
        let evs = events_of(&store, &c.id).await;
        match result {
            Ok(Failed {
                outcome: FailOutcome::Failed,
                ..
            }) => {
                assert_eq!(t.status, TaskStatus::Failed);
                assert_eq!(evs, ["created", "started", "failed"]);
            }
            Err(Error::NotProcessing(_)) => {
                timed_out += 1;
                assert_eq!(t.status, TaskStatus::Timeout);
                assert_eq!(evs, ["created", "started", "timeout"]);
            }
            other => panic!("unexpected fail answer {other:?}"),
        }
    }
    let day = now(&store);
    assert_eq!(reaped, timed_out);
    assert_eq!(
        stat(&store, day, "a1|summarise|FAILED").await,
        (RACES as u64 - timed_out) as i64
    );
    assert_eq!(
        stat(&store, day, "a1|summarise|TIMEOUT").await,
        timed_out as i64
    );
}
