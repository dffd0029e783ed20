//! The cluster's one clock: the database's. Every time a decision depends
//! on (a tick's now, by which quotes age and alerts expire, cool down and
//! wake; the outbox's leases and retries; the stamps the daemon writes) is
//! read from it, once per tick or exchange with the outbox, never from a
//! member's own clock, which may be off by minutes: two members whose
//! clocks disagree still agree on every lease and every expiry. On SQLite,
//! whose every process runs on this host, it is this host's clock; on
//! PostgreSQL, the server's `clock_timestamp()`.
//!
//! A member whose own clock is off says so ([`offset`]): its schedule's
//! fire times, which cron reads from its own clock, come early or late.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::shared::{PerEngine, Row, Statements};
use super::{Connection, Result};

static NOW_MS: PerEngine = PerEngine::new("SELECT {now_ms}");

/// Now by the database's clock, to the millisecond.
pub fn now(connection: &mut Connection) -> Result<DateTime<Utc>> {
    let ms = now_ms(connection)?;
    Ok(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// Now by the database's clock, in unix milliseconds.
pub fn now_ms(connection: &mut Connection) -> Result<i64> {
    connection.engine().now_ms()
}

/// [`now_ms`] on an engine's connection.
pub(super) fn now_ms_on<C: Statements>(connection: &mut C) -> std::result::Result<i64, C::Error> {
    let sql = C::per_engine(&NOW_MS);
    let now = connection.query_first(sql, &[], |row| row.get::<i64>(0))?;
    Ok(now.unwrap_or_default())
}

/// How far this member's clock is from the database's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// The database's clock minus this member's, in milliseconds: positive
    /// when this member's clock is behind.
    pub ms: i64,
    /// How far off the measurement itself may be: half the time the
    /// reading took.
    pub uncertainty_ms: i64,
}

impl Offset {
    /// Whether this member's clock is surely off by more than `bound`.
    pub fn beyond(&self, bound: Duration) -> bool {
        self.ms.abs() - self.uncertainty_ms > bound.as_millis() as i64
    }
}

/// Measures this member's clock against the database's: one reading of the
/// database's, against the middle of this member's before and after it.
pub fn offset(connection: &mut Connection) -> Result<Offset> {
    let (started, before) = (Instant::now(), Utc::now());
    let database = now_ms(connection)?;
    let took = started.elapsed();
    let middle = before.timestamp_millis() + (took.as_millis() / 2) as i64;
    Ok(Offset {
        ms: database - middle,
        uncertainty_ms: (took.as_millis() / 2) as i64 + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_beyond_its_bound_only_past_its_uncertainty() {
        let bound = Duration::from_secs(2);
        let offset = |ms, uncertainty_ms| Offset { ms, uncertainty_ms };
        assert!(!offset(1_500, 1).beyond(bound));
        assert!(offset(2_500, 1).beyond(bound));
        assert!(offset(-120_000, 3).beyond(bound));
        assert!(!offset(2_500, 600).beyond(bound));
    }

    #[test]
    fn sqlites_clock_is_this_hosts() {
        let mut connection = rusqlite::Connection::open_in_memory().unwrap();
        let before = Utc::now().timestamp_millis();
        let now = now_ms_on(&mut connection).unwrap();
        let after = Utc::now().timestamp_millis();
        assert!(
            (before - 1..=after + 1).contains(&now),
            "{before} {now} {after}"
        );
    }
}
