//! Statistics by agent, task type and date range.
//!
//! Scripts count outcomes into one hash per UTC day (`stats:<day>`, fields
//! `<agent>|<taskType>|<metric>`) in the same call as the state change. Cleanup
//! never touches them, so statistics outlive the tasks they describe; each
//! day's hash expires `MAX_DAYS + 35` days after its first write.
//! Resolution is one UTC day; p95 duration comes from a fixed histogram (its
//! bucket bounds are in `lua/lib/common.lua`), so it is reported as the upper
//! bound of the bucket that holds the 95th percentile.

use std::collections::BTreeMap;

use fred::prelude::*;
use fred::types::Value;
use serde::Serialize;

use super::Store;
use crate::error::Result;
use crate::task::validate_ident;

const DAY_MS: i64 = 86_400_000;
/// Longest date range one statistics query covers. Keep equal to
/// `STATS_MAX_DAYS` in `lua/lib/common.lua`, which sets the stats hashes' TTL
/// from it (a unit test below checks both).
pub const MAX_DAYS: i64 = 366;
/// Largest finite bound of the duration histogram (`DURATION_BUCKETS_MS` in
/// `lua/lib/common.lua`); longer durations land in the open bucket `inf`.
const LARGEST_FINITE_BUCKET_MS: u64 = 3_600_000;
/// Range used when no start is given.
pub const DEFAULT_DAYS: i64 = 30;

/// Which outcomes to count.
#[derive(Clone, Debug, Default)]
pub struct StatsFilter {
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this task type.
    pub task_type: Option<String>,
    /// From this time (ms; its whole UTC day counts). Default: 30 days back.
    pub from_ms: Option<i64>,
    /// To this time (ms; its whole UTC day counts). Default: now.
    pub to_ms: Option<i64>,
}

/// Counts for one agent or task type.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Breakdown {
    /// Tasks created.
    pub created: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks timed out for good.
    pub timeout: u64,
}

/// Outcomes over a date range.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Tasks created in the range.
    pub total_tasks: u64,
    /// Completed in the range.
    pub completed_tasks: u64,
    /// Failed for good in the range.
    pub failed_tasks: u64,
    /// Cancelled in the range.
    pub cancelled_tasks: u64,
    /// Timed out for good in the range.
    pub timeout_tasks: u64,
    /// Retries scheduled (automatic) in the range.
    pub retries: u64,
    /// completed / (completed + failed + timeout), in percent (0 with no outcomes).
    pub success_rate: f64,
    /// Mean duration of completed attempts (ms).
    pub average_duration_ms: Option<f64>,
    /// 95th percentile duration of completed attempts (ms, upper bound of its
    /// histogram bucket). When it falls in the open bucket past one hour, this
    /// is 3,600,000 and means "at least one hour".
    pub p95_duration_ms: Option<u64>,
    /// Sum of actualCost.
    pub total_cost: f64,
    /// Mean actualCost of tasks that reported one.
    pub average_cost: Option<f64>,
    /// Mean qualityScore of tasks that reported one.
    pub average_quality: Option<f64>,
    /// Tokens in (reported metrics).
    pub tokens_in: u64,
    /// Tokens out (reported metrics).
    pub tokens_out: u64,
    /// Per agent.
    pub by_agent: BTreeMap<String, Breakdown>,
    /// Per task type.
    pub by_task_type: BTreeMap<String, Breakdown>,
    /// First UTC day counted (ms at 00:00). A range longer than 366 days is
    /// cut to its last 366 days.
    pub from_ms: i64,
    /// Last UTC day counted (ms at 00:00).
    pub to_ms: i64,
}

