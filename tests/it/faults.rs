//! Node and Redis faults (RELIABILITY.md): a worker paused past its lease, a
//! node killed mid-task, Redis restarted under running workers.

use std::time::Duration;

use serde_json::json;
use taskherd::store::{ClaimRequest, Completion, Event, EventKind, LeaseState, ListFilter, Store};
use taskherd::task::{NewTask, Task, TaskStatus};
use taskherd::worker::{Output, Registry, TaskContext, demo};

use crate::support::*;

async fn task(store: &Store, id: &str) -> Task {
    store.get(id).await.unwrap().expect("task exists")
}

/// A number from the child's health document (`worker.<field>`).
fn worker_stat(health: &serde_json::Value, field: &str) -> u64 {
    health["worker"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("health has no worker.{field}: {health}"))
}

/// Every task ends COMPLETED with exactly one terminal event, and each extra
/// run is explained by exactly one retry or hand-back.
fn assert_completed_once(t: &Task, events: &[Event]) {
    assert_eq!(t.status, TaskStatus::Completed, "{}", t.id);
    let counts = event_counts(events, &t.id);
    let terminal: usize = TERMINAL_EVENTS
        .iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(terminal, 1, "{}: {counts:?}", t.id);
    assert_eq!(counts.get("completed"), Some(&1), "{}: {counts:?}", t.id);
    let retries = t.retry_count as usize;
    assert_eq!(
        counts.get("retrying").copied().unwrap_or(0),
        retries,
        "{}: {counts:?}",
        t.id
    );
    let requeues = counts.get("requeued").copied().unwrap_or(0);
    assert_eq!(
        counts.get("started").copied().unwrap_or(0),
        retries + requeues + 1,
        "{}: {counts:?}",
        t.id
    );
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_cannot_complete_the_redelivered_task() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let id = store
        .create(NewTask::new(demo::SLEEP, "t", json!({ "ms": 1500 })))
        .await
        .unwrap()
        .task
        .id;
    let child = ChildNode::spawn(
        &redis.url(),
        &[
            "--lease-ms",
            "1000",
            "--concurrency",
            "1",
            "--node-id",
            "paused",
        ],
    );
    wait_until(
        "the child runs the task",
        Duration::from_secs(10),
        || async {
            let t = store.get(&id).await.unwrap()?;
            (t.status == TaskStatus::Processing && t.worker_id.as_deref() == Some("paused"))
                .then_some(())
        },
    )
    .await;
    let pid = child.child.id();
    send_signal(pid, "STOP");

    // Started only now, so the task could not go to it first.
    let mut registry = Registry::new();
    demo::register(&mut registry);
    let rescuer = TestNode::with_workers(&redis.url(), "rescuer", 1, registry).await;
    let done = wait_until(
        "the re-delivered task completes",
        Duration::from_secs(8),
        || async {
            let t = store.get(&id).await.unwrap()?;
            (t.status == TaskStatus::Completed).then_some(t)
        },
    )
    .await;
    assert_eq!(done.worker_id.as_deref(), Some("rescuer"));
    assert_eq!(done.retry_count, 1);
    let before_resume = all_events(&store).await.len();

    // The paused worker's sleep is long over when it wakes up: it either
    // reports a result that the lease fence refuses, or learns first (stop
    // signal, heartbeat) that its lease is gone. Either way nothing changes.
    send_signal(pid, "CONT");
    let health = wait_until(
        "the resumed worker ends its attempt",
        Duration::from_secs(5),
        || async {
            let h = child.health().await?;
            (worker_stat(&h, "inFlight") == 0).then_some(h)
        },
    )
    .await;
    assert_eq!(worker_stat(&health, "completedTotal"), 0, "{health}");
    assert_eq!(worker_stat(&health, "failedTotal"), 0, "{health}");
    // Usually 1 (the result was sent and refused); 0 when the stop signal won.
    assert!(worker_stat(&health, "refusedTotal") <= 1, "{health}");

    let after = task(&store, &id).await;
    assert_eq!(after.status, TaskStatus::Completed);
    assert_eq!(after.worker_id.as_deref(), Some("rescuer"));
    assert_eq!(after.completed_at, done.completed_at);
    assert_eq!(after.output_data, done.output_data);
    let events = all_events(&store).await;
    assert_eq!(
        events.len(),
        before_resume,
        "the resumed worker changed nothing"
    );
    assert_completed_once(&after, &events);
    let mut child = child;
    assert!(child.terminate().success());
    rescuer.stop().await;
}

