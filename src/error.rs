//! The crate's error type: stable codes, mapped once at each boundary.
//!
//! Script refusals arrive as replies that start with a stable code (see
//! `lua/README.md`); `store::scripts` maps them here. Redis client failures
//! become a [`RedisError`] (a kind and a message), mapped once inside
//! `store`, so no client library type leaves it. Internal causes (Redis
//! errors, unexpected replies) are logged where handled and never shown to
//! clients verbatim.

use std::fmt;

/// Errors of the queue engine. `code()` is what clients and logs see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a documented rule (field, size, characters).
    #[error("{0}")]
    Validation(String),
    /// A batch was refused as a whole; each entry is (item index, problem).
    #[error("batch refused: {} item(s) invalid", .0.len())]
    BatchRejected(Vec<(usize, String)>),
    /// No task with this id (or not visible to the caller).
    #[error("task {0} not found")]
    TaskNotFound(String),
    /// No agent with this id.
    #[error("agent {0} not found")]
    AgentNotFound(String),
    /// The lease token does not match the task's current attempt.
    #[error("task {0}: lease token does not match the current attempt")]
    LeaseMismatch(String),
    /// The task is not being processed (cancelled, timed out, retrying).
    #[error("task {0} is not processing")]
    NotProcessing(String),
    /// The task already reached a terminal status.
    #[error("task {0} is already in a terminal status")]
    AlreadyTerminal(String),
    /// Manual retry asked of a task that is not FAILED, TIMEOUT or CANCELLED.
    #[error("task {0} cannot be retried from its current status")]
    NotRetryable(String),
    /// Start asked of a task that is not QUEUED and ready (it runs, ended, or
    /// waits for its run time or a retry backoff).
    #[error("task {0} is not ready to start (not QUEUED, or waiting for its run time)")]
    NotReady(String),
    /// The caller's role may not do this (the message says why).
    #[error("{0}")]
    Forbidden(String),
    /// The task was cancelled while its attempt ran: the worker must stop.
    #[error("task {0} was cancelled: stop working on it")]
    TaskCancelled(String),
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(RedisError),
    /// A script answered in a shape this code does not expect: a bug or a
    /// version mismatch between `lua/` and the binary.
    #[error("unexpected reply from {script}: {detail}")]
    Reply {
        /// Script name, e.g. `claim`.
        script: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// Configuration that cannot work (reported at start-up).
    #[error("configuration: {0}")]
    Config(String),
    /// Operating-system level failure (spawning redis-server, binding a port).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) | Error::BatchRejected(_) => "VALIDATION_ERROR",
            Error::TaskNotFound(_) => "TASK_NOT_FOUND",
            Error::AgentNotFound(_) => "AGENT_NOT_FOUND",
            Error::LeaseMismatch(_) => "LEASE_MISMATCH",
            Error::NotProcessing(_) => "NOT_PROCESSING",
            Error::AlreadyTerminal(_) => "ALREADY_TERMINAL",
            Error::NotRetryable(_) => "NOT_RETRYABLE",
            Error::NotReady(_) => "TASK_NOT_READY",
            Error::Forbidden(_) => "FORBIDDEN",
            Error::TaskCancelled(_) => "TASK_CANCELLED",
            Error::Redis(_) => "REDIS_UNAVAILABLE",
            Error::Reply { .. } => "INTERNAL",
            Error::Config(_) => "CONFIG",
            Error::Io(_) => "IO",
        }
    }

    /// Whether this is Redis not serving (yet): unreachable, a reset or
    /// refused connection, `LOADING` after a restart, ... Waiting is the
    /// answer, unlike a refused command or a bad configuration.
    pub fn is_redis_not_serving(&self) -> bool {
        matches!(self, Error::Redis(e) if e.kind() == RedisErrorKind::Unavailable)
    }

    /// Whether trying the same call again later may succeed: every Redis
    /// failure (an outage, a Redis still loading its data, out of memory).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Redis(_))
    }

    /// Redis refused a write because it is out of memory (`maxmemory` with
    /// `noeviction`); nothing was written.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Redis(e) if e.kind() == RedisErrorKind::OutOfMemory)
    }
}

impl Error {
    /// A copy for fanning one failure out to several waiters.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Redis(e) => Error::Redis(e.clone()),
            Error::Validation(m) => Error::Validation(m.clone()),
            other => Error::Reply {
                script: "batch",
                detail: other.to_string(),
            },
        }
    }
}

/// What went wrong with Redis, as far as callers need to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisErrorKind {
    /// Redis could not be reached, the connection dropped, a call timed
    /// out, or Redis cannot serve yet (`LOADING` its data set, `BUSY` with a
    /// script, a replica `MASTERDOWN`, `TRYAGAIN` or `CLUSTERDOWN` during a
    /// failover).
    Unavailable,
    /// Redis refused a write: out of memory (`maxmemory` reached under
    /// `noeviction`); nothing was written.
    OutOfMemory,
    /// Redis answered the command with another error reply (`WRONGTYPE`,
    /// an unknown function, ...).
    Refused,
    /// The client side failed: configuration, authentication, or a reply it
    /// could not read.
    Client,
}

impl RedisErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            RedisErrorKind::Unavailable => "unavailable",
            RedisErrorKind::OutOfMemory => "out of memory",
            RedisErrorKind::Refused => "refused",
            RedisErrorKind::Client => "client",
        }
    }
}

/// A Redis failure: its kind and the client's description (for logs; never
/// sent to clients). Built only by `store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisError {
    kind: RedisErrorKind,
    message: String,
}

impl RedisError {
    pub(crate) fn new(kind: RedisErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RedisErrorKind {
        self.kind
    }

    /// The description of the failure: Redis' reply text for error replies,
    /// else the client's.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for RedisError {}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
