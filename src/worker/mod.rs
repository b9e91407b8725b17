//! Workers: the [`Handler`] trait and its registry, the built-in HTTP
//! executor, demo agents, and the runtime that every node runs.
//!
//! A handler runs one attempt. It gets the task and a cancellation token; the
//! runtime also drops its future when the attempt must stop (lease lost, task
//! cancelled from any node, `timeoutMs` passed), so a handler that ignores the
//! token is stopped at its next `.await` all the same, and whatever it would
//! have returned is refused by the lease-token fence.

mod agent_refresher;
mod attempt;
pub mod demo;
mod dispatcher;
mod finisher;
pub mod http;
mod lease_keeper;
mod runtime;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use runtime::{
    DEFAULT_CONCURRENCY, DEFAULT_GRACE, DEFAULT_WORKER_LEASE, Runtime, WorkerConfig, WorkerStats,
};

use crate::store::ClaimedTask;
use crate::task::TaskMetrics;

/// What a handler sees of its task.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The leased task.
    pub task: ClaimedTask,
    /// Cancelled when the attempt must stop.
    pub cancel: CancellationToken,
}

/// A successful attempt's result.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Stored as the task's outputData.
    pub output_data: Option<serde_json::Value>,
    /// Stored as actualCost.
    pub actual_cost: Option<f64>,
    /// Stored as qualityScore.
    pub quality_score: Option<f64>,
    /// Stored as metrics (tokens count into the statistics).
    pub metrics: Option<TaskMetrics>,
}

/// A failed attempt.
#[derive(Clone, Debug)]
pub struct HandlerError {
    /// Stored as errorMessage.
    pub message: String,
    /// False: no further attempt (e.g. invalid input); true: retry with backoff.
    pub retryable: bool,
}

impl HandlerError {
    /// An error another attempt may fix.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error no further attempt can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Runs attempts of one agent's tasks.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Output, HandlerError>>;
}

/// A handler from an async closure.
pub struct HandlerFn<F>(pub F);

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Output, HandlerError>> + Send + 'static,
{
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Output, HandlerError>> {
        Box::pin((self.0)(ctx))
    }
}

/// Handlers by agent id, fixed when the runtime starts. Agents whose record
/// says HTTP are served by the HTTP executor without being registered here.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `agent_id` (replacing any earlier one).
    pub fn register(&mut self, agent_id: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(agent_id.into(), Arc::new(handler));
        self
    }

    /// Registers an async closure for `agent_id`.
    pub fn register_fn<F, Fut>(&mut self, agent_id: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Output, HandlerError>> + Send + 'static,
    {
        self.register(agent_id, HandlerFn(f))
    }

    /// The handler of an agent.
    pub fn get(&self, agent_id: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(agent_id).cloned()
    }

    /// Registered agent ids.
    pub fn agents(&self) -> impl Iterator<Item = &String> {
        self.handlers.keys()
    }
}
