//! Wrapper of `lua/create.lua`: single creates (coalesced with concurrent ones
//! into one script call) and all-or-nothing batches.

use std::time::Duration;

use super::batch::{Batcher, Job};
use super::{Name, Store, ms};
use crate::error::{Error, Result};
use crate::task::{
    DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_MS, NewTask, Task, TaskStatus, new_task_id,
};

/// Largest batch one create call takes (the API's batch limit).
pub const MAX_BATCH: usize = 100;
/// How many coalesced create calls may be in flight at once.
const COALESCE_IN_FLIGHT: usize = 4;

/// The outcome of a create.
#[derive(Clone, Debug)]
pub struct Created {
    /// The task (the existing one when the idempotency key matched).
    pub task: Task,
    /// False when an idempotency key returned an existing task.
    pub created: bool,
}

/// A validated item, as the script's 11 arguments.
pub(super) struct Prepared {
    new: NewTask,
    id: String,
    args: [String; 11],
}

fn prepare(new: NewTask, limits: &crate::task::Limits) -> Result<Prepared> {
    let input = new.validate(limits)?;
    let id = new_task_id();
    let opt = |v: Option<String>| v.unwrap_or_default();
    let args = [
        id.clone(),
        new.agent_id.clone(),
        new.task_type.clone(),
        new.priority.as_str().to_string(),
        input,
        new.max_retries.unwrap_or(DEFAULT_MAX_RETRIES).to_string(),
        new.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).to_string(),
        opt(new.estimated_cost.map(|c| c.to_string())),
        opt(new.run_at.map(|t| t.to_string())),
        opt(new.idempotency_key.clone()),
        opt(new.owner_id.clone()),
    ];
    Ok(Prepared { new, id, args })
}

fn task_from_new(p: Prepared, now: i64) -> Task {
    let n = p.new;
    Task {
        id: p.id,
        agent_id: n.agent_id,
        task_type: n.task_type,
        input_data: n.input_data,
        output_data: None,
        status: TaskStatus::Queued,
        priority: n.priority,
        retry_count: 0,
        max_retries: n.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        timeout_ms: n.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        error_message: None,
        estimated_cost: n.estimated_cost,
        actual_cost: None,
        quality_score: None,
        metrics: None,
        run_at: n.run_at,
        idempotency_key: n.idempotency_key,
        owner_id: n.owner_id,
        worker_id: None,
        lease_until: None,
        created_at: now,
        started_at: None,
        completed_at: None,
        updated_at: now,
    }
}

impl Store {
    /// Creates one task. Concurrent calls are coalesced into one script call.
    pub async fn create(&self, new: NewTask) -> Result<Created> {
        let prepared = prepare(new, &self.inner.config.limits)?;
        let outcome = self.inner.creates.submit(prepared).await?;
        self.finish_create(outcome).await
    }

    /// Creates 1..=100 tasks all-or-nothing: every item is checked first and
    /// one invalid item refuses the batch with every item's problem listed.
    pub async fn create_batch(&self, items: Vec<NewTask>) -> Result<Vec<Created>> {
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(Error::Validation(format!(
                "a batch holds 1 to {MAX_BATCH} tasks"
            )));
        }
        let limits = &self.inner.config.limits;
        let mut prepared = Vec::with_capacity(items.len());
        let mut problems = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match prepare(item, limits) {
                Ok(p) => prepared.push(p),
                Err(e) => problems.push((i, e.to_string())),
            }
        }
        if !problems.is_empty() {
            return Err(Error::BatchRejected(problems));
        }
        let outcomes = self.create_call(prepared).await?;
        let mut created = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            created.push(self.finish_create(outcome).await?);
        }
        Ok(created)
    }

    async fn finish_create(&self, outcome: Outcome) -> Result<Created> {
        match outcome {
            Outcome::New(task) => Ok(Created {
                task: *task,
                created: true,
            }),
            Outcome::Existing(id) => {
                let task = self.get(&id).await?.ok_or(Error::TaskNotFound(id))?;
                Ok(Created {
                    task,
                    created: false,
                })
            }
        }
    }

    async fn create_call(&self, items: Vec<Prepared>) -> Result<Vec<Outcome>> {
        let cfg = &self.inner.config;
        // `SET ... PX 0` is refused by Redis; create.lua checks it too.
        if cfg.idempotency_ttl < Duration::from_millis(1) {
            return Err(Error::Validation(
                "the idempotency key TTL must be at least 1 ms".into(),
            ));
        }
        let mut args = Vec::with_capacity(3 + items.len() * 11);
        args.push(self.now_arg());
        args.push(ms(cfg.idempotency_ttl));
        args.push(items.len().to_string());
        for item in &items {
            args.extend(item.args.iter().cloned());
        }
        let value = self.call(Name::Create, args).await?;
        let r = super::reply::Reply { script: "create" };
        let mut flat = r.array(value)?.into_iter();
        let now = r.int(flat.next().ok_or_else(|| r.err("empty reply"))?)?;
        let rows = r.rows(fred::types::Value::Array(flat.collect()), 2)?;
        if rows.len() != items.len() {
            return Err(r.err("one row per item expected"));
        }
        let mut outcomes = Vec::with_capacity(items.len());
        for (row, item) in rows.into_iter().zip(items) {
            let mut row = row.into_iter();
            let id = r.string(row.next().ok_or_else(|| r.err("missing id"))?)?;
            let created = r.int(row.next().ok_or_else(|| r.err("missing flag"))?)? == 1;
            outcomes.push(if created {
                Outcome::New(Box::new(task_from_new(item, now)))
            } else {
                Outcome::Existing(id)
            });
        }
        Ok(outcomes)
    }
}

pub(super) enum Outcome {
    New(Box<Task>),
    Existing(String),
}

/// Group commit for single creates: whatever arrived while the previous call
/// was in flight goes out as one script call (items stay independent).
pub(super) type Coalescer = Batcher<Prepared, Outcome>;

pub(super) fn coalescer() -> Coalescer {
    Batcher::new(|why| Error::Reply {
        script: "create",
        detail: format!("coalescer {why}"),
    })
}

pub(super) fn start_coalescer(store: &Store) {
    store.inner.creates.start(
        store.downgrade(),
        MAX_BATCH,
        COALESCE_IN_FLIGHT,
        |store, jobs: Vec<Job<Prepared, Outcome>>| async move {
            let (items, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.item, j.reply)).unzip();
            match store.create_call(items).await {
                Ok(outcomes) => {
                    for (outcome, reply) in outcomes.into_iter().zip(replies) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                }
            }
        },
    );
}
