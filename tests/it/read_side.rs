//! The read side and the janitor: list filters, pagination and totals checked
//! against a brute-force filter; queue status and health thresholds;
//! statistics per agent, task type and day; cleanup of old terminal tasks
//! from every index with statistics kept.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use fred::prelude::*;
use serde_json::json;
use taskherd::error::Error;
use taskherd::store::{
    Completion, ListFilter, MAX_BATCH, MAX_DAYS, MAX_PAGE_OFFSET, QueueHealth, StatsFilter, Store,
    health_thresholds,
};
use taskherd::task::{NewTask, Priority, Task, TaskMetrics, TaskStatus};

use crate::store_support::*;
use crate::support::*;

const DAY_MS: i64 = 86_400_000;

// ---- list ---------------------------------------------------------------

const AGENTS: [&str; 3] = ["alpha", "beta", "gamma"];
const TYPES: [&str; 2] = ["summarise", "translate"];
const OWNERS: [&str; 2] = ["ann@example.com", "bob"];

/// A few hundred tasks with mixed agents, types, owners and priorities,
/// created over several milliseconds, then driven to mixed statuses.
/// Returns every task as `get` answers it, newest first.
async fn mixed_tasks(store: &Store, n: usize) -> Vec<Task> {
    let mut rng = Lcg::new(42);
    let mut ids = Vec::new();
    let mut made = 0;
    while made < n {
        let size = (n - made).min(1 + rng.below(40) as usize);
        let items: Vec<NewTask> = (0..size)
            .map(|_| {
                let owner = rng.below(3) as usize;
                NewTask {
                    priority: Priority::ALL[rng.below(4) as usize],
                    owner_id: OWNERS.get(owner).map(|o| o.to_string()),
                    ..NewTask::new(
                        AGENTS[rng.below(3) as usize],
                        TYPES[rng.below(2) as usize],
                        json!({}),
                    )
                }
            })
            .collect();
        for c in store.create_batch(items).await.unwrap() {
            ids.push(c.task.id);
        }
        made += size;
        advance_ms(store, 1 + rng.below(3));
    }
    // Drive statuses: claim most of each agent, then finish them variously.
    for agent in AGENTS {
        let held = claim(store, agent, 80).await;
        for c in held {
            match rng.below(5) {
                0 => complete_ok(store, &c).await,
                1 => {
                    store.fail(&[failure(&c, false, false)]).await.unwrap();
                }
                2 => {
                    store.cancel(&c.id, None).await.unwrap();
                }
                3 => {
                    store.fail(&[failure(&c, true, false)]).await.unwrap();
                }
                _ => {} // stays PROCESSING
            }
        }
    }
    for id in ids.iter().step_by(9) {
        let _ = store.cancel(id, Some("sampled")).await;
    }
    let mut tasks = Vec::new();
    for id in ids.iter().rev() {
        tasks.push(store.get(id).await.unwrap().unwrap());
    }
    tasks
}

fn matches(t: &Task, f: &ListFilter) -> bool {
    f.status.is_none_or(|s| t.status == s)
        && f.priority.is_none_or(|p| t.priority == p)
        && f.agent_id.as_ref().is_none_or(|a| &t.agent_id == a)
        && f.task_type.as_ref().is_none_or(|x| &t.task_type == x)
        && f.owner_id
            .as_ref()
            .is_none_or(|o| t.owner_id.as_ref() == Some(o))
        && f.created_from_ms.is_none_or(|ms| t.created_at >= ms)
        && f.created_to_ms.is_none_or(|ms| t.created_at <= ms)
}

