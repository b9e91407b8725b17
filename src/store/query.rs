//! The read side: one task, filtered pages, and the queue's shape.

use std::collections::BTreeMap;

use fred::prelude::*;
use serde::Serialize;

use super::keys::Index;
use super::{Name, Store};
use crate::error::{Error, Result};
use crate::ids::TaskId;
use crate::task::{OWNER_EXTRA_CHARS, Priority, Task, TaskMetrics, TaskStatus, validate_ident};

/// Most tasks one page holds.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most tasks page-number paging skips (`(page - 1) * limit`): an offset walks
/// the index from its top, so deeper pages are refused; the cursor reaches any
/// depth at the cost of one page.
pub const MAX_PAGE_OFFSET: u64 = 10_000;

/// Filters and paging of a task list. Every filter is served by an index.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this priority.
    pub priority: Option<Priority>,
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this task type.
    pub task_type: Option<String>,
    /// Only tasks of this owner (the API sets it for non-admins).
    pub owner_id: Option<String>,
    /// Created at or after (ms).
    pub created_from_ms: Option<i64>,
    /// Created at or before (ms).
    pub created_to_ms: Option<i64>,
    /// 1-based page (ignored when `cursor` is given); `(page - 1) * limit`
    /// may be at most [`MAX_PAGE_OFFSET`].
    pub page: u32,
    /// Page size, 1..=100.
    pub limit: u32,
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of tasks, newest first.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Matches of the filter in all pages.
    pub total_count: u64,
    /// This page's number (1-based; with a cursor, counted from the cursor).
    pub current_page: u32,
    /// Pages in all at this page size.
    pub total_pages: u32,
    /// Page size.
    pub limit: u32,
    /// Whether more tasks follow.
    pub has_next_page: bool,
    /// Pass as `cursor` to get the next page (stable under inserts).
    pub next_cursor: Option<String>,
}

/// Thresholds of `queueHealth` (documented in the README).
pub mod health_thresholds {
    /// Oldest ready task waiting longer than this: warning.
    pub const WARNING_WAIT_MS: i64 = 60_000;
    /// Oldest ready task waiting longer than this: critical.
    pub const CRITICAL_WAIT_MS: i64 = 300_000;
    /// More ready tasks than this: warning.
    pub const WARNING_READY: u64 = 1_000;
    /// More ready tasks than this: critical.
    pub const CRITICAL_READY: u64 = 10_000;
}

/// healthy / warning / critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueHealth {
    /// Work is being picked up promptly.
    Healthy,
    /// Backlog or waiting time is building up.
    Warning,
    /// Backlog or waiting time is far past normal.
    Critical,
}

/// One agent's queue.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentQueue {
    /// Agent id.
    pub agent_id: String,
    /// Live tasks per status.
    pub by_status: BTreeMap<String, u64>,
    /// Ready (claimable now) tasks per priority.
    pub ready_by_priority: BTreeMap<String, u64>,
    /// How long its oldest ready task has waited (ms).
    pub oldest_waiting_ms: Option<i64>,
}

/// The queue's shape at one instant.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Live tasks (not yet cleaned up).
    pub total_tasks: u64,
    /// QUEUED (ready or delayed).
    pub queued_tasks: u64,
    /// PROCESSING.
    pub processing_tasks: u64,
    /// COMPLETED.
    pub completed_tasks: u64,
    /// FAILED.
    pub failed_tasks: u64,
    /// CANCELLED.
    pub cancelled_tasks: u64,
    /// TIMEOUT.
    pub timeout_tasks: u64,
    /// QUEUED tasks waiting for runAt or a retry backoff.
    pub delayed_tasks: u64,
    /// Ready tasks per priority, all agents.
    pub ready_by_priority: BTreeMap<String, u64>,
    /// Per agent.
    pub agents: Vec<AgentQueue>,
    /// How long the oldest ready task has waited (ms).
    pub oldest_waiting_ms: Option<i64>,
    /// healthy / warning / critical (thresholds: `health_thresholds`, and the
    /// queueStatus operation's description).
    pub queue_health: QueueHealth,
    /// When this snapshot was taken (ms, Redis clock).
    pub timestamp: i64,
}

