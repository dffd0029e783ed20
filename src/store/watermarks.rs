//! Watermarks: how far each job has read the changes.

use super::shared::{Row as _, Statements};
use super::{Connection, Result};

/// The changes a job has seen (every change numbered up to it); `None` for a
/// job that never ran, which must read everything once.
pub fn get(connection: &mut Connection, job: &str) -> Result<Option<i64>> {
    connection.engine().watermark(job)
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

/// Moves a job's watermark, never back (another process running the same
/// job may have moved it further): `($1 job, $2 change, $3 now)`. Run in a
/// tick's closing transaction (`observations::finish_tick`).
pub(super) const ADVANCE: &str = "INSERT INTO job_watermarks (job, change_seq, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (job) DO UPDATE SET change_seq = excluded.change_seq, updated_at = excluded.updated_at
     WHERE excluded.change_seq > job_watermarks.change_seq";

pub(super) fn get_on<C: Statements>(
    connection: &mut C,
    job: &str,
) -> std::result::Result<Option<i64>, C::Error> {
    connection.query_first(GET, &[&job], |row| row.get::<i64>(0))
}
