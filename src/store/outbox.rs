//! The outbox: events waiting for delivery. A deliverer leases due rows before
//! sending them, so several daemons on one database never send the same row at
//! the same time; a row leaves the pending state only after a 2xx.

use chrono::{DateTime, Utc};

use crate::time::parse_time;

use super::shared::{Row, Statements};
use super::{Connection, Result};

/// A leased event, ready to send.
#[derive(Debug, Clone)]
pub struct Leased {
    pub row_id: i64,
    pub event_id: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The alert's user, as its event carries it: with `{user_id}` in the
    /// webhook's URL, where the event goes.
    pub user_id: Option<String>,
    /// When the lease ends (unix ms): the lease's token, with the owner.
    pub lease_until: i64,
    /// When its claim queued it (the event's `triggered_at`); `None` for a
    /// row whose `created_at` is not a time.
    pub created_at: Option<DateTime<Utc>>,
}

/// What became of one leased row, to be recorded under its lease.
#[derive(Debug, Clone)]
pub struct Settled {
    pub row_id: i64,
    /// The lease it was sent under: only that lease's holder records it.
    pub lease_until: i64,
    pub outcome: Outcome,
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Failed; try again `after` this long, by the database's clock from
    /// the exchange that records it.
    Retry {
        after: std::time::Duration,
        error: String,
    },
    /// Failed for good (a 4xx other than 408/425/429, or the retry schedule
    /// is used up): kept as a dead letter until an operator replays it.
    Dead {
        error: String,
    },
    /// Not attempted, or not to the end (the daemon is stopping, the
    /// configuration changed, the lease ran short): give the row back as it was.
    Released,
}

/// A request for more rows in an [`exchange`].
#[derive(Debug, Clone)]
pub struct Want {
    /// How long the lease lasts, from the exchange's time (the database's).
    pub lease: std::time::Duration,
    pub limit: usize,
    /// Routing by user: the share of each user (see [`Spread`]).
    pub spread: Option<Spread>,
}

/// How leasing shares the rows among users when each user's events go to
/// a URL of their own, so that one user's backlog never holds back the
/// others: of the due rows, in queue order, at most `per_user` of any one
/// user, and none of the users in `full` (who already hold that many).
/// Rows without a user count as one user, `""`.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    pub per_user: usize,
    pub full: Vec<String>,
}

impl Want {
    /// When a lease taken at `now_ms` ends.
    pub(super) fn lease_until(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.lease.as_millis() as i64)
    }

    /// How many due rows, in queue order, a spread lease looks at: enough
    /// that a few users' backlogs leave room for the others'.
    pub(super) fn scan(&self) -> usize {
        self.limit.saturating_mul(4)
    }
}

/// The user a row's event belongs to, as leasing groups them: its user id,
/// or `""`.
pub fn user_key(user_id: Option<&str>) -> &str {
    user_id.unwrap_or("")
}

/// One outbox row as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEntry {
    pub event_id: String,
    pub alert_id: i64,
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    /// When the next attempt is due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// Which rows `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxFilter {
    /// Pending and dead: what has not been delivered.
    Undelivered,
    Dead,
}

/// Settled outcomes as the engines record them: per lease, the rows
/// delivered and the rows released (each in row order), one set-based
/// statement each; retries and dead letters one row at a time.
pub(super) struct Recording<'a> {
    pub by_lease: Vec<LeaseOutcomes>,
    pub retries: Vec<Retry<'a>>,
    pub dead: Vec<DeadLetter<'a>>,
}

/// The rows of one lease that were delivered, and those given back unsent.
pub(super) struct LeaseOutcomes {
    pub lease_until: i64,
    pub delivered: Vec<i64>,
    pub released: Vec<i64>,
}

/// A row to try again at `next_attempt_at`, after `error`.
pub(super) struct Retry<'a> {
    pub row_id: i64,
    pub lease_until: i64,
    pub next_attempt_at: i64,
    pub error: &'a str,
}

/// A row that will not be tried again, after `error`.
pub(super) struct DeadLetter<'a> {
    pub row_id: i64,
    pub lease_until: i64,
    pub error: &'a str,
}

