//! The chaos test: three real nodes (the binary) under load while faults hit
//! them, then a check of the whole history, after Jepsen's total-queue
//! checker: every acknowledged task is there and finished as it should be
//! (none lost), none was finished twice or made twice (none duplicated),
//! and no request got an answer it should not have (none unexpected).
//!
//! - Load: users create `echo`, `sleep` and `ext` tasks through random
//!   nodes with idempotency keys, sending a create again (same key, another
//!   node) until it is acknowledged; external workers claim `ext` tasks over
//!   HTTP with short leases, and some stall past their lease and complete
//!   late (the fence must refuse them).
//! - Faults, one at a time, in rounds of every kind in an order drawn from
//!   the seed: kill -9 of a node, SIGTERM of a node (each restarted), Redis
//!   stopped (SHUTDOWN) or killed (SIGKILL, AOF `always`) and restarted, a
//!   node's Redis connection reset after a reply, or frozen for seconds.
//! - Seeded: `CHAOS_SEED` replays a run's draws (the seed is printed first);
//!   `CHAOS_SECONDS` sets the length of the fault phase (default 40).
//!
//! The summary line starts with `chaos:`; `scripts/dev test` runs this
//! binary on its own, with its output shown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

#[path = "../it/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use taskherd::auth::Role;
use taskherd::local_redis::{LocalRedis, free_port};
use taskherd::store::Store;
use taskherd::task::TaskStatus;

use support::*;

const NODES: usize = 3;
const USERS: usize = 4;
const EXT_WORKERS: usize = 2;
/// Pause between one user's creates (about 12 a second each).
const CREATE_EVERY: Duration = Duration::from_millis(80);
/// How long a create is sent again before it counts as never acknowledged.
const CREATE_PATIENCE: Duration = Duration::from_secs(30);
/// External workers' lease, and how long a stalling one sleeps (past it).
const EXT_LEASE_MS: u64 = 1_500;
const EXT_STALL: Duration = Duration::from_millis(2_500);
/// After the faults: how long every acknowledged task has to finish.
const DRAIN: Duration = Duration::from_secs(120);
/// Node settings: short leases and grace so faults show within seconds.
const NODE_ARGS: [&str; 8] = [
    "--lease-ms",
    "2000",
    "--grace-ms",
    "2000",
    "--backoff-base-ms",
    "100",
    "--backoff-cap-ms",
    "500",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill9,
    Sigterm,
    RedisStop,
    RedisKill,
    Reset,
    Freeze,
}

#[derive(Clone, Debug)]
struct Created {
    key: String,
    agent: &'static str,
    input: Value,
    /// The task id of the first acknowledgement (None: never acknowledged).
    id: Option<String>,
}

#[derive(Default)]
struct History {
    creates: Vec<Created>,
    /// (task id, lease token) of every completion a node acknowledged.
    ext_completions: Vec<(String, String)>,
    /// Late completions the fence refused (expected: stalled workers).
    refused_late: usize,
    /// Answers no request should get (a 429 below the rate, a 500, ...).
    unexpected: Vec<String>,
    faults: BTreeMap<String, usize>,
}

/// Redis (AOF `always`: a SIGKILL loses no acknowledged write), a proxy per
/// node, and the nodes (child processes; restarted on new ports).
struct Cluster {
    redis_dir: PathBuf,
    redis_port: u16,
    redis: Mutex<Option<LocalRedis>>,
    proxies: Vec<PausableProxy>,
    nodes: Mutex<Vec<Option<ChildNode>>>,
    logs: PathBuf,
    incarnations: Mutex<usize>,
}

const REDIS_ARGS: [&str; 2] = ["--appendfsync", "always"];

impl Cluster {
    fn start_redis(&self) {
        let redis =
            LocalRedis::start_with(&self.redis_dir, self.redis_port, &REDIS_ARGS).expect("redis");
        *self.redis.lock().unwrap() = Some(redis);
    }

    fn spawn_node(&self, i: usize) {
        let n = {
            let mut count = self.incarnations.lock().unwrap();
            *count += 1;
            *count
        };
        let log = self.logs.join(format!("node{i}-{n}.log"));
        let node = ChildNode::spawn_logged(&self.proxies[i].url(), &NODE_ARGS, &log);
        self.nodes.lock().unwrap()[i] = Some(node);
    }

    /// The base URL of a random node that is up (restarted nodes move).
    fn any_node(&self, rng: &mut StdRng) -> Option<String> {
        let nodes = self.nodes.lock().unwrap();
        let up: Vec<u16> = nodes.iter().flatten().map(|n| n.port).collect();
        if up.is_empty() {
            return None;
        }
        Some(format!(
            "http://127.0.0.1:{}",
            up[rng.random_range(0..up.len())]
        ))
    }
}

