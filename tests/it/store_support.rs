//! Helpers for the store-layer tests (scripts, ordering, retries, read side,
//! claimers): stores on a manual clock with a chosen configuration, raw
//! snapshots of the Redis database (each helper opens its own connection to
//! the store's Redis: `support::raw_redis`), and readers for the event
//! stream.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use serde_json::json;
use taskherd::clock::Clock;
use taskherd::store::{ClaimRequest, ClaimedTask, Completion, Failure, Store, StoreConfig};
use taskherd::task::{NewTask, Priority, Task};

use crate::support::{T0_MS, TestRedis, raw_redis};

/// The lease the store tests claim with unless a test is about leases.
pub const LEASE: Duration = Duration::from_secs(30);

/// A store on a manual clock at `T0_MS` with `config`.
pub async fn manual_store(redis: &TestRedis, config: StoreConfig) -> Store {
    Store::connect(&redis.url(), 2, config, Clock::manual(T0_MS))
        .await
        .expect("store connects")
}

/// A store on a manual clock at `T0_MS` with the default configuration.
pub async fn default_manual_store(redis: &TestRedis) -> Store {
    manual_store(redis, StoreConfig::default()).await
}

/// Now on the store's manual clock.
pub fn now(store: &Store) -> i64 {
    store.clock().manual_now_ms().expect("manual clock")
}

/// Moves the store's manual clock forward by `ms`.
pub fn advance_ms(store: &Store, ms: u64) {
    store.clock().advance(Duration::from_millis(ms));
}

/// A NORMAL task of `agent` with small JSON input.
pub fn task_for(agent: &str) -> NewTask {
    NewTask::new(agent, "summarise", json!({"text": "hello"}))
}

/// A task of `agent` at `priority`.
pub fn task_at(agent: &str, priority: Priority) -> NewTask {
    NewTask {
        priority,
        ..task_for(agent)
    }
}

/// A NORMAL task of `agent` that may start at `run_at` (Unix ms).
pub fn task_due(agent: &str, run_at: i64) -> NewTask {
    NewTask {
        run_at: Some(run_at),
        ..task_for(agent)
    }
}

/// Creates one task and returns it.
pub async fn create(store: &Store, new: NewTask) -> Task {
    let created = store.create(new).await.expect("create");
    assert!(created.created);
    created.task
}

/// A claim of up to `max` tasks of one agent.
pub fn claim_req(worker: &str, agent: &str, max: usize, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.to_string(),
        lease,
        max_tasks: max,
        agents: vec![(agent.to_string(), max)],
    }
}

/// Claims up to `max` tasks of `agent` for worker "w1".
pub async fn claim(store: &Store, agent: &str, max: usize) -> Vec<ClaimedTask> {
    store
        .claim(&claim_req("w1", agent, max, LEASE))
        .await
        .expect("claim")
}

/// Claims exactly one task of `agent`.
pub async fn claim_one(store: &Store, agent: &str) -> ClaimedTask {
    let mut got = claim(store, agent, 1).await;
    assert_eq!(got.len(), 1, "expected one task of {agent} to claim");
    got.remove(0)
}

/// Completes one attempt; panics unless accepted.
pub async fn complete_ok(store: &Store, c: &ClaimedTask) {
    let r = store
        .complete(&[Completion {
            id: c.id.clone(),
            token: c.token.clone(),
            output_data: Some(json!({"ok": true})),
            ..Completion::default()
        }])
        .await
        .expect("complete call");
    assert!(r[0].is_ok(), "complete refused: {:?}", r[0]);
}

/// A failure of attempt `c`.
pub fn failure(c: &ClaimedTask, retryable: bool, timed_out: bool) -> Failure {
    Failure {
        id: c.id.clone(),
        token: c.token.clone(),
        error_message: "boom".into(),
        retryable,
        timed_out,
    }
}

/// Every key in the database with its DUMP (content, not TTL): equal
/// snapshots mean nothing was written.
pub async fn snapshot(store: &Store) -> BTreeMap<String, Value> {
    let raw = raw_redis(store.redis_url()).await;
    let keys: Vec<String> = raw
        .custom(fred::cmd!("KEYS"), vec!["*"])
        .await
        .expect("KEYS");
    let mut out = BTreeMap::new();
    for key in keys {
        let dump: Value = raw.dump(key.as_str()).await.expect("DUMP");
        out.insert(key, dump);
    }
    out
}

