//! Every script through its typed wrapper against a real redis-server: the
//! happy path, each refusal (with the database checked unchanged), input
//! refused before Redis, idempotency keys and all-or-nothing batches.

use std::time::Duration;

use fred::prelude::*;
use serde_json::json;
use taskherd::error::Error;
use taskherd::store::{
    AUDIT_BATCH, Agent, AgentKind, Audit, ClaimRequest, Completion, EventKind, FailOutcome,
    Failure, LeaseState, MAX_BATCH, MAX_CLAIM, StoreConfig,
};
use taskherd::task::{Limits, MAX_RUN_AT_MS, NewTask, Priority, TaskMetrics, TaskStatus};

use crate::store_support::*;
use crate::support::*;

// ---- create -------------------------------------------------------------

#[tokio::test]
async fn create_stores_a_queued_task_in_its_ready_queue_and_every_index() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let new = NewTask {
        priority: Priority::High,
        owner_id: Some("ann@example.com".into()),
        estimated_cost: Some(0.25),
        max_retries: Some(5),
        timeout_ms: Some(60_000),
        ..NewTask::new("writer", "summarise", json!({"text": "hi"}))
    };
    let created = store.create(new).await.unwrap();
    assert!(created.created);
    let t = created.task;
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.created_at, T0_MS);

    let stored = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(stored, t, "the stored record is what create answered");
    let k = store.keys();
    assert_eq!(
        zmembers(&store, &k.ready("writer", 1)).await,
        vec![t.id.clone()]
    );
    for index in [
        "all",
        "status:QUEUED",
        "prio:HIGH",
        "agent:writer",
        "type:summarise",
        "owner:ann@example.com",
    ] {
        assert_eq!(
            zmembers(&store, &idx(&store, index)).await,
            vec![t.id.clone()],
            "{index}"
        );
    }
    assert!(zmembers(&store, &k.delayed()).await.is_empty());
    assert_eq!(count(&store, "writer", "QUEUED").await, 1);
    let agents: Vec<String> = raw.smembers(k.agents()).await.unwrap();
    assert_eq!(agents, vec!["writer".to_string()]);
    assert_eq!(stat(&store, T0_MS, "writer|summarise|created").await, 1);
    let evs = events(&store).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::Created);
    assert_eq!(evs[0].task_id, t.id);
    assert_eq!(evs[0].status, TaskStatus::Queued);
    assert_eq!(evs[0].priority, Some(Priority::High));
    assert_eq!(evs[0].agent_id, "writer");
    assert_eq!(evs[0].task_type, "summarise");
}

#[tokio::test]
async fn create_refuses_identifiers_with_key_syntax_before_writing_anything() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;

    let bad_ids = ["a{b}", "*", "a:b", "a?", "a|b", "a b", "", "ä"];
    for bad in bad_ids {
        let attempts = [
            NewTask::new(bad, "t", json!(null)),
            NewTask::new("a1", bad, json!(null)),
            NewTask {
                owner_id: Some(bad.into()),
                ..task_for("a1")
            },
            NewTask {
                idempotency_key: Some(bad.into()),
                ..task_for("a1")
            },
        ];
        for new in attempts {
            let err = store.create(new.clone()).await.unwrap_err();
            assert!(matches!(err, Error::Validation(_)), "{new:?}: {err:?}");
        }
    }
    let too_long = "a".repeat(129);
    let err = store
        .create(NewTask::new(too_long, "t", json!(null)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)));
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn create_refuses_oversized_input_and_out_of_range_numbers_before_writing_anything() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let before = snapshot(&store).await;
    assert_eq!(dbsize(&store).await, 0);

    // Just over the default 1 MiB limit (the JSON string adds two quotes).
    let big = "x".repeat(1024 * 1024 - 1);
    let err = store
        .create(NewTask::new("a1", "t", json!(big)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(m) if m.contains("inputData")),
        "{err:?}"
    );

    let out_of_range = [
        NewTask {
            max_retries: Some(101),
            ..task_for("a1")
        },
        NewTask {
            timeout_ms: Some(0),
            ..task_for("a1")
        },
        NewTask {
            timeout_ms: Some(8 * 24 * 3_600_000),
            ..task_for("a1")
        },
        NewTask {
            estimated_cost: Some(-1.0),
            ..task_for("a1")
        },
        NewTask {
            estimated_cost: Some(f64::NAN),
            ..task_for("a1")
        },
        NewTask {
            run_at: Some(-5),
            ..task_for("a1")
        },
    ];
    for new in out_of_range {
        let err = store.create(new.clone()).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{new:?}: {err:?}");
    }
    assert_eq!(dbsize(&store).await, 0);
    assert_unchanged(&before, &snapshot(&store).await);

    // The limit is configuration: a store with a 64-byte limit refuses 65.
    let small = manual_store(
        &redis,
        StoreConfig {
            limits: Limits {
                max_input_bytes: 64,
                ..Limits::default()
            },
            ..StoreConfig::default()
        },
    )
    .await;
    let just_fits = "y".repeat(62);
    small
        .create(NewTask::new("a1", "t", json!(just_fits)))
        .await
        .unwrap();
    let one_over = "y".repeat(63);
    let before = snapshot(&small).await;
    let err = small
        .create(NewTask::new("a1", "t", json!(one_over)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)));
    assert_unchanged(&before, &snapshot(&small).await);
}

#[tokio::test]
async fn the_same_idempotency_key_of_the_same_owner_names_one_task() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let keyed = |owner: &str| NewTask {
        idempotency_key: Some("order-42".into()),
        owner_id: Some(owner.into()),
        ..task_for("a1")
    };
    let first = store.create(keyed("ann")).await.unwrap();
    assert!(first.created);
    let again = store.create(keyed("ann")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.task.id, first.task.id);
    assert_eq!(
        again.task,
        store.get(&first.task.id).await.unwrap().unwrap()
    );

    // Concurrent repeats (coalesced into shared script calls) agree too.
    let repeats: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let new = keyed("ann");
            tokio::spawn(async move { store.create(new).await.unwrap() })
        })
        .collect();
    for r in repeats {
        let r = r.await.unwrap();
        assert!(!r.created);
        assert_eq!(r.task.id, first.task.id);
    }

    // Two items with one key in one batch: one task.
    let batch = store
        .create_batch(vec![keyed("bob"), keyed("bob")])
        .await
        .unwrap();
    assert!(batch[0].created && !batch[1].created);
    assert_eq!(batch[0].task.id, batch[1].task.id);

    // Another owner's same key is another task.
    assert_ne!(batch[0].task.id, first.task.id);
    assert_eq!(zmembers(&store, &idx(&store, "all")).await.len(), 2);
    assert_eq!(zmembers(&store, &idx(&store, "owner:ann")).await.len(), 1);
    assert_eq!(count(&store, "a1", "QUEUED").await, 2);
    assert_eq!(stat(&store, T0_MS, "a1|summarise|created").await, 2);
    let created = events(&store)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::Created)
        .count();
    assert_eq!(created, 2);
    assert_eq!(store.queue_status().await.unwrap().queued_tasks, 2);
}

