//! Prometheus metrics: what this node did, plus the shared queue's shape.
//!
//! Two kinds of series, so that sums over nodes stay right:
//! - **per node** (counters, histograms, worker gauges): each node counts the
//!   state changes its own script calls made (creates through its API, claims
//!   by its workers or its external-worker endpoint, completions, the
//!   reaper passes it ran ...). Summing over nodes gives the cluster total.
//! - **shared** (`taskherd_queue_*`, `taskherd_event_stream_length`): the
//!   queue as read from Redis at scrape time; every node exports the same
//!   value. Aggregate them with `max` over nodes, never `sum` (the recording
//!   rules in `prometheus/` do).
//!
//! Label values are bounded: agent, task type, priority, status, outcome,
//! script, operation, method, status code. Never a task id or a user.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{AttemptEnd, AttemptOutcome, ClaimedTask, Completion, Expiry};
use crate::task::Task;

/// Metric names (one place, so docs, rules and tests agree).
pub mod names {
    /// Counter: tasks created (idempotent repeats not counted).
    pub const TASKS_CREATED: &str = "taskherd_tasks_created_total";
    /// Counter: attempts started (claims).
    pub const TASKS_STARTED: &str = "taskherd_tasks_started_total";
    /// Counter: tasks completed.
    pub const TASKS_COMPLETED: &str = "taskherd_tasks_completed_total";
    /// Counter: tasks that ended FAILED.
    pub const TASKS_FAILED: &str = "taskherd_tasks_failed_total";
    /// Counter: attempts retried (automatic after a failed attempt, or manual).
    pub const TASKS_RETRIED: &str = "taskherd_tasks_retried_total";
    /// Counter: tasks that ended TIMEOUT.
    pub const TASKS_TIMED_OUT: &str = "taskherd_tasks_timed_out_total";
    /// Counter: tasks cancelled.
    pub const TASKS_CANCELLED: &str = "taskherd_tasks_cancelled_total";
    /// Histogram: attempt duration.
    pub const ATTEMPT_DURATION: &str = "taskherd_attempt_duration_seconds";
    /// Histogram: created -> first start.
    pub const QUEUE_WAIT: &str = "taskherd_queue_wait_seconds";
    /// Counter: attempts ended by the reaper (lease expired or deadline passed).
    pub const LEASE_EXPIRIES: &str = "taskherd_lease_expiries_total";
    /// Histogram: actualCost per completed task (`_sum` is the total cost).
    pub const TASK_COST: &str = "taskherd_task_cost";
    /// Counter: model tokens reported by completed tasks.
    pub const TOKENS: &str = "taskherd_tokens_total";
    /// Gauge: attempts running on this node.
    pub const WORKER_IN_FLIGHT: &str = "taskherd_worker_in_flight";
    /// Gauge: this node's worker slots.
    pub const WORKER_SLOTS: &str = "taskherd_worker_slots";
    /// Counter: HTTP requests.
    pub const HTTP_REQUESTS: &str = "taskherd_http_requests_total";
    /// Histogram: HTTP request duration.
    pub const HTTP_DURATION: &str = "taskherd_http_request_duration_seconds";
    /// Counter: GraphQL operations.
    pub const GRAPHQL_OPERATIONS: &str = "taskherd_graphql_operations_total";
    /// Histogram: GraphQL query and mutation duration.
    pub const GRAPHQL_DURATION: &str = "taskherd_graphql_operation_duration_seconds";
    /// Gauge: GraphQL subscriptions open on this node, by field.
    pub const GRAPHQL_SUBSCRIPTIONS: &str = "taskherd_graphql_subscriptions";
    /// Gauge: GraphQL WebSocket connections open on this node.
    pub const GRAPHQL_CONNECTIONS: &str = "taskherd_graphql_connections";
    /// Gauge: open WebSocket connections.
    pub const WS_CONNECTIONS: &str = "taskherd_websocket_connections";
    /// Counter: WebSocket messages.
    pub const WS_MESSAGES: &str = "taskherd_websocket_messages_total";
    /// Gauge: Socket.IO subscriptions on this node by room kind.
    pub const WS_SUBSCRIPTIONS: &str = "taskherd_websocket_subscriptions";
    /// Counter: Socket.IO events sent, by event name.
    pub const WS_EVENTS_SENT: &str = "taskherd_websocket_events_sent_total";
    /// Counter: Socket.IO events clients did not get (they were told to
    /// resync or cut off), by reason.
    pub const WS_EVENTS_DROPPED: &str = "taskherd_websocket_events_dropped_total";
    /// Counter: Socket.IO clients cut off for falling behind.
    pub const WS_SLOW_CLIENTS: &str = "taskherd_websocket_slow_clients_total";
    /// Counter: Socket.IO connections refused by a limit.
    pub const WS_REFUSED: &str = "taskherd_websocket_refused_total";
    /// Counter: script calls.
    pub const SCRIPT_CALLS: &str = "taskherd_redis_script_calls_total";
    /// Counter: script calls that failed (Redis error, not a refusal).
    pub const SCRIPT_ERRORS: &str = "taskherd_redis_script_errors_total";
    /// Histogram: script call duration (round trip).
    pub const SCRIPT_DURATION: &str = "taskherd_redis_script_duration_seconds";
    /// Gauge (shared): live tasks per agent and status.
    pub const QUEUE_TASKS: &str = "taskherd_queue_tasks";
    /// Gauge (shared): ready tasks per agent and priority.
    pub const QUEUE_READY: &str = "taskherd_queue_ready_tasks";
    /// Gauge (shared): age of each agent's oldest ready task.
    pub const QUEUE_OLDEST: &str = "taskherd_queue_oldest_waiting_seconds";
    /// Gauge (shared): entries in the lifecycle event stream.
    pub const STREAM_LENGTH: &str = "taskherd_event_stream_length";
    /// Gauge (shared): seconds since the newest lifecycle event.
    pub const STREAM_LAG: &str = "taskherd_event_stream_lag_seconds";
    /// Gauge: 1, with this node's version and id.
    pub const NODE_INFO: &str = "taskherd_node_info";
    /// Gauge (shared): QUEUED tasks waiting for runAt or a retry backoff.
    pub const QUEUE_DELAYED: &str = "taskherd_queue_delayed_tasks";
    /// Gauge: 1 when this node's last read of the shared queue worked.
    pub const QUEUE_READ_OK: &str = "taskherd_queue_read_ok";

