//! Command line and environment. Every setting is a flag with an environment
//! variable (the seeds' `REDIS_URL` and `PORT`, the rest `TASKHERD_*`); all of
//! them show in `taskherd --help` / `taskherd serve --help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::maintenance::MaintenanceConfig;
use crate::store::StoreConfig;
use crate::task::Limits;
use crate::worker::WorkerConfig;

/// taskherd: a Redis-native distributed job queue for AI-agent tasks.
#[derive(Debug, Parser)]
#[command(name = "taskherd", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "TASKHERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node: HTTP server, workers and maintenance.
    Serve(ServeArgs),
    /// Measure throughput, latency, Redis CPU and memory; prints JSON.
    Bench(crate::bench::BenchArgs),
}

/// Settings of `taskherd serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 4000)]
    pub port: u16,
    /// Redis to use (redis://host:port/db). When absent the node starts its
    /// own redis-server (AOF on) with its data under --data-dir.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Folder of the node-managed Redis' data.
    #[arg(long, env = "TASKHERD_DATA_DIR", default_value = ".taskherd")]
    pub data_dir: PathBuf,
    /// Key namespace (hash tag) of the queue in Redis.
    #[arg(long, env = "TASKHERD_NAMESPACE", default_value = "taskherd")]
    pub namespace: String,
    /// Node id (default: host name, process id and a random suffix).
    #[arg(long, env = "TASKHERD_NODE_ID")]
    pub node_id: Option<String>,
    /// Attempts this node runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 10)]
    pub concurrency: usize,
    /// Lease length in ms (heartbeats every third of it).
    #[arg(long, env = "TASKHERD_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// How long in-flight tasks may finish on shutdown before being handed back (ms).
    #[arg(long, env = "TASKHERD_GRACE_MS", default_value_t = 30_000)]
    pub grace_ms: u64,
    /// First retry delay in ms; doubles per retry.
    #[arg(long, env = "TASKHERD_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub backoff_base_ms: u64,
    /// Longest retry delay in ms.
    #[arg(long, env = "TASKHERD_BACKOFF_CAP_MS", default_value_t = 30_000)]
    pub backoff_cap_ms: u64,
    /// Days terminal tasks are kept before cleanup.
    #[arg(long, env = "TASKHERD_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u64,
    /// Seconds between cleanup runs.
    #[arg(long, env = "TASKHERD_CLEANUP_INTERVAL_S", default_value_t = 300)]
    pub cleanup_interval_s: u64,
    /// Largest inputData / outputData in bytes.
    #[arg(long, env = "TASKHERD_MAX_DATA_BYTES", default_value_t = crate::task::DEFAULT_MAX_DATA_BYTES)]
    pub max_data_bytes: usize,
    /// Redis connections in the node's pool.
    #[arg(long, env = "TASKHERD_REDIS_POOL", default_value_t = 8)]
    pub redis_pool: usize,
    /// Do not run workers on this node (API and maintenance only).
    #[arg(long, env = "TASKHERD_NO_WORKER")]
    pub no_worker: bool,
    /// Do not run maintenance (promoter, reaper, janitor) on this node.
    #[arg(long, env = "TASKHERD_NO_MAINTENANCE")]
    pub no_maintenance: bool,
    /// Do not register the demo agents `echo` and `sleep`.
    #[arg(long, env = "TASKHERD_NO_DEMO_AGENTS")]
    pub no_demo_agents: bool,
}

impl ServeArgs {
    /// Refuses settings that cannot work, with a message naming the flag.
    pub fn validate(&self) -> crate::Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(crate::Error::Config(what.to_string()))
            }
        };
        check(
            (1..=10_000).contains(&self.concurrency),
            "--concurrency must be 1 to 10000",
        )?;
        check(
            (100..=86_400_000).contains(&self.lease_ms),
            "--lease-ms must be 100 to 86400000",
        )?;
        check(
            self.grace_ms <= 86_400_000,
            "--grace-ms must be at most 86400000",
        )?;
        check(
            (1..=3650).contains(&self.retention_days),
            "--retention-days must be 1 to 3650",
        )?;
        check(
            (1..=3_600_000).contains(&self.backoff_base_ms),
            "--backoff-base-ms must be 1 to 3600000",
        )?;
        check(
            self.backoff_cap_ms >= self.backoff_base_ms && self.backoff_cap_ms <= 86_400_000,
            "--backoff-cap-ms must be at least --backoff-base-ms and at most 86400000",
        )?;
        check(
            (1..=86_400).contains(&self.cleanup_interval_s),
            "--cleanup-interval-s must be 1 to 86400",
        )?;
        check(
            (1..=64).contains(&self.redis_pool),
            "--redis-pool must be 1 to 64",
        )?;
        check(
            (1024..=64 * 1024 * 1024).contains(&self.max_data_bytes),
            "--max-data-bytes must be 1024 to 67108864",
        )
    }

    /// Store settings.
    pub fn store_config(&self) -> StoreConfig {
        let retention = Duration::from_secs(self.retention_days * 24 * 3600);
        StoreConfig {
            namespace: self.namespace.clone(),
            backoff_base: Duration::from_millis(self.backoff_base_ms.max(1)),
            backoff_cap: Duration::from_millis(
                self.backoff_cap_ms.max(self.backoff_base_ms).max(1),
            ),
            retention,
            idempotency_ttl: retention,
            limits: Limits {
                max_input_bytes: self.max_data_bytes,
                max_output_bytes: self.max_data_bytes,
                ..Limits::default()
            },
        }
    }

    /// Worker settings.
    pub fn worker_config(&self, node_id: &str) -> WorkerConfig {
        WorkerConfig {
            node_id: node_id.to_string(),
            concurrency: self.concurrency.max(1),
            lease: Duration::from_millis(self.lease_ms.max(100)),
            grace: Duration::from_millis(self.grace_ms),
            ..WorkerConfig::default()
        }
    }

    /// Maintenance settings.
    pub fn maintenance_config(&self) -> MaintenanceConfig {
        MaintenanceConfig {
            cleanup_every: Duration::from_secs(self.cleanup_interval_s.max(1)),
            ..MaintenanceConfig::default()
        }
    }
}

/// A node id unique enough to tell nodes apart in logs and health.
pub fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let suffix: u32 = rand::random::<u32>() % 0x10000;
    format!("{host}-{}-{suffix:04x}", std::process::id())
}