#[tokio::test]
async fn a_batch_with_one_invalid_item_is_refused_whole_and_writes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let keys_before = dbsize(&store).await;
    let before = snapshot(&store).await;

    let mut items: Vec<NewTask> = (0..MAX_BATCH).map(|_| task_for("a1")).collect();
    items[37].agent_id = "a{b}".into();
    items[80].input_data = json!("z".repeat(1024 * 1024 + 1));
    let err = store.create_batch(items).await.unwrap_err();
    let Error::BatchRejected(problems) = err else {
        panic!("expected BatchRejected, got {err:?}");
    };
    let indexes: Vec<usize> = problems.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![37, 80]);
    assert!(problems[0].1.contains("agentId"), "{problems:?}");
    assert!(problems[1].1.contains("inputData"), "{problems:?}");

    for bad_size in [0, MAX_BATCH + 1] {
        let items: Vec<NewTask> = (0..bad_size).map(|_| task_for("a1")).collect();
        let err = store.create_batch(items).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{bad_size}: {err:?}");
    }
    assert_eq!(dbsize(&store).await, keys_before);
    assert_unchanged(&before, &snapshot(&store).await);

    // The same batch without the bad items goes in whole, in order.
    let items: Vec<NewTask> = (0..MAX_BATCH)
        .map(|i| NewTask::new("a1", "t", json!({ "i": i })))
        .collect();
    let created = store.create_batch(items).await.unwrap();
    assert_eq!(created.len(), MAX_BATCH);
    let claimed = claim(&store, "a1", MAX_BATCH + 1).await;
    assert_eq!(claimed.len(), MAX_BATCH + 1);
    let inputs: Vec<_> = claimed[1..]
        .iter()
        .map(|c| c.input_data["i"].clone())
        .collect();
    let expected: Vec<_> = (0..MAX_BATCH).map(|i| json!(i)).collect();
    assert_eq!(inputs, expected, "batch items keep their order");
}

#[tokio::test]
async fn a_task_due_later_waits_in_delayed_until_promoted() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let due = T0_MS + 5_000;
    let t = create(&store, task_due("a1", due)).await;
    let k = store.keys();
    assert_eq!(zscore(&store, &k.delayed(), &t.id).await, Some(due as f64));
    assert!(zmembers(&store, &k.ready("a1", 2)).await.is_empty());
    assert!(claim(&store, "a1", 10).await.is_empty());

    advance_ms(&store, 4_999);
    let before = snapshot(&store).await;
    let pass = store.promote(100).await.unwrap();
    assert_eq!(pass.handled, 0);
    assert_eq!(pass.next_due_ms, Some(due));
    assert_unchanged(&before, &snapshot(&store).await);

    advance_ms(&store, 1);
    let pass = store.promote(100).await.unwrap();
    assert_eq!(pass.handled, 1);
    assert_eq!(pass.next_due_ms, None);
    assert!(zmembers(&store, &k.delayed()).await.is_empty());
    assert_eq!(claim_one(&store, "a1").await.id, t.id);

    // A runAt already past is ready at once.
    let past = create(&store, task_due("a1", T0_MS - 1)).await;
    assert_eq!(claim_one(&store, "a1").await.id, past.id);
}

// ---- claim --------------------------------------------------------------

#[tokio::test]
async fn claim_leases_a_task_and_records_the_attempt() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(
        &store,
        NewTask {
            timeout_ms: Some(10_000),
            ..task_for("a1")
        },
    )
    .await;
    advance_ms(&store, 250);
    let c = store
        .claim(&claim_req("worker-7", "a1", 5, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    let c = &c[0];
    let now = T0_MS + 250;
    assert_eq!(c.id, t.id);
    assert_eq!(c.agent_id, "a1");
    assert_eq!(c.task_type, "summarise");
    assert_eq!(c.input_data, json!({"text": "hello"}));
    assert_eq!((c.retry_count, c.max_retries, c.timeout_ms), (0, 3, 10_000));
    assert_eq!(c.lease_until, now + 30_000);
    assert_eq!(c.deadline_at, now + 10_000);
    assert!(!c.token.is_empty());

    let h = task_hash(&store, &t.id).await;
    assert_eq!(h["status"], "PROCESSING");
    assert_eq!(h["token"], c.token);
    assert_eq!(h["workerId"], "worker-7");
    assert_eq!(h["startedAt"], now.to_string());
    let k = store.keys();
    // The reaper looks at the earlier of lease end and attempt deadline.
    assert_eq!(
        zscore(&store, &k.processing(), &t.id).await,
        Some((now + 10_000) as f64)
    );
    assert!(zmembers(&store, &k.ready("a1", 2)).await.is_empty());
    assert_eq!(
        zmembers(&store, &idx(&store, "status:PROCESSING")).await,
        vec![t.id.clone()]
    );
    assert!(
        zmembers(&store, &idx(&store, "status:QUEUED"))
            .await
            .is_empty()
    );
    assert_eq!(count(&store, "a1", "QUEUED").await, 0);
    assert_eq!(count(&store, "a1", "PROCESSING").await, 1);
    assert_eq!(events_of(&store, &t.id).await, vec!["created", "started"]);
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Processing);
    assert_eq!(t.lease_until, Some(now + 30_000));
}

#[tokio::test]
async fn claim_with_nothing_ready_answers_empty_and_writes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("other")).await;
    let before = snapshot(&store).await;
    assert!(claim(&store, "a1", 10).await.is_empty());
    let none = store
        .claim(&ClaimRequest {
            worker_id: "w".into(),
            lease: LEASE,
            max_tasks: 0,
            agents: vec![("other".into(), 1)],
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let zero_quota = store
        .claim(&ClaimRequest {
            worker_id: "w".into(),
            lease: LEASE,
            max_tasks: 5,
            agents: vec![("other".into(), 0)],
        })
        .await
        .unwrap();
    assert!(zero_quota.is_empty());
    let err = store
        .claim(&claim_req("w", "other", MAX_CLAIM + 1, LEASE))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)));
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn claim_and_heartbeat_with_a_zero_lease_are_refused_by_the_script_and_change_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let held = claim_one(&store, "a1").await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    let err = store
        .claim(&claim_req("w", "a1", 1, Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(m) if m.contains("claim")),
        "{err:?}"
    );
    let err = store
        .heartbeat(&[(held.id.clone(), held.token.clone())], Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "{err:?}");
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- complete -----------------------------------------------------------