    /// Every metric this crate exports (the README's table lists them too).
    pub const ALL: [&str; 38] = [
        TASKS_CREATED,
        TASKS_STARTED,
        TASKS_COMPLETED,
        TASKS_FAILED,
        TASKS_RETRIED,
        TASKS_TIMED_OUT,
        TASKS_CANCELLED,
        ATTEMPT_DURATION,
        QUEUE_WAIT,
        LEASE_EXPIRIES,
        TASK_COST,
        TOKENS,
        WORKER_IN_FLIGHT,
        WORKER_SLOTS,
        HTTP_REQUESTS,
        HTTP_DURATION,
        GRAPHQL_OPERATIONS,
        GRAPHQL_DURATION,
        GRAPHQL_SUBSCRIPTIONS,
        GRAPHQL_CONNECTIONS,
        WS_CONNECTIONS,
        WS_MESSAGES,
        WS_SUBSCRIPTIONS,
        WS_EVENTS_SENT,
        WS_EVENTS_DROPPED,
        WS_SLOW_CLIENTS,
        WS_REFUSED,
        SCRIPT_CALLS,
        SCRIPT_ERRORS,
        SCRIPT_DURATION,
        QUEUE_TASKS,
        QUEUE_READY,
        QUEUE_OLDEST,
        STREAM_LENGTH,
        STREAM_LAG,
        NODE_INFO,
        QUEUE_DELAYED,
        QUEUE_READ_OK,
    ];
}

use names::*;