pub(super) fn parse_task(pairs: Vec<(String, String)>) -> Result<Task> {
    let mut f: BTreeMap<String, String> = pairs.into_iter().collect();
    let bad = |what: &str| Error::Reply {
        script: "task record",
        detail: format!("bad or missing field {what}"),
    };
    let mut take = |k: &str| f.remove(k);
    let int = |v: Option<String>| v.and_then(|s| s.parse::<i64>().ok());
    let float = |v: Option<String>| v.and_then(|s| s.parse::<f64>().ok());
    let json =
        |v: Option<String>| v.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    let id = take("id").ok_or_else(|| bad("id"))?;
    Ok(Task {
        agent_id: take("agentId").ok_or_else(|| bad("agentId"))?,
        task_type: take("taskType").ok_or_else(|| bad("taskType"))?,
        input_data: json(take("inputData")).unwrap_or(serde_json::Value::Null),
        output_data: json(take("outputData")),
        status: take("status")
            .and_then(|s| TaskStatus::parse(&s))
            .ok_or_else(|| bad("status"))?,
        priority: take("priority")
            .and_then(|s| Priority::parse(&s))
            .ok_or_else(|| bad("priority"))?,
        retry_count: int(take("retryCount")).unwrap_or(0) as u32,
        max_retries: int(take("maxRetries")).unwrap_or(0) as u32,
        timeout_ms: int(take("timeoutMs")).unwrap_or(0) as u64,
        error_message: take("errorMessage"),
        estimated_cost: float(take("estimatedCost")),
        actual_cost: float(take("actualCost")),
        quality_score: float(take("qualityScore")),
        metrics: take("metrics").and_then(|s| serde_json::from_str::<TaskMetrics>(&s).ok()),
        run_at: int(take("runAt")),
        idempotency_key: take("idempotencyKey"),
        owner_id: take("ownerId"),
        worker_id: take("workerId"),
        lease_until: int(take("leaseUntil")),
        created_at: int(take("createdAt")).ok_or_else(|| bad("createdAt"))?,
        started_at: int(take("startedAt")),
        completed_at: int(take("completedAt")),
        updated_at: int(take("updatedAt")).unwrap_or(0),
        id,
    })
}

impl Store {
    /// One task, or None (also for ids that cannot be task ids).
    pub async fn get(&self, id: &str) -> Result<Option<Task>> {
        if TaskId::parse(id).is_err() {
            return Ok(None);
        }
        let pairs = self.inner.reads.submit(id.to_string()).await?;
        if pairs.is_empty() {
            return Ok(None);
        }
        parse_task(pairs).map(Some)
    }

    /// The agent of a task (one field, not the whole record), or None.
    pub async fn agent_of(&self, id: &str) -> Result<Option<String>> {
        if TaskId::parse(id).is_err() {
            return Ok(None);
        }
        Ok(self.client().hget(self.keys().task(id), "agentId").await?)
    }