#[tokio::test]
async fn complete_records_the_result_and_frees_the_lease() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    advance_ms(&store, 1_234);
    let metrics = TaskMetrics {
        duration_ms: Some(1_200),
        tokens_in: Some(300),
        tokens_out: Some(40),
    };
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            output_data: Some(json!({"summary": "short"})),
            actual_cost: Some(0.75),
            quality_score: Some(0.9),
            metrics: Some(metrics.clone()),
        }])
        .await
        .unwrap();
    assert!(r[0].is_ok());
    let done = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.output_data, Some(json!({"summary": "short"})));
    assert_eq!(done.actual_cost, Some(0.75));
    assert_eq!(done.quality_score, Some(0.9));
    assert_eq!(done.metrics, Some(metrics));
    assert_eq!(done.completed_at, Some(T0_MS + 1_234));
    let k = store.keys();
    assert!(zmembers(&store, &k.processing()).await.is_empty());
    assert_eq!(
        zscore(&store, &k.finished(), &t.id).await,
        Some((T0_MS + 1_234) as f64)
    );
    assert_eq!(
        zmembers(&store, &idx(&store, "status:COMPLETED")).await,
        vec![t.id.clone()]
    );
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(count(&store, "a1", "COMPLETED").await, 1);
    assert_eq!(
        events_of(&store, &t.id).await,
        vec!["created", "started", "completed"]
    );
    let s = |m: &str| format!("a1|summarise|{m}");
    assert_eq!(stat(&store, T0_MS, &s("COMPLETED")).await, 1);
    assert_eq!(stat(&store, T0_MS, &s("durationMsSum")).await, 1_234);
    assert_eq!(stat(&store, T0_MS, &s("durationMs:2500")).await, 1);
    assert_eq!(stat(&store, T0_MS, &s("tokensIn")).await, 300);
    assert_eq!(stat(&store, T0_MS, &s("tokensOut")).await, 40);
}

#[tokio::test]
async fn complete_with_a_wrong_token_is_refused_and_changes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    for token in ["wrong", "", &format!("{}x", c.token)] {
        let r = store
            .complete(&[Completion {
                id: c.id.clone(),
                token: token.to_string(),
                ..Completion::default()
            }])
            .await
            .unwrap();
        assert!(
            matches!(&r[0], Err(Error::LeaseMismatch(id)) if *id == c.id),
            "{r:?}"
        );
    }
    assert_unchanged(&before, &snapshot(&store).await);
    // The snapshot does see a write: the right token changes the task.
    complete_ok(&store, &c).await;
    assert_ne!(before, snapshot(&store).await);
}

#[tokio::test]
async fn complete_repeated_with_the_same_token_is_harmless() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    complete_ok(&store, &c).await;
    let before = snapshot(&store).await;
    advance_ms(&store, 5_000);
    // A retry after a lost reply, and a duplicate inside one batch.
    complete_ok(&store, &c).await;
    let again = Completion {
        id: c.id.clone(),
        token: c.token.clone(),
        ..Completion::default()
    };
    let r = store.complete(&[again.clone(), again]).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
    assert_eq!(count(&store, "a1", "COMPLETED").await, 1);
    assert_eq!(stat(&store, T0_MS, "a1|summarise|COMPLETED").await, 1);
    let completed = events_of(&store, &t.id)
        .await
        .into_iter()
        .filter(|e| e == "completed")
        .count();
    assert_eq!(completed, 1);
    assert_eq!(
        store.get(&t.id).await.unwrap().unwrap().completed_at,
        Some(T0_MS)
    );
}

