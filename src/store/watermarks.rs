//! Watermarks: how far each job has read the changes, and the tickers it
//! held back behind them.

use super::shared::{Row, Statements};
use super::{Connection, Result};

/// The changes a job has seen (every change numbered up to it); `None` for a
/// job that never ran, which must read everything once.
pub fn get(connection: &mut Connection, job: &str) -> Result<Option<i64>> {
    connection.engine().watermark(job)
}

/// A ticker a job held back (its quote was not fetched, or a trigger of it
/// was locked by someone else): its changes after `since` are still to be
/// judged, while the job's watermark moves on for every other ticker. The
/// next tick judges it again from `since`, whatever else changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub ticker: String,
    /// Every change of the ticker up to here was judged.
    pub since: i64,
    /// How far the tick that last held it had read (its closed horizon): a
    /// later tick lets the hold go only if it judged the ticker from
    /// `since` through at least this far.
    pub through: i64,
    /// Its quote was written after `since`: the alerts its move reaches
    /// are read again.
    pub moved: bool,
}

/// The most tickers a job holds back on their own; past them, the job's
/// watermark stays below the first change of the rest (as it did for
/// every held ticker before holds): a tick's memory and reads follow this,
/// not how many tickers a failing quote source or a locked range holds.
pub const MOST_HOLDS: usize = 1024;

/// Where a job's tick starts: its watermark and its holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    pub watermark: Option<i64>,
    /// At most [`MOST_HOLDS`], the lowest `since` first (any more wait
    /// for a later tick: their rows stay).
    pub holds: Vec<Hold>,
}

/// A job's watermark and holds, in one statement.
pub fn start(connection: &mut Connection, job: &str) -> Result<Start> {
    connection.engine().tick_start(job)
}

/// The hold of `ticker` by job `job`, if it has one.
pub fn hold_of(connection: &mut Connection, job: &str, ticker: &str) -> Result<Option<Hold>> {
    connection.engine().hold_of(job, ticker)
}

/// Where a tick's watermark goes, and its holds, written with the tick's
/// last observations (`observations::finish_tick`).
#[derive(Debug, Clone, Copy)]
pub struct Advance<'a> {
    /// The job's watermark key.
    pub job: &'a str,
    /// The watermark, never moved back.
    pub to: i64,
    /// How far the tick read: each hold is written through here.
    pub through: i64,
    /// The tickers it held back: each merged into the job's hold of it
    /// (the lower `since`, the higher `through`, moved if either moved).
    pub held: &'a [Hold],
    /// The holds it read and judged whole: each goes, unless another run
    /// held the ticker since from further back, or further on.
    pub released: &'a [Hold],
}