impl<'a> Recording<'a> {
    /// The outcomes as recorded at `now_ms`, the exchange's time.
    pub(super) fn of(settled: &'a [Settled], now_ms: i64) -> Recording<'a> {
        let mut by_lease: std::collections::BTreeMap<i64, (Vec<i64>, Vec<i64>)> =
            Default::default();
        let (mut retries, mut dead) = (Vec::new(), Vec::new());
        for Settled {
            row_id,
            lease_until,
            outcome,
        } in settled
        {
            match outcome {
                Outcome::Delivered => by_lease.entry(*lease_until).or_default().0.push(*row_id),
                Outcome::Released => by_lease.entry(*lease_until).or_default().1.push(*row_id),
                Outcome::Retry { after, error } => retries.push(Retry {
                    row_id: *row_id,
                    lease_until: *lease_until,
                    next_attempt_at: now_ms.saturating_add(after.as_millis() as i64),
                    error: error.as_str(),
                }),
                Outcome::Dead { error } => dead.push(DeadLetter {
                    row_id: *row_id,
                    lease_until: *lease_until,
                    error: error.as_str(),
                }),
            }
        }
        Recording {
            // Rows in one order, so that two deliverers never deadlock.
            by_lease: by_lease
                .into_iter()
                .map(|(lease_until, (mut delivered, mut released))| {
                    delivered.sort_unstable();
                    released.sort_unstable();
                    LeaseOutcomes {
                        lease_until,
                        delivered,
                        released,
                    }
                })
                .collect(),
            retries,
            dead,
        }
    }
}

/// What an [`exchange`] leased, and the database's time it took as its own
/// (unix ms): leases and retries count from it.
#[derive(Debug, Clone, Default)]
pub struct Exchanged {
    pub leased: Vec<Leased>,
    pub now_ms: i64,
}

/// One round trip of a deliverer to the outbox, in one transaction, at one
/// time read from the database's clock: records `settled` (each only while
/// its lease is still `owner`'s), then leases up to `want.limit` due rows to
/// `owner`, in queue order. A lease that expired (its holder died) is free
/// again.
pub fn exchange(
    connection: &mut Connection,
    owner: &str,
    settled: &[Settled],
    want: Option<Want>,
) -> Result<Exchanged> {
    connection.engine().exchange(owner, settled, want)
}

/// How long until the next pending row becomes sendable, by the database's
/// clock (zero: now), if any is pending.
pub fn next_due(connection: &mut Connection) -> Result<Option<std::time::Duration>> {
    let now_ms = super::clock::now_ms(connection)?;
    let due = connection.engine().next_due()?;
    Ok(due.map(|due| std::time::Duration::from_millis(due.saturating_sub(now_ms).max(0) as u64)))
}

/// When the oldest pending event was queued, if any is pending (and its
/// `created_at` is a time); through the partial index `outbox_pending`.
pub fn oldest_pending(connection: &mut Connection) -> Result<Option<DateTime<Utc>>> {
    Ok(connection
        .engine()
        .oldest_pending()?
        .as_deref()
        .and_then(parse_time))
}

/// Pending events and dead letters.
pub fn backlog(connection: &mut Connection) -> Result<(u64, u64)> {
    connection.engine().backlog()
}

/// Up to `limit` rows, oldest first.
pub fn list(
    connection: &mut Connection,
    filter: OutboxFilter,
    limit: usize,
) -> Result<Vec<OutboxEntry>> {
    connection.engine().list_outbox(filter, limit)
}

/// Up to `limit` events of one alert, newest first.
pub fn alert_events(
    connection: &mut Connection,
    alert_id: i64,
    limit: usize,
) -> Result<Vec<OutboxEntry>> {
    connection.engine().alert_events(alert_id, limit)
}

/// Puts dead or pending events back at the start of a fresh retry schedule,
/// due now by the database's clock; their ids and bodies stay. Delivered
/// events are left alone. Returns the event ids that were found and
/// replayed.
pub fn replay(connection: &mut Connection, event_ids: &[String]) -> Result<Vec<String>> {
    let now_ms = super::clock::now_ms(connection)?;
    connection.engine().replay(event_ids, now_ms)
}

/// Replays every dead letter; returns how many.
pub fn replay_all_dead(connection: &mut Connection) -> Result<usize> {
    let now_ms = super::clock::now_ms(connection)?;
    connection.engine().replay_all_dead(now_ms)
}

/// Deletes delivered events delivered before `before` (an RFC 3339 stamp as
/// [`super::timestamp`] writes them). Pending and dead events are never touched.
pub fn purge_delivered(connection: &mut Connection, before: &str) -> Result<usize> {
    connection.engine().purge_delivered(before)
}

pub(super) const OLDEST_PENDING: &str =
    "SELECT created_at FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1";
pub(super) const BACKLOG: &str = "SELECT (SELECT count(*) FROM outbox WHERE state = 'pending'),
            (SELECT count(*) FROM outbox WHERE state = 'dead')";
/// `list`'s statements: one per filter, so that each is a literal the
/// engines prepare once.
macro_rules! listing {
    ($states:literal) => {
        concat!(
            "SELECT event_id, alert_id, state, attempts, created_at, next_attempt_at, last_error
             FROM outbox WHERE state IN ",
            $states,
            " ORDER BY id LIMIT $1"
        )
    };
}
pub(super) const LIST_UNDELIVERED: &str = listing!("('pending', 'dead')");
pub(super) const LIST_DEAD: &str = listing!("('dead')");
pub(super) const ALERT_EVENTS: &str =
    "SELECT event_id, alert_id, state, attempts, created_at, next_attempt_at, last_error
     FROM outbox WHERE alert_id = $1 ORDER BY id DESC LIMIT $2";
pub(super) const PURGE_DELIVERED: &str =
    "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < $1";

pub(super) fn oldest_pending_on<C: Statements>(
    connection: &mut C,
) -> std::result::Result<Option<String>, C::Error> {
    connection.query_first(OLDEST_PENDING, &[], |row| row.get::<String>(0))
}

pub(super) fn backlog_on<C: Statements>(
    connection: &mut C,
) -> std::result::Result<(u64, u64), C::Error> {
    let counts = connection.query_first(BACKLOG, &[], |row| {
        Ok((row.get::<i64>(0)?, row.get::<i64>(1)?))
    })?;
    let (pending, dead) = counts.unwrap_or_default();
    Ok((pending.max(0) as u64, dead.max(0) as u64))
}

pub(super) fn list_on<C: Statements>(
    connection: &mut C,
    filter: OutboxFilter,
    limit: usize,
) -> std::result::Result<Vec<OutboxEntry>, C::Error> {
    let sql = match filter {
        OutboxFilter::Undelivered => LIST_UNDELIVERED,
        OutboxFilter::Dead => LIST_DEAD,
    };
    connection.query(sql, &[&(limit as i64)], |row| entry_of(row))
}

pub(super) fn alert_events_on<C: Statements>(
    connection: &mut C,
    alert_id: i64,
    limit: usize,
) -> std::result::Result<Vec<OutboxEntry>, C::Error> {
    connection.query(ALERT_EVENTS, &[&alert_id, &(limit as i64)], |row| {
        entry_of(row)
    })
}

/// An outbox row as `list` reads it: when a pending event is next due,
/// none for the others.
fn entry_of<R: Row>(row: &R) -> std::result::Result<OutboxEntry, R::Error> {
    let state: String = row.get(2)?;
    let next_attempt_at = match state.as_str() {
        "pending" => chrono::DateTime::from_timestamp_millis(row.get(5)?).map(super::timestamp),
        _ => None,
    };
    Ok(OutboxEntry {
        event_id: row.get(0)?,
        alert_id: row.get(1)?,
        state,
        attempts: row.get::<i32>(3)?.max(0) as u32,
        created_at: row.get(4)?,
        next_attempt_at,
        last_error: row.get(6)?,
    })
}

pub(super) fn purge_delivered_on<C: Statements>(
    connection: &mut C,
    before: &str,
) -> std::result::Result<usize, C::Error> {
    Ok(connection.execute(PURGE_DELIVERED, &[&before])? as usize)
}
