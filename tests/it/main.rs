//! The one integration-test binary: every test starts its own redis-server on
//! a free port (see `support`), never a shared instance.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod api_auth;
mod api_client;
mod api_spec;
mod api_tasks;
mod api_workers;
mod claimers;
/// The binary's command line, compiled into the tests so the deploy files'
/// settings are checked against the flags the binary really has.
#[path = "../../src/bin/taskherd/cli.rs"]
#[allow(dead_code)]
mod cli;
mod deploy_files;
mod events;
mod faults;
mod feed;
mod graphql;
mod graphql_ws;
mod http_executor;
mod metrics;
mod ops;
mod ordering;
mod prometheus;
mod queue;
mod read_side;
mod reaper;
mod retries;
mod scripts;
mod smoke;
mod startup;
mod store_support;
mod support;
mod workers;
