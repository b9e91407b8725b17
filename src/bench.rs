//! The benchmark behind `taskherd bench`: prints one JSON document.
//!
//! Phases, each on a fresh database (a private redis-server unless
//! `--redis-url` is given, in which case each phase uses its own namespace):
//! - enqueue one at a time with 100 in flight (coalesced creates), and in
//!   batches of 100;
//! - drain N pre-enqueued tasks (100-byte payload) with a no-op handler at
//!   each concurrency; Redis CPU per lifecycle (batch create -> claim ->
//!   complete) from `INFO cpu`, and Redis memory per finished task kept;
//! - latency at a steady rate: create -> handler start and create ->
//!   `completed` event seen on the stream, p50 / p99.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::{Delivery, Hub, Subscription};
use crate::local_redis::LocalRedis;
use crate::shutdown;
use crate::signals::{self, Signals};
use crate::store::{EventKind, Store, StoreConfig};
use crate::task::NewTask;
use crate::worker::{Output, Registry, Runtime, TaskContext, WorkerConfig};

/// Settings of `taskherd bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Redis to use (default: a private redis-server started for the run).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Tasks per enqueue measurement.
    #[arg(long, default_value_t = 20_000)]
    pub enqueue_tasks: usize,
    /// Tasks pre-enqueued per drain measurement.
    #[arg(long, default_value_t = 50_000)]
    pub drain_tasks: usize,
    /// Worker concurrencies to drain at.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub concurrency: Vec<usize>,
    /// Bytes of inputData per task.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Tasks per second of the latency run.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
}

const AGENT: &str = "bench";

struct Db {
    url: String,
    private: Option<LocalRedis>,
    dir: Option<std::path::PathBuf>,
    phase: usize,
    current: Option<Store>,
}

