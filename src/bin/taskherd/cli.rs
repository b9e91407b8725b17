//! Command line and environment. Every setting is a flag with an environment
//! variable (the seeds' `REDIS_URL` and `PORT`, the rest `TASKHERD_*`); all of
//! them show in `taskherd --help` / `taskherd serve --help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use taskherd::api::ApiConfig;
use taskherd::auth::{AuthConfig, Role};
use taskherd::maintenance::MaintenanceConfig;
use taskherd::store::StoreConfig;
use taskherd::task::Limits;
use taskherd::worker::WorkerConfig;
use taskherd::{maintenance, store, worker};

/// taskherd: a Redis-native distributed job queue for AI-agent tasks.
#[derive(Debug, Parser)]
#[command(name = "taskherd", version, about)]
pub(crate) struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, env = "TASKHERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a node: HTTP server, workers and maintenance.
    Serve(Box<ServeArgs>),
    /// Measure throughput, latency, Redis CPU and memory; prints JSON.
    #[cfg(feature = "bench")]
    Bench(taskherd::bench::BenchArgs),
    /// Mint a JWT from the configured secret (prints the token).
    Token(TokenArgs),
}

/// Token settings shared by `serve` and `token`.
#[derive(Clone, Args)]
pub(crate) struct AuthArgs {
    /// HS256 secret of API tokens, at least 32 bytes. When absent, `serve`
    /// makes one up for this run and logs an admin token (local use only).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// Required `iss` claim, if any.
    #[arg(long, env = "TASKHERD_JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
    /// Required `aud` claim, if any.
    #[arg(long, env = "TASKHERD_JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .finish()
    }
}

