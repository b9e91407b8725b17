//! taskherd: a Redis-native distributed job queue for AI-agent tasks.
//!
//! Map of the crate (dependencies point downwards only):
//! - [`node`]: `run(config, listener, shutdown)` wires one node together and
//!   states the shutdown order.
//! - [`api`]: the HTTP server: the REST and GraphQL adapters and the
//!   Socket.IO feed (`api::ws`, fed by [`events`]) over [`queue`], on one
//!   port.
//! - [`queue`]: the service every API calls: each operation takes the caller,
//!   applies the access policy ([`auth::policy`]) and calls the store.
//! - [`events`]: the node's event hub: the lifecycle stream read once per
//!   node ([`store::EventReader`]) and fanned out to subscribers.
//! - [`worker`]: handler trait and registry, HTTP executor, demo agents, and
//!   the runtime that claims, runs, heartbeats and finishes tasks.
//! - [`maintenance`]: promoter, reaper and janitor loops, safe on every node.
//! - [`nodes`]: the registry of live nodes and their worker statistics.
//! - [`store`]: the only module that knows Redis; one Lua script per state
//!   change (`lua/`), one typed wrapper each, plus the read side.
//! - [`auth`]: tokens (verify, mint, cache) and the one access policy.
//! - [`ids`]: task, agent and worker ids and lease tokens, parsed once.
//! - [`task`], [`clock`], [`error`], [`shutdown`]: the domain and its plumbing.
//! - [`local_redis`]: starts a private `redis-server` when none is configured.
//! - `bench` (feature `bench`): the benchmark behind `taskherd bench`.
//!
//! The binary (`src/bin/taskherd/`) holds the command line: flags,
//! environment variables and their defaults, mapped onto the configs here.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod clock;
pub mod error;
pub mod events;
pub mod ids;
pub mod local_redis;
pub mod maintenance;
pub mod metrics;
pub mod node;
pub mod nodes;
pub mod queue;
pub mod shutdown;
pub mod signals;
pub mod store;
pub mod task;
pub mod worker;

pub use error::{Error, Result};
