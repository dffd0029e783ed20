//! Quotes: the `quotes` table the application (or the HTTP source) keeps current.

use super::{Connection, Result};

/// A quote as stored; a price that is not a number comes back as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteRow {
    pub ticker: String,
    pub price: Option<f64>,
    pub updated_at: String,
}

/// A quote to store: a price at the source's time (RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub struct NewQuote {
    pub ticker: String,
    pub price: f64,
    pub updated_at: String,
}

/// All quotes. One short read: long readers hold back the engine's cleanup
/// (SQLite's checkpoints).
pub fn list(connection: &mut Connection) -> Result<Vec<QuoteRow>> {
    connection.engine().quotes()
}

/// One ticker's quote, if it has one (by its primary key).
pub fn get(connection: &mut Connection, ticker: &str) -> Result<Option<QuoteRow>> {
    connection.engine().quote(ticker)
}

/// Each ticker with enabled alerts, and its quote's time as written (none
/// without a quote): what the feed must keep fresh.
pub fn alerted(connection: &mut Connection) -> Result<Vec<(String, Option<String>)>> {
    connection.engine().alerted_quotes()
}

/// Stores fetched quotes with the source's own times. One transaction.
pub fn upsert(connection: &mut Connection, quotes: &[NewQuote]) -> Result<()> {
    connection.engine().upsert_quotes(quotes)
}
