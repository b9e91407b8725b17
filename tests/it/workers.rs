//! The worker runtime against a real Redis: cancellation, attempt timeouts,
//! many claimers on many nodes, and graceful shutdown.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskherd::Error;
use taskherd::clock::Clock;
use taskherd::store::{Completion, EventKind, Failure, Store};
use taskherd::task::{NewTask, Task, TaskStatus};
use taskherd::worker::{Output, Registry, TaskContext, WorkerConfig};

use crate::support::*;

/// What handlers under test report: the lease token of every attempt they
/// started and how many of their futures were dropped or finished.
#[derive(Default)]
struct Probe {
    tokens: Mutex<Vec<String>>,
    ended: AtomicUsize,
}

impl Probe {
    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }

    /// Records an attempt's start; the guard counts its end (drop included).
    fn start(self: &Arc<Self>, ctx: &TaskContext) -> EndGuard {
        self.tokens.lock().unwrap().push(ctx.task.token.clone());
        EndGuard(self.clone())
    }
}

/// Counts the end of a handler future, whether it returned or was dropped.
struct EndGuard(Arc<Probe>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// Registers `agent` as a handler that never finishes and ignores its
/// cancellation token: only the runtime dropping it can stop it.
fn register_stuck(registry: &mut Registry, agent: &str, probe: &Arc<Probe>) {
    let probe = probe.clone();
    registry.register_fn(agent, move |ctx: TaskContext| {
        let guard = probe.start(&ctx);
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Output {
                output_data: Some(json!("too late")),
                ..Output::default()
            })
        }
    });
}

/// Registers `agent` as a handler that succeeds at once.
fn register_quick(registry: &mut Registry, agent: &str) {
    registry.register_fn(agent, |ctx: TaskContext| async move {
        Ok(Output {
            output_data: Some(json!({ "ranBy": ctx.task.id })),
            ..Output::default()
        })
    });
}

async fn start_node(redis: &TestRedis, worker: WorkerConfig, registry: Registry) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), Some(worker), Clock::redis()),
        registry,
    )
    .await
}

async fn task(store: &Store, id: &str) -> Task {
    store.get(id).await.unwrap().expect("task exists")
}

async fn wait_for_status(store: &Store, id: &str, status: TaskStatus, deadline: Duration) -> Task {
    wait_until(&format!("task {id} is {status:?}"), deadline, || async {
        let t = store.get(id).await.unwrap()?;
        (t.status == status).then_some(t)
    })
    .await
}

fn late_completion(id: &str, token: &str) -> Completion {
    Completion {
        id: id.to_string(),
        token: token.to_string(),
        output_data: Some(json!("late")),
        ..Completion::default()
    }
}

fn late_failure(id: &str, token: &str) -> Failure {
    Failure {
        id: id.to_string(),
        token: token.to_string(),
        error_message: "late".into(),
        retryable: true,
        timed_out: false,
    }
}

