//! The service every API calls (`taskherd::queue::Queue`), tested directly:
//! the access policy, the role's scoping of lists, the lease fence and the
//! claim long-poll hold the same whichever API calls them.

use std::time::Duration;

use serde_json::json;
use taskherd::Error;
use taskherd::auth::{Principal, Role};
use taskherd::clock::Clock;
use taskherd::ids::{AgentId, LeaseToken, TaskId};
use taskherd::queue::{ClaimOptions, Queue};
use taskherd::store::{Completion, Failure, ListFilter};
use taskherd::task::{NewTask, TaskStatus};
use taskherd::worker::Registry;

use crate::support::{TestNode, TestRedis, node_config};

fn who(role: Role, sub: &str, agent: Option<&str>) -> Principal {
    Principal {
        sub: sub.into(),
        role,
        agent: agent.map(str::to_string),
    }
}

fn admin() -> Principal {
    who(Role::Admin, "root", None)
}
fn alice() -> Principal {
    who(Role::User, "alice", None)
}
fn bob() -> Principal {
    who(Role::User, "bob", None)
}
fn echo_worker() -> Principal {
    who(Role::Worker, "w-echo", Some("echo"))
}
fn other_worker() -> Principal {
    who(Role::Worker, "w-other", Some("other"))
}
fn scraper() -> Principal {
    who(Role::Metrics, "prom", None)
}

/// A node without workers, so tasks wait until the test runs them.
async fn node(redis: &TestRedis) -> TestNode {
    TestNode::start(
        node_config(&redis.url(), None, Clock::redis()),
        Registry::new(),
    )
    .await
}

fn tid(id: &str) -> TaskId {
    TaskId::parse(id).unwrap()
}
fn agent(id: &str) -> AgentId {
    AgentId::parse(id).unwrap()
}
fn token(t: &str) -> LeaseToken {
    LeaseToken::parse(t).unwrap()
}

fn echo_task() -> NewTask {
    NewTask::new("echo", "summarise", json!({"text": "hi"}))
}

fn page() -> ListFilter {
    ListFilter {
        page: 1,
        limit: 100,
        ..ListFilter::default()
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: taskherd::Result<T>, id: &str) {
    match result {
        Err(Error::TaskNotFound(got)) => assert_eq!(got, id),
        other => panic!("expected TaskNotFound({id}), got {other:?}"),
    }
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: taskherd::Result<T>) {
    assert!(
        matches!(result, Err(Error::Forbidden(_))),
        "expected Forbidden, got {result:?}"
    );
}

#[tokio::test]
async fn a_created_task_is_owned_by_its_caller_whatever_the_request_says() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q: &Queue = &node.queue;
    let mut spoofed = echo_task();
    spoofed.owner_id = Some("bob".into());
    let created = q.create(&alice(), spoofed).await.unwrap();
    assert!(created.created);
    assert_eq!(created.task.owner_id.as_deref(), Some("alice"));
    let batch = q
        .create_batch(&bob(), vec![echo_task(), echo_task()])
        .await
        .unwrap();
    assert!(
        batch
            .iter()
            .all(|c| c.task.owner_id.as_deref() == Some("bob"))
    );
    for p in [echo_worker(), scraper()] {
        assert_forbidden(q.create(&p, echo_task()).await);
        assert_forbidden(q.create_batch(&p, vec![echo_task()]).await);
    }
    let all = q.list(&admin(), page()).await.unwrap();
    assert_eq!(all.total_count, 3, "refused creates stored nothing");
    node.stop().await;
}

#[tokio::test]
async fn another_users_task_is_not_found_exactly_like_a_missing_one() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q = &node.queue;
    let id = tid(&q.create(&alice(), echo_task()).await.unwrap().task.id);
    let missing = &tid("task_01KAAAAAAAAAAAAAAAAAAAAAAA");

    assert_eq!(q.get(&alice(), &id).await.unwrap().id, id);
    assert_eq!(q.get(&echo_worker(), &id).await.unwrap().id, id);
    assert_eq!(q.get(&admin(), &id).await.unwrap().id, id);
    for p in [bob(), other_worker(), scraper()] {
        assert_not_found(q.get(&p, &id).await, &id);
    }
    assert_not_found(q.get(&alice(), missing).await, missing);

    // Changing it: hidden the same way, and nothing changes.
    assert_not_found(q.cancel(&bob(), &id).await, &id);
    assert_not_found(q.retry(&bob(), &id).await, &id);
    assert_not_found(q.cancel(&bob(), missing).await, missing);
    assert_eq!(
        q.get(&alice(), &id).await.unwrap().status,
        TaskStatus::Queued
    );
    // A worker's role is refused before the task is looked at.
    assert_forbidden(q.cancel(&echo_worker(), &id).await);
    assert_forbidden(q.cancel(&echo_worker(), missing).await);

    let cancelled = q.cancel(&alice(), &id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        cancelled.error_message.as_deref(),
        Some("cancelled by alice")
    );
    assert!(matches!(
        q.cancel(&alice(), &id).await,
        Err(Error::AlreadyTerminal(_))
    ));
    // Hidden before its state is told: another's finished task is not
    // found, not "already terminal".
    assert_not_found(q.cancel(&bob(), &id).await, &id);
    assert_eq!(
        q.retry(&alice(), &id).await.unwrap().status,
        TaskStatus::Queued
    );
    node.stop().await;
}

