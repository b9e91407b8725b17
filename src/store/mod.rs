//! The only module that knows Redis exists.
//!
//! Every state change is one script in `lua/` with one typed wrapper here
//! (one file per script); reads are in `query` and `stats`; the node
//! registry (`nodes`), the rate limit's shared counts (`rate_limit`) and the
//! signal channel's subscriber (`signals`) are here too. Callers get typed
//! values and [`crate::error::Error`]s, never Redis replies or client types
//! (client errors are mapped once, in `redis_error`); no module outside
//! `store` names the Redis client (a unit test in `boundary` checks it).

mod agents;
mod audit;
mod batch;
#[cfg(test)]
mod boundary;
mod cancel;
mod claim;
mod cleanup;
mod complete;
mod create;
mod events;
mod fail;
mod heartbeat;
pub mod keys;
mod nodes;
mod outcome;
mod promote;
mod query;
mod rate_limit;
mod reads;
mod reap;
mod redis_error;
mod reply;
mod requeue;
pub(crate) mod scripts;
mod signals;
mod start;
mod stats;
mod timeout_stale;

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Pool, WithOptions};
use fred::prelude::*;
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};

pub use agents::{Agent, AgentKind};
pub use audit::{AUDIT_BATCH, AUDIT_LOOKUP_BUDGET, Audit};
pub use cancel::{Changed, TaskScope};
pub use claim::{ClaimRequest, ClaimedTask, MAX_CLAIM};
pub use cleanup::CLEANUP_BATCH;
pub use complete::Completion;
pub use create::{Created, MAX_BATCH};
pub use events::{Event, EventId, EventKind, EventReader, MAX_REPLAY_PAGE, Read, Replay};
pub use fail::{FailOutcome, Failed, Failure};
pub use heartbeat::LeaseState;
pub use keys::Index;
pub use nodes::NodeInfo;
pub use outcome::{AttemptEnd, AttemptOutcome, Expiry};
pub use promote::Pass;
pub use query::{
    AgentQueue, ListFilter, MAX_PAGE_OFFSET, MAX_PAGE_SIZE, QueueHealth, QueueStatus, TaskPage,
    health_thresholds,
};
pub use rate_limit::RateCount;
pub use signals::{Signal, SignalSubscription};
pub use stats::{Breakdown, DEFAULT_DAYS, MAX_DAYS, Statistics, StatsFilter};
pub use timeout_stale::{StaleChunk, TIMEOUT_STALE_BATCH};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::task::Limits;
use keys::Keys;
use scripts::{Name, Scripts};

/// How the store behaves; every field has a documented default.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Hash-tagged namespace of every key (`{taskherd}:...`).
    pub namespace: String,
    /// First retry delay; doubles per retry (1 s, 2 s, 4 s ...).
    pub backoff_base: Duration,
    /// Longest retry delay (30 s).
    pub backoff_cap: Duration,
    /// How long terminal tasks are kept before cleanup (7 days).
    pub retention: Duration,
    /// How long an idempotency key maps to its task (7 days).
    pub idempotency_ttl: Duration,
    /// Limits on task fields.
    pub limits: Limits,
    /// Told of every script call (script, round trip, whether Redis failed
    /// it): the node points it at its metrics. None: nobody is told.
    pub script_observer: Option<ScriptObserver>,
}

/// See [`StoreConfig::script_observer`].
pub type ScriptObserver = fn(script: &'static str, took: Duration, redis_error: bool);

/// The file stem of every script (`lua/<stem>.lua`), e.g. for metrics that
/// must exist before the first call.
pub fn script_names() -> impl Iterator<Item = &'static str> {
    Name::ALL.into_iter().map(Name::file_stem)
}