#[tokio::test]
async fn complete_and_fail_of_unknown_tasks_are_task_not_found_and_change_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    let r = store
        .complete(&[Completion {
            id: "task_01NOSUCHTASK".into(),
            token: "t".into(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(&r[0], Err(Error::TaskNotFound(id)) if id == "task_01NOSUCHTASK"));
    let r = store
        .fail(&[Failure {
            id: "task_01NOSUCHTASK".into(),
            token: "t".into(),
            error_message: "x".into(),
            retryable: true,
            timed_out: false,
        }])
        .await
        .unwrap();
    assert!(matches!(&r[0], Err(Error::TaskNotFound(_))), "{r:?}");
    let r = store
        .requeue(&[("task_01NOSUCHTASK".into(), "t".into())])
        .await
        .unwrap();
    assert!(matches!(&r[0], Err(Error::TaskNotFound(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn complete_refuses_oversized_output_and_non_finite_numbers_before_redis() {
    let redis = TestRedis::start();
    let store = manual_store(
        &redis,
        StoreConfig {
            limits: Limits {
                max_output_bytes: 32,
                ..Limits::default()
            },
            ..StoreConfig::default()
        },
    )
    .await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    let base = Completion {
        id: c.id.clone(),
        token: c.token.clone(),
        ..Completion::default()
    };
    let refused = [
        Completion {
            output_data: Some(json!("o".repeat(40))),
            ..base.clone()
        },
        Completion {
            actual_cost: Some(f64::INFINITY),
            ..base.clone()
        },
        Completion {
            quality_score: Some(f64::NAN),
            ..base.clone()
        },
    ];
    let r = store.complete(&refused).await.unwrap();
    assert!(
        r.iter().all(|x| matches!(x, Err(Error::Validation(_)))),
        "{r:?}"
    );
    assert_unchanged(&before, &snapshot(&store).await);
    // Still held: the right completion goes through afterwards.
    let r = store.complete(&[base]).await.unwrap();
    assert!(r[0].is_ok());
}

#[tokio::test]
async fn a_batch_complete_answers_each_item_on_its_own() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    for _ in 0..3 {
        create(&store, task_for("a1")).await;
    }
    let c = claim(&store, "a1", 3).await;
    let item = |i: usize, token: &str| Completion {
        id: c[i].id.clone(),
        token: token.to_string(),
        ..Completion::default()
    };
    let r = store
        .complete(&[
            item(0, &c[0].token),
            item(1, "stale"),
            Completion {
                id: "task_gone".into(),
                token: "x".into(),
                ..Completion::default()
            },
            item(2, &c[2].token),
        ])
        .await
        .unwrap();
    assert!(r[0].is_ok());
    assert!(matches!(r[1], Err(Error::LeaseMismatch(_))));
    assert!(matches!(r[2], Err(Error::TaskNotFound(_))));
    assert!(r[3].is_ok());
    let status = |i: usize| {
        let store = store.clone();
        let id = c[i].id.clone();
        async move { store.get(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(0).await, TaskStatus::Completed);
    assert_eq!(status(1).await, TaskStatus::Processing);
    assert_eq!(status(2).await, TaskStatus::Completed);
}

// ---- fail ---------------------------------------------------------------

#[tokio::test]
async fn fail_with_a_wrong_token_or_of_a_task_not_processing_changes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let queued = create(&store, task_for("idle")).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    let r = store
        .fail(&[
            Failure {
                token: "stale".into(),
                ..failure(&c, true, false)
            },
            Failure {
                token: "stale".into(),
                ..failure(&c, false, true)
            },
            // Never claimed: no token matches.
            Failure {
                id: queued.id.clone(),
                token: String::new(),
                error_message: "x".into(),
                retryable: false,
                timed_out: false,
            },
        ])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert!(matches!(r[1], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert!(matches!(r[2], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);

    // Its own token once the attempt has ended: not processing.
    let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Retrying);
    let before = snapshot(&store).await;
    let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn fail_cuts_long_error_messages_to_the_configured_length() {
    let redis = TestRedis::start();
    let store = manual_store(
        &redis,
        StoreConfig {
            limits: Limits {
                max_error_len: 10,
                ..Limits::default()
            },
            ..StoreConfig::default()
        },
    )
    .await;
    let t = create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let r = store
        .fail(&[Failure {
            error_message: "é".repeat(50),
            ..failure(&c, false, false)
        }])
        .await
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap().outcome, FailOutcome::Failed);
    let t = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(t.error_message, Some("é".repeat(10)));
}

// ---- cancel -------------------------------------------------------------

#[tokio::test]
async fn cancel_of_a_queued_task_takes_it_out_of_its_queue_for_good() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let ready = create(&store, task_at("a1", Priority::Low)).await;
    let delayed = create(&store, task_due("a1", T0_MS + 60_000)).await;
    advance_ms(&store, 10);
    assert_eq!(
        store.cancel(&ready.id, Some("not needed")).await.unwrap(),
        TaskStatus::Queued
    );
    assert_eq!(
        store.cancel(&delayed.id, None).await.unwrap(),
        TaskStatus::Queued
    );

    let k = store.keys();
    assert!(zmembers(&store, &k.ready("a1", 3)).await.is_empty());
    assert!(zmembers(&store, &k.delayed()).await.is_empty());
    assert_eq!(zmembers(&store, &k.finished()).await.len(), 2);
    assert!(
        zmembers(&store, &idx(&store, "status:QUEUED"))
            .await
            .is_empty()
    );
    assert_eq!(
        zmembers(&store, &idx(&store, "status:CANCELLED"))
            .await
            .len(),
        2
    );
    assert_eq!(count(&store, "a1", "QUEUED").await, 0);
    assert_eq!(count(&store, "a1", "CANCELLED").await, 2);
    let t = store.get(&ready.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(t.error_message.as_deref(), Some("not needed"));
    assert_eq!(t.completed_at, Some(T0_MS + 10));
    assert_eq!(
        store.get(&delayed.id).await.unwrap().unwrap().error_message,
        None
    );
    assert_eq!(
        events_of(&store, &ready.id).await,
        vec!["created", "cancelled"]
    );
    assert_eq!(stat(&store, T0_MS, "a1|summarise|CANCELLED").await, 2);

    advance_ms(&store, 60_000);
    assert_eq!(store.promote(100).await.unwrap().handled, 0);
    assert!(
        claim(&store, "a1", 10).await.is_empty(),
        "a cancelled task is never claimed"
    );
}

#[tokio::test]
async fn cancel_of_a_processing_task_tells_the_worker_and_refuses_its_result() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let t = create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    assert_eq!(
        store.cancel(&t.id, Some("user asked")).await.unwrap(),
        TaskStatus::Processing
    );
    assert!(
        zmembers(&store, &store.keys().processing())
            .await
            .is_empty()
    );
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(count(&store, "a1", "CANCELLED").await, 1);

    let before = snapshot(&store).await;
    let lease = [(c.id.clone(), c.token.clone())];
    assert_eq!(
        store.heartbeat(&lease, LEASE).await.unwrap(),
        vec![LeaseState::Cancelled]
    );
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    let r = store.requeue(&lease).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
    assert_eq!(
        store.get(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
}

#[tokio::test]
async fn cancel_of_a_terminal_task_is_already_terminal_and_changes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let mut ids = Vec::new();
    // COMPLETED
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    complete_ok(&store, &c).await;
    ids.push(c.id);
    // FAILED
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, false, false)]).await.unwrap();
    ids.push(c.id);
    // TIMEOUT
    create(
        &store,
        NewTask {
            max_retries: Some(0),
            ..task_for("a1")
        },
    )
    .await;
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, true, true)]).await.unwrap();
    ids.push(c.id);
    // CANCELLED
    let t = create(&store, task_for("a1")).await;
    store.cancel(&t.id, None).await.unwrap();
    ids.push(t.id);

    let before = snapshot(&store).await;
    for id in &ids {
        let err = store.cancel(id, Some("again")).await.unwrap_err();
        assert!(
            matches!(&err, Error::AlreadyTerminal(x) if x == id),
            "{err:?}"
        );
    }
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn cancel_and_retry_of_unknown_or_malformed_ids_are_task_not_found() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    for id in ["task_01NOSUCHTASK", "a{b}", "*", "task:1", ""] {
        let err = store.cancel(id, None).await.unwrap_err();
        assert!(
            matches!(err, Error::TaskNotFound(_)),
            "cancel {id:?}: {err:?}"
        );
        let err = store.retry(id).await.unwrap_err();
        assert!(
            matches!(err, Error::TaskNotFound(_)),
            "retry {id:?}: {err:?}"
        );
        assert!(store.get(id).await.unwrap().is_none());
    }
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- retry (manual) -----------------------------------------------------

#[tokio::test]
async fn retry_puts_failed_timed_out_and_cancelled_tasks_back_with_fresh_attempts() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let one_shot = || NewTask {
        max_retries: Some(0),
        ..task_for("a1")
    };
    let failed = create(&store, one_shot()).await;
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, false, false)]).await.unwrap();
    let timed_out = create(&store, one_shot()).await;
    let c2 = claim_one(&store, "a1").await;
    store.fail(&[failure(&c2, true, true)]).await.unwrap();
    let cancelled = create(&store, one_shot()).await;
    store.cancel(&cancelled.id, Some("oops")).await.unwrap();
    let later = create(&store, one_shot()).await;

    advance_ms(&store, 100);
    assert_eq!(store.retry(&failed.id).await.unwrap(), TaskStatus::Failed);
    assert_eq!(
        store.retry(&timed_out.id).await.unwrap(),
        TaskStatus::Timeout
    );
    assert_eq!(
        store.retry(&cancelled.id).await.unwrap(),
        TaskStatus::Cancelled
    );

    for id in [&failed.id, &timed_out.id, &cancelled.id] {
        let t = store.get(id).await.unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Queued);
        assert_eq!(t.retry_count, 0);
        assert_eq!(
            (t.error_message, t.completed_at, t.output_data),
            (None, None, None)
        );
        assert_eq!(zscore(&store, &store.keys().finished(), id).await, None);
        assert_eq!(events_of(&store, id).await.last().unwrap(), "retried");
    }
    assert_eq!(count(&store, "a1", "QUEUED").await, 4);
    for s in ["FAILED", "TIMEOUT", "CANCELLED"] {
        assert_eq!(count(&store, "a1", s).await, 0, "{s}");
        assert!(
            zmembers(&store, &idx(&store, &format!("status:{s}")))
                .await
                .is_empty()
        );
    }
    // Retried tasks join the end of their queue, behind `later`.
    let order: Vec<String> = claim(&store, "a1", 10)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(
        order,
        vec![later.id, failed.id.clone(), timed_out.id, cancelled.id]
    );

    // The stale token of the first attempt is refused on the new one.
    let r = store.fail(&[failure(&c, true, false)]).await.unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
}