const TASK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const COST_BUCKETS: &[f64] = &[0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 100.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (None when
/// another recorder was installed first, e.g. by an embedding program).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ATTEMPT_DURATION.into()), TASK_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), TASK_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), FAST_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GRAPHQL_DURATION.into()), FAST_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(SCRIPT_DURATION.into()), FAST_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TASK_COST.into()), COST_BUCKETS)
                });
            let handle = builder.and_then(|b| b.install_recorder()).ok();
            if handle.is_some() {
                describe();
            } else {
                tracing::warn!("a metrics recorder was already installed: /metrics stays empty");
            }
            handle
        })
        .as_ref()
}

fn describe() {
    describe_counter!(TASKS_CREATED, "Tasks created (agent, task_type, priority)");
    describe_counter!(
        TASKS_STARTED,
        "Attempts started by a claim or a start (agent, task_type, priority)"
    );
    describe_counter!(TASKS_COMPLETED, "Tasks completed (agent, task_type)");
    describe_counter!(TASKS_FAILED, "Tasks that ended FAILED (agent, task_type)");
    describe_counter!(
        TASKS_RETRIED,
        "Attempts put back for another try (agent, task_type, kind=auto|manual)"
    );
    describe_counter!(
        TASKS_TIMED_OUT,
        "Tasks that ended TIMEOUT (agent, task_type)"
    );
    describe_counter!(TASKS_CANCELLED, "Tasks cancelled (agent, task_type)");
    describe_histogram!(
        ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Attempt duration from start to its end (agent, task_type, outcome=completed|failed|timeout)"
    );
    describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Wait from creation to the first start (agent, priority); scheduled tasks count from creation"
    );
    describe_counter!(
        LEASE_EXPIRIES,
        "Attempts ended by the reaper (agent, cause=lease|deadline)"
    );
    describe_histogram!(
        TASK_COST,
        "actualCost per completed task that reported one (agent); _sum is the total cost"
    );
    describe_counter!(
        TOKENS,
        "Model tokens of completed tasks (agent, direction=in|out)"
    );
    describe_gauge!(WORKER_IN_FLIGHT, "Attempts running on this node");
    describe_gauge!(WORKER_SLOTS, "Worker slots (concurrency) of this node");
    describe_counter!(HTTP_REQUESTS, "HTTP requests (operation, method, status)");
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request duration (operation, method)"
    );
    describe_counter!(
        GRAPHQL_OPERATIONS,
        "GraphQL operations (type=query|mutation|subscription, outcome=ok|error|internal: error = refused for the caller's input, rights or the task's state, internal = failed by the node or Redis); a subscription counts when it opens or is refused"
    );
    describe_histogram!(
        GRAPHQL_DURATION,
        metrics::Unit::Seconds,
        "GraphQL query and mutation duration, parse to response (type)"
    );
    describe_gauge!(
        GRAPHQL_SUBSCRIPTIONS,
        "GraphQL subscriptions open on this node (field=aiTaskStatusChanged|taskQueueUpdated)"
    );
    describe_gauge!(
        GRAPHQL_CONNECTIONS,
        "GraphQL WebSocket connections open on this node"
    );
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections");
    describe_counter!(
        WS_MESSAGES,
        "Socket.IO messages (direction=in: client messages, out: events sent)"
    );
    describe_gauge!(
        WS_SUBSCRIPTIONS,
        "Socket.IO subscriptions (room=task|agent|queue|tasks)"
    );
    describe_counter!(WS_EVENTS_SENT, "Socket.IO events sent (event)");
    describe_counter!(
        WS_EVENTS_DROPPED,
        "Feed events clients missed and were told to resync for, or lost when cut off (reason=lagged|trimmed|slow: Socket.IO; graphql: GraphQL subscriptions cut off for falling behind, one each)"
    );
    describe_counter!(
        WS_SLOW_CLIENTS,
        "Socket.IO clients cut off because their buffer was full"
    );
    describe_counter!(
        WS_REFUSED,
        "Socket.IO connections refused by a limit (limit=connections)"
    );
    describe_counter!(SCRIPT_CALLS, "Lua script calls (script)");
    describe_counter!(
        SCRIPT_ERRORS,
        "Lua script calls that failed in Redis, not refusals (script)"
    );
    describe_histogram!(
        SCRIPT_DURATION,
        metrics::Unit::Seconds,
        "Lua script call round trip (script)"
    );
    describe_gauge!(
        QUEUE_TASKS,
        "Shared: live tasks (agent, status); same on every node, aggregate with max"
    );
    describe_gauge!(
        QUEUE_READY,
        "Shared: ready tasks (agent, priority); same on every node, aggregate with max"
    );
    describe_gauge!(
        QUEUE_OLDEST,
        "Shared: age of the oldest ready task (agent); aggregate with max"
    );
    describe_gauge!(
        STREAM_LENGTH,
        "Shared: entries in the lifecycle event stream; aggregate with max"
    );
    describe_gauge!(
        STREAM_LAG,
        "Shared: seconds since the newest lifecycle event was written; aggregate with min"
    );
    describe_gauge!(NODE_INFO, "1 per node (version, node)");
    describe_gauge!(
        QUEUE_DELAYED,
        "Shared: QUEUED tasks waiting for runAt or a retry backoff; aggregate with max"
    );
    describe_gauge!(
        QUEUE_READ_OK,
        "1 when this node read the shared queue gauges from Redis at the last scrape, else 0 (they are then stale)"
    );
    // Error counters start at zero, so rate() and absent() work from the start.
    for name in crate::store::script_names() {
        counter!(SCRIPT_ERRORS, "script" => name).absolute(0);
    }
    // Series of layers that count later (GraphQL, WebSocket) exist from the start.
    for kind in ["query", "mutation", "subscription"] {
        for outcome in ["ok", "error", "internal"] {
            counter!(GRAPHQL_OPERATIONS, "type" => kind, "outcome" => outcome).absolute(0);
        }
    }
    for field in ["aiTaskStatusChanged", "taskQueueUpdated"] {
        gauge!(GRAPHQL_SUBSCRIPTIONS, "field" => field).set(0.0);
    }
    gauge!(GRAPHQL_CONNECTIONS).set(0.0);
    gauge!(WS_CONNECTIONS).set(0.0);
    counter!(WS_MESSAGES, "direction" => "in").absolute(0);
    counter!(WS_MESSAGES, "direction" => "out").absolute(0);
    for room in ["task", "agent", "queue", "tasks"] {
        gauge!(WS_SUBSCRIPTIONS, "room" => room).set(0.0);
    }
    for reason in ["lagged", "trimmed", "slow", "graphql"] {
        counter!(WS_EVENTS_DROPPED, "reason" => reason).absolute(0);
    }
    for event in [
        "task:status",
        "task:failed",
        "agent:task:update",
        "queue:update",
        "task:error",
        "queue:error",
        "resync",
        "server:closing",
    ] {
        counter!(WS_EVENTS_SENT, "event" => event).absolute(0);
    }
    counter!(WS_SLOW_CLIENTS).absolute(0);
    counter!(WS_REFUSED, "limit" => "connections").absolute(0);
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A created task (idempotent repeats are not counted).
pub(crate) fn task_created(task: &Task) {
    counter!(TASKS_CREATED, "agent" => task.agent_id.clone(), "task_type" => task.task_type.clone(),
        "priority" => task.priority.as_str())
    .increment(1);
}