impl AuthArgs {
    /// The token settings; None when no secret is configured.
    pub(crate) fn auth_config(&self) -> Option<AuthConfig> {
        self.jwt_secret.as_ref().map(|secret| AuthConfig {
            secret: secret.as_bytes().to_vec(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        })
    }
}

/// Settings of `taskherd token`.
#[derive(Clone, Debug, Args)]
pub(crate) struct TokenArgs {
    /// Subject: the principal's id (owner of the tasks it creates).
    #[arg(long)]
    pub(crate) sub: String,
    /// Role.
    #[arg(long, value_parser = role_parser())]
    pub(crate) role: Role,
    /// Agent a worker token is bound to (required for --role worker).
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// Lifetime: a number with s, m, h or d (e.g. 30m, 12h, 90d).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    pub(crate) ttl: Duration,
    /// Secret, issuer and audience.
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// The role names a token may carry, as clap shows and checks them.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        .try_map(|s| Role::parse(&s).ok_or_else(|| format!("unknown role {s:?}")))
}

/// Parses `30s`, `15m`, `12h`, `90d` (or plain seconds).
pub(crate) fn parse_ttl(value: &str) -> Result<Duration, String> {
    let (digits, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| value.split_at(i))
        .unwrap_or((value, "s"));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 30m, 12h or 90d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{value:?} is not a duration like 30m, 12h or 90d"))?;
    Ok(Duration::from_secs(secs))
}

/// A default duration as the flag's milliseconds.
const fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Settings of `taskherd serve`. Defaults are the library's constants.
#[derive(Clone, Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub(crate) host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 4000)]
    pub(crate) port: u16,
    /// Redis to use (redis://host:port/db). When absent the node starts its
    /// own redis-server (AOF on) with its data under --data-dir.
    #[arg(long, env = "REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// Folder of the node-managed Redis' data.
    #[arg(long, env = "TASKHERD_DATA_DIR", default_value = ".taskherd")]
    pub(crate) data_dir: PathBuf,
    /// Key namespace (hash tag) of the queue in Redis.
    #[arg(long, env = "TASKHERD_NAMESPACE", default_value = store::DEFAULT_NAMESPACE)]
    pub(crate) namespace: String,
    /// Node id (default: host name, process id and a random suffix).
    #[arg(long, env = "TASKHERD_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// Attempts this node runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = worker::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
    /// Lease length in ms (heartbeats every third of it).
    #[arg(long, env = "TASKHERD_LEASE_MS", default_value_t = ms(worker::DEFAULT_WORKER_LEASE))]
    pub(crate) lease_ms: u64,
    /// How long in-flight tasks may finish on shutdown before being handed back (ms).
    #[arg(long, env = "TASKHERD_GRACE_MS", default_value_t = ms(worker::DEFAULT_GRACE))]
    pub(crate) grace_ms: u64,
    /// First retry delay in ms; doubles per retry.
    #[arg(long, env = "TASKHERD_BACKOFF_BASE_MS", default_value_t = ms(store::DEFAULT_BACKOFF_BASE))]
    pub(crate) backoff_base_ms: u64,
    /// Longest retry delay in ms.
    #[arg(long, env = "TASKHERD_BACKOFF_CAP_MS", default_value_t = ms(store::DEFAULT_BACKOFF_CAP))]
    pub(crate) backoff_cap_ms: u64,
    /// Days terminal tasks are kept before cleanup.
    #[arg(long, env = "TASKHERD_RETENTION_DAYS", default_value_t = store::DEFAULT_RETENTION_DAYS)]
    pub(crate) retention_days: u64,
    /// Seconds between cleanup runs.
    #[arg(long, env = "TASKHERD_CLEANUP_INTERVAL_S", default_value_t = maintenance::DEFAULT_CLEANUP_EVERY.as_secs())]
    pub(crate) cleanup_interval_s: u64,
    /// Seconds between audit calls (each checks 200 QUEUED and 200
    /// PROCESSING index entries against their records and repairs them).
    #[arg(long, env = "TASKHERD_AUDIT_INTERVAL_S", default_value_t = maintenance::DEFAULT_AUDIT_EVERY.as_secs())]
    pub(crate) audit_interval_s: u64,
    /// Largest inputData / outputData in bytes.
    #[arg(long, env = "TASKHERD_MAX_DATA_BYTES", default_value_t = taskherd::task::DEFAULT_MAX_DATA_BYTES)]
    pub(crate) max_data_bytes: usize,
    /// How long start-up waits for Redis to serve (unreachable, or loading
    /// its data after a restart) before the node gives up; it answers
    /// liveness meanwhile.
    #[arg(long, env = "TASKHERD_REDIS_WAIT_S", default_value_t = taskherd::node::DEFAULT_REDIS_WAIT.as_secs())]
    pub(crate) redis_wait_s: u64,
    /// Redis connections in the node's pool.
    #[arg(long, env = "TASKHERD_REDIS_POOL", default_value_t = store::DEFAULT_POOL_SIZE)]
    pub(crate) redis_pool: usize,
    /// Do not run workers on this node (API and maintenance only).
    #[arg(long, env = "TASKHERD_NO_WORKER")]
    pub(crate) no_worker: bool,
    /// Do not run maintenance (promoter, reaper, janitor) on this node.
    #[arg(long, env = "TASKHERD_NO_MAINTENANCE")]
    pub(crate) no_maintenance: bool,
    /// Do not register the demo agents `echo` and `sleep`.
    #[arg(long, env = "TASKHERD_NO_DEMO_AGENTS")]
    pub(crate) no_demo_agents: bool,
    /// Origins allowed to call the API from a browser (CORS), comma-separated.
    #[arg(long, env = "FRONTEND_URL", value_delimiter = ',')]
    pub(crate) frontend_url: Vec<String>,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, env = "TASKHERD_MAX_BODY_BYTES", default_value_t = taskherd::api::DEFAULT_MAX_BODY_BYTES)]
    pub(crate) max_body_bytes: usize,
    /// Requests per second per token subject, shared by all nodes (0: off).
    #[arg(long, env = "TASKHERD_RATE_LIMIT", default_value_t = taskherd::api::DEFAULT_RATE_LIMIT_PER_S)]
    pub(crate) rate_limit: u32,
    /// Socket.IO connections one node holds (more are refused); GraphQL
    /// WebSocket connections are limited to as many again.
    #[arg(long, env = "TASKHERD_WS_MAX_CONNECTIONS", default_value_t = taskherd::api::ws::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) ws_max_connections: usize,
    /// Subscriptions one Socket.IO or GraphQL WebSocket connection may
    /// hold.
    #[arg(long, env = "TASKHERD_WS_MAX_SUBSCRIPTIONS", default_value_t = taskherd::api::ws::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub(crate) ws_max_subscriptions: usize,
    /// Socket.IO messages buffered per client; a client this far behind is
    /// cut off.
    #[arg(long, env = "TASKHERD_WS_CLIENT_BUFFER", default_value_t = taskherd::api::ws::DEFAULT_CLIENT_BUFFER)]
    pub(crate) ws_client_buffer: usize,
    /// Whether GraphQL answers introspection (`__schema`, `__type`; GraphiQL
    /// needs it): `false` switches it off.
    #[arg(long, env = "TASKHERD_GRAPHQL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) graphql_introspection: bool,
    /// Token settings.
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

