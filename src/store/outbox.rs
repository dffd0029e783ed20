//! The outbox: events waiting for delivery. A deliverer leases due rows before
//! sending them, so several daemons on one database never send the same row at
//! the same time; a row leaves the pending state only after a 2xx.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::time::parse_time;

use super::shared::{Row, Statements};
use super::{Connection, Result};

/// The delivery attempts of each event, kept as long as the event, at most
/// [`ATTEMPTS_KEPT`] of one (the last): one b-tree keyed by the event's row
/// and the attempt's start, so that recording an attempt is one insert
/// beside the row's update (SQLite's types and a `WITHOUT ROWID` table;
/// PostgreSQL's migration has its own, [`ATTEMPTS_SCHEMA_PG`], indexed by
/// event without a unique key since: a heap tuple and an index entry per
/// attempt). An event's row is not where they go: a second pass over the
/// outbox's rows, or a join of outcomes with attempts, costs more than an
/// append (BENCHMARKS.md, "What was sent, recorded").
pub(super) const ATTEMPTS_SCHEMA: &str = "
CREATE TABLE delivery_attempts (
    outbox_id INTEGER NOT NULL,          -- the event's outbox row
    attempted_at INTEGER NOT NULL,       -- when the request started (unix ms, the database's clock)
    number INTEGER NOT NULL,             -- its number among the event's attempts (a replay starts again)
    url TEXT NOT NULL,                   -- where it went, without credentials ('' for nowhere)
    status INTEGER,                      -- the answer's status, if one came
    error TEXT,                          -- why it failed, if it did
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (outbox_id, attempted_at, number)
) WITHOUT ROWID;
";

/// [`ATTEMPTS_SCHEMA`] on PostgreSQL (its migration 8 trades the primary
/// key for an index by event).
pub(super) const ATTEMPTS_SCHEMA_PG: &str = "
CREATE TABLE delivery_attempts (
    outbox_id BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL,
    number INTEGER NOT NULL,
    url TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (outbox_id, attempted_at, number)
);
";

/// The most attempts of one event kept: its last.
pub const ATTEMPTS_KEPT: u32 = 20;

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
    /// Its place on its user's channel, once it took one (`store::channels`).
    pub channel_seq: Option<i64>,
    /// The id of the event before it on its channel, with its place.
    pub prev_id: Option<String>,
}

/// What became of one leased row, to be recorded under its lease.
#[derive(Debug, Clone)]
pub struct Settled {
    pub row_id: i64,
    /// The lease it was sent under: only that lease's holder records it.
    pub lease_until: i64,
    pub outcome: Outcome,
    /// The attempt that came to it, recorded with it (even if the lease is
    /// no longer this deliverer's: the request was sent); none for a row
    /// given back unsent.
    pub attempt: Option<Attempt>,
}

/// One delivery attempt as `outbox show` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attempt {
    /// Its number among the event's attempts (1 for the first; a replay
    /// starts again).
    pub number: u32,
    /// When the request started (unix ms, the database's clock).
    #[serde(skip)]
    pub at_ms: i64,
    /// `at_ms` as RFC 3339, as read back.
    #[serde(rename = "attempted_at")]
    pub at: String,
    /// Where it went, without credentials (a query masked); empty when the
    /// event had no URL to go to.
    pub url: String,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    pub duration_ms: i64,
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
    /// Whether each leased row takes a place on its user's channel, if it
    /// has none yet (`store::channels`).
    pub place: bool,
}

/// A lease a claim takes on the events it queues, in its transaction, for
/// this process's deliverer: up to `want.limit` of them (of a user in
/// `want.spread`'s `full`, none; of any other, at most its `per_user`), in
/// queue order, leased to `owner` for `want.lease` from the claim's time
/// (the database's clock, read as the exchange's is) and placed on their
/// channels where `want.place` asks. The deliverer then holds them as if
/// an exchange had leased them (invariant 4), and the claim hands them
/// over in memory ([`Lessee`]): an event no longer waits for a lease of
/// its own before it is sent.
#[derive(Debug, Clone)]
pub struct ClaimLease {
    pub owner: String,
    pub want: Want,
}

impl ClaimLease {
    /// Which of the rows a claim queues, with these users in queue order,
    /// the lease takes.
    pub fn takes<'u>(&self, users: impl IntoIterator<Item = Option<&'u str>>) -> Vec<bool> {
        let mut shares = Shares::of(&self.want);
        users.into_iter().map(|user| shares.take(user)).collect()
    }
}