/// Waits until every node answers ready.
async fn all_ready(cluster: &Cluster) {
    let ports: Vec<u16> = cluster
        .nodes
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|n| n.port)
        .collect();
    for port in ports {
        wait_ready(port, Duration::from_secs(60)).await;
    }
}

/// One user: creates tasks until `end`, each sent again (same key) until
/// acknowledged or its patience runs out.
async fn user(
    cluster: Arc<Cluster>,
    history: Arc<Mutex<History>>,
    seed: u64,
    u: usize,
    end: Instant,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5553_4552 + u as u64));
    let http = http_client();
    let token = token(&format!("chaos-user-{u}"), Role::User, None);
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let (agent, input) = match rng.random_range(0..10) {
            0..5 => ("echo", json!({"user": u, "n": n})),
            5..8 => ("sleep", json!({"ms": rng.random_range(100..1_500)})),
            _ => ("ext", json!({"user": u, "n": n})),
        };
        let key = format!("u{u}-{n}");
        let body = json!({
            "agentId": agent, "taskType": "chaos", "inputData": input,
            "maxRetries": 20, "idempotencyKey": key,
        });
        let given_up = Instant::now() + CREATE_PATIENCE;
        let mut id = None;
        while id.is_none() && Instant::now() < given_up {
            let Some(base) = cluster.any_node(&mut rng) else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let sent = http
                .post(format!("{base}/api/ai/tasks"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 201 || r.status() == 200 => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    match v["id"].as_str() {
                        Some(got) => id = Some(got.to_string()),
                        None => history
                            .lock()
                            .unwrap()
                            .unexpected
                            .push(format!("create {key}: acknowledged without an id: {v}")),
                    }
                }
                // Redis away, the node starting or draining: send it again.
                Ok(r) if r.status() == 503 => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    history
                        .lock()
                        .unwrap()
                        .unexpected
                        .push(format!("create {key}: {status} {text}"));
                }
                // Connection refused or reset, a timeout: send it again.
                Err(_) => {}
            }
            if id.is_none() {
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            }
        }
        history.lock().unwrap().creates.push(Created {
            key,
            agent,
            input,
            id,
        });
        tokio::time::sleep(CREATE_EVERY).await;
    }
}

/// One external worker: claims `ext` tasks over HTTP until `stop` says so;
/// some attempts stall past their lease and complete late.
async fn ext_worker(
    cluster: Arc<Cluster>,
    history: Arc<Mutex<History>>,
    seed: u64,
    w: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x4558_5400 + w as u64));
    let http = http_client();
    let token = token(&format!("chaos-ext-{w}"), Role::Worker, Some("ext"));
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Some(base) = cluster.any_node(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let claimed = http
            .post(format!("{base}/api/ai/agents/ext/claim"))
            .bearer_auth(&token)
            .json(&json!({"maxTasks": 5, "waitMs": 500, "leaseMs": EXT_LEASE_MS, "workerId": format!("ext{w}")}))
            .send()
            .await;
        let tasks = match claimed {
            Ok(r) if r.status() == 200 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                v["tasks"].as_array().cloned().unwrap_or_default()
            }
            Ok(r) if r.status() == 503 => Vec::new(),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                history
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("claim: {status} {text}"));
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in tasks {
            let (Some(id), Some(lease)) = (t["id"].as_str(), t["token"].as_str()) else {
                continue;
            };
            let stall = rng.random_bool(0.15);
            tokio::time::sleep(if stall {
                EXT_STALL
            } else {
                Duration::from_millis(20)
            })
            .await;
            complete(&cluster, &history, &http, &token, &mut rng, id, lease).await;
        }
    }
}

/// Completes one attempt, sent again (same token: safe) while no node
/// answers; records what a node acknowledged or refused.
async fn complete(
    cluster: &Cluster,
    history: &Mutex<History>,
    http: &reqwest::Client,
    token: &str,
    rng: &mut StdRng,
    id: &str,
    lease: &str,
) {
    let body = json!({"token": lease, "outputData": {"by": lease}});
    let given_up = Instant::now() + Duration::from_secs(10);
    while Instant::now() < given_up {
        let Some(base) = cluster.any_node(rng) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = http
            .post(format!("{base}/api/ai/tasks/{id}/complete"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                history
                    .lock()
                    .unwrap()
                    .ext_completions
                    .push((id.to_string(), lease.to_string()));
                return;
            }
            // The lease ran out and the task went on without this attempt.
            Ok(r) if r.status() == 409 => {
                history.lock().unwrap().refused_late += 1;
                return;
            }
            Ok(r) if r.status() == 503 => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                history
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("complete {id}: {status} {text}"));
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
    }
}

