//! The `taskherd` binary: parse config, init logging, run a subcommand.

use clap::Parser;
use taskherd::auth::{Auth, AuthConfig, Role};
mod cli;

use cli::{Cli, Command, LogFormat, ServeArgs, TokenArgs};
use taskherd::local_redis::LocalRedis;
use taskherd::node::{self, NodeConfig, default_node_id};
use taskherd::worker::{Registry, demo};
use tracing_subscriber::EnvFilter;

// mimalloc instead of the system allocator: under HTTP load glibc malloc and
// its lock took about a tenth of the node's CPU (`perf`, README "HTTP benchmark").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    // fred logs every dropped connection at WARN; the node logs what matters.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,fred=error"));
    // Logs go to stderr: stdout carries `bench` JSON and `token` output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        #[cfg(feature = "bench")]
        Command::Bench(args) => taskherd::bench::run(args).await,
        Command::Token(args) => token(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("taskherd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `taskherd token`: prints a token signed with the configured secret.
fn token(args: TokenArgs) -> taskherd::Result<()> {
    let config = args.auth.auth_config().ok_or_else(|| {
        taskherd::Error::Config("set JWT_SECRET (or --jwt-secret) to mint tokens".into())
    })?;
    let auth = Auth::new(config)?;
    println!(
        "{}",
        auth.mint(&args.sub, args.role, args.agent.as_deref(), args.ttl)?
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> taskherd::Result<()> {
    args.validate()?;
    let auth = match args.auth.auth_config() {
        Some(config) => config,
        None => {
            let config = AuthConfig {
                issuer: args.auth.jwt_issuer.clone(),
                audience: args.auth.jwt_audience.clone(),
                ..AuthConfig::random()
            };
            let admin = Auth::new(config.clone())?.mint(
                "local-admin",
                Role::Admin,
                None,
                std::time::Duration::from_secs(86_400),
            )?;
            tracing::warn!(
                "no JWT_SECRET configured: using a random secret for this run only (local use; \
                 set JWT_SECRET for anything else). Admin token, valid 24 h: {admin}"
            );
            config
        }
    };
    // A node-managed Redis when none is configured; stopped cleanly at exit.
    let mut local = None;
    let redis_url = match &args.redis_url {
        Some(url) => url.clone(),
        None => {
            let redis = LocalRedis::start(&args.data_dir.join("redis"))?;
            tracing::info!(url = %redis.url(), dir = %redis.dir().display(), "started a local redis-server (AOF on)");
            let url = redis.url();
            local = Some(redis);
            url
        }
    };
    let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
    let mut registry = Registry::new();
    if !args.no_demo_agents {
        demo::register(&mut registry);
    }
    let config = NodeConfig {
        redis_url,
        redis_pool: args.redis_pool,
        store: args.store_config(),
        worker: (!args.no_worker).then(|| args.worker_config(&node_id)),
        maintenance: (!args.no_maintenance).then(|| args.maintenance_config()),
        clock: taskherd::clock::Clock::redis(),
        api: args.api_config(),
        auth,
        redis_wait: std::time::Duration::from_secs(args.redis_wait_s),
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let (trigger, shutdown) = taskherd::shutdown::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.trigger();
    });
    let result = node::run(config, registry, listener, shutdown, |_| {}).await;
    if let Some(mut redis) = local {
        redis.stop();
    }
    result
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