impl Db {
    fn open(args: &BenchArgs) -> Result<Self> {
        match &args.redis_url {
            Some(url) => Ok(Self {
                url: url.clone(),
                private: None,
                dir: None,
                phase: 0,
                current: None,
            }),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("taskherd-bench-{}", std::process::id()));
                let redis = LocalRedis::start(&dir)?;
                Ok(Self {
                    url: redis.url(),
                    private: Some(redis),
                    dir: Some(dir),
                    phase: 0,
                    current: None,
                })
            }
        }
    }

    /// A store on a clean slate: FLUSHALL on the private server, else a new namespace.
    async fn fresh_store(&mut self) -> Result<Store> {
        self.phase += 1;
        if let Some(old) = self.current.take() {
            old.close().await;
        }
        let config = StoreConfig {
            namespace: format!("bench{}-{}", std::process::id(), self.phase),
            ..StoreConfig::default()
        };
        let store = Store::connect(&self.url, 8, config, Clock::redis()).await?;
        if self.private.is_some() {
            store.flush_database().await?;
        }
        self.current = Some(store.clone());
        Ok(store)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(mut r) = self.private.take() {
            r.kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn task(payload: &str, seq: u64) -> NewTask {
    NewTask::new(AGENT, "noop", json!({ "seq": seq, "pad": payload }))
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    (n as f64 / elapsed.as_secs_f64()).round()
}

async fn enqueue(db: &mut Db, args: &BenchArgs, payload: &str) -> Result<serde_json::Value> {
    let store = db.fresh_store().await?;
    let n = args.enqueue_tasks;
    let started = Instant::now();
    let results: Vec<Result<_>> = futures::stream::iter(0..n as u64)
        .map(|i| {
            let store = store.clone();
            let t = task(payload, i);
            async move { store.create(t).await }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let single = started.elapsed();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(e);
    }
    let store = db.fresh_store().await?;
    let started = Instant::now();
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(100) {
        store
            .create_batch(chunk.iter().map(|&i| task(payload, i)).collect())
            .await?;
    }
    let batched = started.elapsed();
    Ok(json!({
        "tasks": n,
        "singleWith100InFlightPerSec": rate(n, single),
        "batchesOf100PerSec": rate(n, batched),
    }))
}

/// Called when the no-op handler starts an attempt.
type OnStart = Arc<dyn Fn(&TaskContext) + Send + Sync>;

fn noop_registry(on_start: Option<OnStart>) -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(AGENT, move |ctx: TaskContext| {
        if let Some(f) = &on_start {
            f(&ctx);
        }
        async move { Ok(Output::default()) }
    });
    registry
}

struct Workers {
    runtime: Runtime,
    trigger: shutdown::ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_workers(store: &Store, concurrency: usize, registry: Registry) -> Workers {
    let signals = Signals::default();
    let (trigger, stop) = shutdown::channel();
    let listener = tokio::spawn({
        let (store, signals, stop) = (store.clone(), signals.clone(), stop.clone());
        async move {
            let _ = signals::listen(store, signals, stop).await;
        }
    });
    let config = WorkerConfig {
        node_id: "bench".into(),
        concurrency,
        grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    };
    let runtime = Runtime::new(store.clone(), registry, config, signals);
    let run = tokio::spawn({
        let rt = runtime.clone();
        async move {
            let _ = rt.run(stop).await;
        }
    });
    Workers {
        runtime,
        trigger,
        tasks: vec![listener, run],
    }
}

impl Workers {
    async fn stop(self) {
        self.trigger.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn drain(
    db: &mut Db,
    args: &BenchArgs,
    payload: &str,
    concurrency: usize,
) -> Result<serde_json::Value> {
    let store = db.fresh_store().await?;
    let n = args.drain_tasks;
    let before = store.server_usage().await?;
    for chunk in (0..n as u64).collect::<Vec<_>>().chunks(100) {
        store
            .create_batch(chunk.iter().map(|&i| task(payload, i)).collect())
            .await?;
    }
    let workers = start_workers(&store, concurrency, noop_registry(None)).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    while (workers.runtime.stats().completed_total as usize) < n {
        if Instant::now() > deadline {
            return Err(Error::Config("drain did not finish within 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let after = store.server_usage().await?;
    let (cpu_before, cpu_after) = (before.cpu_seconds, after.cpu_seconds);
    let (memory_before, memory_after) = (
        before.used_memory_bytes as f64,
        after.used_memory_bytes as f64,
    );
    workers.stop().await;
    Ok(json!({
        "concurrency": concurrency,
        "tasks": n,
        "tasksPerSec": rate(n, elapsed),
        "redisCpuMicrosPerLifecycle": ((cpu_after - cpu_before) * 1e6 / n as f64 * 10.0).round() / 10.0,
        "redisMemoryBytesPerFinishedTask": ((memory_after - memory_before) / n as f64).round(),
    }))
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({ "samples": h.len(), "p50Ms": ms(0.5), "p99Ms": ms(0.99), "maxMs": h.max() as f64 / 1000.0 })
}

async fn latency(db: &mut Db, args: &BenchArgs, payload: &str) -> Result<serde_json::Value> {
    let store = db.fresh_store().await?;
    let total = (args.rate * args.latency_seconds) as usize;
    let sent_at: Arc<Vec<Mutex<Option<Instant>>>> =
        Arc::new((0..total).map(|_| Mutex::new(None)).collect());
    let start_hist = Arc::new(Mutex::new(new_hist()?));
    let on_start: OnStart = {
        let (sent_at, hist) = (sent_at.clone(), start_hist.clone());
        Arc::new(move |ctx: &TaskContext| {
            let seq = ctx
                .task
                .input_data
                .get("seq")
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize;
            let sent = sent_at.get(seq).and_then(|m| *m.lock().ok()?);
            if let (Some(sent), Ok(mut h)) = (sent, hist.lock()) {
                let _ = h.record(sent.elapsed().as_micros() as u64);
            }
        })
    };
    let workers = start_workers(&store, 100, noop_registry(Some(on_start))).await;

    // Completed events, from the node's event hub as any subscriber's.
    let hub = Hub::start(&store, 1 << 16).await?;
    let events = hub.subscribe(None).await?;
    let id_to_seq: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let done_hist = Arc::new(Mutex::new(new_hist()?));
    let seen = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let (id_to_seq, sent_at, hist, seen) = (
            id_to_seq.clone(),
            sent_at.clone(),
            done_hist.clone(),
            seen.clone(),
        );
        async move { read_completed(events, id_to_seq, sent_at, hist, seen, total).await }
    });

    let interval_ms = 1u64;
    let per_tick = (args.rate * interval_ms / 1000).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    let mut seq = 0usize;
    let mut creates = Vec::with_capacity(total);
    while seq < total {
        ticker.tick().await;
        for _ in 0..per_tick.min(total - seq) {
            let (store, sent_at, id_to_seq) = (store.clone(), sent_at.clone(), id_to_seq.clone());
            let t = task(payload, seq as u64);
            let s = seq;
            creates.push(tokio::spawn(async move {
                if let Ok(mut slot) = sent_at[s].lock() {
                    *slot = Some(Instant::now());
                }
                if let (Ok(c), Ok(mut m)) = (store.create(t).await, id_to_seq.lock()) {
                    m.insert(c.task.id, s);
                }
            }));
            seq += 1;
        }
    }
    for c in creates {
        let _ = c.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    hub.stop().await;
    workers.stop().await;
    let start = start_hist
        .lock()
        .map(|h| percentiles(&h))
        .unwrap_or_default();
    let done = done_hist
        .lock()
        .map(|h| percentiles(&h))
        .unwrap_or_default();
    Ok(json!({
        "ratePerSec": args.rate,
        "seconds": args.latency_seconds,
        "createToStart": start,
        "createToCompletedEvent": done,
    }))
}

fn new_hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| Error::Config(e.to_string()))
}

async fn read_completed(
    mut events: Subscription,
    id_to_seq: Arc<Mutex<HashMap<String, usize>>>,
    sent_at: Arc<Vec<Mutex<Option<Instant>>>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    seen: Arc<AtomicU64>,
    total: usize,
) {
    let mut pending: Vec<(String, Instant)> = Vec::new();
    while (seen.load(Ordering::Relaxed) as usize) < total {
        let next = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        let now = Instant::now();
        match next {
            Ok(Some(Ok(Delivery::Event(e)))) if e.kind == EventKind::Completed => {
                pending.push((e.task_id.clone(), now));
            }
            Ok(Some(Ok(Delivery::Lagged { missed }))) => {
                tracing::warn!(missed, "bench: the event reader lagged");
            }
            Ok(None) => return,
            _ => {}
        }
        pending.retain(|(task, at)| {
            let seq = id_to_seq.lock().ok().and_then(|m| m.get(task).copied());
            let Some(seq) = seq else { return true };
            let sent = sent_at.get(seq).and_then(|m| *m.lock().ok()?);
            if let (Some(sent), Ok(mut h)) = (sent, hist.lock()) {
                let _ = h.record(at.saturating_duration_since(sent).as_micros() as u64);
            }
            seen.fetch_add(1, Ordering::Relaxed);
            false
        });
    }
}

/// Runs the benchmark and prints JSON.
pub async fn run(args: BenchArgs) -> Result<()> {
    let mut db = Db::open(&args)?;
    let payload = "x".repeat(args.payload_bytes.saturating_sub(30).max(1));
    eprintln!("bench: enqueue ...");
    let enqueue = enqueue(&mut db, &args, &payload).await?;
    let mut drains = Vec::new();
    for &c in &args.concurrency {
        eprintln!(
            "bench: drain {} tasks at concurrency {c} ...",
            args.drain_tasks
        );
        drains.push(drain(&mut db, &args, &payload, c.max(1)).await?);
    }
    eprintln!(
        "bench: latency at {}/s for {} s ...",
        args.rate, args.latency_seconds
    );
    let latency = latency(&mut db, &args, &payload).await?;
    let report = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
        "payloadBytes": args.payload_bytes,
        "enqueue": enqueue,
        "drain": drains,
        "latency": latency,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| Error::Config(e.to_string()))?
    );
    Ok(())
}
