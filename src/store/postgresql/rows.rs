//! PostgreSQL: the alert row as the store reads it.

use postgres::Row;

use crate::store::alerts::AlertRow;

use super::PgResult as Result;

/// The columns [`alert_row`] reads, in its order: numbers as `float8` and
/// text as `text`, whatever types the application gave them. (A macro, so
/// that statements are literals: `concat!`.)
macro_rules! alert_columns {
    () => {
        "id, arming, ticker::text, condition::text, target_price::float8, \
         reference_price::float8, expires_at::text, user_id::text, note::text, cooldown::text, \
         snoozed_until::text, max_triggers::text, upper_price::float8, rearm_band::text"
    };
}
pub(super) use alert_columns;

pub(super) fn alert_row(row: &Row) -> Result<AlertRow> {
    alert_row_from(row, 0)
}

/// An alert whose columns start at `first`.
pub(super) fn alert_row_from(row: &Row, first: usize) -> Result<AlertRow> {
    Ok(AlertRow {
        id: row.try_get(first)?,
        arming: row.try_get(first + 1)?,
        ticker: row
            .try_get::<_, Option<String>>(first + 2)?
            .unwrap_or_default(),
        condition: row
            .try_get::<_, Option<String>>(first + 3)?
            .unwrap_or_default(),
        target_price: row.try_get(first + 4)?,
        reference_price: row.try_get(first + 5)?,
        expires_at: row.try_get(first + 6)?,
        user_id: row.try_get(first + 7)?,
        note: row.try_get(first + 8)?,
        cooldown: row.try_get(first + 9)?,
        snoozed_until: row.try_get(first + 10)?,
        max_triggers: row.try_get(first + 11)?,
        upper_price: row.try_get(first + 12)?,
        rearm_band: row.try_get(first + 13)?,
    })
}