    /// One page of tasks matching `filter`, newest first, with the total count.
    pub async fn list(&self, filter: &ListFilter) -> Result<TaskPage> {
        let limit = filter.limit;
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::Validation(format!(
                "limit must be 1 to {MAX_PAGE_SIZE}"
            )));
        }
        let page = filter.page.max(1);
        // Index names, from which list.lua derives the index keys.
        let mut indexes = Vec::new();
        if let Some(s) = filter.status {
            indexes.push(Index::Status(s).name());
        }
        if let Some(p) = filter.priority {
            indexes.push(Index::Priority(p).name());
        }
        if let Some(a) = &filter.agent_id {
            validate_ident("agentId", a, 128, &[])?;
            indexes.push(Index::Agent(a).name());
        }
        if let Some(t) = &filter.task_type {
            validate_ident("taskType", t, 128, &[])?;
            indexes.push(Index::TaskType(t).name());
        }
        if let Some(o) = &filter.owner_id {
            validate_ident("ownerId", o, 128, OWNER_EXTRA_CHARS)?;
            indexes.push(Index::Owner(o).name());
        }
        // Order scores are createdAt * 1000 + a per-millisecond counter.
        let out_of_range = |what: &str| Error::Validation(format!("{what} is out of range"));
        let lo = match filter.created_from_ms {
            Some(ms) => ms
                .checked_mul(1000)
                .ok_or_else(|| out_of_range("createdFrom"))?
                .to_string(),
            None => "-inf".to_string(),
        };
        let hi = match filter.created_to_ms {
            Some(ms) => ms
                .checked_mul(1000)
                .and_then(|score| score.checked_add(999))
                .ok_or_else(|| out_of_range("createdTo"))?
                .to_string(),
            None => "+inf".to_string(),
        };
        let cursor = match &filter.cursor {
            Some(c) => {
                let score: u64 = c
                    .parse()
                    .map_err(|_| Error::Validation("cursor is not one this API issued".into()))?;
                score.to_string()
            }
            None => String::new(),
        };
        let offset = if cursor.is_empty() {
            (page as u64 - 1) * limit as u64
        } else {
            0
        };
        if offset > MAX_PAGE_OFFSET {
            return Err(Error::Validation(format!(
                "page {page} starts past the first {MAX_PAGE_OFFSET} matches; \
                 use the cursor (nextCursor) to page further"
            )));
        }
        let mut args = vec![
            lo,
            hi,
            cursor.clone(),
            offset.to_string(),
            limit.to_string(),
            indexes.len().to_string(),
        ];
        args.extend(indexes);
        let value = self.call(Name::List, args).await?;
        let r = super::reply::Reply { script: "list" };
        let mut it = r.array(value)?.into_iter();
        let total = r
            .int(it.next().ok_or_else(|| r.err("short reply"))?)?
            .max(0) as u64;
        let rows = r.array(it.next().ok_or_else(|| r.err("short reply"))?)?;
        let more = r.int(it.next().ok_or_else(|| r.err("short reply"))?)? == 1;
        let mut tasks = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows {
            let pairs = r.pairs(row)?;
            if pairs.is_empty() {
                continue; // deleted between index and record: skip
            }
            last_seq = pairs
                .iter()
                .find(|(k, _)| k == "seq")
                .map(|(_, v)| v.clone());
            tasks.push(parse_task(pairs)?);
        }
        let total_pages = total.div_ceil(limit as u64) as u32;
        // The script looks one past the page, so a cursor walk ends on its
        // last full page instead of answering one more empty page.
        let has_next_page = more;
        Ok(TaskPage {
            total_count: total,
            current_page: page,
            total_pages,
            limit,
            has_next_page,
            next_cursor: if has_next_page { last_seq } else { None },
            tasks,
        })
    }

    /// The queue's shape: counts per status, priority and agent, oldest wait, health.
    pub async fn queue_status(&self) -> Result<QueueStatus> {
        let value = self
            .call(Name::QueueStatus, vec![self.now_arg(), "10000".into()])
            .await?;
        let r = super::reply::Reply {
            script: "queue_status",
        };
        let mut it = r.array(value)?.into_iter();
        let mut next = || it.next().ok_or_else(|| r.err("short reply"));
        let now = r.int(next()?)?;
        let counts = r.pairs(next()?)?;
        let delayed = r.int(next()?)?.max(0) as u64;
        let _processing = r.int(next()?)?;
        let agent_rows = r.array(next()?)?;

        let mut by_agent: BTreeMap<String, AgentQueue> = BTreeMap::new();
        let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (field, n) in counts {
            let n: i64 = n.parse().unwrap_or(0);
            let Some((agent, status)) = field.rsplit_once('|') else {
                continue;
            };
            let Some(status) = TaskStatus::parse(status) else {
                continue;
            };
            if n <= 0 {
                continue;
            }
            *totals.entry(status.as_str()).or_default() += n as u64;
            by_agent
                .entry(agent.to_string())
                .or_insert_with(|| empty_agent(agent))
                .by_status
                .insert(status.as_str().to_string(), n as u64);
        }
        let mut ready_by_priority: BTreeMap<String, u64> = Priority::ALL
            .iter()
            .map(|p| (p.as_str().to_string(), 0))
            .collect();
        let mut oldest_score: Option<i64> = None;
        let mut ready_total = 0;
        for row in agent_rows {
            let row = r.array(row)?;
            if row.len() != 6 {
                return Err(r.err("agent row of 6 expected"));
            }
            let mut cells = row.into_iter();
            let agent = r.string(cells.next().ok_or_else(|| r.err("short row"))?)?;
            let entry = by_agent
                .entry(agent.clone())
                .or_insert_with(|| empty_agent(&agent));
            for p in Priority::ALL {
                let n = r
                    .int(cells.next().ok_or_else(|| r.err("short row"))?)?
                    .max(0) as u64;
                entry.ready_by_priority.insert(p.as_str().to_string(), n);
                *ready_by_priority.entry(p.as_str().to_string()).or_default() += n;
                ready_total += n;
            }
            let oldest = r.int(cells.next().ok_or_else(|| r.err("short row"))?)?;
            if oldest >= 0 {
                entry.oldest_waiting_ms = Some((now - oldest / 1000).max(0));
                oldest_score = Some(oldest_score.map_or(oldest, |o| o.min(oldest)));
            }
        }
        let oldest_waiting_ms = oldest_score.map(|s| (now - s / 1000).max(0));
        let count = |s: TaskStatus| totals.get(s.as_str()).copied().unwrap_or(0);
        use health_thresholds::*;
        let wait = oldest_waiting_ms.unwrap_or(0);
        let queue_health = if wait > CRITICAL_WAIT_MS || ready_total > CRITICAL_READY {
            QueueHealth::Critical
        } else if wait > WARNING_WAIT_MS || ready_total > WARNING_READY {
            QueueHealth::Warning
        } else {
            QueueHealth::Healthy
        };
        Ok(QueueStatus {
            total_tasks: totals.values().sum(),
            queued_tasks: count(TaskStatus::Queued),
            processing_tasks: count(TaskStatus::Processing),
            completed_tasks: count(TaskStatus::Completed),
            failed_tasks: count(TaskStatus::Failed),
            cancelled_tasks: count(TaskStatus::Cancelled),
            timeout_tasks: count(TaskStatus::Timeout),
            delayed_tasks: delayed,
            ready_by_priority,
            agents: by_agent.into_values().collect(),
            oldest_waiting_ms,
            queue_health,
            timestamp: now,
        })
    }
}

fn empty_agent(agent: &str) -> AgentQueue {
    AgentQueue {
        agent_id: agent.to_string(),
        by_status: BTreeMap::new(),
        ready_by_priority: Priority::ALL
            .iter()
            .map(|p| (p.as_str().to_string(), 0))
            .collect(),
        oldest_waiting_ms: None,
    }
}
