//! Many claimers on separate connections draining one backlog at once: each
//! task is claimed exactly once, completed once, and has exactly one
//! `completed` event; with creators racing the claimers nothing is lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use taskherd::clock::Clock;
use taskherd::store::{ClaimRequest, Completion, MAX_BATCH, Store, StoreConfig};
use taskherd::task::{NewTask, Priority, TaskStatus};

use crate::store_support::*;
use crate::support::*;

/// A store of its own (its own connection), on Redis' clock.
async fn own_store(redis: &TestRedis) -> Store {
    Store::connect(&redis.url(), 1, StoreConfig::default(), Clock::redis())
        .await
        .expect("store connects")
}

/// Claims and completes until a claim comes back empty and `done()` is true;
/// returns every id it claimed.
async fn drain(store: Store, worker: String, batch: usize, done: Arc<AtomicBool>) -> Vec<String> {
    let mut mine = Vec::new();
    loop {
        // Read the flag before claiming: an empty claim after creators
        // finished means the backlog is really empty.
        let finished = done.load(Ordering::SeqCst);
        let got = store
            .claim(&ClaimRequest {
                worker_id: worker.clone(),
                lease: LEASE,
                max_tasks: batch,
                agents: vec![("a1".into(), batch), ("a2".into(), batch)],
            })
            .await
            .unwrap();
        if got.is_empty() {
            if finished {
                return mine;
            }
            tokio::task::yield_now().await;
            continue;
        }
        let items: Vec<Completion> = got
            .iter()
            .map(|c| Completion {
                id: c.id.clone(),
                token: c.token.clone(),
                output_data: Some(json!({ "by": worker })),
                ..Completion::default()
            })
            .collect();
        for r in store.complete(&items).await.unwrap() {
            r.unwrap();
        }
        mine.extend(got.into_iter().map(|c| c.id));
    }
}

/// Checks that every id in `expected` was claimed once, completed, and has
/// exactly one created, started and completed event.
async fn assert_each_once(
    store: &Store,
    expected: &HashSet<String>,
    per_claimer: Vec<Vec<String>>,
) {
    let claimed: Vec<String> = per_claimer.into_iter().flatten().collect();
    assert_eq!(claimed.len(), expected.len(), "claims != tasks");
    let unique: HashSet<String> = claimed.into_iter().collect();
    assert_eq!(&unique, expected, "claimed set differs from created set");

    let status = store.queue_status().await.unwrap();
    assert_eq!(status.completed_tasks, expected.len() as u64);
    assert_eq!(status.total_tasks, expected.len() as u64);
    assert_eq!(status.queued_tasks + status.processing_tasks, 0);

    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for e in events(store).await {
        *seen
            .entry((e.kind.as_str().to_string(), e.task_id.clone()))
            .or_default() += 1;
    }
    for kind in ["created", "started", "completed"] {
        let ids: Vec<&String> = seen
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, id), n)| {
                assert_eq!(*n, 1, "{id} has {n} {kind} events");
                id
            })
            .collect();
        assert_eq!(ids.len(), expected.len(), "{kind} events");
        assert!(ids.iter().all(|id| expected.contains(*id)));
    }
    assert_eq!(seen.len(), 3 * expected.len(), "unexpected event kinds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_on_separate_connections_take_each_task_exactly_once() {
    let redis = TestRedis::start();
    let creator = own_store(&redis).await;
    let mut expected = HashSet::new();
    for b in 0..30 {
        let items: Vec<NewTask> = (0..MAX_BATCH)
            .map(|i| NewTask {
                priority: Priority::ALL[(b + i) % 4],
                ..NewTask::new(["a1", "a2"][i % 2], "t", json!({ "b": b, "i": i }))
            })
            .collect();
        for c in creator.create_batch(items).await.unwrap() {
            expected.insert(c.task.id);
        }
    }
    assert_eq!(expected.len(), 3_000);

    let done = Arc::new(AtomicBool::new(true));
    let mut claimers = Vec::new();
    for n in 0..6 {
        let store = own_store(&redis).await;
        let batch = [1, 5, 10, 25, 50, 100][n];
        claimers.push(tokio::spawn(drain(
            store,
            format!("w{n}"),
            batch,
            done.clone(),
        )));
    }
    let mut per_claimer = Vec::new();
    for c in claimers {
        per_claimer.push(c.await.unwrap());
    }
    assert!(
        per_claimer.iter().filter(|ids| !ids.is_empty()).count() >= 2,
        "the claimers did not overlap at all"
    );
    assert_each_once(&creator, &expected, per_claimer).await;
    let sample = creator
        .get(expected.iter().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sample.status, sample.retry_count),
        (TaskStatus::Completed, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creators_racing_claimers_lose_nothing_and_repeat_keys_make_one_task() {
    let redis = TestRedis::start();
    let done = Arc::new(AtomicBool::new(false));
    let mut claimers = Vec::new();
    for n in 0..3 {
        let store = own_store(&redis).await;
        claimers.push(tokio::spawn(drain(store, format!("w{n}"), 7, done.clone())));
    }
    // Creators 0 and 1 send the same 150 keys, 2 and 3 another 150: each key
    // must make one task however the calls interleave.
    let mut creators = Vec::new();
    for n in 0..4 {
        let store = own_store(&redis).await;
        creators.push(tokio::spawn(async move {
            let singles: Vec<_> = (0..150)
                .map(|i| {
                    let store = store.clone();
                    let new = NewTask {
                        idempotency_key: Some(format!("set{}-{i}", n / 2)),
                        ..NewTask::new(["a1", "a2"][i % 2], "t", json!({ "i": i }))
                    };
                    tokio::spawn(async move { store.create(new).await.unwrap() })
                })
                .collect();
            let mut ids = Vec::new();
            for s in singles {
                let c = s.await.unwrap();
                ids.push((c.task.idempotency_key.unwrap(), c.task.id));
            }
            ids
        }));
    }
    let mut by_key: HashMap<String, HashSet<String>> = HashMap::new();
    for c in creators {
        for (key, id) in c.await.unwrap() {
            by_key.entry(key).or_default().insert(id);
        }
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(by_key.len(), 300);
    assert!(
        by_key.values().all(|ids| ids.len() == 1),
        "a key named two tasks"
    );
    let expected: HashSet<String> = by_key.into_values().flatten().collect();
    let mut per_claimer = Vec::new();
    for c in claimers {
        per_claimer.push(c.await.unwrap());
    }
    let store = own_store(&redis).await;
    assert_each_once(&store, &expected, per_claimer).await;
}