impl ServeArgs {
    /// Refuses settings that cannot work, with a message naming the flag.
    pub(crate) fn validate(&self) -> taskherd::Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(taskherd::Error::Config(what.to_string()))
            }
        };
        check(
            (1..=10_000).contains(&self.concurrency),
            "--concurrency must be 1 to 10000",
        )?;
        // TLS to Redis is not built in yet: refuse rather than talk plain text
        // to a TLS port.
        check(
            !self
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://")),
            "REDIS_URL: rediss:// (TLS) is not supported yet; use a TLS tunnel (e.g. stunnel) to a redis:// address",
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
            (1..=86_400).contains(&self.audit_interval_s),
            "--audit-interval-s must be 1 to 86400",
        )?;
        check(
            (1..=64).contains(&self.redis_pool),
            "--redis-pool must be 1 to 64",
        )?;
        check(
            (1024..=64 * 1024 * 1024).contains(&self.max_data_bytes),
            "--max-data-bytes must be 1024 to 67108864",
        )?;
        check(
            (1024..=256 * 1024 * 1024).contains(&self.max_body_bytes),
            "--max-body-bytes must be 1024 to 268435456",
        )?;
        check(
            (1..=1_000_000).contains(&self.ws_max_connections),
            "--ws-max-connections must be 1 to 1000000",
        )?;
        check(
            (1..=10_000).contains(&self.ws_max_subscriptions),
            "--ws-max-subscriptions must be 1 to 10000",
        )?;
        check(
            (taskherd::api::ws::MIN_CLIENT_BUFFER..=1_000_000).contains(&self.ws_client_buffer),
            &format!(
                "--ws-client-buffer must be {} to 1000000",
                taskherd::api::ws::MIN_CLIENT_BUFFER
            ),
        )?;
        for origin in self.frontend_url.iter().filter(|o| !o.trim().is_empty()) {
            check(
                origin.starts_with("http://") || origin.starts_with("https://"),
                "FRONTEND_URL must be http(s) origins, comma-separated",
            )?;
        }
        if let Some(auth) = self.auth.auth_config() {
            taskherd::auth::Auth::new(auth)?;
        }
        Ok(())
    }

    /// HTTP settings.
    pub(crate) fn api_config(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: self.max_body_bytes,
            rate_limit_per_s: self.rate_limit,
            cors_origins: self
                .frontend_url
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            feed: taskherd::api::ws::FeedConfig {
                max_connections: self.ws_max_connections,
                max_subscriptions: self.ws_max_subscriptions,
                client_buffer: self.ws_client_buffer,
                ..Default::default()
            },
            graphql: taskherd::api::graphql::GraphqlConfig {
                introspection: self.graphql_introspection,
            },
        }
    }

    /// Store settings.
    pub(crate) fn store_config(&self) -> StoreConfig {
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
            ..StoreConfig::default()
        }
    }

    /// Worker settings.
    pub(crate) fn worker_config(&self, node_id: &str) -> WorkerConfig {
        WorkerConfig {
            node_id: node_id.to_string(),
            concurrency: self.concurrency.max(1),
            lease: Duration::from_millis(self.lease_ms.max(100)),
            grace: Duration::from_millis(self.grace_ms),
            ..WorkerConfig::default()
        }
    }

    /// Maintenance settings.
    pub(crate) fn maintenance_config(&self) -> MaintenanceConfig {
        MaintenanceConfig {
            cleanup_every: Duration::from_secs(self.cleanup_interval_s.max(1)),
            audit_every: Duration::from_secs(self.audit_interval_s.max(1)),
            ..MaintenanceConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut all = vec!["taskherd", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(s) => *s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused_at_start() {
        assert!(serve(&[]).validate().is_ok());
        for bad in [
            &["--redis-url", "rediss://cache.example:6380"][..],
            &["--frontend-url", "app.example"],
            &["--jwt-secret", "short"],
            &["--concurrency", "0"],
        ] {
            assert!(serve(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_frontend_url_entries_are_ignored() {
        let args = serve(&["--frontend-url", ",http://a.example/, "]);
        assert!(args.validate().is_ok());
        assert_eq!(args.api_config().cors_origins, vec!["http://a.example"]);
    }

    #[test]
    fn ttls_take_units() {
        assert_eq!(parse_ttl("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
