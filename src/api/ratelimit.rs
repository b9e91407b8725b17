//! Per-principal rate limit shared by every node.
//!
//! A fixed one-second window per token subject (a hash per subject and Unix
//! second in Redis, kept by the store: `store::rate_limit`), so N nodes
//! together allow about the configured rate, not N times it, without a Redis
//! round trip per request:
//!
//! - each node counts the requests it admits locally, per (principal, window);
//! - a background task sends, every [`SYNC_EVERY`], one script call with the
//!   node's count so far of every principal whose count grew, and reads back
//!   each window's total over every node;
//! - a request is admitted while the other nodes' count (as last read back)
//!   plus this node's own count is under the limit, and refused at once
//!   (429, `Retry-After: 1`) otherwise, without asking Redis.
//!
//! **Sent again, counted once.** A node records its own total for the window
//! (one field per limiter), not an increment, so a sync whose reply was lost
//! (a connection reset after Redis ran it, a timeout, a reconnect) is sent
//! again without counting anything twice. With increments it was counted
//! twice, and again on every further loss in the same second: six requests
//! then looked like twelve, and users well under the limit got 429s
//! (`faults::a_rate_limit_sync_whose_reply_was_lost_does_not_count_twice`).
//!
//! **Overshoot.** A node never admits more than the limit per principal and
//! window by itself (its own requests are always in its count), so N nodes
//! admit at most N × the limit in one window: the worst case, for a burst
//! that reaches every node before any sync. Beyond that, a node sees what
//! the others admitted only once they have synced it and it has synced since:
//! within two sync intervals plus a round trip (about 0.1 s). A node learns
//! the others' count only with a sync of its own, so one that has admitted
//! nothing for a principal in a window yet may admit up to the limit by
//! itself before it learns (the N × the limit worst case). Under steady
//! traffic of `r` requests/s per node for one principal, a window therefore
//! admits at most about `limit + (N − 1) × r × 0.1 s`, and never more than
//! N × the limit. Refused requests are not counted.
//!
//! Windows start on each node's clock, so nodes whose clocks differ share a
//! window only approximately; a fixed window also lets a client send up to
//! twice the rate across a window boundary.
//!
//! When Redis cannot be reached the limiter lets requests through up to the
//! limit on each node (the count is sent again on the next sync); the
//! requests themselves then meet the same outage and answer 503. The sync
//! task holds only a weak reference to the limiter and is aborted when the
//! limiter is dropped with the node's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::AbortHandle;

use super::error::ApiError;
use crate::store::{RateCount, Store};

/// How often a node sends its local counts to Redis and reads back the
/// global ones.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);

/// Longest a sync may take before it counts as failed (its counts are kept
/// and sent again).
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// Principals per sync call.
const SYNC_CHUNK: usize = 512;

/// Lifetime of a window's key in Redis (the window plus slack for late syncs).
const WINDOW_KEY_TTL: Duration = Duration::from_secs(2);

/// The limiter of one node.
pub struct RateLimiter {
    per_second: u32,
    /// This limiter's field in the shared counts: one per node process, so
    /// a restarted node (same node id) does not take over the old count.
    id: String,
    counts: Arc<Counts>,
    /// The sync task, started with the first counted request (that is when
    /// the limiter gets the store).
    sync: OnceLock<AbortHandle>,
}

