//! Time as the deliverer keeps it: the database's clock, as the last
//! exchange with the outbox read it, and the drain deadline.

use tokio::sync::watch;
use tokio::time::Instant;

/// When to stop: `None` while running; `Some(deadline)` once draining, after
/// which nothing new is leased and in-flight requests still open at the
/// deadline are abandoned and their rows given back untouched.
pub type Stop = watch::Receiver<Option<Instant>>;

/// The database's clock (unix ms) as an exchange with the outbox read it,
/// carried forward by this process's monotonic clock from the instant the
/// exchange started, before the reading: never behind the database's, so
/// a lease is never taken for longer than it has left. Leases are the
/// database's: a member whose own clock is minutes off still sends a row
/// only while its lease lasts.
#[derive(Debug, Clone, Copy)]
pub struct DbClock {
    /// When the exchange that read it started.
    since: Instant,
    /// What it read.
    read_ms: i64,
}

impl DbClock {
    pub(super) fn read(since: Instant, read_ms: i64) -> DbClock {
        DbClock { since, read_ms }
    }

    /// Now by the database's clock, at the latest.
    pub(super) fn now_ms(&self) -> i64 {
        self.read_ms
            .saturating_add(self.since.elapsed().as_millis() as i64)
    }

    /// Now by the database's clock, in unix seconds.
    pub(super) fn now_seconds(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}