#[tokio::test]
async fn a_cancelled_queued_task_is_never_claimed_nor_run() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let doomed = store
        .create(NewTask::new("counted", "t", json!({ "n": 1 })))
        .await
        .unwrap()
        .task
        .id;
    assert_eq!(
        store.cancel(&doomed, Some("not needed")).await.unwrap(),
        TaskStatus::Queued
    );

    let ran: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = ran.clone();
    registry.register_fn("counted", move |ctx: TaskContext| {
        seen.lock().unwrap().push(ctx.task.id.clone());
        async { Ok(Output::default()) }
    });
    let node = start_node(&redis, worker_config("n1", 4), registry).await;
    // A task created after the node runs proves the node claims that agent.
    let marker = node
        .store
        .create(NewTask::new("counted", "t", json!({ "n": 2 })))
        .await
        .unwrap()
        .task
        .id;
    wait_for_status(
        &node.store,
        &marker,
        TaskStatus::Completed,
        Duration::from_secs(5),
    )
    .await;

    assert_eq!(*ran.lock().unwrap(), vec![marker]);
    let cancelled = task(&store, &doomed).await;
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(cancelled.error_message.as_deref(), Some("not needed"));
    assert_eq!(cancelled.worker_id, None);
    let counts = event_counts(&all_events(&store).await, &doomed);
    assert_eq!(counts.get("cancelled"), Some(&1));
    assert_eq!(counts.get("started"), None, "{counts:?}");
    assert_eq!(node.runtime.as_ref().unwrap().stats().claimed_total, 1);
    node.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_from_another_node_stops_its_handler_and_refuses_its_result() {
    let redis = TestRedis::start();
    let probe = Arc::new(Probe::default());
    let mut registry = Registry::new();
    register_stuck(&mut registry, "stuck", &probe);
    let worker_node = start_node(&redis, worker_config("a", 2), registry).await;
    let api_node = TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await;

    let id = api_node
        .store
        .create(NewTask::new("stuck", "t", json!({})))
        .await
        .unwrap()
        .task
        .id;
    wait_until("the handler runs", Duration::from_secs(5), || async {
        (probe.tokens().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        task(&api_node.store, &id).await.status,
        TaskStatus::Processing
    );

    let cancelled_at = Instant::now();
    assert_eq!(
        api_node
            .store
            .cancel(&id, Some("user asked"))
            .await
            .unwrap(),
        TaskStatus::Processing
    );
    wait_until("the handler is stopped", Duration::from_secs(3), || async {
        (probe.ended() == 1).then_some(())
    })
    .await;
    // The stop signal arrives by pub/sub, well before the next heartbeat
    // (every 500 ms) would notice; allow a loaded machine some slack.
    assert!(cancelled_at.elapsed() < Duration::from_millis(1_500));
    let runtime = worker_node.runtime.clone().unwrap();
    wait_until("the slot is free", Duration::from_secs(3), || async {
        (runtime.stats().in_flight == 0).then_some(())
    })
    .await;

    let token = probe.tokens()[0].clone();
    let late = worker_node
        .store
        .complete(&[late_completion(&id, &token)])
        .await
        .unwrap();
    assert!(matches!(late[0], Err(Error::NotProcessing(_))), "{late:?}");
    let late = worker_node
        .store
        .fail(&[late_failure(&id, &token)])
        .await
        .unwrap();
    assert!(matches!(late[0], Err(Error::NotProcessing(_))), "{late:?}");

    let t = task(&api_node.store, &id).await;
    assert_eq!(t.status, TaskStatus::Cancelled);
    assert_eq!(t.output_data, None);
    let counts = event_counts(&all_events(&api_node.store).await, &id);
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
    for kind in ["completed", "failed", "retrying", "timeout"] {
        assert_eq!(counts.get(kind), None, "{counts:?}");
    }
    let stats = runtime.stats();
    assert_eq!((stats.completed_total, stats.failed_total), (0, 0));
    worker_node.stop().await;
    api_node.stop().await;
}

#[tokio::test]
async fn a_handler_that_ignores_cancellation_is_stopped_at_its_timeout_and_ends_as_timeout() {
    let redis = TestRedis::start();
    let probe = Arc::new(Probe::default());
    let mut registry = Registry::new();
    register_stuck(&mut registry, "stubborn", &probe);
    register_quick(&mut registry, "quick");
    let node = start_node(&redis, worker_config("solo", 1), registry).await;

    let id = node
        .store
        .create(NewTask {
            timeout_ms: Some(300),
            max_retries: Some(1),
            ..NewTask::new("stubborn", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    let t = wait_for_status(
        &node.store,
        &id,
        TaskStatus::Timeout,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(t.retry_count, 1);
    assert!(t.error_message.is_some());
    let tokens = probe.tokens();
    assert_eq!(tokens.len(), 2, "one handler run per attempt");
    assert_ne!(tokens[0], tokens[1]);
    wait_until(
        "both handlers are dropped",
        Duration::from_secs(3),
        || async { (probe.ended() == 2).then_some(()) },
    )
    .await;

    // The only slot is free again: another task runs on this node.
    let next = node
        .store
        .create(NewTask::new("quick", "t", json!({})))
        .await
        .unwrap()
        .task
        .id;
    wait_for_status(
        &node.store,
        &next,
        TaskStatus::Completed,
        Duration::from_secs(3),
    )
    .await;

    // Whatever the stopped attempts would have reported is refused.
    let late = node
        .store
        .complete(&[
            late_completion(&id, &tokens[0]),
            late_completion(&id, &tokens[1]),
        ])
        .await
        .unwrap();
    assert!(late.iter().all(|r| r.is_err()), "{late:?}");
    let t = task(&node.store, &id).await;
    assert_eq!(t.status, TaskStatus::Timeout);
    assert_eq!(t.output_data, None);
    let counts = event_counts(&all_events(&node.store).await, &id);
    assert_eq!(counts.get("started"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("retrying"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("timeout"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("completed"), None, "{counts:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_on_three_nodes_complete_each_task_exactly_once() {
    const TASKS: usize = 600;
    let redis = TestRedis::start();
    // (node, task id, lease token) of every handler run.
    let runs: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let mut registry = Registry::new();
        let runs = runs.clone();
        registry.register_fn("count", move |ctx: TaskContext| {
            runs.lock().unwrap().push((
                name.to_string(),
                ctx.task.id.clone(),
                ctx.task.token.clone(),
            ));
            async move {
                tokio::task::yield_now().await;
                Ok(Output {
                    output_data: Some(ctx.task.input_data.clone()),
                    ..Output::default()
                })
            }
        });
        nodes.push(start_node(&redis, worker_config(name, 8), registry).await);
    }

    let store = redis.store().await;
    let mut ids = Vec::with_capacity(TASKS);
    for batch in 0..TASKS / 100 {
        let items = (0..100)
            .map(|i| NewTask::new("count", "t", json!({ "n": batch * 100 + i })))
            .collect();
        ids.extend(
            store
                .create_batch(items)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.task.id),
        );
    }
    wait_until("every task completes", Duration::from_secs(20), || async {
        let status = store.queue_status().await.unwrap();
        (status.completed_tasks == TASKS as u64).then_some(())
    })
    .await;

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), TASKS, "one handler run per task");
    let ran: HashSet<&String> = runs.iter().map(|(_, id, _)| id).collect();
    assert_eq!(ran.len(), TASKS);
    let tokens: HashSet<&String> = runs.iter().map(|(_, _, token)| token).collect();
    assert_eq!(tokens.len(), TASKS);

    let ran_on: std::collections::HashMap<&String, &String> =
        runs.iter().map(|(node, id, _)| (id, node)).collect();
    for (n, id) in ids.iter().enumerate() {
        let t = task(&store, id).await;
        assert_eq!(t.status, TaskStatus::Completed, "{id}");
        assert_eq!(t.retry_count, 0, "{id}");
        assert_eq!(t.output_data, Some(json!({ "n": n })));
        assert_eq!(t.worker_id.as_ref(), ran_on.get(id).copied());
    }
    let events = all_events(&store).await;
    let mut per_task: std::collections::HashMap<&str, (usize, usize)> = Default::default();
    for e in &events {
        let entry = per_task.entry(e.task_id.as_str()).or_default();
        match e.kind {
            EventKind::Started => entry.0 += 1,
            EventKind::Completed => entry.1 += 1,
            _ => {}
        }
    }
    for id in &ids {
        assert_eq!(per_task.get(id.as_str()), Some(&(1, 1)), "{id}");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Completed)
            .count(),
        TASKS
    );
    // Counters are read once the nodes stopped: a result is counted just
    // after Redis accepted it, so the last ones may lag the queue status.
    let runtimes: Vec<_> = nodes.iter().map(|n| n.runtime.clone().unwrap()).collect();
    for node in nodes {
        node.stop().await;
    }
    let (mut claimed, mut completed, mut refused) = (0, 0, 0);
    for runtime in runtimes {
        let s = runtime.stats();
        claimed += s.claimed_total;
        completed += s.completed_total;
        refused += s.refused_total;
    }
    assert_eq!(
        (claimed, completed, refused),
        (TASKS as u64, TASKS as u64, 0)
    );
}

#[tokio::test]
async fn graceful_shutdown_hands_running_tasks_back_without_spending_an_attempt() {
    let redis = TestRedis::start();
    let probe = Arc::new(Probe::default());
    let mut registry = Registry::new();
    register_stuck(&mut registry, "long", &probe);
    let leaving = start_node(
        &redis,
        WorkerConfig {
            grace: Duration::from_millis(200),
            ..worker_config("leaving", 2)
        },
        registry,
    )
    .await;
    let store = redis.store().await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let created = store
            .create(NewTask::new("long", "t", json!({ "n": n })))
            .await
            .unwrap();
        ids.push(created.task.id);
    }
    wait_until("both tasks run", Duration::from_secs(5), || async {
        (probe.tokens().len() == 2).then_some(())
    })
    .await;

    let stopping = Instant::now();
    leaving.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(probe.ended(), 2, "handlers are stopped when handed back");
    let events = all_events(&store).await;
    for id in &ids {
        let t = task(&store, id).await;
        assert_eq!(t.status, TaskStatus::Queued, "{id}");
        assert_eq!(t.retry_count, 0, "{id}");
        let counts = event_counts(&events, id);
        assert_eq!(counts.get("requeued"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("retrying"), None, "{counts:?}");
    }

    let mut registry = Registry::new();
    register_quick(&mut registry, "long");
    let taking_over = start_node(&redis, worker_config("taking-over", 2), registry).await;
    for id in &ids {
        let t = wait_for_status(&store, id, TaskStatus::Completed, Duration::from_secs(5)).await;
        assert_eq!(t.retry_count, 0);
        assert_eq!(t.worker_id.as_deref(), Some("taking-over"));
    }
    let events = all_events(&store).await;
    for id in &ids {
        let counts = event_counts(&events, id);
        assert_eq!(counts.get("started"), Some(&2), "{counts:?}");
        assert_eq!(counts.get("requeued"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("completed"), Some(&1), "{counts:?}");
        assert_eq!(counts.get("retrying"), None, "{counts:?}");
    }
    taking_over.stop().await;
}

#[tokio::test]
async fn a_handler_that_finishes_within_the_grace_period_completes_during_shutdown() {
    let redis = TestRedis::start();
    let probe = Arc::new(Probe::default());
    let mut registry = Registry::new();
    let p = probe.clone();
    registry.register_fn("brief", move |ctx: TaskContext| {
        let guard = p.start(&ctx);
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(Output {
                output_data: Some(json!("finished in grace")),
                ..Output::default()
            })
        }
    });
    let node = start_node(
        &redis,
        WorkerConfig {
            grace: Duration::from_secs(3),
            ..worker_config("draining", 1)
        },
        registry,
    )
    .await;
    let store = redis.store().await;
    let id = store
        .create(NewTask::new("brief", "t", json!({})))
        .await
        .unwrap()
        .task
        .id;
    wait_until("the handler runs", Duration::from_secs(5), || async {
        (probe.tokens().len() == 1).then_some(())
    })
    .await;
    node.stop().await;

    let t = task(&store, &id).await;
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.retry_count, 0);
    assert_eq!(t.output_data, Some(json!("finished in grace")));
    let counts = event_counts(&all_events(&store).await, &id);
    assert_eq!(counts.get("completed"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("requeued"), None, "{counts:?}");
}

#[tokio::test]
async fn a_handler_that_panics_fails_its_attempts_instead_of_holding_the_task_forever() {
    let redis = TestRedis::start();
    let mut registry = Registry::new();
    registry.register_fn("crashy", |_ctx: TaskContext| async move {
        if true {
            panic!("handler bug");
        }
        Ok(Output::default())
    });
    register_quick(&mut registry, "quick");
    let node = start_node(&redis, worker_config("crash-loop", 1), registry).await;
    let id = node
        .store
        .create(NewTask {
            max_retries: Some(1),
            ..NewTask::new("crashy", "t", json!({}))
        })
        .await
        .unwrap()
        .task
        .id;
    let t = wait_for_status(&node.store, &id, TaskStatus::Failed, Duration::from_secs(5)).await;
    assert_eq!(t.retry_count, 1);
    assert!(
        t.error_message
            .as_deref()
            .unwrap_or("")
            .contains("panicked"),
        "{t:?}"
    );
    let counts = event_counts(&all_events(&node.store).await, &id);
    assert_eq!(counts.get("started"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("retrying"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("failed"), Some(&1), "{counts:?}");

    // The only slot was given back each time.
    let runtime = node.runtime.clone().unwrap();
    wait_until("the slot is free", Duration::from_secs(2), || async {
        (runtime.stats().in_flight == 0).then_some(())
    })
    .await;
    let next = node
        .store
        .create(NewTask::new("quick", "t", json!({})))
        .await
        .unwrap()
        .task
        .id;
    wait_for_status(
        &node.store,
        &next,
        TaskStatus::Completed,
        Duration::from_secs(3),
    )
    .await;
    node.stop().await;
}

#[tokio::test]
async fn an_agent_concurrency_limit_caps_its_attempts_on_a_node() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    store
        .upsert_agent(&taskherd::store::Agent {
            id: "limited".into(),
            kind: taskherd::store::AgentKind::Handler,
            concurrency: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let (r, m) = (running.clone(), most.clone());
    registry.register_fn("limited", move |_ctx: TaskContext| {
        let (running, most) = (r.clone(), m.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(Output::default())
        }
    });
    let node = start_node(&redis, worker_config("limits", 4), registry).await;
    let ids: Vec<String> = store
        .create_batch(
            (0..4)
                .map(|n| NewTask::new("limited", "t", json!({ "n": n })))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.task.id)
        .collect();
    // One after another, each claimed as soon as the previous one frees the
    // agent's only slot (well before the 5 s idle recheck).
    wait_until("all four complete", Duration::from_secs(3), || async {
        let status = store.queue_status().await.unwrap();
        (status.completed_tasks == ids.len() as u64).then_some(())
    })
    .await;
    assert_eq!(most.load(Ordering::SeqCst), 1);
    node.stop().await;
}

#[tokio::test]
async fn a_result_too_large_to_store_fails_the_task_at_once_with_the_reason() {
    let redis = TestRedis::start();
    let mut registry = Registry::new();
    registry.register_fn("big", |_ctx: TaskContext| async move {
        // Just over the 1 MiB outputData limit.
        let text = "x".repeat(taskherd::task::DEFAULT_MAX_DATA_BYTES + 1);
        Ok(Output {
            output_data: Some(json!(text)),
            ..Output::default()
        })
    });
    let node = start_node(&redis, worker_config("n1", 2), registry).await;
    let created = node
        .store
        .create(NewTask::new("big", "t", json!({})))
        .await
        .unwrap();
    let failed = wait_for_status(
        &node.store,
        &created.task.id,
        TaskStatus::Failed,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        failed.retry_count, 0,
        "a result that cannot be stored is not retried"
    );
    assert!(
        failed
            .error_message
            .as_deref()
            .is_some_and(|m| m.starts_with("result refused: outputData")),
        "{:?}",
        failed.error_message
    );
    assert_eq!(failed.output_data, None);
    node.stop().await;
}

#[tokio::test]
async fn a_node_serving_more_than_a_hundred_agents_serves_every_one_of_them() {
    let redis = TestRedis::start();
    let mut registry = Registry::new();
    let agents: Vec<String> = (0..150).map(|i| format!("agent-{i:03}")).collect();
    for agent in &agents {
        register_quick(&mut registry, agent);
    }
    let node = start_node(&redis, worker_config("n1", 4), registry).await;
    // The last agents in sorted order fall outside the first window of 100.
    let mut ids = Vec::new();
    for agent in agents.iter().rev().take(5) {
        let created = node
            .store
            .create(NewTask::new(agent.as_str(), "t", json!({})))
            .await
            .unwrap();
        ids.push(created.task.id);
    }
    for id in &ids {
        wait_for_status(
            &node.store,
            id,
            TaskStatus::Completed,
            Duration::from_secs(10),
        )
        .await;
    }
    node.stop().await;
}

#[tokio::test]
async fn the_nodes_auditor_brings_back_a_task_that_lost_its_queue_entry() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let id = store
        .create(NewTask::new("echo", "t", json!({ "n": 1 })))
        .await
        .unwrap()
        .task
        .id;
    // Damage by hand: the task is QUEUED but in no ready set, so no claim
    // can find it.
    let _: i64 = fred::interfaces::SortedSetsInterface::zrem(
        &*raw_redis(&redis.url()).await,
        store.keys().ready("echo", 2),
        &id,
    )
    .await
    .unwrap();

    let mut config = node_config(&redis.url(), Some(worker_config("n1", 2)), Clock::redis());
    if let Some(m) = config.maintenance.as_mut() {
        m.audit_every = Duration::from_millis(100);
    }
    let mut registry = Registry::new();
    taskherd::worker::demo::register(&mut registry);
    let node = TestNode::start(config, registry).await;
    let done = wait_for_status(&store, &id, TaskStatus::Completed, Duration::from_secs(15)).await;
    assert_eq!(done.retry_count, 0);
    node.stop().await;
}