/// What a lease takes of rows in queue order, one at a time: up to
/// `want.limit`, and where `want.spread` asks, at most `per_user` of each
/// user and none of the users it names full. A claim's lease and an
/// exchange's (SQLite's spread) count alike.
pub(super) struct Shares<'w> {
    spread: Option<&'w Spread>,
    full: HashSet<&'w str>,
    left: usize,
    taken: HashMap<String, usize>,
}

impl<'w> Shares<'w> {
    pub(super) fn of(want: &'w Want) -> Shares<'w> {
        let spread = want.spread.as_ref();
        Shares {
            spread,
            full: spread
                .iter()
                .flat_map(|spread| spread.full.iter().map(String::as_str))
                .collect(),
            left: want.limit,
            taken: HashMap::new(),
        }
    }

    /// Whether the lease takes the next row, of `user`.
    pub(super) fn take(&mut self, user: Option<&str>) -> bool {
        if self.left == 0 {
            return false;
        }
        if let Some(spread) = self.spread {
            let user = user_key(user);
            if self.full.contains(user) {
                return false;
            }
            let count = match self.taken.get_mut(user) {
                Some(count) => count,
                None => self.taken.entry(user.to_owned()).or_default(),
            };
            if *count >= spread.per_user {
                return false;
            }
            *count += 1;
        }
        self.left -= 1;
        true
    }

    /// Whether it takes no more.
    pub(super) fn done(&self) -> bool {
        self.left == 0
    }
}

/// Who a claim leases its events to ([`ClaimLease`]): this process's
/// deliverer, while it takes them.
pub trait Lessee: Sync {
    /// The lease a claim of up to `most` events may take now; none while
    /// the deliverer takes nothing (it stops, its settings change, its
    /// pipeline is full).
    fn ask(&self, most: usize) -> Option<ClaimLease>;

    /// After a claim: `queued` events were queued, and `leased` (under
    /// `asked`) taken by the deliverer, as of the transaction started at
    /// `since`; `None` if the claim failed.
    fn hand(
        &self,
        asked: Option<ClaimLease>,
        queued: usize,
        leased: Option<Exchanged>,
        since: std::time::Instant,
    );
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
    pub user_id: Option<String>,
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    /// When the next attempt is due (RFC 3339), while pending.
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
}

/// An event as `outbox show` gives it: its row, its body as queued, and its
/// attempts, oldest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEvent {
    #[serde(flatten)]
    pub entry: OutboxEntry,
    pub body: String,
    pub attempts_made: Vec<Attempt>,
}

/// The states an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Dead,
    Delivered,
    /// Pending or dead.
    Undelivered,
    All,
}

impl OutboxState {
    /// Every state's word, as the CLI takes them.
    pub const WORDS: [&'static str; 5] = ["pending", "dead", "delivered", "undelivered", "all"];

    pub fn parse(word: &str) -> Option<OutboxState> {
        Some(match word {
            "pending" => OutboxState::Pending,
            "dead" => OutboxState::Dead,
            "delivered" => OutboxState::Delivered,
            "undelivered" => OutboxState::Undelivered,
            "all" => OutboxState::All,
            _ => return None,
        })
    }

    pub(super) fn word(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Dead => "dead",
            OutboxState::Delivered => "delivered",
            OutboxState::Undelivered => "undelivered",
            OutboxState::All => "all",
        }
    }
}

/// The events `list`, `count` and `replay_matching` take: of a state, and
/// of a user, an alert and a time range of queueing (`since` included,
/// `until` not; RFC 3339 as [`super::timestamp`] writes them), oldest
/// first, at most `limit` (for `list`).
#[derive(Debug, Clone, Copy)]
pub struct OutboxQuery<'a> {
    pub state: OutboxState,
    pub user: Option<&'a str>,
    pub alert: Option<i64>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub limit: usize,
}

impl OutboxQuery<'_> {
    /// Every event of `state`.
    pub fn of(state: OutboxState, limit: usize) -> OutboxQuery<'static> {
        OutboxQuery {
            state,
            user: None,
            alert: None,
            since: None,
            until: None,
            limit,
        }
    }
}

