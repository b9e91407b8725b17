//! The benchmark behind `taskherd bench` (filled in below).

use clap::Args;

/// Settings of `taskherd bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Redis to use (default: a private redis-server started for the run).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
}

/// Runs the benchmark and prints JSON.
pub async fn run(_args: BenchArgs) -> crate::Result<()> {
    Err(crate::Error::Config("bench: not built yet".into()))
}
