//! Errors that can repeat every tick or delivery round (a full disk, a locked
//! database, a quote source that is down): logged when they start or change,
//! then once per [`REMINDER`] while they last, and once when they clear, so
//! the journal shows each state change, not two lines a second.

use std::time::{Duration, Instant};

/// How often an error that goes on is logged again.
pub const REMINDER: Duration = Duration::from_secs(60);

/// One kind of failure, e.g. "delivery round failed", and whether it is going on.
#[derive(Debug, Default)]
pub struct Recurring {
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    message: String,
    since: Instant,
    logged_at: Instant,
    /// Failures since the last logged one.
    unlogged: u64,
    total: u64,
}

/// What to log about a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Log {
    /// The failure started, or now fails differently.
    New,
    /// The same failure, still going on: `repeats` more times since the last
    /// line, over `for_secs` seconds in all.
    Still { repeats: u64, for_secs: u64 },
}

impl Recurring {
    /// Records a failure; what to log about it, if anything.
    pub fn failed(&mut self, message: &str, now: Instant) -> Option<Log> {
        match &mut self.failing {
            Some(failing) if failing.message == message => {
                failing.total += 1;
                if now.duration_since(failing.logged_at) < REMINDER {
                    failing.unlogged += 1;
                    return None;
                }
                let log = Log::Still {
                    repeats: failing.unlogged + 1,
                    for_secs: now.duration_since(failing.since).as_secs(),
                };
                failing.logged_at = now;
                failing.unlogged = 0;
                Some(log)
            }
            _ => {
                let total = self.failing.as_ref().map_or(0, |failing| failing.total);
                self.failing = Some(Failing {
                    message: message.to_owned(),
                    since: now,
                    logged_at: now,
                    unlogged: 0,
                    total: total + 1,
                });
                Some(Log::New)
            }
        }
    }

    /// Records a success: how many failures it ends, if it ends any.
    pub fn succeeded(&mut self) -> Option<u64> {
        self.failing.take().map(|failing| failing.total)
    }
}

/// Lines of one kind that can come in floods, one per bad row (100,000
/// malformed alerts on a ticker that moves every second): at most
/// `per_minute` are logged in a minute; how many were not is said when the
/// minute is over. Taken from many threads at once.
#[derive(Debug)]
pub struct Budget {
    per_minute: u64,
    /// Lines asked for in this minute, logged or not.
    asked: std::sync::atomic::AtomicU64,
    /// When this minute started.
    since: std::sync::Mutex<Option<Instant>>,
}

impl Budget {
    pub const fn per_minute(per_minute: u64) -> Budget {
        Budget {
            per_minute,
            asked: std::sync::atomic::AtomicU64::new(0),
            since: std::sync::Mutex::new(None),
        }
    }

    /// Whether one more line may be logged now.
    pub fn take(&self) -> bool {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            < self.per_minute
    }

    /// Counts a line that is not logged, whatever is left of the budget.
    pub fn count(&self) {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lines asked for in this minute, logged or not.
    #[cfg(test)]
    pub(crate) fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a new minute if this one is over: how many lines it did not
    /// log, if any.
    pub fn roll(&self, now: Instant) -> Option<u64> {
        let mut since = crate::lock::lock(&self.since);
        let started = *since.get_or_insert(now);
        if now.duration_since(started) < BUDGET_SPAN {
            return None;
        }
        *since = Some(now);
        let asked = self.asked.swap(0, std::sync::atomic::Ordering::Relaxed);
        Some(asked.saturating_sub(self.per_minute)).filter(|&unlogged| unlogged > 0)
    }
}

/// The span of a [`Budget`].
const BUDGET_SPAN: Duration = Duration::from_secs(60);

/// Logs an error with [`Recurring`]'s rhythm: `error!` (or `warn!`) with the
/// error and, for a repeat, how many times and for how long; `info!` when it
/// clears is the caller's, through [`Recurring::succeeded`].
#[macro_export]
macro_rules! log_recurring {
    ($level:ident, $recurring:expr, $error:expr, $($field:tt)+) => {{
        let error: &str = &$error;
        match $recurring.failed(error, std::time::Instant::now()) {
            Some($crate::recurring::Log::New) => tracing::$level!(error, $($field)+),
            Some($crate::recurring::Log::Still { repeats, for_secs }) => {
                tracing::$level!(error, repeats, for_secs, $($field)+)
            }
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_logs_its_lines_per_minute_and_counts_the_rest() {
        let start = Instant::now();
        let budget = Budget::per_minute(3);
        assert_eq!(budget.roll(start), None);
        let taken = (0..10).filter(|_| budget.take()).count();
        assert_eq!(taken, 3);
        assert_eq!(budget.roll(start + Duration::from_secs(59)), None);
        assert!(!budget.take());
        assert_eq!(budget.roll(start + Duration::from_secs(60)), Some(8));
        // A new minute: three more, and nothing to say if none was refused.
        assert_eq!((0..3).filter(|_| budget.take()).count(), 3);
        assert_eq!(budget.roll(start + Duration::from_secs(121)), None);
    }

    #[test]
    fn a_failure_is_logged_when_it_starts_changes_and_every_minute_while_it_lasts() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut recurring = Recurring::default();
        assert_eq!(
            recurring.failed("database is locked", at(0)),
            Some(Log::New)
        );
        // Twice a second for a minute: nothing more.
        for half_seconds in 1..120 {
            let now = start + Duration::from_millis(500 * half_seconds);
            assert_eq!(recurring.failed("database is locked", now), None);
        }
        assert_eq!(
            recurring.failed("database is locked", at(60)),
            Some(Log::Still {
                repeats: 120,
                for_secs: 60
            })
        );
        assert_eq!(recurring.failed("database is locked", at(61)), None);
        // A different error is news at once.
        assert_eq!(recurring.failed("disk is full", at(62)), Some(Log::New));
        assert_eq!(recurring.succeeded(), Some(123));
        assert_eq!(recurring.succeeded(), None);
        assert_eq!(recurring.failed("disk is full", at(63)), Some(Log::New));
    }
}