/// The keys' namespace (hash tag) unless configured.
pub const DEFAULT_NAMESPACE: &str = "taskherd";
/// First retry delay unless configured; it doubles per retry.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay unless configured.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Days terminal tasks (and idempotency keys) are kept unless configured.
pub const DEFAULT_RETENTION_DAYS: u64 = 7;
/// Connections in a node's pool unless configured.
pub const DEFAULT_POOL_SIZE: usize = 8;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            retention: Duration::from_secs(DEFAULT_RETENTION_DAYS * 24 * 3600),
            idempotency_ttl: Duration::from_secs(DEFAULT_RETENTION_DAYS * 24 * 3600),
            limits: Limits::default(),
            script_observer: None,
        }
    }
}

/// Handle to the queue in Redis; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// For connections of their own (the signal subscriber).
    redis_url: String,
    keys: Keys,
    scripts: Scripts,
    clock: Clock,
    config: StoreConfig,
    creates: create::Coalescer,
    reads: reads::ReadGroup,
}

/// Builds the Redis client configuration shared by pools and subscribers:
/// a reconnect policy (without one, a Redis restart leaves calls hanging)
/// and command timeouts.
pub(crate) fn redis_builder(redis_url: &str) -> Result<Builder> {
    let config = RedisConfig::from_url(redis_url)?;
    let mut builder = Builder::from_config(config);
    builder
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .with_connection_config(|c| {
            // Small request/reply exchanges: Nagle's algorithm only adds latency.
            c.tcp = fred::types::config::TcpConfig {
                nodelay: Some(true),
                ..Default::default()
            };
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(10);
            // A script whose reply was lost is not sent again by the client:
            // callers decide (creates carry idempotency keys, completes are
            // idempotent per token).
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(10);
        });
    Ok(builder)
}

/// Options of every command the store sends: fail at once while the
/// connection is down (between a drop and the reconnect) instead of waiting
/// in the client's queue for up to the command timeout (10 s). A REST call
/// or a scrape during an outage then answers in milliseconds (503, or the
/// node's own series); the worker runtime and the maintenance loops already
/// retry with backoff. A connection that looks up but does not answer still
/// meets the command timeout.
fn fail_fast() -> &'static fred::types::config::Options {
    static OPTIONS: std::sync::OnceLock<fred::types::config::Options> = std::sync::OnceLock::new();
    OPTIONS.get_or_init(|| fred::types::config::Options {
        fail_fast: true,
        ..Default::default()
    })
}

/// The pool's next client, with [`fail_fast`] commands.
pub(crate) fn fail_fast_client(pool: &Pool) -> WithOptions<Client> {
    pool.next().with_options(fail_fast())
}