/// Asserts that two snapshots hold the same keys with the same contents.
pub fn assert_unchanged(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) {
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        added.is_empty() && removed.is_empty() && changed.is_empty(),
        "redis changed: added {added:?}, removed {removed:?}, changed {changed:?}"
    );
}

/// DBSIZE.
pub async fn dbsize(store: &Store) -> u64 {
    raw_redis(store.redis_url())
        .await
        .dbsize()
        .await
        .expect("DBSIZE")
}

/// Members of a sorted set, lowest score first.
pub async fn zmembers(store: &Store, key: &str) -> Vec<String> {
    raw_redis(store.redis_url())
        .await
        .zrange(key, 0, -1, None, false, None, false)
        .await
        .expect("ZRANGE")
}

/// Score of a member of a sorted set.
pub async fn zscore(store: &Store, key: &str, member: &str) -> Option<f64> {
    raw_redis(store.redis_url())
        .await
        .zscore(key, member)
        .await
        .expect("ZSCORE")
}

/// The raw task hash.
pub async fn task_hash(store: &Store, id: &str) -> HashMap<String, String> {
    raw_redis(store.redis_url())
        .await
        .hgetall(store.keys().task(id))
        .await
        .expect("HGETALL")
}

/// The live count of `agent|STATUS` (0 when absent).
pub async fn count(store: &Store, agent: &str, status: &str) -> i64 {
    let v: Option<i64> = raw_redis(store.redis_url())
        .await
        .hget(store.keys().counts(), format!("{agent}|{status}"))
        .await
        .expect("HGET counts");
    v.unwrap_or(0)
}

/// Key of an index zset (`idx:<name>`), e.g. `status:QUEUED`, `agent:a1`.
pub fn idx(store: &Store, name: &str) -> String {
    store.keys().index_named(name)
}

/// Every event on the stream, oldest first (the store's typed reader).
pub use crate::support::all_events as events;

/// The kinds of one task's events, oldest first.
pub async fn events_of(store: &Store, id: &str) -> Vec<String> {
    events(store)
        .await
        .into_iter()
        .filter(|e| e.task_id == id)
        .map(|e| e.kind.as_str().to_string())
        .collect()
}

/// The statistics field `<agent>|<type>|<metric>` of the UTC day holding `at_ms`.
pub async fn stat(store: &Store, at_ms: i64, field: &str) -> i64 {
    let v: Option<String> = raw_redis(store.redis_url())
        .await
        .hget(store.keys().stats(at_ms.div_euclid(86_400_000)), field)
        .await
        .expect("HGET stats");
    v.and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A deterministic pseudo-random sequence (xorshift64*), so failures replay.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

/// Runs `lua/<stem>.lua` by EVAL as the store loads it (the lib files of
/// `src/store/scripts.rs` LIB first), bypassing the Rust wrapper's checks, so
/// tests reach the script's own validation. An error reply comes back as text.
pub async fn eval_script(store: &Store, stem: &str, args: &[&str]) -> Result<Value, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
    let mut source = String::new();
    for file in ["lib/common.lua", "lib/attempt.lua", &format!("{stem}.lua")] {
        source.push_str(&std::fs::read_to_string(format!("{dir}/{file}")).expect("lua source"));
    }
    let mut cmd_args = vec![source, "1".into(), store.keys().prefix().to_string()];
    cmd_args.extend(args.iter().map(|a| a.to_string()));
    raw_redis(store.redis_url())
        .await
        .custom::<Value, _>(fred::cmd!("EVAL"), cmd_args)
        .await
        .map_err(|e| e.details().to_string())
}

/// PTTL of a key (ms; -1 without a TTL, -2 when missing).
pub async fn pttl(store: &Store, key: &str) -> i64 {
    raw_redis(store.redis_url())
        .await
        .pttl(key)
        .await
        .expect("PTTL")
}