/// Settled outcomes as the engines record them: per lease, the rows
/// delivered and the rows released (each in row order), one set-based
/// statement each; retries and dead letters one row at a time.
pub(super) struct Recording<'a> {
    pub by_lease: Vec<LeaseOutcomes>,
    pub retries: Vec<Retry<'a>>,
    pub dead: Vec<DeadLetter<'a>>,
    /// The attempts, each with its row and lease. Each is recorded
    /// whoever's lease its row is under now: the request was sent.
    pub attempts: Vec<(i64, i64, &'a Attempt)>,
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
        let (mut retries, mut dead, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
        for Settled {
            row_id,
            lease_until,
            outcome,
            attempt,
        } in settled
        {
            if let Some(attempt) = attempt {
                attempts.push((*row_id, *lease_until, attempt));
            }
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
            attempts,
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

/// The store's upkeep after an [`exchange`], which the deliverer runs once
/// it has the leased rows: they are not held by it (a checkpoint of the
/// WAL took up to 160 ms when a burst's claims had filled it).
pub fn after_exchange(connection: &mut Connection) {
    connection.engine().after_write();
}

/// How long until the next pending row becomes sendable, by the database's
/// clock (zero: now), if any is pending.
pub fn next_due(connection: &mut Connection) -> Result<Option<std::time::Duration>> {
    let (now_ms, due) = connection.engine().next_due()?;
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

/// Up to `query.limit` events of `query`, oldest first.
pub fn list(connection: &mut Connection, query: &OutboxQuery<'_>) -> Result<Vec<OutboxEntry>> {
    connection.engine().list_outbox(query)
}

/// How many events `query` holds, its limit aside.
pub fn count(connection: &mut Connection, query: &OutboxQuery<'_>) -> Result<u64> {
    connection.engine().count_outbox(query)
}

/// One event, its body and its attempts.
pub fn show(connection: &mut Connection, event_id: &str) -> Result<Option<OutboxEvent>> {
    connection.engine().outbox_event(event_id)
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

/// Puts every event of `query` (its limit aside) back at the start of a
/// fresh retry schedule, due now by the database's clock, delivered ones
/// too (a receiver that lost them drops those it has by their ids);
/// returns how many.
pub fn replay_matching(connection: &mut Connection, query: &OutboxQuery<'_>) -> Result<usize> {
    let now_ms = super::clock::now_ms(connection)?;
    connection.engine().replay_matching(query, now_ms)
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
/// The filter of [`OutboxQuery`]: `$1` its state's word, `$2` user, `$3`
/// alert, `$4` since, `$5` until (casts, so that PostgreSQL types a NULL).
macro_rules! outbox_filter {
    () => {
        "(CAST($1 AS TEXT) = 'all' OR state = CAST($1 AS TEXT)
           OR (CAST($1 AS TEXT) = 'undelivered' AND state <> 'delivered'))
         AND (CAST($2 AS TEXT) IS NULL OR user_id = CAST($2 AS TEXT))
         AND (CAST($3 AS BIGINT) IS NULL OR alert_id = CAST($3 AS BIGINT))
         AND (CAST($4 AS TEXT) IS NULL OR created_at >= CAST($4 AS TEXT))
         AND (CAST($5 AS TEXT) IS NULL OR created_at < CAST($5 AS TEXT))"
    };
}

/// An [`OutboxEntry`]'s columns.
macro_rules! entry_columns {
    () => {
        "event_id, alert_id, state, attempts, created_at, next_attempt_at, last_error, user_id, delivered_at"
    };
}

pub(super) const LIST: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM outbox WHERE ",
    outbox_filter!(),
    " ORDER BY id LIMIT $6"
);
pub(super) const COUNT: &str = concat!("SELECT count(*) FROM outbox WHERE ", outbox_filter!());
/// `$6`: now, in unix ms.
pub(super) const REPLAY_MATCHING: &str = concat!(
    "WITH chosen AS (SELECT id FROM outbox WHERE ",
    outbox_filter!(),
    ") UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = $6, dead_at = NULL,
         delivered_at = NULL, lease_owner = NULL, lease_until = NULL
     WHERE id IN (SELECT id FROM chosen)"
);
pub(super) const EVENT: &str = concat!(
    "SELECT ",
    entry_columns!(),
    ", id, body FROM outbox WHERE event_id = $1"
);
pub(super) const ALERT_EVENTS: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM outbox WHERE alert_id = $1 ORDER BY id DESC LIMIT $2"
);
/// An event's attempts, each once: on PostgreSQL, whose table has no unique
/// key (migration 8), an exchange tried again after a commit it did not
/// hear of records its attempts twice.
pub(super) const ATTEMPTS: &str = "SELECT attempted_at, min(url), min(status), min(error),
         min(duration_ms), number
     FROM delivery_attempts WHERE outbox_id = $1
     GROUP BY attempted_at, number ORDER BY attempted_at, number";
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
    query: &OutboxQuery<'_>,
) -> std::result::Result<Vec<OutboxEntry>, C::Error> {
    let limit = query.limit as i64;
    connection.query(
        LIST,
        &[
            &query.state.word(),
            &query.user,
            &query.alert,
            &query.since,
            &query.until,
            &limit,
        ],
        |row| entry_of(row),
    )
}

pub(super) fn count_on<C: Statements>(
    connection: &mut C,
    query: &OutboxQuery<'_>,
) -> std::result::Result<u64, C::Error> {
    let count = connection.query_first(
        COUNT,
        &[
            &query.state.word(),
            &query.user,
            &query.alert,
            &query.since,
            &query.until,
        ],
        |row| row.get::<i64>(0),
    )?;
    Ok(count.unwrap_or_default().max(0) as u64)
}

pub(super) fn replay_matching_on<C: Statements>(
    connection: &mut C,
    query: &OutboxQuery<'_>,
    now_ms: i64,
) -> std::result::Result<usize, C::Error> {
    Ok(connection.execute(
        REPLAY_MATCHING,
        &[
            &query.state.word(),
            &query.user,
            &query.alert,
            &query.since,
            &query.until,
            &now_ms,
        ],
    )? as usize)
}

pub(super) fn event_on<C: Statements>(
    connection: &mut C,
    event_id: &str,
) -> std::result::Result<Option<OutboxEvent>, C::Error> {
    let Some((entry, row_id, body)) = connection.query_first(EVENT, &[&event_id], |row| {
        Ok((entry_of(row)?, row.get::<i64>(9)?, row.get::<String>(10)?))
    })?
    else {
        return Ok(None);
    };
    let attempts_made = connection.query(ATTEMPTS, &[&row_id], |row| {
        let at_ms = row.get::<i64>(0)?;
        Ok(Attempt {
            number: row.get::<i32>(5)?.max(0) as u32,
            at_ms,
            at: super::millis_to_text(at_ms),
            url: row.get(1)?,
            status: row
                .get::<Option<i32>>(2)?
                .and_then(|status| u16::try_from(status).ok()),
            error: row.get(3)?,
            duration_ms: row.get(4)?,
        })
    })?;
    Ok(Some(OutboxEvent {
        entry,
        body,
        attempts_made,
    }))
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
        user_id: row.get(7)?,
        delivered_at: row.get(8)?,
    })
}