/// A started attempt; first attempts also record their wait in the queue.
pub(crate) fn task_started(task: &ClaimedTask) {
    let priority = task.priority.as_str();
    counter!(TASKS_STARTED, "agent" => task.agent_id.clone(), "task_type" => task.task_type.clone(),
        "priority" => priority)
    .increment(1);
    if let Some(ms) = task.queue_wait_ms {
        histogram!(QUEUE_WAIT, "agent" => task.agent_id.clone(), "priority" => priority)
            .record(secs(ms.max(0) as u64));
    }
}

/// An attempt that ended without success (fail, reap, timeout-stale); the
/// reaper's carry their expiry cause.
pub(crate) fn attempt_ended(end: &AttemptEnd) {
    let (a, t) = (end.agent_id.clone(), end.task_type.clone());
    let final_outcome = match end.outcome {
        AttemptOutcome::Retrying => {
            counter!(TASKS_RETRIED, "agent" => a.clone(), "task_type" => t.clone(), "kind" => "auto")
                .increment(1);
            if end.expiry == Some(Expiry::Deadline) {
                "timeout"
            } else {
                "failed"
            }
        }
        AttemptOutcome::TimedOut => {
            counter!(TASKS_TIMED_OUT, "agent" => a.clone(), "task_type" => t.clone()).increment(1);
            "timeout"
        }
        AttemptOutcome::Failed => {
            counter!(TASKS_FAILED, "agent" => a.clone(), "task_type" => t.clone()).increment(1);
            "failed"
        }
        AttemptOutcome::Completed => "completed",
    };
    histogram!(ATTEMPT_DURATION, "agent" => a.clone(), "task_type" => t, "outcome" => final_outcome)
        .record(secs(end.duration_ms));
    if let Some(expiry) = end.expiry {
        counter!(LEASE_EXPIRIES, "agent" => a, "cause" => expiry.as_str()).increment(1);
    }
}