impl RateLimiter {
    /// `per_second` requests per principal per second; 0 switches it off.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            id: ulid::Ulid::generate().to_string(),
            counts: Arc::new(Counts::default()),
            sync: OnceLock::new(),
        }
    }

    /// This limiter's id in the shared counts (`Store::rate_counts`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Counts one request of `sub`; 429 with `Retry-After` past the limit.
    /// Never waits for Redis.
    pub async fn check(&self, store: &Store, sub: &str) -> Result<(), ApiError> {
        if self.per_second == 0 {
            return Ok(());
        }
        self.sync.get_or_init(|| {
            tokio::spawn(sync_loop(
                Arc::downgrade(&self.counts),
                store.clone(),
                self.id.clone(),
                SYNC_EVERY,
            ))
            .abort_handle()
        });
        if self
            .counts
            .admit(sub, unix_second(), u64::from(self.per_second))
        {
            Ok(())
        } else {
            Err(limited(self.per_second))
        }
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        if let Some(task) = self.sync.get() {
            task.abort();
        }
    }
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One principal's counts in its current window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    /// Unix second of the window.
    window: u64,
    /// Admitted here in the window (always counted: this node's own).
    mine: u64,
    /// How much of `mine` Redis has confirmed recording.
    recorded: u64,
    /// The other nodes' count of the window, as last read back.
    others: u64,
}

/// This node's count of one principal and window, to record in Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Delta {
    sub: String,
    window: u64,
    /// Admitted here in the window so far (a total, not an increment).
    admitted: u64,
}

/// The local counts of one node.
#[derive(Default)]
struct Counts {
    by_sub: Mutex<HashMap<String, Count>>,
}

impl Counts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Count>> {
        self.by_sub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits (and counts) one request of `sub` in window `now`, or refuses.
    fn admit(&self, sub: &str, now: u64, limit: u64) -> bool {
        let mut by_sub = self.lock();
        if !by_sub.contains_key(sub) {
            by_sub.insert(sub.to_string(), Count::default());
        }
        let Some(c) = by_sub.get_mut(sub) else {
            return true;
        };
        if c.window != now {
            // A new window (a reply still due for the old one is ignored).
            *c = Count {
                window: now,
                ..Count::default()
            };
        }
        if c.others + c.mine >= limit {
            return false;
        }
        c.mine += 1;
        true
    }

    /// Forgets principals of past windows with nothing left to record, and
    /// gives the counts to record: those that grew since Redis last
    /// confirmed them, of the current window or, for a principal with no
    /// request yet in the current one, the previous window. (A principal's
    /// first request in a new window starts its count afresh, so the last
    /// unsent moments of the old window are not sent: they no longer matter.)
    fn take(&self, now: u64) -> Vec<Delta> {
        let mut by_sub = self.lock();
        by_sub.retain(|_, c| c.window + 1 >= now && (c.window == now || c.mine > c.recorded));
        by_sub
            .iter()
            .filter(|(_, c)| c.mine > c.recorded)
            .map(|(sub, c)| Delta {
                sub: sub.clone(),
                window: c.window,
                admitted: c.mine,
            })
            .collect()
    }

    /// Applies the answer to each sent count: the window's total over every
    /// node, or `None` when it did not reach Redis (the count is sent again
    /// with the next sync: recording a total twice is harmless).
    fn settle(&self, sent: &[Delta], totals: &[Option<u64>]) {
        let mut by_sub = self.lock();
        for (d, total) in sent.iter().zip(totals) {
            let (Some(c), Some(total)) = (by_sub.get_mut(&d.sub), total) else {
                continue;
            };
            if c.window != d.window {
                continue;
            }
            c.recorded = c.recorded.max(d.admitted);
            // The total holds this node's count as sent; the others' only grow.
            c.others = c.others.max(total.saturating_sub(d.admitted));
        }
    }
}

/// Syncs the local counts every `every` until the limiter is dropped.
async fn sync_loop(counts: Weak<Counts>, store: Store, id: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(counts) = counts.upgrade() else {
            return;
        };
        let deltas = counts.take(unix_second());
        for chunk in deltas.chunks(SYNC_CHUNK) {
            let totals = send(&store, &id, chunk).await;
            counts.settle(chunk, &totals);
        }
    }
}