#[tokio::test]
async fn retry_of_a_completed_queued_or_processing_task_is_not_retryable_and_changes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let done = claim_one(&store, "a1").await;
    complete_ok(&store, &done).await;
    create(&store, task_for("a1")).await;
    let running = claim_one(&store, "a1").await;
    let queued = create(&store, task_for("a1")).await;
    // QUEUED waiting for a retry backoff counts as QUEUED too.
    create(&store, task_for("a2")).await;
    let backoff = claim_one(&store, "a2").await;
    store.fail(&[failure(&backoff, true, false)]).await.unwrap();

    let before = snapshot(&store).await;
    for id in [&done.id, &running.id, &queued.id, &backoff.id] {
        let err = store.retry(id).await.unwrap_err();
        assert!(matches!(&err, Error::NotRetryable(x) if x == id), "{err:?}");
    }
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- heartbeat ----------------------------------------------------------

#[tokio::test]
async fn heartbeat_reports_held_cancelled_lost_and_gone() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    for _ in 0..4 {
        create(
            &store,
            NewTask {
                timeout_ms: Some(100_000),
                ..task_for("a1")
            },
        )
        .await;
    }
    let c = store
        .claim(&claim_req("w1", "a1", 4, Duration::from_secs(10)))
        .await
        .unwrap();
    store.cancel(&c[1].id, None).await.unwrap();
    complete_ok(&store, &c[2]).await;
    advance_ms(&store, 5_000);
    let leases = vec![
        (c[0].id.clone(), c[0].token.clone()),
        (c[1].id.clone(), c[1].token.clone()),
        (c[2].id.clone(), c[2].token.clone()),
        (c[3].id.clone(), "someone-else".to_string()),
        ("task_01NOSUCHTASK".to_string(), "t".to_string()),
    ];
    let states = store
        .heartbeat(&leases, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        states,
        vec![
            LeaseState::Held,
            LeaseState::Cancelled,
            LeaseState::Lost,
            LeaseState::Lost,
            LeaseState::Gone
        ]
    );
    let now = T0_MS + 5_000;
    let k = store.keys();
    assert_eq!(
        task_hash(&store, &c[0].id).await["leaseUntil"],
        (now + 10_000).to_string()
    );
    assert_eq!(
        zscore(&store, &k.processing(), &c[0].id).await,
        Some((now + 10_000) as f64)
    );
    // The lease of the refused heartbeat was not extended.
    assert_eq!(
        zscore(&store, &k.processing(), &c[3].id).await,
        Some((T0_MS + 10_000) as f64)
    );

    // Never past the attempt deadline (claim + timeoutMs).
    advance_ms(&store, 93_000);
    let states = store
        .heartbeat(&leases[..1], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(states, vec![LeaseState::Held]);
    assert_eq!(
        zscore(&store, &k.processing(), &c[0].id).await,
        Some((T0_MS + 100_000) as f64)
    );
}

// ---- requeue ------------------------------------------------------------