pub(super) fn purge_delivered_on<C: Statements>(
    connection: &mut C,
    before: &str,
) -> std::result::Result<usize, C::Error> {
    connection.write_transaction(|connection| {
        connection.execute(PURGE_ATTEMPTS, &[&before])?;
        Ok(connection.execute(PURGE_DELIVERED, &[&before])? as usize)
    })
}

/// The attempts of the events [`PURGE_DELIVERED`] deletes: kept as long as
/// their event.
pub(super) const PURGE_ATTEMPTS: &str = "DELETE FROM delivery_attempts WHERE outbox_id IN
     (SELECT id FROM outbox WHERE state = 'delivered' AND delivered_at < $1)";

/// Leaves an event ($1, its outbox row) its last [`ATTEMPTS_KEPT`] ($2)
/// attempts.
pub(super) const TRIM_ATTEMPTS: &str = "DELETE FROM delivery_attempts
     WHERE outbox_id = $1 AND (attempted_at, number) <=
         (SELECT attempted_at, number FROM delivery_attempts WHERE outbox_id = $1
          ORDER BY attempted_at DESC, number DESC LIMIT 1 OFFSET $2)";

/// The rows whose attempts [`TRIM_ATTEMPTS`] must trim: those whose attempt
/// passed [`ATTEMPTS_KEPT`].
pub(super) fn to_trim(recording: &Recording<'_>) -> Vec<i64> {
    recording
        .attempts
        .iter()
        .filter(|(_, _, attempt)| attempt.number > ATTEMPTS_KEPT)
        .map(|(row_id, _, _)| *row_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(limit: usize, spread: Option<Spread>) -> ClaimLease {
        ClaimLease {
            owner: "me".into(),
            want: Want {
                lease: std::time::Duration::from_secs(30),
                limit,
                spread,
                place: false,
            },
        }
    }

    #[test]
    fn a_claim_leases_the_first_rows_up_to_its_limit() {
        let users = [Some("a"), None, Some("b"), Some("a")];
        assert_eq!(lease(2, None).takes(users), [true, true, false, false]);
        assert_eq!(lease(9, None).takes(users), [true; 4]);
        assert_eq!(lease(0, None).takes(users), [false; 4]);
    }

    #[test]
    fn a_spread_claim_lease_takes_a_share_of_each_user_and_none_of_the_full() {
        let spread = Spread {
            per_user: 2,
            full: vec!["c".into()],
        };
        let users = [
            Some("a"),
            Some("a"),
            Some("a"),
            Some("c"),
            None,
            Some("b"),
            None,
        ];
        assert_eq!(
            lease(9, Some(spread.clone())).takes(users),
            [true, true, false, false, true, true, true]
        );
        // The limit counts only the rows taken.
        assert_eq!(
            lease(3, Some(spread)).takes(users),
            [true, true, false, false, true, false, false]
        );
    }
}
