//! How the commands print values: times, prices, and one JSON object per
//! line for scripts.

use std::io::Write;

/// A time as every `--json` output gives it: RFC 3339 in UTC (the database
/// may hold SQLite's `YYYY-MM-DD HH:MM:SS`); text that is not a time stays
/// as it is.
pub(super) fn rfc3339(text: &str) -> String {
    crate::time::parse_time(text).map_or_else(|| text.to_owned(), crate::store::timestamp)
}

/// An alert's times in one format, [`rfc3339`]'s: the application may
/// write SQLite's own.
pub(super) fn alert_times_in_rfc3339(alert: &mut crate::store::alerts::AlertEntry) {
    for time in [
        &mut alert.triggered_at,
        &mut alert.expires_at,
        &mut alert.expired_at,
        &mut alert.snoozed_until,
    ]
    .into_iter()
    .flatten()
    {
        *time = rfc3339(time);
    }
}

pub(super) fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

pub(super) fn print_json_lines<T: serde::Serialize>(
    items: &[T],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for item in items {
        writeln!(out, "{}", serde_json::to_string(item)?)?;
    }
    Ok(())
}