/// `INFO commandstats` as (command, calls).
async fn command_calls(redis: &crate::support::raw::RawRedis) -> Vec<(String, u64)> {
    use fred::prelude::*;
    let info: String = redis
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test]
async fn a_cancel_or_a_retry_is_one_script_call_and_no_other_read() {
    use fred::prelude::*;
    let redis = TestRedis::start();
    // A bare store: nothing else talks to this Redis.
    let q = Queue::new(redis.store().await, taskherd::signals::Signals::default());
    let raw = crate::support::raw::raw_redis(&redis.url()).await;
    let id = tid(&q.create(&alice(), echo_task()).await.unwrap().task.id);

    for change in ["cancel", "retry"] {
        let _: () = raw.config_resetstat().await.expect("CONFIG RESETSTAT");
        let task = match change {
            "cancel" => q.cancel(&alice(), &id).await.unwrap(),
            _ => q.retry(&alice(), &id).await.unwrap(),
        };
        assert_eq!(task.id, id);
        let calls = command_calls(&raw).await;
        // Commands run inside a script count too: one FCALL, the record
        // read once (by the script), and nothing else but this probe.
        let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |c| c.1);
        assert_eq!(count("fcall"), 1, "{change}: {calls:?}");
        assert_eq!(count("hgetall"), 1, "{change}: {calls:?}");
        assert_eq!(count("hmget"), 1, "{change}: {calls:?}");
        assert_eq!(count("hget") + count("exists"), 0, "{change}: {calls:?}");
        // A retry re-enqueues, and the enqueue clock is one GET in the
        // script; a cancel reads nothing but the record.
        let clock = usize::from(change == "retry") as u64;
        assert_eq!(count("get"), clock, "{change}: {calls:?}");
    }
    let after = q.get(&alice(), &id).await.unwrap();
    assert_eq!(after.status, TaskStatus::Queued);
}

#[tokio::test]
async fn lists_are_scoped_to_what_the_caller_may_see() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q = &node.queue;
    let mine = q.create(&alice(), echo_task()).await.unwrap().task.id;
    let bobs = q.create(&bob(), echo_task()).await.unwrap().task.id;
    let bobs_other = q
        .create(&bob(), NewTask::new("other", "translate", json!(null)))
        .await
        .unwrap()
        .task
        .id;
    let ids = |page: taskherd::store::TaskPage| {
        let mut ids: Vec<String> = page.tasks.into_iter().map(|t| t.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    assert_eq!(
        ids(q.list(&alice(), page()).await.unwrap()),
        vec![mine.clone()]
    );
    let alice_asks_for_bob = ListFilter {
        owner_id: Some("bob".into()),
        ..page()
    };
    assert_eq!(
        ids(q.list(&alice(), alice_asks_for_bob).await.unwrap()),
        vec![mine.clone()],
        "a user's owner filter is its own, whatever it asks"
    );
    assert_eq!(
        ids(q.list(&echo_worker(), page()).await.unwrap()),
        sorted(vec![mine.clone(), bobs.clone()])
    );
    let echo_asks_for_other = ListFilter {
        agent_id: Some("other".into()),
        ..page()
    };
    let empty = q.list(&echo_worker(), echo_asks_for_other).await.unwrap();
    assert_eq!((empty.total_count, empty.tasks.len()), (0, 0));
    assert_eq!(
        ids(q.list(&admin(), page()).await.unwrap()),
        sorted(vec![mine, bobs, bobs_other])
    );
    assert_forbidden(q.list(&scraper(), page()).await);
    node.stop().await;
}

#[tokio::test]
async fn workers_run_only_their_agents_tasks_behind_the_lease_fence() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q = &node.queue;
    let id = tid(&q.create(&alice(), echo_task()).await.unwrap().task.id);

    assert_forbidden(
        q.claim(&other_worker(), &agent("echo"), ClaimOptions::default())
            .await,
    );
    assert_forbidden(
        q.claim(&alice(), &agent("echo"), ClaimOptions::default())
            .await,
    );
    assert_not_found(q.start(&other_worker(), &id, None, None).await, &id);
    assert_forbidden(q.start(&alice(), &id, None, None).await);

    let leased = q.start(&echo_worker(), &id, None, None).await.unwrap();
    assert_eq!(leased.id, id);
    let running = q.get(&admin(), &id).await.unwrap();
    assert_eq!(running.status, TaskStatus::Processing);
    assert_eq!(running.worker_id.as_deref(), Some("w-echo"));

    assert!(matches!(
        q.heartbeat(&echo_worker(), &id, token("stale-token"), None)
            .await,
        Err(Error::LeaseMismatch(_))
    ));
    assert_eq!(
        q.heartbeat(
            &echo_worker(),
            &id,
            token(&leased.token),
            Some(Duration::from_secs(5))
        )
        .await
        .unwrap(),
        Duration::from_secs(5)
    );
    let stale = Completion {
        id: id.to_string(),
        token: "stale-token".into(),
        ..Completion::default()
    };
    assert!(matches!(
        q.complete(&echo_worker(), stale).await,
        Err(Error::LeaseMismatch(_))
    ));
    let other = Completion {
        id: id.to_string(),
        token: leased.token.clone(),
        ..Completion::default()
    };
    assert_not_found(q.complete(&other_worker(), other).await, &id);
    assert_eq!(
        q.get(&admin(), &id).await.unwrap().status,
        TaskStatus::Processing,
        "refused completions changed nothing"
    );

    let done = Completion {
        id: id.to_string(),
        token: leased.token,
        output_data: Some(json!({"summary": "hi"})),
        ..Completion::default()
    };
    let task = q.complete(&echo_worker(), done).await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.output_data, Some(json!({"summary": "hi"})));
    node.stop().await;
}

