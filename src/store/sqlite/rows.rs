//! SQLite: the alert row as the store reads it, and values the application
//! may have written as other types.

use rusqlite::types::Value;

use crate::store::alerts::AlertRow;

pub(super) fn number(value: Value) -> Option<f64> {
    match value {
        Value::Real(real) => Some(real),
        Value::Integer(integer) => Some(integer as f64),
        _ => None,
    }
}

pub(super) fn text(value: Value) -> String {
    match value {
        Value::Text(text) => text,
        Value::Integer(integer) => integer.to_string(),
        Value::Real(real) => real.to_string(),
        Value::Null | Value::Blob(_) => String::new(),
    }
}

pub(super) fn alert_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: row.get(0)?,
        arming: row.get(1)?,
        ticker: text(row.get(2)?),
        condition: text(row.get(3)?),
        target_price: number(row.get(4)?),
        reference_price: number(row.get(5)?),
        expires_at: row.get::<_, Option<Value>>(6)?.map(text),
        user_id: row.get::<_, Option<Value>>(7)?.map(text),
        note: row.get::<_, Option<Value>>(8)?.map(text),
        cooldown: row.get::<_, Option<Value>>(9)?.map(text),
        snoozed_until: row.get::<_, Option<Value>>(10)?.map(text),
        max_triggers: row.get::<_, Option<Value>>(11)?.map(text),
        upper_price: number(row.get(12)?),
        rearm_band: row.get::<_, Option<Value>>(13)?.map(text),
    })
}