/// One script call: this node's counts recorded, the windows' totals read
/// back (`None` where it failed).
async fn send(store: &Store, id: &str, deltas: &[Delta]) -> Vec<Option<u64>> {
    let counts: Vec<RateCount<'_>> = deltas
        .iter()
        .map(|d| RateCount {
            principal: &d.sub,
            window_s: d.window,
            admitted: d.admitted,
        })
        .collect();
    let totals = match tokio::time::timeout(
        SYNC_TIMEOUT,
        store.sync_rate_counts(id, &counts, WINDOW_KEY_TTL),
    )
    .await
    {
        Ok(totals) => totals,
        Err(_) => {
            tracing::debug!("rate limit counts not synced: redis timed out");
            return vec![None; deltas.len()];
        }
    };
    if totals.iter().any(Option::is_none) {
        tracing::debug!("rate limit counts not synced: redis unavailable");
    }
    totals
}

fn limited(per_second: u32) -> ApiError {
    let mut e = ApiError::new(
        poem::http::StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("rate limit of {per_second} requests per second reached"),
    );
    e.retry_after_s = Some(1);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(counts: &Counts, sub: &str, now: u64, limit: u64, tries: usize) -> usize {
        (0..tries).filter(|_| counts.admit(sub, now, limit)).count()
    }

    fn delta(sub: &str, window: u64, admitted: u64) -> Delta {
        Delta {
            sub: sub.into(),
            window,
            admitted,
        }
    }

    #[test]
    fn a_node_alone_admits_the_limit_per_window_and_principal() {
        let c = Counts::default();
        assert_eq!(admitted(&c, "a", 100, 5, 20), 5);
        assert_eq!(admitted(&c, "b", 100, 5, 20), 5, "own budget");
        assert_eq!(admitted(&c, "a", 101, 5, 20), 5, "a new window");
        // Sent (b's window 100 is the previous one: still sent) and
        // recorded: the node's own requests stay counted.
        let mut sent = c.take(101);
        sent.sort_by(|x, y| x.sub.cmp(&y.sub));
        assert_eq!(sent, vec![delta("a", 101, 5), delta("b", 100, 5)]);
        let totals: Vec<_> = sent.iter().map(|d| Some(d.admitted)).collect();
        c.settle(&sent, &totals);
        assert_eq!(admitted(&c, "a", 101, 5, 20), 0);
        assert!(c.take(101).is_empty(), "nothing left to send");
    }

    #[test]
    fn counts_of_other_nodes_read_back_are_respected() {
        let c = Counts::default();
        assert_eq!(admitted(&c, "a", 7, 10, 3), 3);
        let sent = c.take(7);
        assert_eq!(sent, vec![delta("a", 7, 3)]);
        // While the sync is in flight this node's count still counts.
        assert_eq!(admitted(&c, "a", 7, 10, 20), 7);
        assert_eq!(c.take(7), vec![delta("a", 7, 10)], "a total, not a delta");
        // Another node admitted 6 meanwhile: the total reads 3 + 6.
        c.settle(&sent, &[Some(9)]);
        assert_eq!(c.lock()["a"].others, 6);
        // 6 others + 10 here >= 10.
        assert_eq!(admitted(&c, "a", 7, 10, 5), 0);
        // A late answer with a smaller total does not lower what is known.
        c.settle(&[delta("a", 7, 3)], &[Some(4)]);
        assert_eq!(c.lock()["a"].others, 6);
    }

    #[test]
    fn failed_syncs_send_the_same_total_again() {
        let c = Counts::default();
        assert_eq!(admitted(&c, "a", 1, 4, 3), 3);
        let sent = c.take(1);
        c.settle(&sent, &[None]);
        assert_eq!(admitted(&c, "a", 1, 4, 5), 1, "still counted locally");
        assert_eq!(c.take(1), vec![delta("a", 1, 4)]);
        // Recorded at last (the lost call had recorded 3 already: the total
        // still says 4, not 7).
        c.settle(&[delta("a", 1, 4)], &[Some(4)]);
        assert!(c.take(1).is_empty());
        assert_eq!(admitted(&c, "a", 1, 4, 5), 0);
    }

    #[test]
    fn old_windows_are_forgotten_and_late_replies_ignored() {
        let c = Counts::default();
        assert_eq!(admitted(&c, "a", 1, 4, 2), 2);
        assert_eq!(admitted(&c, "b", 1, 4, 1), 1);
        let mut sent = c.take(1);
        sent.sort_by(|x, y| x.sub.cmp(&y.sub));
        assert_eq!(sent.len(), 2);
        // "a" moves to window 2 before the reply for window 1 arrives.
        assert_eq!(admitted(&c, "a", 2, 4, 1), 1);
        c.settle(&sent, &[Some(100), Some(100)]);
        assert_eq!(admitted(&c, "a", 2, 4, 10), 3, "window 1's reply ignored");
        // "b" (window 1, recorded) is dropped once window 3 starts.
        c.take(3);
        assert!(!c.lock().contains_key("b"));
    }

    #[tokio::test]
    async fn nodes_share_the_count_through_redis_and_a_total_sent_twice_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let redis = crate::local_redis::LocalRedis::start(dir.path()).unwrap();
        let store = Store::connect(
            &redis.url(),
            1,
            crate::store::StoreConfig::default(),
            crate::clock::Clock::redis(),
        )
        .await
        .unwrap();
        let count = |admitted| RateCount {
            principal: "p",
            window_s: 42,
            admitted,
        };
        let ttl = WINDOW_KEY_TTL;
        assert_eq!(
            store.sync_rate_counts("A", &[count(6)], ttl).await,
            [Some(6)]
        );
        assert_eq!(
            store.sync_rate_counts("A", &[count(6)], ttl).await,
            [Some(6)],
            "sent again after a lost reply: counted once"
        );
        assert_eq!(
            store.sync_rate_counts("B", &[count(3)], ttl).await,
            [Some(9)]
        );
        assert_eq!(
            store.sync_rate_counts("A", &[count(4)], ttl).await,
            [Some(9)],
            "an older sync arriving late keeps the newer count"
        );
        let (by_limiter, ttl_ms) = store.rate_counts("p", 42).await.unwrap();
        assert_eq!(
            by_limiter,
            [("A".to_string(), 6), ("B".to_string(), 3)].into()
        );
        assert!(ttl_ms > 0 && ttl_ms <= 2_000, "ttl {ttl_ms}");

        // Two limiters: b learns a's count with its own sync.
        let limit = 1_000;
        let a = RateLimiter::new(limit);
        let b = RateLimiter::new(limit);
        // One run must fit in one window: start just after a second begins,
        // and try again (with another principal) when it did not fit.
        for attempt in 0..5 {
            let sub = format!("p{attempt}");
            let into_second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_millis();
            tokio::time::sleep(Duration::from_millis(u64::from(1_010 - into_second))).await;
            let start = unix_second();
            let mut on_a: u64 = 0;
            while on_a < 800 && a.check(&store, &sub).await.is_ok() {
                on_a += 1;
            }
            // Wait (bounded) until a's count is in Redis, then until b,
            // which learns the others' counts with its own syncs (they need
            // a request of its own to send), has read it back.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            let a_recorded = || async {
                let (by, _) = store.rate_counts(&sub, start).await.unwrap();
                by.get(a.id()).copied()
            };
            while a_recorded().await < Some(on_a) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            b.check(&store, &sub).await.unwrap();
            let b_others = || b.counts.lock().get(&sub).map_or(0, |c| c.others);
            while b_others() < on_a && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let on_b = (0..1_000)
                .filter(|_| b.counts.admit(&sub, start, u64::from(limit)))
                .count() as u64;
            if unix_second() != start {
                continue;
            }
            assert_eq!(on_a, 800);
            assert_eq!(b_others(), on_a, "b read back a's count");
            assert_eq!(on_a + 1 + on_b, u64::from(limit));
            return;
        }
        panic!("no run fit in one window");
    }
}