#[tokio::test]
async fn requeue_hands_a_task_back_without_spending_an_attempt() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let first = create(&store, task_for("a1")).await;
    // Give it one used attempt so "unchanged" means something.
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, true, false)]).await.unwrap();
    advance_ms(&store, 1_000);
    store.promote(10).await.unwrap();
    let second = create(&store, task_for("a1")).await;
    let held = claim(&store, "a1", 2).await;
    assert_eq!(held.len(), 2);
    let c = held.iter().find(|h| h.id == first.id).unwrap();
    assert_eq!(c.retry_count, 1);

    // A wrong token is refused and changes nothing.
    let before = snapshot(&store).await;
    let r = store
        .requeue(&[(c.id.clone(), "stale".into())])
        .await
        .unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);

    let leases: Vec<_> = held
        .iter()
        .map(|h| (h.id.clone(), h.token.clone()))
        .collect();
    let r = store.requeue(&leases).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    let t = store.get(&first.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(t.retry_count, 1, "a hand-back spends no attempt");
    assert!(
        zmembers(&store, &store.keys().processing())
            .await
            .is_empty()
    );
    assert_eq!(count(&store, "a1", "QUEUED").await, 2);
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(
        events_of(&store, &first.id).await.last().unwrap(),
        "requeued"
    );

    // Handed-back tasks keep their place: ahead of anything created later.
    let third = create(&store, task_for("a1")).await;
    let order: Vec<String> = claim(&store, "a1", 3)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(order, vec![first.id.clone(), second.id, third.id]);

    // A second hand-back with the old token: the task was claimed again.
    let before = snapshot(&store).await;
    let r = store.requeue(&leases[..1]).await.unwrap();
    assert!(matches!(r[0], Err(Error::LeaseMismatch(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn requeue_of_a_task_that_is_no_longer_processing_is_refused() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let lease = [(c.id.clone(), c.token.clone())];
    assert!(store.requeue(&lease).await.unwrap()[0].is_ok());
    let before = snapshot(&store).await;
    let r = store.requeue(&lease).await.unwrap();
    assert!(matches!(r[0], Err(Error::NotProcessing(_))), "{r:?}");
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- agents -------------------------------------------------------------

#[tokio::test]
async fn agent_upsert_creates_then_replaces_a_record_and_refuses_bad_ones_before_redis() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let agent = Agent {
        id: "writer".into(),
        name: "Writer".into(),
        agent_type: "llm".into(),
        kind: AgentKind::Http,
        endpoint: Some("http://127.0.0.1:9/run".into()),
        concurrency: Some(2),
    };
    assert!(store.upsert_agent(&agent).await.unwrap());
    let renamed = Agent {
        name: "Writer 2".into(),
        ..agent.clone()
    };
    assert!(!store.upsert_agent(&renamed).await.unwrap());
    assert_eq!(
        store.get_agent("writer").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(store.list_agents().await.unwrap(), vec![renamed]);

    let before = snapshot(&store).await;
    let bad = [
        Agent {
            id: "a{b}".into(),
            ..agent.clone()
        },
        Agent {
            id: "a:b".into(),
            ..agent.clone()
        },
        Agent {
            endpoint: Some("ftp://x".into()),
            ..agent.clone()
        },
        Agent {
            concurrency: Some(0),
            ..agent.clone()
        },
    ];
    for a in bad {
        let err = store.upsert_agent(&a).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{a:?}: {err:?}");
    }
    assert_eq!(store.get_agent("a{b}").await.unwrap(), None);
    assert!(!store.delete_agent("*").await.unwrap());
    assert_unchanged(&before, &snapshot(&store).await);
    assert!(store.delete_agent("writer").await.unwrap());
    assert_eq!(store.get_agent("writer").await.unwrap(), None);
}

// ---- arguments that would fail a write half-way --------------------------

fn completion_with(c: &taskherd::store::ClaimedTask, metrics: TaskMetrics) -> Completion {
    Completion {
        id: c.id.clone(),
        token: c.token.clone(),
        metrics: Some(metrics),
        ..Completion::default()
    }
}

#[tokio::test]
async fn complete_refuses_token_counts_and_numbers_the_statistics_cannot_add_before_redis() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    let too_big = [
        TaskMetrics {
            tokens_in: Some(9_223_372_036_854_775_808),
            ..TaskMetrics::default()
        },
        TaskMetrics {
            tokens_out: Some(1 << 53),
            ..TaskMetrics::default()
        },
    ];
    for metrics in too_big {
        let r = store.complete(&[completion_with(&c, metrics)]).await;
        assert!(
            matches!(r.as_deref(), Ok([Err(Error::Validation(_))])),
            "{r:?}"
        );
    }
    for (cost, quality) in [(Some(1e16), None), (None, Some(-1e16))] {
        let r = store
            .complete(&[Completion {
                actual_cost: cost,
                quality_score: quality,
                ..completion_with(&c, TaskMetrics::default())
            }])
            .await;
        assert!(
            matches!(r.as_deref(), Ok([Err(Error::Validation(_))])),
            "{r:?}"
        );
    }
    assert_unchanged(&before, &snapshot(&store).await);

    // The largest values accepted are counted.
    let r = store
        .complete(&[Completion {
            actual_cost: Some(1e15),
            quality_score: Some(-1e15),
            ..completion_with(
                &c,
                TaskMetrics {
                    tokens_in: Some((1 << 53) - 1),
                    ..TaskMetrics::default()
                },
            )
        }])
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        stat(&store, T0_MS, "a1|summarise|tokensIn").await,
        (1 << 53) - 1
    );
    assert_eq!(count(&store, "a1", "COMPLETED").await, 1);
}

#[tokio::test]
async fn the_complete_script_refuses_out_of_range_numbers_and_writes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    // cost, quality, tokensIn, tokensOut
    let bad = [
        ["", "", "9223372036854775808", ""],
        ["", "", "", "9007199254740992"],
        ["", "", "-1", ""],
        ["", "", "inf", ""],
        ["1e16", "", "", ""],
        ["", "-1e16", "", ""],
        ["inf", "", "", ""],
        ["", "nan", "", ""],
    ];
    for [cost, quality, tin, tout] in bad {
        let args = [
            "",
            "1",
            c.id.as_str(),
            c.token.as_str(),
            "",
            cost,
            quality,
            "",
            tin,
            tout,
        ];
        let err = eval_script(&store, "complete", &args).await.unwrap_err();
        assert!(err.contains("BAD_ARGS"), "{args:?}: {err}");
        assert_unchanged(&before, &snapshot(&store).await);
    }
    assert_eq!(count(&store, "a1", "PROCESSING").await, 1);
}

#[tokio::test]
async fn an_idempotency_ttl_under_one_ms_is_refused_and_writes_nothing() {
    let redis = TestRedis::start();
    let store = manual_store(
        &redis,
        StoreConfig {
            idempotency_ttl: Duration::from_micros(500),
            ..StoreConfig::default()
        },
    )
    .await;
    let before = snapshot(&store).await;
    let err = store
        .create(NewTask {
            idempotency_key: Some("k1".into()),
            ..task_for("a1")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(_)), "{err:?}");
    assert_unchanged(&before, &snapshot(&store).await);

    // The script itself refuses a zero TTL before its first write.
    let item = [
        "task_01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "a1",
        "summarise",
        "NORMAL",
        "{}",
        "3",
        "60000",
        "",
        "",
        "k1",
        "",
    ];
    for ttl in ["0", "-5", "9007199254740992"] {
        let mut args = vec!["", ttl, "1"];
        args.extend(item);
        let err = eval_script(&store, "create", &args).await.unwrap_err();
        assert!(err.contains("BAD_ARGS"), "ttl {ttl}: {err}");
    }
    assert_unchanged(&before, &snapshot(&store).await);
}

#[tokio::test]
async fn run_at_past_the_year_9999_is_refused_before_redis_and_by_the_script() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let before = snapshot(&store).await;
    for at in [MAX_RUN_AT_MS + 1, i64::MAX, -1] {
        let err = store
            .create(NewTask {
                run_at: Some(at),
                ..task_for("a1")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{at}: {err:?}");
    }
    for at in ["253402300800000", "9223372036854775808", "-1"] {
        let args = [
            "",
            "60000",
            "1",
            "task_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "a1",
            "summarise",
            "NORMAL",
            "{}",
            "3",
            "60000",
            "",
            at,
            "",
            "",
        ];
        let err = eval_script(&store, "create", &args).await.unwrap_err();
        assert!(err.contains("BAD_ARGS"), "runAt {at}: {err}");
    }
    assert_unchanged(&before, &snapshot(&store).await);
    let t = create(&store, task_due("a1", MAX_RUN_AT_MS)).await;
    assert_eq!(
        zscore(&store, &store.keys().delayed(), &t.id).await,
        Some(MAX_RUN_AT_MS as f64)
    );
}

#[tokio::test]
async fn requeue_and_heartbeat_answer_one_result_per_item() {
    // A reply with the wrong number of codes is an Error::Reply (unit-tested
    // in store::reply); here every item of a batch gets its own answer.
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    for _ in 0..3 {
        create(&store, task_for("a1")).await;
    }
    let held = claim(&store, "a1", 3).await;
    let mut leases: Vec<(String, String)> = held
        .iter()
        .map(|c| (c.id.clone(), c.token.clone()))
        .collect();
    leases.push(("task_01HZZZZZZZZZZZZZZZZZZZZZZZ".into(), "t".into()));
    let states = store.heartbeat(&leases, LEASE).await.unwrap();
    assert_eq!(
        states,
        vec![
            LeaseState::Held,
            LeaseState::Held,
            LeaseState::Held,
            LeaseState::Gone
        ]
    );
    let results = store.requeue(&leases).await.unwrap();
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(matches!(results[3], Err(Error::TaskNotFound(_))));
}

#[tokio::test]
async fn get_many_refuses_no_ids_and_more_than_a_thousand() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    let err = eval_script(&store, "get_many", &[]).await.unwrap_err();
    assert!(err.contains("BAD_ARGS"), "{err}");
    let ids: Vec<String> = (0..1001).map(|_| taskherd::task::new_task_id()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let err = eval_script(&store, "get_many", &ids).await.unwrap_err();
    assert!(err.contains("BAD_ARGS"), "{err}");
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- start --------------------------------------------------------------

#[tokio::test]
async fn start_leases_the_named_task_not_the_oldest_and_its_token_completes_it() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let oldest = create(&store, task_for("a1")).await;
    let named = create(&store, task_at("a1", Priority::Low)).await;
    let lease = Duration::from_secs(30);

    let c = store.start(&named.id, "w9", lease).await.unwrap();
    assert_eq!(c.id, named.id);
    assert_eq!(c.agent_id, "a1");
    assert_eq!(c.priority, Priority::Low);
    assert_eq!(c.lease_until, now(&store) + 30_000);
    let t = store.get(&named.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Processing);
    assert_eq!(t.worker_id.as_deref(), Some("w9"));
    let k = store.keys();
    assert!(zmembers(&store, &k.ready("a1", 3)).await.is_empty());
    assert_eq!(
        zmembers(&store, &k.ready("a1", 2)).await,
        vec![oldest.id.clone()]
    );
    assert_eq!(
        zscore(&store, &k.processing(), &named.id).await,
        Some((now(&store) + 30_000) as f64)
    );
    assert_eq!(count(&store, "a1", "QUEUED").await, 1);
    assert_eq!(count(&store, "a1", "PROCESSING").await, 1);
    assert_eq!(
        zmembers(&store, &idx(&store, "status:PROCESSING")).await,
        vec![named.id.clone()]
    );
    let last = events(&store).await.pop().unwrap();
    assert_eq!(last.kind, EventKind::Started);
    assert_eq!(last.task_id, named.id);
    assert_eq!(last.attempt, Some(1));

    // The next claim takes the other task; the start's token completes its own.
    assert_eq!(claim_one(&store, "a1").await.id, oldest.id);
    complete_ok(&store, &c).await;
    let done = store.get(&named.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
}

#[tokio::test]
async fn start_takes_a_due_task_the_promoter_has_not_moved_yet() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let due = T0_MS + 60_000;
    let t = create(&store, task_due("a1", due)).await;
    advance_ms(&store, 60_000);
    let c = store
        .start(&t.id, "w", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(c.id, t.id);
    let k = store.keys();
    assert!(zmembers(&store, &k.delayed()).await.is_empty());
    assert!(zmembers(&store, &k.ready("a1", 2)).await.is_empty());
    assert_eq!(store.promote(100).await.unwrap().handled, 0);
    assert_eq!(
        store.get(&t.id).await.unwrap().unwrap().status,
        TaskStatus::Processing
    );
}

#[tokio::test]
async fn start_refuses_unknown_running_ended_and_waiting_tasks_and_changes_nothing() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let lease = Duration::from_secs(30);
    let running = create(&store, task_for("a1")).await;
    let leased = claim_one(&store, "a1").await;
    assert_eq!(leased.id, running.id);
    let ended = create(&store, task_for("a2")).await;
    complete_ok(&store, &claim_one(&store, "a2").await).await;
    let waiting = create(&store, task_due("a3", T0_MS + 60_000)).await;
    let before = snapshot(&store).await;

    let unknown = taskherd::task::new_task_id();
    assert!(matches!(
        store.start(&unknown, "w", lease).await,
        Err(Error::TaskNotFound(id)) if id == unknown
    ));
    assert!(matches!(
        store.start("task_{bad}", "w", lease).await,
        Err(Error::TaskNotFound(_))
    ));
    for id in [&running.id, &ended.id, &waiting.id] {
        let err = store.start(id, "w", lease).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotReady(x) if x == id),
            "{id}: {err:?}"
        );
        assert_eq!(err.code(), "TASK_NOT_READY");
    }
    assert!(matches!(
        store.start(&waiting.id, "w", Duration::ZERO).await,
        Err(Error::Validation(_))
    ));
    for args in [
        vec!["", "0", "tok.1", "w", waiting.id.as_str()],
        vec!["", "30000", "", "w", waiting.id.as_str()],
        vec!["", "30000", "tok.1", "w"],
    ] {
        let err = eval_script(&store, "start", &args).await.unwrap_err();
        assert!(err.contains("BAD_ARGS"), "{args:?}: {err}");
    }
    assert_unchanged(&before, &snapshot(&store).await);
}

// ---- audit --------------------------------------------------------------

#[tokio::test]
async fn audit_of_agreeing_indexes_changes_nothing_and_refuses_bad_limits() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    create(&store, task_due("a1", T0_MS + 60_000)).await;
    create(&store, task_for("a1")).await;
    claim_one(&store, "a1").await;
    let before = snapshot(&store).await;
    let a = store.audit(AUDIT_BATCH).await.unwrap();
    assert_eq!(
        a,
        Audit {
            checked: 3,
            wrapped: true,
            ..Audit::default()
        }
    );
    assert_unchanged(&before, &snapshot(&store).await);
    for args in [
        ["", "0", "10"],
        ["", "1001", "10"],
        ["", "x", "10"],
        ["", "10", "0"],
        ["", "10", "100001"],
    ] {
        let err = eval_script(&store, "audit", &args).await.unwrap_err();
        assert!(err.contains("BAD_ARGS"), "{args:?}: {err}");
        assert_unchanged(&before, &snapshot(&store).await);
    }
}