#[tokio::test]
async fn a_heartbeat_after_a_cancel_tells_the_worker_to_stop_and_its_fail_is_refused() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q = &node.queue;
    let id = tid(&q.create(&alice(), echo_task()).await.unwrap().task.id);
    let leased = q.start(&admin(), &id, None, None).await.unwrap();
    q.cancel(&alice(), &id).await.unwrap();
    assert!(matches!(
        q.heartbeat(&admin(), &id, token(&leased.token), None).await,
        Err(Error::TaskCancelled(_))
    ));
    let failure = Failure {
        id: id.to_string(),
        token: leased.token,
        error_message: "late".into(),
        retryable: true,
        timed_out: false,
    };
    assert!(q.fail(&admin(), failure).await.is_err());
    assert_eq!(
        q.get(&alice(), &id).await.unwrap().status,
        TaskStatus::Cancelled
    );
    node.stop().await;
}

#[tokio::test]
async fn a_long_poll_claim_waits_and_gets_a_task_created_on_another_node() {
    let redis = TestRedis::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut waiting = {
        let q = a.queue.clone();
        tokio::spawn(async move {
            let options = ClaimOptions {
                max_tasks: 5,
                wait: Duration::from_secs(20),
                ..ClaimOptions::default()
            };
            q.claim(&echo_worker(), &agent("echo"), options).await
        })
    };
    // Nothing is ready: the claim waits instead of answering empty.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the claim answered although nothing was ready"
    );
    let id = tid(&b.queue.create(&alice(), echo_task()).await.unwrap().task.id);
    let tasks = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the claim answers well before its 20 s wait ends")
        .unwrap()
        .unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, id);
    assert_eq!(
        a.queue
            .get(&admin(), &id)
            .await
            .unwrap()
            .worker_id
            .as_deref(),
        Some("w-echo")
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn admin_operations_are_refused_to_every_other_role() {
    let redis = TestRedis::start();
    let node = node(&redis).await;
    let q = &node.queue;
    for p in [alice(), echo_worker(), scraper()] {
        assert_forbidden(q.cleanup(&p).await);
        assert_forbidden(q.timeout_stale(&p, None).await);
        assert_forbidden(q.delete_agent(&p, &agent("echo")).await);
    }
    assert_eq!(q.cleanup(&admin()).await.unwrap().deleted, 0);
    assert_eq!(q.timeout_stale(&admin(), None).await.unwrap(), 0);
    assert!(matches!(
        q.delete_agent(&admin(), &agent("nobody")).await,
        Err(Error::AgentNotFound(_))
    ));
    for p in [admin(), alice(), echo_worker(), scraper()] {
        q.queue_status(&p).await.unwrap();
        q.nodes(&p).await.unwrap();
        q.agents(&p).await.unwrap();
    }
    assert_forbidden(q.refresh_shared_metrics(&alice()).await);
    q.refresh_shared_metrics(&scraper()).await.unwrap();
    node.stop().await;
}