/// A completed attempt, with what its handler reported.
pub(crate) fn attempt_completed(end: &AttemptEnd, completion: &Completion) {
    let a = end.agent_id.clone();
    counter!(TASKS_COMPLETED, "agent" => a.clone(), "task_type" => end.task_type.clone())
        .increment(1);
    histogram!(ATTEMPT_DURATION, "agent" => a.clone(), "task_type" => end.task_type.clone(),
        "outcome" => "completed")
    .record(secs(end.duration_ms));
    if let Some(c) = completion.actual_cost.filter(|c| c.is_finite()) {
        histogram!(TASK_COST, "agent" => a.clone()).record(c);
    }
    let reported = completion.metrics.as_ref();
    if let Some(n) = reported.and_then(|m| m.tokens_in) {
        counter!(TOKENS, "agent" => a.clone(), "direction" => "in").increment(n);
    }
    if let Some(n) = reported.and_then(|m| m.tokens_out) {
        counter!(TOKENS, "agent" => a, "direction" => "out").increment(n);
    }
}

/// A cancelled task.
pub(crate) fn task_cancelled(task: &Task) {
    counter!(TASKS_CANCELLED, "agent" => task.agent_id.clone(), "task_type" => task.task_type.clone())
        .increment(1);
}

/// A manual retry.
pub(crate) fn task_retried_manually(task: &Task) {
    counter!(TASKS_RETRIED, "agent" => task.agent_id.clone(), "task_type" => task.task_type.clone(),
        "kind" => "manual")
    .increment(1);
}

/// One script call (the store's observer: see [`crate::store::StoreConfig`]).
pub fn script_call(script: &'static str, took: Duration, redis_error: bool) {
    counter!(SCRIPT_CALLS, "script" => script).increment(1);
    if redis_error {
        counter!(SCRIPT_ERRORS, "script" => script).increment(1);
    }
    histogram!(SCRIPT_DURATION, "script" => script).record(took.as_secs_f64());
}

