//! Claim order: strict priority (URGENT > HIGH > NORMAL > LOW), and creation
//! order within a priority, over a large mixed backlog and across agents.

use std::collections::HashMap;

use serde_json::json;
use taskherd::store::{ClaimRequest, MAX_BATCH, Store};
use taskherd::task::{NewTask, Priority};

use crate::store_support::*;
use crate::support::*;

fn rank(p: Priority) -> usize {
    Priority::ALL.iter().position(|x| *x == p).unwrap()
}

/// Creates `n` tasks spread over `agents` with pseudo-random priorities, in
/// batches of 100, the clock moving 1 ms per batch. Returns (id, agent,
/// priority) in creation order.
async fn mixed_backlog(
    store: &Store,
    agents: &[&str],
    n: usize,
    seed: u64,
) -> Vec<(String, String, Priority)> {
    let mut rng = Lcg::new(seed);
    let mut created = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let size = MAX_BATCH.min(n - i);
        let items: Vec<NewTask> = (i..i + size)
            .map(|k| NewTask {
                priority: Priority::ALL[rng.below(4) as usize],
                ..NewTask::new(
                    agents[rng.below(agents.len() as u64) as usize],
                    "t",
                    json!({ "n": k }),
                )
            })
            .collect();
        for c in store.create_batch(items).await.unwrap() {
            assert!(c.created);
            created.push((c.task.id, c.task.agent_id, c.task.priority));
        }
        i += size;
        advance_ms(store, 1);
    }
    created
}

/// The order claims must follow: by priority, then creation.
fn expected_order(created: &[(String, String, Priority)]) -> Vec<String> {
    let mut order: Vec<(usize, usize, &String)> = created
        .iter()
        .enumerate()
        .map(|(i, (id, _, p))| (rank(*p), i, id))
        .collect();
    order.sort();
    order.into_iter().map(|(_, _, id)| id.clone()).collect()
}

#[tokio::test]
async fn claiming_a_mixed_backlog_yields_strict_priority_then_creation_order() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let created = mixed_backlog(&store, &["a1"], 2_000, 7).await;
    let per_priority: HashMap<Priority, usize> =
        created.iter().fold(HashMap::new(), |mut m, (_, _, p)| {
            *m.entry(*p).or_default() += 1;
            m
        });
    assert!(
        Priority::ALL
            .iter()
            .all(|p| per_priority.get(p).copied().unwrap_or(0) > 300),
        "every priority is well represented: {per_priority:?}"
    );

    // Claim in uneven chunks so order must hold across calls too.
    let mut claimed = Vec::new();
    for chunk in [1, 7, 250, 999, 1000] {
        let got = claim(&store, "a1", chunk).await;
        claimed.extend(got.into_iter().map(|c| (c.id, c.priority)));
    }
    assert_eq!(claimed.len(), 2_000);
    assert!(claim(&store, "a1", 10).await.is_empty());

    let ranks: Vec<usize> = claimed.iter().map(|(_, p)| rank(*p)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "a lower priority was claimed before a higher one"
    );
    let ids: Vec<String> = claimed.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, expected_order(&created));
}

#[tokio::test]
async fn one_claim_across_two_agents_merges_their_queues_by_priority_then_age() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let created = mixed_backlog(&store, &["a", "b"], 600, 11).await;
    let got = store
        .claim(&ClaimRequest {
            worker_id: "w".into(),
            lease: LEASE,
            max_tasks: 600,
            agents: vec![("a".into(), 600), ("b".into(), 600)],
        })
        .await
        .unwrap();
    let ids: Vec<String> = got.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, expected_order(&created));
    let agent_of: HashMap<&String, &String> = created.iter().map(|(id, a, _)| (id, a)).collect();
    assert!(got.iter().all(|c| agent_of[&c.id] == &c.agent_id));
}

#[tokio::test]
async fn per_agent_quotas_cap_what_one_claim_takes_from_each_agent() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let created = mixed_backlog(&store, &["a", "b", "c"], 300, 3).await;
    let quotas: HashMap<&str, usize> = [("a", 4), ("b", 50), ("c", 0)].into_iter().collect();
    let want = 30;
    let got = store
        .claim(&ClaimRequest {
            worker_id: "w".into(),
            lease: LEASE,
            max_tasks: want,
            agents: quotas.iter().map(|(a, q)| (a.to_string(), *q)).collect(),
        })
        .await
        .unwrap();

    // Model: walk everything in priority-then-age order, take what quotas allow.
    let mut left = quotas.clone();
    let mut expected = Vec::new();
    let agent_of: HashMap<&String, &str> =
        created.iter().map(|(id, a, _)| (id, a.as_str())).collect();
    for id in expected_order(&created) {
        if expected.len() == want {
            break;
        }
        let q = left.get_mut(agent_of[&id]).unwrap();
        if *q > 0 {
            *q -= 1;
            expected.push(id);
        }
    }
    let ids: Vec<String> = got.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, expected);
    assert_eq!(got.iter().filter(|c| c.agent_id == "a").count(), 4);
    assert_eq!(got.iter().filter(|c| c.agent_id == "c").count(), 0);
}

#[tokio::test]
async fn a_task_back_from_retry_backoff_queues_behind_tasks_already_waiting() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let first = create(&store, task_at("a1", Priority::High)).await;
    let c = claim_one(&store, "a1").await;
    store.fail(&[failure(&c, true, false)]).await.unwrap();
    let waiting = create(&store, task_at("a1", Priority::High)).await;
    let low = create(&store, task_at("a1", Priority::Low)).await;
    advance_ms(&store, 1_000);
    assert_eq!(store.promote(10).await.unwrap().handled, 1);
    let urgent = create(&store, task_at("a1", Priority::Urgent)).await;
    let order: Vec<String> = claim(&store, "a1", 10)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(order, vec![urgent.id, waiting.id, first.id, low.id]);
}
