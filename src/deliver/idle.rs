//! The deliverer between pipelines: when the next event is due, and how
//! long to sleep until then.

use std::time::Duration;

use tokio::time::Instant;

use crate::log_recurring;
use crate::store;
use crate::store::outbox;

use super::pipeline::Deliverer;
use super::time::now_ms;

/// How long an idle deliverer sleeps when nothing is due, unless woken: the
/// delay before it sees rows that another process queued or replayed.
const IDLE_POLL: Duration = Duration::from_secs(5);

impl Deliverer<'_> {
    /// When the next pending event is due (unix ms), if any; after a failed
    /// read, in a second.
    pub(super) async fn next_due(&mut self) -> Option<i64> {
        let next_due = store::blocking(self.pool, "reading the outbox", |connection| {
            outbox::next_due(connection)
        })
        .await;
        match next_due {
            Ok(next_due) => {
                self.outbox_failures.succeeded();
                next_due
            }
            Err(error) => {
                log_recurring!(
                    error,
                    self.outbox_failures,
                    format!("{error:#}"),
                    "reading the outbox failed"
                );
                Some(now_ms() + 1000)
            }
        }
    }

    /// How long to wait idle before looking again (at most [`IDLE_POLL`],
    /// longer after a failed exchange); `None` when draining and nothing
    /// deliverable is left before the deadline.
    pub(super) fn idle_wait(
        &self,
        next_due: Option<i64>,
        draining: Option<Instant>,
    ) -> Option<Duration> {
        let wait = match next_due {
            Some(due) => Duration::from_millis((due - now_ms()).max(0) as u64).min(IDLE_POLL),
            None if draining.is_some() => return None,
            None => IDLE_POLL,
        };
        // After a failed exchange, back off instead of spinning.
        let wait = match self.retry_at {
            Some(at) => wait.max(at.saturating_duration_since(Instant::now())),
            None => wait,
        };
        match draining {
            Some(deadline) if Instant::now() + wait >= deadline => None,
            _ => Some(wait),
        }
    }
}