impl Store {
    /// Connects a pool of `pool_size` connections and loads every script.
    pub async fn connect(
        redis_url: &str,
        pool_size: usize,
        config: StoreConfig,
        clock: Clock,
    ) -> Result<Self> {
        let keys = Keys::new(&config.namespace)?;
        let pool = redis_builder(redis_url)?.build_pool(pool_size.max(1))?;
        let scripts = Scripts::new();
        let set_up = async {
            pool.init().await?;
            scripts.load_all(&pool).await
        };
        if let Err(e) = set_up.await {
            // The clients would go on reconnecting in the background: a
            // caller that tries again (a node waiting for Redis) opens new ones.
            let _ = pool.quit().await;
            return Err(e);
        }
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                redis_url: redis_url.to_string(),
                keys,
                scripts,
                clock,
                config,
                creates: create::coalescer(),
                reads: reads::read_group(),
            }),
        };
        create::start_coalescer(&store);
        reads::start_read_group(&store);
        Ok(store)
    }

    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The key names of this store's namespace.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The clock scripts read.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The Redis URL this store connects to (tools and tests that need a
    /// connection of their own open it with this).
    pub fn redis_url(&self) -> &str {
        &self.inner.redis_url
    }

    /// The connection pool, for the store's own modules.
    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Closes the store's connections (the last step of a node's shutdown);
    /// calls made afterwards fail.
    pub async fn close(&self) {
        let _ = self.inner.pool.quit().await;
    }

    /// A client whose commands fail at once while Redis is unreachable
    /// (see [`fail_fast`]); what the store's own reads use.
    fn client(&self) -> WithOptions<Client> {
        fail_fast_client(&self.inner.pool)
    }

    /// Deletes every key of the Redis database (`FLUSHALL`), not only this
    /// namespace's: for a server of one's own only (the benchmark's).
    pub async fn flush_database(&self) -> Result<()> {
        let _: () = self.inner.pool.next().flushall(false).await?;
        Ok(())
    }

    /// What the Redis server has used so far (`INFO memory cpu`).
    pub async fn server_usage(&self) -> Result<ServerUsage> {
        let text: String = self
            .inner
            .pool
            .next()
            .custom(fred::cmd!("INFO"), vec!["memory", "cpu"])
            .await?;
        let field = |name: &str| -> Result<&str> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| Error::Reply {
                    script: "INFO",
                    detail: format!("no {name}"),
                })
        };
        let number = |name: &str| -> Result<f64> {
            field(name)?.parse().map_err(|_| Error::Reply {
                script: "INFO",
                detail: format!("{name} is not a number"),
            })
        };
        Ok(ServerUsage {
            used_memory_bytes: field("used_memory")?.parse().map_err(|_| Error::Reply {
                script: "INFO",
                detail: "used_memory is not an integer".into(),
            })?,
            cpu_seconds: number("used_cpu_sys")? + number("used_cpu_user")?,
        })
    }

    /// Round trip to Redis: `PING`.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.inner.pool.next().ping(None).await?;
        Ok(())
    }

    /// Redis' `maxmemory-policy` (queues need `noeviction`).
    pub async fn maxmemory_policy(&self) -> Result<String> {
        let v: Vec<String> = self
            .inner
            .pool
            .next()
            .config_get("maxmemory-policy")
            .await?;
        Ok(v.get(1).cloned().unwrap_or_default())
    }

    /// The current time on the store's clock (ms): manual clock, else Redis `TIME`.
    pub async fn now_ms(&self) -> Result<i64> {
        if let Some(ms) = self.inner.clock.manual_now_ms() {
            return Ok(ms);
        }
        let t: Vec<i64> = self
            .client()
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        Ok(t.first().copied().unwrap_or(0) * 1000 + t.get(1).copied().unwrap_or(0) / 1000)
    }

    /// The lifecycle event stream's length and the time of its newest entry
    /// (ms, from the entry id), for metrics.
    pub async fn event_stream_info(&self) -> Result<(u64, Option<i64>)> {
        let key = self.inner.keys.events();
        let client = self.client();
        let len: u64 = client.xlen(&key).await?;
        let newest: fred::types::Value = client
            .custom(
                fred::cmd!("XREVRANGE"),
                vec![
                    key,
                    "+".to_string(),
                    "-".to_string(),
                    "COUNT".into(),
                    "1".into(),
                ],
            )
            .await?;
        let newest_ms = match newest {
            fred::types::Value::Array(entries) => {
                entries.into_iter().next().and_then(|e| match e {
                    fred::types::Value::Array(parts) => parts
                        .into_iter()
                        .next()
                        .and_then(|id| id.as_string())
                        .and_then(|id| id.split('-').next().and_then(|ms| ms.parse().ok())),
                    _ => None,
                })
            }
            _ => None,
        };
        Ok((len, newest_ms))
    }

    async fn call(&self, name: Name, args: Vec<String>) -> Result<fred::types::Value> {
        let inner = &self.inner;
        inner
            .scripts
            .call(
                &inner.pool,
                name,
                inner.keys.prefix(),
                args,
                inner.config.script_observer,
            )
            .await
    }

    fn now_arg(&self) -> String {
        self.inner.clock.script_arg()
    }
}

/// What a Redis server has used, from `INFO`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServerUsage {
    /// `used_memory`: bytes Redis has allocated now.
    pub used_memory_bytes: u64,
    /// `used_cpu_sys + used_cpu_user`: CPU seconds since the server started.
    pub cpu_seconds: f64,
}

/// Milliseconds of a duration as a script argument.
fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}
