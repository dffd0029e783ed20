//! The deliverer between pipelines: when the next event is due, and how
//! long to sleep until then.

use std::time::Duration;

use tokio::time::Instant;

use crate::log_recurring;
use crate::store;
use crate::store::outbox;

use super::pipeline::Deliverer;

/// How long an idle deliverer sleeps when nothing is due, unless woken: the
/// delay before it sees rows that another process queued or replayed.
const IDLE_POLL: Duration = Duration::from_secs(5);

impl Deliverer<'_> {
    /// How long until the next pending event is due (by the database's
    /// clock), if any is pending; after a failed read, a second.
    pub(super) async fn next_due(&mut self) -> Option<Duration> {
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
                Some(Duration::from_secs(1))
            }
        }
    }

    /// How long to wait idle before looking again (at most [`IDLE_POLL`],
    /// longer after a failed exchange); `None` when draining and nothing
    /// deliverable is left before the deadline.
    pub(super) fn idle_wait(
        &self,
        next_due: Option<Duration>,
        draining: Option<Instant>,
    ) -> Option<Duration> {
        let wait = match next_due {
            Some(due) => due.min(IDLE_POLL),
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