#[tokio::test]
async fn tasks_of_a_node_killed_mid_run_are_finished_by_another_node_exactly_once() {
    const TASKS: usize = 12;
    let redis = TestRedis::start();
    let store = redis.store().await;
    let items = (0..TASKS)
        .map(|_| NewTask::new(demo::SLEEP, "t", json!({ "ms": 400 })))
        .collect();
    let ids: Vec<String> = store
        .create_batch(items)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    let mut child = ChildNode::spawn(
        &redis.url(),
        &[
            "--lease-ms",
            "1000",
            "--concurrency",
            "4",
            "--node-id",
            "doomed",
        ],
    );
    wait_until(
        "the child runs some tasks",
        Duration::from_secs(10),
        || async {
            let mut running = 0;
            for id in &ids {
                let t = store.get(id).await.unwrap()?;
                if t.status == TaskStatus::Processing && t.worker_id.as_deref() == Some("doomed") {
                    running += 1;
                }
            }
            (running >= 2).then_some(())
        },
    )
    .await;
    child.kill9();

    // What the dead node held: these must be retried once by the survivor.
    let mut orphans = Vec::new();
    for id in &ids {
        let t = task(&store, id).await;
        if t.status == TaskStatus::Processing {
            assert_eq!(t.worker_id.as_deref(), Some("doomed"));
            orphans.push(t.id);
        }
    }
    assert!(!orphans.is_empty());

    // Two survivors: both reapers see the expired leases; each is reaped once.
    let mut survivors = Vec::new();
    for name in ["survivor-1", "survivor-2"] {
        let mut registry = Registry::new();
        demo::register(&mut registry);
        survivors.push(TestNode::with_workers(&redis.url(), name, 2, registry).await);
    }
    wait_until("every task completes", Duration::from_secs(10), || async {
        let status = store.queue_status().await.unwrap();
        (status.completed_tasks == TASKS as u64).then_some(())
    })
    .await;

    let events = all_events(&store).await;
    for id in &ids {
        let t = task(&store, id).await;
        assert_completed_once(&t, &events);
        if orphans.contains(id) {
            assert_eq!(t.retry_count, 1, "{id}: the lost attempt counts once");
            assert!(t.worker_id.as_deref().unwrap_or("").starts_with("survivor"));
        } else {
            assert_eq!(t.retry_count, 0, "{id}");
        }
    }
    let status = store.queue_status().await.unwrap();
    assert_eq!(
        (
            status.queued_tasks,
            status.processing_tasks,
            status.failed_tasks
        ),
        (0, 0, 0)
    );
    for survivor in survivors {
        survivor.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_by_themselves_after_redis_restarts_and_lose_nothing() {
    const PER_PHASE: usize = 30;
    let mut redis = TestRedis::start();
    let mut registry = Registry::new();
    registry.register_fn("steady", |ctx: TaskContext| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Output {
            output_data: Some(ctx.task.input_data.clone()),
            ..Output::default()
        })
    });
    let node = TestNode::with_workers(&redis.url(), "steady-node", 4, registry).await;
    let store = redis.store().await;
    let before: Vec<String> = store
        .create_batch(
            (0..PER_PHASE)
                .map(|n| NewTask::new("steady", "t", json!({ "n": n })))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    wait_until(
        "some tasks complete before the restart",
        Duration::from_secs(5),
        || async {
            let status = store.queue_status().await.unwrap();
            (status.completed_tasks >= 4).then_some(())
        },
    )
    .await;

    let redis_after = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    redis = redis_after;

    wait_until("the store reconnects", Duration::from_secs(10), || async {
        store.ping().await.ok()
    })
    .await;
    // A create whose reply was lost may have been applied: the idempotency
    // key makes retrying it safe.
    let mut after = Vec::new();
    for n in 0..PER_PHASE {
        let new = NewTask {
            idempotency_key: Some(format!("after-{n}")),
            ..NewTask::new("steady", "t", json!({ "n": PER_PHASE + n }))
        };
        let created = wait_until("a create succeeds", Duration::from_secs(5), || async {
            store.create(new.clone()).await.ok()
        })
        .await;
        after.push(created.task.id);
    }

    wait_until(
        "every task completes after the restart",
        Duration::from_secs(20),
        || async {
            let status = store.queue_status().await.unwrap();
            (status.completed_tasks == 2 * PER_PHASE as u64).then_some(())
        },
    )
    .await;
    let events = all_events(&store).await;
    for (n, id) in before.iter().chain(&after).enumerate() {
        let t = task(&store, id).await;
        assert_eq!(t.output_data, Some(json!({ "n": n })), "{id}");
        assert_completed_once(&t, &events);
    }
    let status = store.queue_status().await.unwrap();
    assert_eq!(status.total_tasks, 2 * PER_PHASE as u64);
    assert_eq!((status.queued_tasks, status.processing_tasks), (0, 0));

    // The idle node is woken by the re-established signal subscription, not
    // by its 5 s safety recheck.
    let late = store
        .create(NewTask::new("steady", "t", json!({ "n": "late" })))
        .await
        .unwrap()
        .task
        .id;
    wait_until(
        "an idle worker is woken after the restart",
        Duration::from_secs(2),
        || async {
            let t = store.get(&late).await.unwrap()?;
            (t.status == TaskStatus::Completed).then_some(())
        },
    )
    .await;
    node.stop().await;
    drop(redis);
}

#[tokio::test]
async fn a_sigterm_mid_task_hands_the_tasks_back_without_spending_an_attempt() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let ids: Vec<String> = store
        .create_batch(
            (0..2)
                .map(|_| NewTask::new(demo::SLEEP, "t", json!({ "ms": 30_000 })))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    // A long lease: the tasks can only come back by being handed back.
    let mut child = ChildNode::spawn(
        &redis.url(),
        &[
            "--lease-ms",
            "30000",
            "--grace-ms",
            "200",
            "--concurrency",
            "2",
            "--node-id",
            "terminated",
        ],
    );
    wait_until(
        "the child runs both tasks",
        Duration::from_secs(10),
        || async {
            for id in &ids {
                let t = store.get(id).await.unwrap()?;
                if t.status != TaskStatus::Processing {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let terminating = std::time::Instant::now();
    let exit = tokio::task::spawn_blocking(move || child.terminate())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(terminating.elapsed() < Duration::from_secs(5));

    let events = all_events(&store).await;
    for id in &ids {
        let t = task(&store, id).await;
        assert_eq!(t.status, TaskStatus::Queued, "{id}");
        assert_eq!(t.retry_count, 0, "{id}");
        let counts = event_counts(&events, id);
        assert_eq!(counts.get("requeued"), Some(&1), "{counts:?}");
    }

    let mut registry = Registry::new();
    registry.register_fn(demo::SLEEP, |_ctx: TaskContext| async move {
        Ok(Output::default())
    });
    let successor = TestNode::with_workers(&redis.url(), "successor", 2, registry).await;
    wait_until("both tasks complete", Duration::from_secs(5), || async {
        let status = store.queue_status().await.unwrap();
        (status.completed_tasks == 2).then_some(())
    })
    .await;
    let events = all_events(&store).await;
    for id in &ids {
        let t = task(&store, id).await;
        assert_eq!(t.retry_count, 0, "{id}");
        assert_eq!(t.worker_id.as_deref(), Some("successor"));
        assert_completed_once(&t, &events);
    }
    successor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recover_by_themselves_when_redis_is_away_longer_than_a_lease() {
    const TASKS: usize = 16;
    let mut redis = TestRedis::start();
    let mut registry = Registry::new();
    demo::register(&mut registry);
    let node = TestNode::with_workers(&redis.url(), "patient", 4, registry).await;
    let store = redis.store().await;
    let ids: Vec<String> = store
        .create_batch(
            (0..TASKS)
                .map(|_| NewTask::new(demo::SLEEP, "t", json!({ "ms": 300 })))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    wait_until("tasks are running", Duration::from_secs(5), || async {
        let status = store.queue_status().await.unwrap();
        (status.processing_tasks > 0).then_some(())
    })
    .await;

    // Clean stop (nothing acknowledged is lost), away for longer than the
    // 1.5 s lease, then back on the same port and data.
    let port = redis.redis.port();
    let dir = redis.data_dir();
    redis = tokio::task::spawn_blocking(move || {
        redis.redis.stop();
        std::thread::sleep(Duration::from_millis(2_500));
        redis.redis = taskherd::local_redis::LocalRedis::start_on(&dir, port).unwrap();
        redis
    })
    .await
    .unwrap();

    wait_until(
        "every task completes after Redis is back",
        Duration::from_secs(20),
        || async {
            let status = store.queue_status().await.ok()?;
            (status.completed_tasks == TASKS as u64).then_some(())
        },
    )
    .await;
    let events = all_events(&store).await;
    for id in &ids {
        assert_completed_once(&task(&store, id).await, &events);
    }
    node.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_stops_its_handler_within_about_a_lease() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let redis = TestRedis::start();
    let proxy = PausableProxy::start(redis.redis.port()).await;
    let stopped_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Arc::new(tokio::sync::Notify::new());
    let mut registry = Registry::new();
    let (stopped, notify) = (stopped_at.clone(), started.clone());
    registry.register_fn("careful", move |ctx: TaskContext| {
        let (stopped, notify) = (stopped.clone(), notify.clone());
        async move {
            // The runtime drops the handler when it gives the attempt up.
            struct Stopped(Arc<Mutex<Option<Instant>>>);
            impl Drop for Stopped {
                fn drop(&mut self) {
                    *self.0.lock().unwrap() = Some(Instant::now());
                }
            }
            let _stopped = Stopped(stopped);
            notify.notify_one();
            ctx.cancel.cancelled().await;
            Err(taskherd::worker::HandlerError::retryable("stopped"))
        }
    });
    let cut_off = TestNode::with_workers(&proxy.url(), "cut-off", 1, registry).await;
    let store = redis.store().await;
    let id = store
        .create(NewTask::new("careful", "t", json!({})))
        .await
        .unwrap()
        .task
        .id;
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("the handler starts");

    proxy.pause();
    let paused_at = Instant::now();
    let mut registry = Registry::new();
    registry.register_fn("careful", |_ctx: TaskContext| async move {
        Ok(Output::default())
    });
    let connected = TestNode::with_workers(&redis.url(), "connected", 1, registry).await;

    // The lease is 1.5 s, renewed every 0.5 s: without renewals the worker
    // must give the attempt up about when the reaper re-delivers it.
    let stopped = wait_until(
        "the cut-off worker stops its handler",
        Duration::from_secs(4),
        || async { *stopped_at.lock().unwrap() },
    )
    .await;
    let after = stopped - paused_at;
    assert!(
        after < Duration::from_millis(3_000),
        "stopped after {after:?}"
    );
    let done = wait_until(
        "the task is re-delivered",
        Duration::from_secs(5),
        || async {
            let t = store.get(&id).await.unwrap()?;
            (t.status == TaskStatus::Completed).then_some(t)
        },
    )
    .await;
    assert_eq!(done.worker_id.as_deref(), Some("connected"));
    assert_eq!(done.retry_count, 1);

    proxy.resume();
    let runtime = cut_off.runtime.clone().unwrap();
    wait_until(
        "the cut-off worker settles",
        Duration::from_secs(5),
        || async { (runtime.stats().in_flight == 0).then_some(()) },
    )
    .await;
    let stats = runtime.stats();
    assert_eq!(stats.completed_total, 0, "{stats:?}");
    let events = all_events(&store).await;
    assert_completed_once(&task(&store, &id).await, &events);
    cut_off.stop().await;
    connected.stop().await;
}

#[tokio::test]
async fn a_redis_that_lost_the_function_library_gets_it_back_on_the_next_call() {
    use fred::prelude::*;
    let redis = TestRedis::start();
    let store = redis.store().await;
    let raw = raw_redis(&redis.url()).await;
    let first = store
        .create(NewTask::new("a", "t", json!(1)))
        .await
        .unwrap();
    // As after a FUNCTION FLUSH, or a fresh Redis behind the same address.
    let _: () = raw.function_flush(false).await.unwrap();
    let libraries: fred::types::Value = raw.function_list(None::<String>, false).await.unwrap();
    assert!(!format!("{libraries:?}").contains("taskherd_"));

    let second = store
        .create(NewTask::new("a", "t", json!(2)))
        .await
        .unwrap();
    assert!(second.created);
    assert_eq!(
        task(&store, &first.task.id).await.status,
        TaskStatus::Queued
    );
    let libraries: fred::types::Value = raw.function_list(None::<String>, false).await.unwrap();
    assert!(format!("{libraries:?}").contains("taskherd_"));
}

#[tokio::test]
async fn redis_out_of_memory_refuses_new_tasks_cleanly_while_work_in_flight_finishes() {
    use fred::prelude::*;
    let redis = TestRedis::start();
    let store = redis.store().await;
    let raw = raw_redis(&redis.url()).await;
    let running = store
        .create(NewTask::new("a1", "t", json!({ "n": 1 })))
        .await
        .unwrap()
        .task;
    let waiting = store
        .create(NewTask::new("a1", "t", json!({ "n": 2 })))
        .await
        .unwrap()
        .task;
    let claim_req = ClaimRequest {
        worker_id: "w1".into(),
        lease: Duration::from_secs(30),
        max_tasks: 1,
        agents: vec![("a1".into(), 1)],
    };
    let claimed = store.claim(&claim_req).await.unwrap();
    assert_eq!(claimed[0].id, running.id);

    let info: String = raw.info(Some(fred::types::InfoKind::Memory)).await.unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _: () = raw
        .config_set("maxmemory", (used / 2).to_string())
        .await
        .unwrap();

    let before = crate::store_support::snapshot(&store).await;
    let refused = store
        .create(NewTask::new("a1", "t", json!({ "n": 3 })))
        .await
        .unwrap_err();
    assert!(refused.is_out_of_memory(), "{refused:?}");
    // A refused create writes nothing.
    let after = crate::store_support::snapshot(&store).await;
    crate::store_support::assert_unchanged(&before, &after);

    // Reads answer; work already queued is claimed, heartbeated and finished.
    assert_eq!(
        store.get(&waiting.id).await.unwrap().unwrap().status,
        TaskStatus::Queued
    );
    let filter = ListFilter {
        status: Some(TaskStatus::Queued),
        agent_id: Some("a1".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list(&filter).await.unwrap().total_count, 1);
    assert_eq!(store.queue_status().await.unwrap().total_tasks, 2);
    let second = store.claim(&claim_req).await.unwrap();
    assert_eq!(second[0].id, waiting.id);
    for c in claimed.iter().chain(&second) {
        assert_eq!(
            store
                .heartbeat(&[(c.id.clone(), c.token.clone())], Duration::from_secs(30))
                .await
                .unwrap(),
            vec![LeaseState::Held]
        );
    }
    let done = store
        .complete(&[
            Completion {
                id: running.id.clone(),
                token: claimed[0].token.clone(),
                output_data: Some(json!("ok")),
                ..Default::default()
            },
            Completion {
                id: waiting.id.clone(),
                token: second[0].token.clone(),
                ..Default::default()
            },
        ])
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|r| r.is_ok()), "{done:?}");
    store.reap(10).await.unwrap();
    store.audit(10).await.unwrap();
    store.cleanup(Duration::ZERO).await.unwrap();

    // Memory back: new work is taken again.
    let _: () = raw.config_set("maxmemory", "0").await.unwrap();
    store
        .create(NewTask::new("a1", "t", json!({ "n": 3 })))
        .await
        .unwrap();
}

/// A store (one connection) that reaches Redis through `proxy`.
async fn store_through(proxy: &PausableProxy) -> Store {
    Store::connect(
        &proxy.url(),
        1,
        taskherd::store::StoreConfig::default(),
        taskherd::clock::Clock::redis(),
    )
    .await
    .unwrap()
}

/// Sends a call again until it answers, through a connection that fred is
/// re-opening (calls fail fast while it is down); other errors fail the test.
async fn once_reconnected<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = taskherd::Result<T>>,
{
    wait_until(what, Duration::from_secs(10), || {
        let attempt = call();
        async move {
            match attempt.await {
                Ok(v) => Some(v),
                Err(e) if e.is_transient() => None,
                Err(e) => panic!("{what}: {e:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_reply_lost_to_a_connection_reset_is_safe_to_retry() {
    let redis = TestRedis::start();
    let direct = redis.store().await;
    let proxy = PausableProxy::start(redis.redis.port()).await;
    let store = store_through(&proxy).await;
    let new = || NewTask {
        idempotency_key: Some("order-17".into()),
        ..NewTask::new("a1", "t", json!({ "n": 1 }))
    };

    // The create ran in Redis, but its reply was lost: the caller sees an
    // error and sends it again with the same key.
    proxy.cut_next_reply();
    let lost = store.create(new()).await.unwrap_err();
    assert!(lost.is_transient(), "{lost:?}");
    let again = once_reconnected("create again", || store.create(new())).await;
    assert!(
        !again.created,
        "the repeat names the task the lost call made"
    );
    let all: u64 = fred::interfaces::SortedSetsInterface::zcard(
        &*raw_redis(&redis.url()).await,
        direct.keys().index(taskherd::store::Index::All),
    )
    .await
    .unwrap();
    assert_eq!(all, 1, "one task, not two");
    let id = again.task.id;

    // The same for a complete: the repeat with the same token is harmless.
    let claimed = direct
        .claim(&ClaimRequest {
            worker_id: "w1".into(),
            lease: Duration::from_secs(30),
            max_tasks: 1,
            agents: vec![("a1".into(), 1)],
        })
        .await
        .unwrap();
    assert_eq!(claimed[0].id, id);
    let done = || {
        vec![Completion {
            id: id.clone(),
            token: claimed[0].token.clone(),
            output_data: Some(json!("ok")),
            ..Default::default()
        }]
    };
    proxy.cut_next_reply();
    assert!(store.complete(&done()).await.unwrap_err().is_transient());
    let repeat = once_reconnected("complete again", || async {
        Ok(store.complete(&done()).await?.remove(0))
    })
    .await;
    assert!(repeat.is_ok(), "{repeat:?}");
    let t = task(&direct, &id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    let completed = all_events(&direct)
        .await
        .iter()
        .filter(|e| e.task_id == id && e.kind == EventKind::Completed)
        .count();
    assert_eq!(completed, 1, "completed once");
}

#[tokio::test]
async fn a_rate_limit_sync_whose_reply_was_lost_does_not_count_twice() {
    // One principal, a limit of 10 per second, 6 requests admitted. The sync
    // carrying them runs in Redis but its reply is lost to a reset, so the
    // limiter sends it again. The principal made 6 requests: 4 more are
    // admitted in the same window, the 11th is refused.
    use std::time::{SystemTime, UNIX_EPOCH};
    use taskherd::api::ratelimit::RateLimiter;
    let unix = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let redis = TestRedis::start();
    let direct = redis.store().await;
    let proxy = PausableProxy::start(redis.redis.port()).await;
    let store = store_through(&proxy).await;
    // One run must fit in one window: start just after a second begins, and
    // try again (with another principal) when it did not fit.
    for attempt in 0..5 {
        let limiter = RateLimiter::new(10);
        let sub = format!("p{attempt}");
        let into_second = unix().subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(1_010 - into_second))).await;
        let window = unix().as_secs();
        proxy.cut_next_reply();
        for _ in 0..6 {
            limiter.check(&store, &sub).await.unwrap();
        }
        wait_until(
            "the sync's reply is cut",
            Duration::from_millis(500),
            || async { (!proxy.cut_pending()).then_some(()) },
        )
        .await;
        // The count ran in Redis although its reply was lost; it is sent
        // again over the reconnected connection.
        wait_until(
            "the count is recorded",
            Duration::from_millis(500),
            || async {
                let (by_limiter, _) = direct.rate_counts(&sub, window).await.ok()?;
                (by_limiter.get(limiter.id()) == Some(&6)).then_some(())
            },
        )
        .await;
        // Paced past several sync intervals (50 ms): the count is sent again
        // meanwhile, over the reconnected connection.
        let mut admitted = 6;
        let mut refused_at = None;
        for n in 7..=11 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            match limiter.check(&store, &sub).await {
                Ok(()) => admitted += 1,
                Err(e) => {
                    assert_eq!(e.code, "RATE_LIMITED");
                    refused_at = Some(n);
                    break;
                }
            }
        }
        if unix().as_secs() != window {
            continue;
        }
        assert_eq!(
            (admitted, refused_at),
            (10, Some(11)),
            "6 requests were counted as more"
        );
        return;
    }
    panic!("no run fit in one window");
}