impl Store {
    /// Outcome statistics for the filter's agent, task type and days.
    pub async fn statistics(&self, filter: &StatsFilter) -> Result<Statistics> {
        if let Some(a) = &filter.agent_id {
            validate_ident("agentId", a, 128, &[])?;
        }
        if let Some(t) = &filter.task_type {
            validate_ident("taskType", t, 128, &[])?;
        }
        let now = self.now_ms().await?;
        let to_day = filter.to_ms.unwrap_or(now).div_euclid(DAY_MS);
        let from_day = filter
            .from_ms
            .map_or(to_day - DEFAULT_DAYS + 1, |ms| ms.div_euclid(DAY_MS));
        if from_day > to_day {
            // An empty range: nothing to count.
            return Ok(Statistics {
                from_ms: from_day * DAY_MS,
                to_ms: to_day * DAY_MS,
                ..Statistics::default()
            });
        }
        // At most MAX_DAYS days, the latest ones (older days have expired
        // anyway); `from_ms` in the answer shows the first day counted.
        let from_day = from_day.max(to_day - MAX_DAYS + 1);
        // A pipeline does not take per-command options: the same fail-fast
        // check by hand.
        let client = self.pool().next();
        if client.state() != ClientState::Connected {
            return Err(super::redis_error::unavailable("Redis connection is down"));
        }
        let pipe = client.pipeline();
        for day in from_day..=to_day {
            let _: () = pipe.hgetall(self.keys().stats(day)).await?;
        }
        let days: Vec<Value> = pipe.all().await?;
        let r = super::reply::Reply {
            script: "statistics",
        };
        let mut stats = Statistics {
            from_ms: from_day * DAY_MS,
            to_ms: to_day * DAY_MS,
            ..Statistics::default()
        };
        let mut duration_sum = 0i64;
        let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut cost_n, mut quality_sum, mut quality_n) = (0u64, 0f64, 0u64);
        for day in days {
            for (field, value) in r.pairs(day)? {
                let mut parts = field.splitn(3, '|');
                let (Some(agent), Some(task_type), Some(metric)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if filter.agent_id.as_deref().is_some_and(|a| a != agent)
                    || filter.task_type.as_deref().is_some_and(|t| t != task_type)
                {
                    continue;
                }
                let n = value.parse::<f64>().unwrap_or(0.0);
                let count = n.max(0.0) as u64;
                let mut bump = |f: fn(&mut Breakdown) -> &mut u64| {
                    *f(stats.by_agent.entry(agent.to_string()).or_default()) += count;
                    *f(stats.by_task_type.entry(task_type.to_string()).or_default()) += count;
                };
                match metric {
                    "created" => {
                        stats.total_tasks += count;
                        bump(|b| &mut b.created);
                    }
                    "COMPLETED" => {
                        stats.completed_tasks += count;
                        bump(|b| &mut b.completed);
                    }
                    "FAILED" => {
                        stats.failed_tasks += count;
                        bump(|b| &mut b.failed);
                    }
                    "CANCELLED" => {
                        stats.cancelled_tasks += count;
                        bump(|b| &mut b.cancelled);
                    }
                    "TIMEOUT" => {
                        stats.timeout_tasks += count;
                        bump(|b| &mut b.timeout);
                    }
                    "retries" => stats.retries += count,
                    "durationMsSum" => duration_sum += n as i64,
                    "costSum" => stats.total_cost += n,
                    "costCount" => cost_n += count,
                    "qualitySum" => quality_sum += n,
                    "qualityCount" => quality_n += count,
                    "tokensIn" => stats.tokens_in += count,
                    "tokensOut" => stats.tokens_out += count,
                    m => {
                        // The open bucket `inf` sorts last, as u64::MAX.
                        if let Some(bound) = m.strip_prefix("durationMs:") {
                            *buckets
                                .entry(bound.parse().unwrap_or(u64::MAX))
                                .or_default() += count;
                        }
                    }
                }
            }
        }
        let outcomes = stats.completed_tasks + stats.failed_tasks + stats.timeout_tasks;
        if outcomes > 0 {
            stats.success_rate = stats.completed_tasks as f64 * 100.0 / outcomes as f64;
        }
        if stats.completed_tasks > 0 {
            stats.average_duration_ms = Some(duration_sum as f64 / stats.completed_tasks as f64);
            stats.p95_duration_ms = percentile(&buckets, 0.95);
        }
        if cost_n > 0 {
            stats.average_cost = Some(stats.total_cost / cost_n as f64);
        }
        if quality_n > 0 {
            stats.average_quality = Some(quality_sum / quality_n as f64);
        }
        Ok(stats)
    }
}

/// Upper bound of the histogram bucket holding quantile `q`; in the open
/// bucket, the largest finite bound (the quantile is at least that).
fn percentile(buckets: &BTreeMap<u64, u64>, q: f64) -> Option<u64> {
    let total: u64 = buckets.values().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    let mut found = buckets.keys().next_back().copied();
    for (&bound, &n) in buckets {
        seen += n;
        if seen >= rank {
            found = Some(bound);
            break;
        }
    }
    found.map(|bound| bound.min(LARGEST_FINITE_BUCKET_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_bucket_that_holds_the_95th_percentile() {
        let buckets: BTreeMap<u64, u64> = [(10, 90), (100, 5), (1000, 5)].into_iter().collect();
        assert_eq!(percentile(&buckets, 0.95), Some(100));
        assert_eq!(percentile(&BTreeMap::new(), 0.95), None);
    }

    #[test]
    fn p95_in_the_open_bucket_is_the_largest_finite_bound() {
        let buckets: BTreeMap<u64, u64> = [(10, 1), (u64::MAX, 99)].into_iter().collect();
        assert_eq!(percentile(&buckets, 0.95), Some(LARGEST_FINITE_BUCKET_MS));
    }

    #[test]
    fn the_lua_bounds_match_max_days_and_the_largest_bucket() {
        let lib = include_str!("../../lua/lib/common.lua");
        assert!(
            lib.contains(&format!("local STATS_MAX_DAYS = {MAX_DAYS}\n")),
            "lua/lib/common.lua STATS_MAX_DAYS must equal MAX_DAYS"
        );
        assert!(
            lib.contains(&format!(" {LARGEST_FINITE_BUCKET_MS} }}")),
            "the last bucket bound in lua/lib/common.lua must be LARGEST_FINITE_BUCKET_MS"
        );
    }
}