#[tokio::test]
async fn audit_gives_a_lost_lease_entry_back_and_the_reaper_then_ends_the_attempt() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let t = create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    let k = store.keys();
    let _: i64 = raw.zrem(k.processing(), &t.id).await.unwrap();
    advance_ms(&store, LEASE.as_millis() as u64 + 1);
    assert_eq!(store.reap(100).await.unwrap().handled, 0, "nothing to reap");

    let a = store.audit(AUDIT_BATCH).await.unwrap();
    assert_eq!((a.checked, a.leases_restored, a.repaired()), (1, 1, 1));
    assert_eq!(
        zscore(&store, &k.processing(), &t.id).await,
        Some(c.lease_until as f64)
    );
    assert_eq!(store.reap(100).await.unwrap().handled, 1);
    let after = store.get(&t.id).await.unwrap().unwrap();
    assert_eq!(after.status, TaskStatus::Queued);
    assert_eq!(after.retry_count, 1, "the lost lease counts as an attempt");
}

#[tokio::test]
async fn audit_puts_queued_tasks_that_left_their_queue_back_in_it() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let k = store.keys();
    let older = create(&store, task_at("a1", Priority::High)).await;
    let newer = create(&store, task_at("a1", Priority::High)).await;
    let later = create(&store, task_due("a1", T0_MS + 60_000)).await;
    let ready = k.ready("a1", 1);
    let seq = zscore(&store, &ready, &older.id).await.unwrap();
    let _: i64 = raw.zrem(&ready, &older.id).await.unwrap();
    let _: i64 = raw.zrem(k.delayed(), &later.id).await.unwrap();
    assert_eq!(claim(&store, "a1", 10).await[0].id, newer.id);

    let a = store.audit(AUDIT_BATCH).await.unwrap();
    assert_eq!((a.queue_entries_restored, a.repaired()), (2, 2));
    assert_eq!(
        zscore(&store, &ready, &older.id).await,
        Some(seq),
        "back at its own FIFO place"
    );
    assert_eq!(
        zscore(&store, &k.delayed(), &later.id).await,
        Some((T0_MS + 60_000) as f64)
    );
    assert_eq!(claim_one(&store, "a1").await.id, older.id);
}

