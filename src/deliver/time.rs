//! Time as the deliverer keeps it: unix milliseconds, as the outbox stores
//! them, and the drain deadline.

use tokio::sync::watch;
use tokio::time::Instant;

/// When to stop: `None` while running; `Some(deadline)` once draining, after
/// which nothing new is leased and in-flight requests still open at the
/// deadline are abandoned and their rows given back untouched.
pub type Stop = watch::Receiver<Option<Instant>>;

/// Now, in unix milliseconds.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