fn ids(tasks: &[Task]) -> Vec<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// Every page by page number, then by cursor; both must be `expected`.
async fn walk_pages(store: &Store, filter: &ListFilter, expected: &[String]) {
    let mut by_number = Vec::new();
    let mut page = 1;
    loop {
        let p = store
            .list(&ListFilter {
                page,
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!(p.total_count, expected.len() as u64);
        assert_eq!(
            p.total_pages as usize,
            expected.len().div_ceil(filter.limit as usize)
        );
        assert_eq!(p.current_page, page);
        by_number.extend(ids(&p.tasks));
        assert_eq!(p.has_next_page, by_number.len() < expected.len());
        if !p.has_next_page {
            break;
        }
        assert_eq!(p.tasks.len(), filter.limit as usize);
        page += 1;
        assert!(page <= 1_000, "page walk does not end");
    }
    assert_eq!(by_number, expected, "pages by number: {filter:?}");

    let mut by_cursor = Vec::new();
    let mut cursor = None;
    loop {
        let p = store
            .list(&ListFilter {
                cursor: cursor.clone(),
                ..filter.clone()
            })
            .await
            .unwrap();
        by_cursor.extend(ids(&p.tasks));
        assert_eq!(
            p.has_next_page,
            by_cursor.len() < expected.len(),
            "hasNextPage after {} of {} by cursor: {filter:?}",
            by_cursor.len(),
            expected.len()
        );
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(by_cursor.len() <= expected.len() + filter.limit as usize);
    }
    assert_eq!(by_cursor, expected, "pages by cursor: {filter:?}");
    let unique: HashSet<&String> = by_cursor.iter().collect();
    assert_eq!(unique.len(), by_cursor.len(), "a task appears twice");
}

#[tokio::test]
async fn list_filters_and_totals_agree_with_a_brute_force_count() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let all = mixed_tasks(&store, 300).await;
    let statuses: HashSet<TaskStatus> = all.iter().map(|t| t.status).collect();
    assert_eq!(statuses.len(), 5, "mix lacks statuses: {statuses:?}");

    let opt = |v: &[&str]| {
        std::iter::once(None)
            .chain(v.iter().map(|s| Some(s.to_string())))
            .collect::<Vec<_>>()
    };
    let status_opts: Vec<Option<TaskStatus>> = std::iter::once(None)
        .chain(TaskStatus::ALL.into_iter().map(Some))
        .collect();
    let prio_opts: Vec<Option<Priority>> = std::iter::once(None)
        .chain(Priority::ALL.into_iter().map(Some))
        .collect();
    let mut checked = 0;
    let mut non_empty = 0;
    for status in &status_opts {
        for priority in &prio_opts {
            for agent_id in opt(&AGENTS) {
                for task_type in opt(&TYPES) {
                    for owner_id in opt(&OWNERS) {
                        let filter = ListFilter {
                            status: *status,
                            priority: *priority,
                            agent_id: agent_id.clone(),
                            task_type: task_type.clone(),
                            owner_id,
                            page: 1,
                            limit: 10,
                            ..ListFilter::default()
                        };
                        let expected: Vec<&Task> =
                            all.iter().filter(|t| matches(t, &filter)).collect();
                        let p = store.list(&filter).await.unwrap();
                        assert_eq!(p.total_count, expected.len() as u64, "{filter:?}");
                        let want: Vec<Task> = expected.into_iter().take(10).cloned().collect();
                        assert_eq!(p.tasks, want, "first page of {filter:?}");
                        assert_eq!(p.has_next_page, p.total_count > 10);
                        checked += 1;
                        non_empty += usize::from(p.total_count > 0);
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * 5 * 4 * 3 * 3);
    assert!(
        non_empty > 300,
        "too few filters match anything: {non_empty}"
    );
}

#[tokio::test]
async fn walking_every_page_by_number_or_cursor_yields_each_match_once_newest_first() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let all = mixed_tasks(&store, 240).await;
    let filters = [
        ListFilter::default(),
        ListFilter {
            agent_id: Some("beta".into()),
            ..ListFilter::default()
        },
        ListFilter {
            status: Some(TaskStatus::Queued),
            priority: Some(Priority::High),
            ..ListFilter::default()
        },
        ListFilter {
            owner_id: Some("bob".into()),
            task_type: Some("translate".into()),
            ..ListFilter::default()
        },
        ListFilter {
            status: Some(TaskStatus::Completed),
            ..ListFilter::default()
        },
    ];
    for base in filters {
        for limit in [1, 7, 100] {
            let filter = ListFilter {
                limit,
                ..base.clone()
            };
            let expected: Vec<String> = all
                .iter()
                .filter(|t| matches(t, &filter))
                .map(|t| t.id.clone())
                .collect();
            if limit == 1 && expected.len() > 60 {
                continue; // one-per-page walks only over small sets
            }
            walk_pages(&store, &filter, &expected).await;
        }
    }
    // A cursor page is stable under inserts: new tasks do not shift it.
    let first = store
        .list(&ListFilter {
            limit: 5,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    create(&store, task_for("alpha")).await;
    let second = store
        .list(&ListFilter {
            limit: 5,
            cursor: first.next_cursor.clone(),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&second.tasks), ids(&all[5..10]));
}

#[tokio::test]
async fn the_created_at_range_filter_selects_tasks_by_creation_time() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let mut all = Vec::new();
    for step in 0..10 {
        for _ in 0..3 {
            all.push(create(&store, task_for("a1")).await);
        }
        assert_eq!(all.last().unwrap().created_at, T0_MS + step * 1_000);
        advance_ms(&store, 1_000);
    }
    all.reverse();
    let ranges = [
        (Some(T0_MS + 2_000), Some(T0_MS + 5_000)),
        (Some(T0_MS + 2_001), Some(T0_MS + 4_999)),
        (None, Some(T0_MS)),
        (Some(T0_MS + 9_000), None),
        (Some(T0_MS + 9_001), None),
        (Some(T0_MS - DAY_MS), Some(T0_MS + DAY_MS)),
    ];
    for (from, to) in ranges {
        let filter = ListFilter {
            created_from_ms: from,
            created_to_ms: to,
            limit: 4,
            ..ListFilter::default()
        };
        let expected: Vec<String> = all
            .iter()
            .filter(|t| matches(t, &filter))
            .map(|t| t.id.clone())
            .collect();
        walk_pages(&store, &filter, &expected).await;
        let with_agent = ListFilter {
            agent_id: Some("a1".into()),
            ..filter.clone()
        };
        walk_pages(&store, &with_agent, &expected).await;
    }
}

#[tokio::test]
async fn list_refuses_bad_limits_filters_and_cursors() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    let bad = [
        ListFilter {
            limit: 0,
            ..ListFilter::default()
        },
        ListFilter {
            limit: 101,
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            agent_id: Some("a{b}".into()),
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            task_type: Some("*".into()),
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            owner_id: Some("a:b".into()),
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            cursor: Some("not-a-cursor".into()),
            ..ListFilter::default()
        },
    ];
    for f in bad {
        let err = store.list(&f).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{f:?}: {err:?}");
    }
    assert_unchanged(&before, &snapshot(&store).await);
    // An unknown agent is simply an empty list.
    let p = store
        .list(&ListFilter {
            limit: 10,
            agent_id: Some("nobody".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (p.total_count, p.tasks.len(), p.has_next_page),
        (0, 0, false)
    );
}

// ---- queue status -------------------------------------------------------

#[tokio::test]
async fn queue_status_counts_tasks_per_status_priority_and_agent() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    // alpha: 2 URGENT + 3 LOW ready, 1 processing, 1 completed.
    for p in [Priority::Urgent, Priority::Urgent, Priority::Normal] {
        create(&store, task_at("alpha", p)).await;
    }
    advance_ms(&store, 10_000);
    for _ in 0..3 {
        create(&store, task_at("alpha", Priority::Low)).await;
    }
    create(&store, task_at("alpha", Priority::High)).await;
    let c = claim(&store, "alpha", 2).await;
    assert!(c.iter().all(|c| c.priority == Priority::Urgent));
    complete_ok(&store, &c[0]).await;
    // beta: 1 delayed, 1 failed, 1 cancelled, 1 timed out, 1 HIGH ready.
    create(
        &store,
        NewTask {
            run_at: Some(T0_MS + 3_600_000),
            ..task_for("beta")
        },
    )
    .await;
    for outcome in 0..3 {
        create(
            &store,
            NewTask {
                max_retries: Some(0),
                ..task_for("beta")
            },
        )
        .await;
        let b = claim_one(&store, "beta").await;
        match outcome {
            0 => {
                store.fail(&[failure(&b, false, false)]).await.unwrap();
            }
            1 => {
                store.cancel(&b.id, None).await.unwrap();
            }
            _ => {
                store.fail(&[failure(&b, true, true)]).await.unwrap();
            }
        }
    }
    create(&store, task_at("beta", Priority::High)).await;
    advance_ms(&store, 5_000);

    let s = store.queue_status().await.unwrap();
    assert_eq!(s.timestamp, T0_MS + 15_000);
    assert_eq!(s.total_tasks, 12);
    assert_eq!(s.queued_tasks, 7); // alpha NORMAL + 3 LOW + HIGH, beta delayed + HIGH
    assert_eq!(s.processing_tasks, 1);
    assert_eq!(s.completed_tasks, 1);
    assert_eq!(s.failed_tasks, 1);
    assert_eq!(s.cancelled_tasks, 1);
    assert_eq!(s.timeout_tasks, 1);
    assert_eq!(s.delayed_tasks, 1);
    let ready: BTreeMap<String, u64> = [("URGENT", 0), ("HIGH", 2), ("NORMAL", 1), ("LOW", 3)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(s.ready_by_priority, ready);
    assert_eq!(s.agents.len(), 2);
    let alpha = &s.agents[0];
    assert_eq!(alpha.agent_id, "alpha");
    let by_status: BTreeMap<String, u64> = [("QUEUED", 5), ("PROCESSING", 1), ("COMPLETED", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(alpha.by_status, by_status);
    assert_eq!(alpha.ready_by_priority["LOW"], 3);
    // The oldest ready alpha task (NORMAL) was created at T0.
    assert_eq!(alpha.oldest_waiting_ms, Some(15_000));
    let beta = &s.agents[1];
    assert_eq!(beta.agent_id, "beta");
    assert_eq!(beta.by_status["QUEUED"], 2);
    assert_eq!(beta.by_status["FAILED"], 1);
    assert_eq!(beta.oldest_waiting_ms, Some(5_000));
    assert_eq!(s.oldest_waiting_ms, Some(15_000));
    assert_eq!(s.queue_health, QueueHealth::Healthy);

    // The same numbers as a brute-force count over the records.
    let every = store
        .list(&ListFilter {
            limit: 100,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(every.total_count, s.total_tasks);
    let n = |st: TaskStatus| every.tasks.iter().filter(|t| t.status == st).count() as u64;
    assert_eq!(n(TaskStatus::Queued), s.queued_tasks);
    assert_eq!(n(TaskStatus::Processing), s.processing_tasks);
    assert_eq!(n(TaskStatus::Completed), s.completed_tasks);
}

#[tokio::test]
async fn queue_health_turns_warning_then_critical_as_the_oldest_task_waits() {
    use health_thresholds::*;
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let s = store.queue_status().await.unwrap();
    assert_eq!((s.total_tasks, s.oldest_waiting_ms), (0, None));
    assert_eq!(s.queue_health, QueueHealth::Healthy);

    create(&store, task_for("a1")).await;
    let health = |store: Store| async move {
        let s = store.queue_status().await.unwrap();
        (s.oldest_waiting_ms.unwrap(), s.queue_health)
    };
    assert_eq!(health(store.clone()).await, (0, QueueHealth::Healthy));
    advance_ms(&store, WARNING_WAIT_MS as u64);
    assert_eq!(
        health(store.clone()).await,
        (WARNING_WAIT_MS, QueueHealth::Healthy)
    );
    advance_ms(&store, 1);
    assert_eq!(
        health(store.clone()).await,
        (WARNING_WAIT_MS + 1, QueueHealth::Warning)
    );
    advance_ms(&store, (CRITICAL_WAIT_MS - WARNING_WAIT_MS - 1) as u64);
    assert_eq!(
        health(store.clone()).await,
        (CRITICAL_WAIT_MS, QueueHealth::Warning)
    );
    advance_ms(&store, 1);
    assert_eq!(
        health(store.clone()).await,
        (CRITICAL_WAIT_MS + 1, QueueHealth::Critical)
    );

    // Claiming the old task makes the queue healthy again.
    claim_one(&store, "a1").await;
    let s = store.queue_status().await.unwrap();
    assert_eq!(
        (s.oldest_waiting_ms, s.queue_health),
        (None, QueueHealth::Healthy)
    );
}

#[tokio::test]
async fn queue_health_warns_when_the_ready_backlog_passes_its_threshold() {
    use health_thresholds::*;
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let mut made = 0;
    while made < WARNING_READY as usize {
        let items = (0..MAX_BATCH).map(|_| task_for("a1")).collect();
        made += store.create_batch(items).await.unwrap().len();
    }
    let s = store.queue_status().await.unwrap();
    assert_eq!(s.ready_by_priority["NORMAL"], WARNING_READY);
    assert_eq!(s.queue_health, QueueHealth::Healthy);
    create(&store, task_for("b1")).await;
    let s = store.queue_status().await.unwrap();
    assert_eq!(s.queue_health, QueueHealth::Warning);
    // Delayed tasks are not ready: they do not count towards the backlog.
    claim_one(&store, "b1").await;
    create(
        &store,
        NewTask {
            run_at: Some(T0_MS + 1_000),
            ..task_for("b1")
        },
    )
    .await;
    let s = store.queue_status().await.unwrap();
    assert_eq!((s.delayed_tasks, s.queue_health), (1, QueueHealth::Healthy));
}

// ---- statistics ---------------------------------------------------------

/// Claims one task of `agent`, lets `ms` pass, and completes it with `cost`
/// and `quality`.
async fn run_for(store: &Store, agent: &str, ms: u64, cost: f64, quality: f64) {
    let c = claim_one(store, agent).await;
    advance_ms(store, ms);
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            actual_cost: Some(cost),
            quality_score: Some(quality),
            metrics: Some(TaskMetrics {
                tokens_in: Some(100),
                tokens_out: Some(10),
                ..TaskMetrics::default()
            }),
            ..Completion::default()
        }])
        .await
        .unwrap();
    assert!(r[0].is_ok());
}

/// Day 1 (T0): agent "llm" runs 20 summarise tasks (19 of 40 ms, one of
/// 4 s), one fails for good and one times out for good, one is cancelled.
/// Day 2: agent "mt" completes 2 translate tasks of 300 ms, one after a retry.
async fn two_days_of_work(store: &Store) {
    for i in 0..20 {
        create(store, NewTask::new("llm", "summarise", json!({}))).await;
        let ms = if i == 7 { 4_000 } else { 40 };
        run_for(store, "llm", ms, 0.5, 0.8).await;
    }
    let one_shot = || NewTask {
        max_retries: Some(0),
        ..NewTask::new("llm", "summarise", json!({}))
    };
    create(store, one_shot()).await;
    let c = claim_one(store, "llm").await;
    store.fail(&[failure(&c, false, false)]).await.unwrap();
    create(store, one_shot()).await;
    let c = claim_one(store, "llm").await;
    store.fail(&[failure(&c, true, true)]).await.unwrap();
    let t = create(store, one_shot()).await;
    store.cancel(&t.id, None).await.unwrap();

    let day2 = T0_MS + DAY_MS + 3_600_000;
    advance_ms(store, (day2 - now(store)) as u64);
    for _ in 0..2 {
        create(store, NewTask::new("mt", "translate", json!({}))).await;
    }
    let c = claim_one(store, "mt").await;
    store.fail(&[failure(&c, true, false)]).await.unwrap();
    run_for(store, "mt", 300, 0.25, 0.5).await;
    advance_ms(store, 1_000);
    store.promote(10).await.unwrap();
    run_for(store, "mt", 300, 0.25, 0.5).await;
}

#[tokio::test]
async fn statistics_report_counts_rates_durations_cost_and_quality_by_agent_type_and_day() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    two_days_of_work(&store).await;
    let day1 = StatsFilter {
        from_ms: Some(T0_MS),
        to_ms: Some(T0_MS + 1),
        ..StatsFilter::default()
    };
    let s = store.statistics(&day1).await.unwrap();
    assert_eq!(s.from_ms, T0_MS);
    assert_eq!(s.to_ms, T0_MS);
    assert_eq!(s.total_tasks, 23);
    assert_eq!(
        (
            s.completed_tasks,
            s.failed_tasks,
            s.timeout_tasks,
            s.cancelled_tasks
        ),
        (20, 1, 1, 1)
    );
    assert_eq!(s.retries, 0);
    assert!(
        (s.success_rate - 20.0 * 100.0 / 22.0).abs() < 1e-9,
        "{}",
        s.success_rate
    );
    let avg = s.average_duration_ms.unwrap();
    assert!((avg - (19.0 * 40.0 + 4_000.0) / 20.0).abs() < 1e-9, "{avg}");
    // 19 of 20 (95%) are in the 50 ms bucket.
    assert_eq!(s.p95_duration_ms, Some(50));
    assert!((s.total_cost - 10.0).abs() < 1e-9);
    assert!((s.average_cost.unwrap() - 0.5).abs() < 1e-9);
    assert!((s.average_quality.unwrap() - 0.8).abs() < 1e-9);
    assert_eq!((s.tokens_in, s.tokens_out), (2_000, 200));
    assert_eq!(s.by_agent.keys().collect::<Vec<_>>(), vec!["llm"]);
    assert_eq!(s.by_agent["llm"].completed, 20);
    assert_eq!(s.by_task_type["summarise"].timeout, 1);

    let both = store
        .statistics(&StatsFilter {
            from_ms: Some(T0_MS),
            ..StatsFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(both.to_ms, T0_MS + DAY_MS);
    assert_eq!(both.total_tasks, 25);
    assert_eq!((both.completed_tasks, both.retries), (22, 1));
    assert!((both.success_rate - 22.0 * 100.0 / 24.0).abs() < 1e-9);
    assert!((both.total_cost - 10.5).abs() < 1e-9);
    assert!((both.average_cost.unwrap() - 10.5 / 22.0).abs() < 1e-9);
    // 20 of 22 within 50 ms is under 95%: p95 is the 500 ms bucket.
    assert_eq!(both.p95_duration_ms, Some(500));
    assert_eq!(both.by_agent["mt"].completed, 2);
    assert_eq!(both.by_agent["mt"].created, 2);

    // The default range (the last 30 days) holds both days too.
    assert_eq!(
        store
            .statistics(&StatsFilter::default())
            .await
            .unwrap()
            .total_tasks,
        25
    );

    let mt = store
        .statistics(&StatsFilter {
            agent_id: Some("mt".into()),
            from_ms: Some(T0_MS),
            ..StatsFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((mt.total_tasks, mt.completed_tasks, mt.retries), (2, 2, 1));
    assert_eq!(mt.success_rate, 100.0);
    assert_eq!(mt.average_duration_ms, Some(300.0));
    assert_eq!(mt.p95_duration_ms, Some(500));
    assert!((mt.average_quality.unwrap() - 0.5).abs() < 1e-9);

    let summarise_day2 = store
        .statistics(&StatsFilter {
            task_type: Some("summarise".into()),
            from_ms: Some(T0_MS + DAY_MS),
            to_ms: Some(T0_MS + DAY_MS),
            ..StatsFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(summarise_day2.total_tasks, 0);
    assert_eq!(summarise_day2.success_rate, 0.0);
    assert_eq!(summarise_day2.average_duration_ms, None);
    assert_eq!(summarise_day2.p95_duration_ms, None);
}

#[tokio::test]
async fn statistics_refuse_bad_identifiers_and_bound_their_range() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    // An inverted range is empty; a range past 366 days counts its last 366.
    let empty = store
        .statistics(&StatsFilter {
            from_ms: Some(T0_MS + DAY_MS),
            to_ms: Some(T0_MS),
            ..StatsFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(empty.total_tasks, 0);
    let long = store
        .statistics(&StatsFilter {
            from_ms: Some(T0_MS - 400 * DAY_MS),
            to_ms: Some(T0_MS),
            ..StatsFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(long.to_ms - long.from_ms, (MAX_DAYS - 1) * DAY_MS);
    let bad = [
        StatsFilter {
            agent_id: Some("a{b}".into()),
            ..StatsFilter::default()
        },
        StatsFilter {
            task_type: Some("a:b".into()),
            ..StatsFilter::default()
        },
    ];
    for f in bad {
        let err = store.statistics(&f).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{f:?}: {err:?}");
    }
}

// ---- cleanup ------------------------------------------------------------

#[tokio::test]
async fn cleanup_removes_old_terminal_tasks_from_every_index_and_keeps_statistics() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    // Work at midday, so "now" stays on one UTC day across the retention edge.
    advance_ms(&store, DAY_MS as u64 / 2);
    let owned = |agent: &str, key: Option<&str>| NewTask {
        owner_id: Some("ann".into()),
        idempotency_key: key.map(str::to_string),
        max_retries: Some(0),
        ..task_at(agent, Priority::High)
    };
    // Old: finished now, so past retention later.
    let mut old = Vec::new();
    for i in 0..6 {
        let key = format!("k{i}");
        let t = create(&store, owned("a1", Some(&key))).await;
        let c = claim_one(&store, "a1").await;
        match i % 3 {
            0 => complete_ok(&store, &c).await,
            1 => {
                store.fail(&[failure(&c, false, false)]).await.unwrap();
            }
            _ => {
                store.cancel(&t.id, None).await.unwrap();
            }
        }
        old.push(t.id);
    }
    let t = create(&store, owned("a2", None)).await;
    let c = claim_one(&store, "a2").await;
    store.fail(&[failure(&c, true, true)]).await.unwrap();
    old.push(t.id);
    // Live: created as long ago but not finished, or finished recently.
    let queued = create(&store, owned("a1", Some("live"))).await;
    let running = create(&store, owned("a2", None)).await;
    assert_eq!(claim_one(&store, "a2").await.id, running.id);

    let retention = Duration::from_secs(7 * 24 * 3600);
    advance_ms(&store, retention.as_millis() as u64 - 1);
    let recent = create(&store, owned("a1", None)).await;
    let held = claim(&store, "a1", 2).await;
    for c in &held {
        if c.id == recent.id {
            complete_ok(&store, c).await;
        } else {
            assert_eq!(c.id, queued.id);
            let r = store
                .requeue(&[(c.id.clone(), c.token.clone())])
                .await
                .unwrap();
            assert!(r[0].is_ok());
        }
    }
    let stats_filter = StatsFilter {
        from_ms: Some(T0_MS),
        ..StatsFilter::default()
    };
    let stats_before = store.statistics(&stats_filter).await.unwrap();
    assert_eq!(
        (
            stats_before.total_tasks,
            stats_before.completed_tasks,
            stats_before.failed_tasks
        ),
        (10, 3, 2)
    );
    assert_eq!(
        (stats_before.cancelled_tasks, stats_before.timeout_tasks),
        (2, 1)
    );

    // Up to exactly the retention, old tasks stay.
    assert_eq!(store.cleanup(retention).await.unwrap(), 0);
    advance_ms(&store, 1);
    assert_eq!(store.cleanup(retention).await.unwrap(), 0);
    advance_ms(&store, 1);
    let keys_before = dbsize(&store).await;
    let (removed, more) = store.cleanup_batch(retention, 3).await.unwrap();
    assert_eq!((removed, more), (3, true));
    assert_eq!(store.cleanup(retention).await.unwrap(), 4);
    assert_eq!(store.cleanup(retention).await.unwrap(), 0);
    // 7 task records and 6 idempotency keys at least (emptied indexes go too).
    assert!(dbsize(&store).await <= keys_before - 7 - 6);

    let all_keys: Vec<String> = raw.custom(fred::cmd!("KEYS"), vec!["*"]).await.unwrap();
    for key in &all_keys {
        let kind: String = raw
            .custom(fred::cmd!("TYPE"), vec![key.as_str()])
            .await
            .unwrap();
        for id in &old {
            assert!(!key.ends_with(&format!("task:{id}")), "{key} left behind");
            if kind == "zset" {
                assert_eq!(zscore(&store, key, id).await, None, "{id} left in {key}");
            }
        }
    }
    for id in &old {
        assert!(store.get(id).await.unwrap().is_none(), "{id} still stored");
    }
    let idem: Vec<&String> = all_keys.iter().filter(|k| k.contains("idem:")).collect();
    assert_eq!(idem, vec![&store.keys().idempotency("ann", "live")]);
    assert_eq!(
        zmembers(&store, &store.keys().finished()).await,
        vec![recent.id.clone()]
    );
    for s in ["FAILED", "CANCELLED", "TIMEOUT"] {
        assert!(
            zmembers(&store, &idx(&store, &format!("status:{s}")))
                .await
                .is_empty()
        );
        assert_eq!(
            count(&store, "a1", s).await + count(&store, "a2", s).await,
            0,
            "{s}"
        );
    }
    assert_eq!(count(&store, "a1", "COMPLETED").await, 1);
    let s = store.queue_status().await.unwrap();
    assert_eq!(
        (
            s.total_tasks,
            s.queued_tasks,
            s.processing_tasks,
            s.completed_tasks
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(
        (s.failed_tasks, s.cancelled_tasks, s.timeout_tasks),
        (0, 0, 0)
    );
    let listed = store
        .list(&ListFilter {
            limit: 100,
            owner_id: Some("ann".into()),
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let mut survivors = ids(&listed.tasks);
    survivors.sort();
    let mut expected = vec![queued.id.clone(), running.id.clone(), recent.id.clone()];
    expected.sort();
    assert_eq!((listed.total_count, survivors), (3, expected));

    // Statistics for those days answer the same numbers as before cleanup.
    let stats_after = store.statistics(&stats_filter).await.unwrap();
    assert_eq!(stats_after, stats_before);

    // A removed task's idempotency key is free again.
    let again = store.create(owned("a1", Some("k0"))).await.unwrap();
    assert!(again.created);
    assert!(!old.contains(&again.task.id));
}

// ---- range, cursor and paging bounds -------------------------------------

#[tokio::test]
async fn a_cursor_above_the_created_to_bound_still_keeps_the_page_in_range() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let mut in_range = Vec::new();
    for _ in 0..3 {
        in_range.push(create(&store, task_for("a1")).await.id);
        advance_ms(&store, 1_000);
    }
    for _ in 0..3 {
        create(&store, task_for("a1")).await;
        advance_ms(&store, 1_000);
    }
    in_range.reverse();
    let above_everything = ((T0_MS + 60_000) * 1000).to_string();
    for agent_id in [None, Some("a1".to_string())] {
        let filter = ListFilter {
            created_to_ms: Some(T0_MS + 2_000),
            cursor: Some(above_everything.clone()),
            limit: 10,
            agent_id,
            ..ListFilter::default()
        };
        let page = store.list(&filter).await.unwrap();
        assert_eq!(ids(&page.tasks), in_range, "{filter:?}");
        assert!(!page.has_next_page);
    }
}

#[tokio::test]
async fn list_refuses_overflowing_created_bounds_and_page_numbers_past_the_offset_cap() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let before = snapshot(&store).await;
    let bad = [
        ListFilter {
            limit: 10,
            created_from_ms: Some(i64::MAX),
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            created_to_ms: Some(i64::MAX / 1000),
            ..ListFilter::default()
        },
        ListFilter {
            limit: 10,
            created_from_ms: Some(i64::MIN),
            ..ListFilter::default()
        },
    ];
    for f in bad {
        let err = store.list(&f).await.unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{f:?}: {err:?}");
    }
    let deep = ListFilter {
        limit: 100,
        page: (MAX_PAGE_OFFSET / 100 + 2) as u32,
        ..ListFilter::default()
    };
    let err = store.list(&deep).await.unwrap_err();
    assert!(
        matches!(&err, Error::Validation(m) if m.contains("cursor")),
        "{err:?}"
    );
    assert_unchanged(&before, &snapshot(&store).await);
    // Exactly at the cap is still served (empty here); a cursor is never capped.
    let at_cap = ListFilter {
        page: (MAX_PAGE_OFFSET / 100 + 1) as u32,
        ..deep.clone()
    };
    assert!(store.list(&at_cap).await.unwrap().tasks.is_empty());
    let by_cursor = ListFilter {
        cursor: Some(u64::MAX.to_string()),
        ..deep
    };
    assert_eq!(store.list(&by_cursor).await.unwrap().tasks.len(), 1);
}

// ---- statistics bounds ----------------------------------------------------

#[tokio::test]
async fn a_p95_past_the_largest_bucket_is_reported_as_that_bound() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    create(&store, task_for("a1")).await;
    let c = claim_one(&store, "a1").await;
    advance_ms(&store, 2 * 3_600_000);
    complete_ok(&store, &c).await;
    let s = store.statistics(&StatsFilter::default()).await.unwrap();
    assert_eq!(s.completed_tasks, 1);
    assert_eq!(s.p95_duration_ms, Some(3_600_000));
}

#[tokio::test]
async fn every_stats_hash_expires_and_a_later_write_keeps_its_ttl() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let stats_ttl_ms = (MAX_DAYS + 35) * DAY_MS;
    let key = store.keys().stats(T0_MS.div_euclid(DAY_MS));
    create(&store, task_for("a1")).await;
    let ttl = pttl(&store, &key).await;
    assert!(
        ttl > stats_ttl_ms - 60_000 && ttl <= stats_ttl_ms,
        "ttl {ttl}"
    );
    // Only a hash without a TTL gets one: later writes leave it alone.
    let _: bool = raw.pexpire(&key, 1_000_000, None).await.unwrap();
    let c = claim_one(&store, "a1").await;
    complete_ok(&store, &c).await;
    let ttl = pttl(&store, &key).await;
    assert!(ttl > 0 && ttl <= 1_000_000, "ttl {ttl}");
    // Every day's hash gets one, whichever script writes it first.
    advance_ms(&store, DAY_MS as u64);
    create(&store, task_for("a1")).await;
    let next_day = store.keys().stats(T0_MS.div_euclid(DAY_MS) + 1);
    assert!(pttl(&store, &next_day).await > stats_ttl_ms - 60_000);
}

// ---- grouped reads ------------------------------------------------------

#[tokio::test]
async fn concurrent_gets_each_get_their_own_record_and_a_bad_key_fails_alone() {
    let redis = TestRedis::start();
    let store = default_manual_store(&redis).await;
    let raw = raw_redis(&redis.url()).await;
    let all = mixed_tasks(&store, 200).await;
    let missing: Vec<String> = (0..50).map(|_| taskherd::task::new_task_id()).collect();
    // A record key holding a string: its HGETALL fails with WRONGTYPE.
    let broken = taskherd::task::new_task_id();
    let _: () = raw
        .set(store.keys().task(&broken), "not a hash", None, None, false)
        .await
        .unwrap();

    let fcalls = || async {
        let info: String = raw
            .custom(fred::cmd!("INFO"), vec!["commandstats"])
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_fcall:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let fcalls_before = fcalls().await;
    // Several rounds of 251 gets started at once, so reads share calls.
    for _ in 0..3 {
        let mut calls = tokio::task::JoinSet::new();
        for (i, t) in all.iter().enumerate() {
            let (store, t) = (store.clone(), t.clone());
            calls.spawn(async move { (i, store.get(&t.id).await.map(|got| got == Some(t))) });
        }
        for (i, id) in missing.iter().enumerate() {
            let (store, id) = (store.clone(), id.clone());
            calls.spawn(async move { (1000 + i, store.get(&id).await.map(|g| g.is_none())) });
        }
        let (s, b) = (store.clone(), broken.clone());
        calls.spawn(async move { (9999, s.get(&b).await.map(|_| true)) });
        let mut answered = 0;
        while let Some(joined) = calls.join_next().await {
            let (i, result) = joined.unwrap();
            answered += 1;
            if i == 9999 {
                assert!(result.is_err(), "a WRONGTYPE record must fail its own get");
            } else {
                assert!(result.unwrap(), "get #{i} answered another record");
            }
        }
        assert_eq!(answered, all.len() + missing.len() + 1);
    }
    // Reads went out in groups (get_many calls), not one call per get.
    let grouped_calls = fcalls().await - fcalls_before;
    let gets = 3 * (all.len() + missing.len() + 1) as u64;
    assert!(
        grouped_calls >= 1 && grouped_calls * 2 < gets,
        "{grouped_calls} get_many calls for {gets} gets"
    );
}