#[tokio::test]
async fn audit_removes_the_entries_of_deleted_records_and_moves_misfiled_ones() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let k = store.keys();
    let leased = create(&store, task_for("a1")).await;
    let waiting = create(&store, task_for("a1")).await;
    let misfiled = create(&store, task_for("a2")).await;
    assert_eq!(claim_one(&store, "a1").await.id, leased.id);
    let _: i64 = raw
        .del(vec![k.task(&leased.id), k.task(&waiting.id)])
        .await
        .unwrap();
    let _: () = raw
        .hset(k.task(&misfiled.id), ("status", "CANCELLED"))
        .await
        .unwrap();

    let a = store.audit(AUDIT_BATCH).await.unwrap();
    assert_eq!(
        (a.checked, a.ghosts_removed, a.status_entries_moved),
        (3, 2, 1)
    );
    for index in [
        "status:QUEUED",
        "status:PROCESSING",
        "agent:a1",
        "prio:NORMAL",
    ] {
        let members = zmembers(&store, &idx(&store, index)).await;
        assert!(
            !members.contains(&leased.id) && !members.contains(&waiting.id),
            "{index}: {members:?}"
        );
    }
    assert!(zmembers(&store, &k.processing()).await.is_empty());
    assert!(zmembers(&store, &k.ready("a1", 2)).await.is_empty());
    assert_eq!(count(&store, "a1", "QUEUED").await, 0);
    assert_eq!(count(&store, "a1", "PROCESSING").await, 0);
    assert_eq!(
        zmembers(&store, &idx(&store, "status:CANCELLED")).await,
        vec![misfiled.id.clone()]
    );
    assert!(claim(&store, "a1", 10).await.is_empty());
    let again = store.audit(AUDIT_BATCH).await.unwrap();
    assert_eq!(
        again.repaired(),
        0,
        "a second pass finds nothing: {again:?}"
    );
}

#[tokio::test]
async fn audit_walks_a_large_index_in_slices_and_starts_over() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let ready = store.keys().ready("a1", 2);
    for _ in 0..5 {
        create(&store, task_for("a1")).await;
    }
    let _: i64 = raw.del(&ready).await.unwrap();
    let mut slices = Vec::new();
    loop {
        let a = store.audit(2).await.unwrap();
        slices.push((a.checked, a.queue_entries_restored));
        if a.wrapped {
            break;
        }
        assert!(slices.len() < 10, "the walk never ends: {slices:?}");
    }
    assert_eq!(slices, vec![(2, 2), (2, 2), (1, 1)]);
    assert_eq!(zmembers(&store, &ready).await.len(), 5);
    let a = store.audit(2).await.unwrap();
    assert_eq!((a.checked, a.repaired()), (2, 0), "starts over: {a:?}");
}

#[tokio::test]
async fn audit_stops_where_its_agent_lookup_budget_runs_out_and_goes_on_from_there() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let k = store.keys();
    for agent in ["a0", "a2", "a3"] {
        create(&store, task_for(agent)).await;
    }
    let mut ghosts = Vec::new();
    for _ in 0..3 {
        ghosts.push(create(&store, task_for("a1")).await.id);
    }
    let _: i64 = raw
        .del(ghosts.iter().map(|id| k.task(id)).collect::<Vec<_>>())
        .await
        .unwrap();

    // Each ghost costs up to four agent lookups: a budget of one stops the
    // walk right after the first ghost of each call.
    let mut slices = Vec::new();
    loop {
        let a = store.audit_with_budget(AUDIT_BATCH, 1).await.unwrap();
        slices.push((a.checked, a.ghosts_removed));
        if a.wrapped {
            break;
        }
        assert!(slices.len() < 10, "the walk never ends: {slices:?}");
    }
    assert_eq!(slices, vec![(4, 1), (1, 1), (1, 1)]);
    assert_eq!(count(&store, "a1", "QUEUED").await, 0);
    assert!(zmembers(&store, &idx(&store, "agent:a1")).await.is_empty());
    assert_eq!(
        zmembers(&store, &idx(&store, "status:QUEUED")).await.len(),
        3
    );
}