/// The shared queue's gauges as read at a scrape: `status` is None when the
/// read failed (the gauges keep their values and `QUEUE_READ_OK` says 0);
/// `stream` is the event stream's length and newest entry time.
pub(crate) fn shared_queue(
    status: Option<&crate::store::QueueStatus>,
    stream: Option<(u64, Option<i64>)>,
) {
    use crate::task::{Priority, TaskStatus};
    gauge!(QUEUE_READ_OK).set(if status.is_some() { 1.0 } else { 0.0 });
    let Some(status) = status else {
        return;
    };
    gauge!(QUEUE_DELAYED).set(status.delayed_tasks as f64);
    for agent in &status.agents {
        let a = agent.agent_id.clone();
        for st in TaskStatus::ALL {
            let n = agent.by_status.get(st.as_str()).copied().unwrap_or(0);
            gauge!(QUEUE_TASKS, "agent" => a.clone(), "status" => st.as_str()).set(n as f64);
        }
        for p in Priority::ALL {
            let n = agent
                .ready_by_priority
                .get(p.as_str())
                .copied()
                .unwrap_or(0);
            gauge!(QUEUE_READY, "agent" => a.clone(), "priority" => p.as_str()).set(n as f64);
        }
        let oldest = agent.oldest_waiting_ms.unwrap_or(0).max(0) as f64 / 1000.0;
        gauge!(QUEUE_OLDEST, "agent" => a).set(oldest);
    }
    if let Some((len, newest)) = stream {
        gauge!(STREAM_LENGTH).set(len as f64);
        let lag = newest.map_or(0, |ms| (status.timestamp - ms).max(0));
        gauge!(STREAM_LAG).set(lag as f64 / 1000.0);
    }
}

/// One HTTP request.
pub(crate) fn http_request(operation: &'static str, method: &str, status: u16, took: Duration) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "OTHER",
    };
    counter!(HTTP_REQUESTS, "operation" => operation, "method" => method,
        "status" => status.to_string())
    .increment(1);
    histogram!(HTTP_DURATION, "operation" => operation, "method" => method)
        .record(took.as_secs_f64());
}

/// The Socket.IO feed's connections and subscriptions (by room kind).
pub(crate) fn feed_gauges(connections: usize, kinds: &[&'static str], counts: &[usize]) {
    gauge!(WS_CONNECTIONS).set(connections as f64);
    for (kind, n) in kinds.iter().zip(counts) {
        gauge!(WS_SUBSCRIPTIONS, "room" => *kind).set(*n as f64);
    }
}

/// A Socket.IO event sent.
pub(crate) fn feed_sent(event: &'static str) {
    counter!(WS_EVENTS_SENT, "event" => event).increment(1);
    counter!(WS_MESSAGES, "direction" => "out").increment(1);
}

/// A Socket.IO client message received.
pub(crate) fn feed_received() {
    counter!(WS_MESSAGES, "direction" => "in").increment(1);
}

/// Events a Socket.IO client did not get (`lagged`, `trimmed`, `slow`).
pub(crate) fn feed_dropped(reason: &'static str) {
    counter!(WS_EVENTS_DROPPED, "reason" => reason).increment(1);
}

/// GraphQL subscriptions ended for falling behind (each misses at least
/// the change that did not fit).
pub(crate) fn graphql_subscription_cut(subscriptions: u64) {
    counter!(WS_EVENTS_DROPPED, "reason" => "graphql").increment(subscriptions);
}

/// A Socket.IO client cut off for falling behind.
pub(crate) fn feed_cut_off() {
    counter!(WS_SLOW_CLIENTS).increment(1);
    feed_dropped("slow");
}

/// A Socket.IO connection refused by a limit.
pub(crate) fn feed_refused(limit: &'static str) {
    counter!(WS_REFUSED, "limit" => limit).increment(1);
}

/// A GraphQL operation answered (`kind`: query, mutation, subscription),
/// and for queries and mutations how long it took.
pub(crate) fn graphql_operation(kind: &'static str, outcome: &'static str, took: Option<Duration>) {
    counter!(GRAPHQL_OPERATIONS, "type" => kind, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        histogram!(GRAPHQL_DURATION, "type" => kind).record(took.as_secs_f64());
    }
}

/// GraphQL subscriptions of `field` opened (+1) or closed (-1).
pub(crate) fn graphql_subscriptions(field: &'static str, delta: f64) {
    gauge!(GRAPHQL_SUBSCRIPTIONS, "field" => field).increment(delta);
}

/// GraphQL WebSocket connections opened (+1) or closed (-1).
pub(crate) fn graphql_connections(delta: f64) {
    gauge!(GRAPHQL_CONNECTIONS).increment(delta);
}
