//! Times as the database and the application write them.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Parses a stored time: RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.SSS]`
/// (UTC, as `datetime('now')` writes it).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })
}

/// A quote's time: as the application wrote it (its events carry it so),
/// and the instant it names.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteTime {
    pub written: String,
    pub at: DateTime<Utc>,
}

impl QuoteTime {
    /// The quote time `written` is, if it is a time.
    pub fn parse(written: String) -> Option<QuoteTime> {
        let at = parse_time(&written)?;
        Some(QuoteTime { written, at })
    }
}