impl<'a> Advance<'a> {
    /// The watermark alone: nothing held, nothing let go.
    pub fn only(job: &'a str, to: i64) -> Advance<'a> {
        Advance {
            job,
            to,
            through: to,
            held: &[],
            released: &[],
        }
    }
}

/// The last change of `ticker`'s quote still in the change log (older ones
/// are pruned once every job has read them); `None` without one.
pub fn latest_quote_change(connection: &mut Connection, ticker: &str) -> Result<Option<i64>> {
    connection.engine().latest_quote_change(ticker)
}

/// The change log has no index by ticker: a scan, for an operator's
/// question, of a log that is pruned as the jobs read it.
pub(super) const LATEST_QUOTE_CHANGE: &str =
    "SELECT max(change_seq) FROM change_log WHERE quote_ticker = $1";

pub(super) fn latest_quote_change_on<C: Statements>(
    connection: &mut C,
    ticker: &str,
) -> std::result::Result<Option<i64>, C::Error> {
    Ok(connection
        .query_first(LATEST_QUOTE_CHANGE, &[&ticker], |row| {
            row.get::<Option<i64>>(0)
        })?
        .flatten())
}

pub(super) const GET: &str = "SELECT change_seq FROM job_watermarks WHERE job = $1";

/// The table of holds (both engines; `moved` is 0 or 1 on SQLite, a
/// boolean on PostgreSQL).
pub(super) const HOLDS_SCHEMA: &str = "
CREATE TABLE job_holds (
    job TEXT NOT NULL,                 -- the job's watermark key
    ticker TEXT NOT NULL,
    since BIGINT NOT NULL,             -- every change of the ticker up to it was judged
    through BIGINT NOT NULL,           -- how far the run that held it had read
    moved {bool} NOT NULL,             -- its quote was written after since
    PRIMARY KEY (job, ticker)
);
";

/// A job's watermark and its first holds: one row without holds.
pub(super) const START: &str = "SELECT w.change_seq, h.ticker, h.since, h.through, h.moved
     FROM job_watermarks w LEFT JOIN job_holds h ON h.job = w.job
     WHERE w.job = $1 ORDER BY h.since, h.ticker LIMIT 1024";

const _: () = assert!(MOST_HOLDS == 1024, "START's limit");

pub(super) const HOLD_OF: &str =
    "SELECT ticker, since, through, moved FROM job_holds WHERE job = $1 AND ticker = $2";

/// Holds a ticker back: `($1 job, $2 ticker, $3 since, $4 through, $5
/// moved)`, merged with a hold it has.
pub(super) const HOLD: &str = "INSERT INTO job_holds (job, ticker, since, through, moved)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (job, ticker) DO UPDATE SET
         since = CASE WHEN excluded.since < job_holds.since THEN excluded.since ELSE job_holds.since END,
         through = CASE WHEN excluded.through > job_holds.through
             THEN excluded.through ELSE job_holds.through END,
         moved = (job_holds.moved OR excluded.moved)";

/// Lets a hold go: `($1 job, $2 ticker, $3 since judged from, $4 judged
/// through)`.
pub(super) const RELEASE: &str = "DELETE FROM job_holds
     WHERE job = $1 AND ticker = $2 AND since >= $3 AND through <= $4";

/// Moves a job's watermark, never back (another process running the same
/// job may have moved it further): `($1 job, $2 change, $3 now)`. Run in a
/// tick's closing transaction (`observations::finish_tick`).
pub(super) const ADVANCE: &str = "INSERT INTO job_watermarks (job, change_seq, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (job) DO UPDATE SET change_seq = excluded.change_seq, updated_at = excluded.updated_at
     WHERE excluded.change_seq > job_watermarks.change_seq";

/// The holds of jobs that have not run for `CHANGE_LOG_KEPT_FOR`
/// (`$1`: the cutoff) fold into their watermarks, which move back to the
/// first change a hold still owes: a job whose key changed leaves no rows
/// behind, and one that runs again (a daily job) reads from there, as
/// before holds. Then the holds go.
pub(super) const FOLD_STALE_HOLDS: &str = "UPDATE job_watermarks SET change_seq = (
         SELECT min(h.since) FROM job_holds h WHERE h.job = job_watermarks.job)
     WHERE updated_at < $1
       AND change_seq > (SELECT min(h.since) FROM job_holds h WHERE h.job = job_watermarks.job)";

pub(super) const DROP_STALE_HOLDS: &str = "DELETE FROM job_holds
     WHERE job IN (SELECT job FROM job_watermarks WHERE updated_at < $1)";

pub(super) fn get_on<C: Statements>(
    connection: &mut C,
    job: &str,
) -> std::result::Result<Option<i64>, C::Error> {
    connection.query_first(GET, &[&job], |row| row.get::<i64>(0))
}

pub(super) fn start_on<C: Statements>(
    connection: &mut C,
    job: &str,
) -> std::result::Result<Start, C::Error> {
    let rows = connection.query(START, &[&job], |row| {
        let watermark = row.get::<i64>(0)?;
        let hold = match row.get::<Option<String>>(1)? {
            Some(_) => Some(hold_at(row, 1)?),
            None => None,
        };
        Ok((watermark, hold))
    })?;
    let watermark = rows.first().map(|(watermark, _)| *watermark);
    let holds = rows.into_iter().filter_map(|(_, hold)| hold).collect();
    Ok(Start { watermark, holds })
}

pub(super) fn hold_of_on<C: Statements>(
    connection: &mut C,
    job: &str,
    ticker: &str,
) -> std::result::Result<Option<Hold>, C::Error> {
    connection.query_first(HOLD_OF, &[&job, &ticker], |row| hold_at(row, 0))
}

/// A hold from a row's columns `ticker, since, through, moved`, the first
/// at `first`.
fn hold_at<R: Row>(row: &R, first: usize) -> std::result::Result<Hold, R::Error> {
    Ok(Hold {
        ticker: row.get::<String>(first)?,
        since: row.get::<i64>(first + 1)?,
        through: row.get::<i64>(first + 2)?,
        moved: row.get::<bool>(first + 3)?,
    })
}
