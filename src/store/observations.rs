//! Observations: the last price each ticker was judged at (a crossing's
//! previous price), recorded with the job's watermark when a tick ends.

use chrono::{DateTime, Utc};

#[cfg(any(test, feature = "test-support"))]
use super::shared::{Row as _, Statements};
use super::{Connection, Result};

/// A quote the daemon evaluated: its ticker's previous price for the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub ticker: String,
    pub price: f64,
    /// The quote's time, as the application wrote it.
    pub quote_time: String,
}

/// The last price the daemon observed for one ticker.
#[cfg(any(test, feature = "test-support"))]
pub fn get(connection: &mut Connection, ticker: &str) -> Result<Option<f64>> {
    connection.engine().observation(ticker)
}

#[cfg(any(test, feature = "test-support"))]
pub(super) const GET: &str = "SELECT price FROM observations WHERE ticker = $1";

#[cfg(any(test, feature = "test-support"))]
pub(super) fn get_on<C: Statements>(
    connection: &mut C,
    ticker: &str,
) -> std::result::Result<Option<f64>, C::Error> {
    connection.query_first(GET, &[&ticker], |row| row.get::<f64>(0))
}

/// Ends a page of a tick, in one transaction: records the evaluated quotes
/// as the tickers' previous prices (unless a newer quote was recorded
/// meanwhile, by another daemon), and, with the tick's last page, moves the
/// job's watermark, never back, and writes its holds.
pub fn finish_tick(
    connection: &mut Connection,
    observed: &[Observation],
    watermark: Option<&super::watermarks::Advance<'_>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let now = super::timestamp(now);
    connection.engine().finish_tick(observed, watermark, &now)
}
