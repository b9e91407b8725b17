//! Who is calling ([`token`]: verify, mint, cache) and what they may do
//! ([`policy`]: one `authorize(&Principal, Action)` for REST, GraphQL and the
//! Socket.IO feed).
//!
//! Roles (claim `role`):
//! - `admin`: everything, every owner's tasks;
//! - `user`: creates tasks and sees only the tasks it owns (`sub` is the
//!   owner); someone else's task answers "not found";
//! - `worker`: bound to one agent (claim `agent`): claims, starts,
//!   heartbeats, completes and fails that agent's tasks, and reads them;
//! - `metrics`: for scrapers: reads `/metrics`, queue status, statistics,
//!   agents and nodes; no tasks.

pub mod policy;
pub mod token;

use serde::{Deserialize, Serialize};

pub use policy::{Action, Denied, Room, Scope, TaskRef, authorize};
pub use token::{
    Audience, Auth, AuthConfig, AuthError, Claims, LEEWAY_S, MAX_CACHED_TOKENS, MAX_TTL,
    MIN_SECRET_BYTES,
};

/// A principal's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every owner.
    Admin,
    /// Runs one agent's tasks.
    Worker,
    /// Creates and follows its own tasks.
    User,
    /// Scrapes metrics and reads the queue's aggregate views; no tasks.
    Metrics,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Worker, Role::User, Role::Metrics];

    /// Parses a claim value.
    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::User => "user",
            Role::Metrics => "metrics",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Token subject; owns the tasks it creates.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Bound agent (workers only).
    pub agent: Option<String>,
}

impl Principal {
    /// The owner a task created by this principal gets.
    pub fn owner_id(&self) -> &str {
        &self.sub
    }
}