/// Runs `f` (it waits for a process) on a blocking thread.
async fn off_runtime(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a blocking task");
}

/// Draws faults one at a time until `end`, each undone before the next.
async fn faults(cluster: Arc<Cluster>, history: Arc<Mutex<History>>, seed: u64, end: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = [
        Fault::Kill9,
        Fault::Sigterm,
        Fault::RedisStop,
        Fault::RedisKill,
        Fault::Reset,
        Fault::Freeze,
    ];
    // Every kind once per round, in an order drawn from the seed (a round of
    // six takes about 15 to 35 s, so a 40 s run usually holds every kind).
    let mut round = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_500..3_500))).await;
        if Instant::now() >= end {
            return;
        }
        if round.is_empty() {
            round = kinds.to_vec();
            round.shuffle(&mut rng);
        }
        let fault = round.pop().expect("a fault of this round");
        let i = rng.random_range(0..NODES);
        let down = Duration::from_millis(rng.random_range(300..2_000));
        match fault {
            Fault::Kill9 | Fault::Sigterm => {
                let node = cluster.nodes.lock().unwrap()[i].take();
                if let Some(mut node) = node {
                    off_runtime(move || match fault {
                        Fault::Kill9 => node.kill9(),
                        _ => {
                            node.terminate();
                        }
                    })
                    .await;
                }
                tokio::time::sleep(down).await;
                cluster.spawn_node(i);
            }
            Fault::RedisStop | Fault::RedisKill => {
                let redis = cluster.redis.lock().unwrap().take();
                if let Some(mut redis) = redis {
                    off_runtime(move || match fault {
                        Fault::RedisKill => redis.kill(),
                        _ => redis.stop(),
                    })
                    .await;
                }
                tokio::time::sleep(down).await;
                let c = cluster.clone();
                off_runtime(move || c.start_redis()).await;
            }
            Fault::Reset => cluster.proxies[i].cut_next_reply(),
            Fault::Freeze => {
                cluster.proxies[i].pause();
                tokio::time::sleep(down + Duration::from_secs(1)).await;
                cluster.proxies[i].resume();
            }
        }
        *history
            .lock()
            .unwrap()
            .faults
            .entry(format!("{fault:?}"))
            .or_insert(0) += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chaos_run_loses_nothing_and_finishes_nothing_twice() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    eprintln!(
        "chaos: seed={seed} (replay the draws with CHAOS_SEED={seed}), {seconds} s of faults"
    );
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let redis_port = free_port().unwrap();
    let redis_dir = dir.path().join("redis");
    let redis = LocalRedis::start_with(&redis_dir, redis_port, &REDIS_ARGS).unwrap();
    let mut proxies = Vec::new();
    for _ in 0..NODES {
        proxies.push(PausableProxy::start(redis_port).await);
    }
    let cluster = Arc::new(Cluster {
        redis_dir,
        redis_port,
        redis: Mutex::new(Some(redis)),
        proxies,
        nodes: Mutex::new((0..NODES).map(|_| None).collect()),
        logs: logs.clone(),
        incarnations: Mutex::new(0),
    });
    for i in 0..NODES {
        cluster.spawn_node(i);
    }
    all_ready(&cluster).await;

    let history = Arc::new(Mutex::new(History::default()));
    let end = Instant::now() + Duration::from_secs(seconds);
    let stop_workers = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut users = Vec::new();
    for u in 0..USERS {
        users.push(tokio::spawn(user(
            cluster.clone(),
            history.clone(),
            seed,
            u,
            end,
        )));
    }
    let workers: Vec<_> = (0..EXT_WORKERS)
        .map(|w| {
            tokio::spawn(ext_worker(
                cluster.clone(),
                history.clone(),
                seed,
                w,
                stop_workers.clone(),
            ))
        })
        .collect();
    faults(cluster.clone(), history.clone(), seed, end).await;
    for u in users {
        u.await.unwrap();
    }

    // Healed (every fault was undone): every acknowledged task must finish.
    all_ready(&cluster).await;
    let store = Store::connect(
        &format!("redis://127.0.0.1:{redis_port}"),
        2,
        taskherd::store::StoreConfig::default(),
        taskherd::clock::Clock::redis(),
    )
    .await
    .unwrap();
    let acked: Vec<Created> = history
        .lock()
        .unwrap()
        .creates
        .iter()
        .filter(|c| c.id.is_some())
        .cloned()
        .collect();
    let mut open: HashSet<String> = acked.iter().filter_map(|c| c.id.clone()).collect();
    let drain_end = Instant::now() + DRAIN;
    while !open.is_empty() && Instant::now() < drain_end {
        let ids: Vec<String> = open.iter().cloned().collect();
        for id in ids {
            if let Ok(Some(t)) = store.get(&id).await
                && t.status.is_terminal()
            {
                open.remove(&id);
            }
        }
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop_workers.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    // The checker.
    let history = std::mem::take(&mut *history.lock().unwrap());
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut unexpected = history.unexpected.clone();
    let mut completions: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, token) in &history.ext_completions {
        completions.entry(id).or_default().push(token);
    }
    for c in &acked {
        let id = c.id.as_deref().unwrap();
        let Some(t) = store.get(id).await.unwrap() else {
            lost.push(format!("{} ({id}): acknowledged, not in Redis", c.key));
            continue;
        };
        if !t.status.is_terminal() {
            lost.push(format!(
                "{} ({id}): still {:?} after the drain",
                c.key, t.status
            ));
            continue;
        }
        if t.status != TaskStatus::Completed {
            unexpected.push(format!(
                "{} ({id}): ended {:?}: {:?}",
                c.key, t.status, t.error_message
            ));
            continue;
        }
        match c.agent {
            "echo" if t.output_data.as_ref() != Some(&c.input) => {
                unexpected.push(format!("{} ({id}): echo gave {:?}", c.key, t.output_data))
            }
            "ext" => {
                let acked_by = completions.get(id).cloned().unwrap_or_default();
                if acked_by.len() > 1 {
                    duplicated.push(format!("{} ({id}): completed by {acked_by:?}", c.key));
                }
                if let Some(by) = acked_by.first()
                    && t.output_data != Some(json!({"by": by}))
                {
                    duplicated.push(format!(
                        "{} ({id}): acknowledged for {by}, holds {:?}",
                        c.key, t.output_data
                    ));
                }
            }
            _ => {}
        }
    }
    // Every task in Redis: one per idempotency key, and only ours.
    let ours: HashMap<&str, &Created> = history
        .creates
        .iter()
        .map(|c| (c.key.as_str(), c))
        .collect();
    let mut ids_by_key: HashMap<String, Vec<String>> = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .list(&taskherd::store::ListFilter {
                page: 1,
                limit: 100,
                cursor: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        for t in &page.tasks {
            match t
                .idempotency_key
                .as_deref()
                .filter(|k| ours.contains_key(k))
            {
                Some(k) => ids_by_key
                    .entry(k.to_string())
                    .or_default()
                    .push(t.id.clone()),
                None => unexpected.push(format!("{}: a task nobody created", t.id)),
            }
        }
        if page.next_cursor.is_none() {
            break;
        }
        after = page.next_cursor;
    }
    for (key, ids) in &ids_by_key {
        if ids.len() > 1 {
            duplicated.push(format!("{key}: {} tasks {ids:?}", ids.len()));
        }
        if let Some(acked_id) = ours[key.as_str()].id.as_ref()
            && !ids.contains(acked_id)
        {
            lost.push(format!(
                "{key}: acknowledged as {acked_id}, Redis has {ids:?}"
            ));
        }
    }
    // At most one terminal event per task.
    for (id, n) in terminal_events_per_task(&store).await {
        if n > 1 {
            duplicated.push(format!("{id}: {n} terminal events"));
        }
    }

    let faults: Vec<String> = history
        .faults
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let summary = format!(
        "chaos: seed={seed} tasks={} acknowledged={} ext-completions={} refused-late={} faults[{}] \
         lost={} duplicated={} unexpected={} in {} s",
        history.creates.len(),
        acked.len(),
        history.ext_completions.len(),
        history.refused_late,
        faults.join(" "),
        lost.len(),
        duplicated.len(),
        unexpected.len(),
        began.elapsed().as_secs()
    );
    eprintln!("{summary}");
    if lost.is_empty() && duplicated.is_empty() && unexpected.is_empty() {
        return;
    }
    let kept = dir.keep();
    for (what, list) in [
        ("lost", &lost),
        ("duplicated", &duplicated),
        ("unexpected", &unexpected),
    ] {
        for line in list.iter().take(20) {
            eprintln!("chaos: {what}: {line}");
        }
    }
    panic!("{summary}; node logs in {}", kept.join("logs").display());
}

/// Terminal events (completed, failed, timeout, cancelled) per task id.
async fn terminal_events_per_task(store: &Store) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in all_events(store).await {
        if TERMINAL_EVENTS.contains(&e.kind.as_str()) {
            *counts.entry(e.task_id.clone()).or_insert(0) += 1;
        }
    }
    counts
}
