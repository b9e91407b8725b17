//! Where scripts take "now" from.
//!
//! In production every script reads Redis' own clock (`TIME`), so nodes with
//! skewed clocks agree on leases and due dates. Tests install a manual clock
//! and move time instead of sleeping: its value is passed to each script as
//! the `now` override.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The time source handed to scripts.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// Redis' own clock (the default).
    pub fn redis() -> Self {
        Self { manual_ms: None }
    }

    /// A clock that stands still at `start_ms` until moved with `advance`.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            manual_ms: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Moves a manual clock forward; no effect on the Redis clock.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(ms) = &self.manual_ms {
            ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    /// The manual time, if this is a manual clock.
    pub fn manual_now_ms(&self) -> Option<i64> {
        self.manual_ms.as_ref().map(|ms| ms.load(Ordering::SeqCst))
    }

    /// The script argument: the manual time, or "" for Redis `TIME`.
    pub(crate) fn script_arg(&self) -> String {
        self.manual_now_ms()
            .map(|ms| ms.to_string())
            .unwrap_or_default()
    }
}
