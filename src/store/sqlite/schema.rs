//! SQLite: the daemon's own objects in the application's tables, as its
//! migrations left them (see `store::schema`), how to find the missing ones,
//! and how to recreate them.

use std::collections::HashSet;

use rusqlite::{Connection, TransactionBehavior};

use crate::store::schema::{Audit, Column, Keeps, Missing, Object, Repaired};

use crate::store::shared::LEVEL;

/// One of the daemon's indexes on `price_alerts`; `{level}` is [`LEVEL`].
fn index(name: &'static str, sql: &str) -> Object {
    Object::index(name, sql.replace("{level}", LEVEL))
}

/// One of the daemon's triggers; `{arm}` is [`ARM`], `{log_quote}`
/// [`LOG_QUOTE`].
fn trigger(name: &'static str, sql: &str, keeps: Keeps) -> Object {
    Object::trigger(
        name,
        sql.replace("{arm}", ARM).replace("{log_quote}", LOG_QUOTE),
        keeps,
    )
}

/// What a quote's insert and its update do, in migration 16's two
/// triggers, one text so that they never part: a change in the log, with
/// the quote as the application wrote it.
pub(super) const LOG_QUOTE: &str = "INSERT INTO change_log (quote_ticker, quote_price, quote_time)
    VALUES (NEW.ticker, NEW.price, NEW.updated_at);";

/// What an alert's insert and its re-arm (0 -> 1) do, in migration 11's
/// two triggers, one text so that they never part: a new arming, and a
/// change number from the log (`last_insert_rowid()` while the trigger
/// runs), which the alert keeps.
pub(super) const ARM: &str = "    UPDATE arming_counter SET last = last + 1 WHERE id = 1;
    INSERT INTO change_log (quote_ticker) VALUES (NULL);
    UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1),
                            change_seq = last_insert_rowid()
    WHERE id = NEW.id;";

/// The daemon's indexes and triggers on `price_alerts` and `quotes`, as the
/// last migration that made each left it (`tests::these_are_what_the_migrations_made`).
/// A migration that changes one changes it here.
fn objects() -> Vec<Object> {
    vec![
        index(
            "idx_price_alerts_enabled",
            "CREATE INDEX idx_price_alerts_enabled ON price_alerts (ticker, enabled)",
        ),
        index(
            "idx_price_alerts_expiry",
            "CREATE INDEX idx_price_alerts_expiry ON price_alerts (expires_at)
             WHERE enabled = 1 AND expires_at IS NOT NULL",
        ),
        index(
            "price_alerts_changed",
            "CREATE INDEX price_alerts_changed ON price_alerts (change_seq)",
        ),
        index(
            "price_alerts_level",
            "CREATE INDEX price_alerts_level ON price_alerts (ticker, condition, {level}) WHERE enabled = 1",
        ),
        index(
            "price_alerts_return_below",
            "CREATE INDEX price_alerts_return_below ON price_alerts (ticker, return_below)
             WHERE return_below IS NOT NULL AND enabled = 0",
        ),
        index(
            "price_alerts_return_above",
            "CREATE INDEX price_alerts_return_above ON price_alerts (ticker, return_above)
             WHERE return_above IS NOT NULL AND enabled = 0",
        ),
        index(
            "price_alerts_rearm",
            "CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at)
             WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL",
        ),
        index(
            "price_alerts_snoozed",
            "CREATE INDEX price_alerts_snoozed ON price_alerts (snoozed_until) WHERE snoozed_until IS NOT NULL",
        ),
        index(
            "price_alerts_upper",
            "CREATE INDEX price_alerts_upper ON price_alerts (ticker, condition, upper_price)
             WHERE enabled = 1 AND upper_price IS NOT NULL",
        ),
        trigger(
            "price_alerts_armed_on_insert",
            "CREATE TRIGGER price_alerts_armed_on_insert AFTER INSERT ON price_alerts
             BEGIN
             {arm}
             END",
            Keeps::Armings,
        ),
        trigger(
            "price_alerts_armed_on_enable",
            "CREATE TRIGGER price_alerts_armed_on_enable AFTER UPDATE OF enabled ON price_alerts
             WHEN OLD.enabled = 0 AND NEW.enabled = 1
             BEGIN
             {arm}
             END",
            Keeps::Armings,
        ),
        trigger(
            "price_alerts_changed_on_edit",
            "CREATE TRIGGER price_alerts_changed_on_edit
             AFTER UPDATE OF ticker, condition, target_price, reference_price, upper_price, rearm_band, expires_at,
                 snoozed_until
             ON price_alerts
             WHEN NEW.enabled = 1 AND (OLD.ticker IS NOT NEW.ticker OR OLD.condition IS NOT NEW.condition
                 OR OLD.target_price IS NOT NEW.target_price OR OLD.reference_price IS NOT NEW.reference_price
                 OR OLD.upper_price IS NOT NEW.upper_price OR OLD.rearm_band IS NOT NEW.rearm_band
                 OR OLD.expires_at IS NOT NEW.expires_at OR OLD.snoozed_until IS NOT NEW.snoozed_until)
             BEGIN
                 INSERT INTO change_log (quote_ticker) VALUES (NULL);
                 UPDATE price_alerts SET change_seq = last_insert_rowid() WHERE id = NEW.id;
             END",
            Keeps::Armings,
        ),
        trigger(
            "quotes_changed_on_insert",
            "CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
             BEGIN
             {log_quote}
             END",
            Keeps::QuoteChanges,
        ),
        trigger(
            "quotes_changed_on_update",
            "CREATE TRIGGER quotes_changed_on_update AFTER UPDATE OF price, updated_at ON quotes
             WHEN OLD.price IS NOT NEW.price OR OLD.updated_at IS NOT NEW.updated_at
             BEGIN
             {log_quote}
             END",
            Keeps::QuoteChanges,
        ),
        trigger(
            "quotes_changed_on_delete",
            "CREATE TRIGGER quotes_changed_on_delete AFTER DELETE ON quotes
             BEGIN
                 INSERT INTO change_log (quote_ticker) VALUES (OLD.ticker);
             END",
            Keeps::QuoteChanges,
        ),
    ]
}

/// The columns of `price_alerts` beyond the contract's, as SQLite adds
/// them (see `store::schema::Column`).
const COLUMNS: [Column; 13] = [
    ("expires_at", "TEXT", Keeps::Nothing),
    ("expired_at", "TEXT", Keeps::Nothing),
    ("arming", "INTEGER NOT NULL DEFAULT 0", Keeps::Armings),
    ("change_seq", "INTEGER NOT NULL DEFAULT 0", Keeps::Armings),
    ("cooldown", "TEXT", Keeps::Nothing),
    ("rearm_at", "INTEGER", Keeps::Nothing),
    (
        "trigger_count",
        "INTEGER NOT NULL DEFAULT 0",
        Keeps::Nothing,
    ),
    ("return_below", "REAL", Keeps::Nothing),
    ("return_above", "REAL", Keeps::Nothing),
    ("snoozed_until", "TEXT", Keeps::Nothing),
    ("max_triggers", "INTEGER", Keeps::Nothing),
    ("upper_price", "REAL", Keeps::Nothing),
    ("rearm_band", "REAL", Keeps::Nothing),
];

/// The tables: the application's two, and the daemon's own, which only a
/// restore gives back.
const TABLES: [&str; 17] = [
    "price_alerts",
    "quotes",
    "arming_counter",
    "outbox",
    "observations",
    "job_runs",
    "installation",
    "job_watermarks",
    "job_holds",
    "cluster_members",
    "job_fires",
    "job_reactors",
    "change_log",
    "change_log_pruned",
    "delivery_attempts",
    "stream_channels",
    "stream_key",
];

/// What is missing, as the caller's transaction sees it.
fn find_missing(connection: &Connection) -> rusqlite::Result<Missing> {
    let mut statement = connection.prepare_cached(
        "SELECT type || ' ' || name FROM sqlite_schema WHERE type IN ('table', 'index', 'trigger')
         UNION ALL SELECT 'column price_alerts.' || name FROM pragma_table_info('price_alerts')
         UNION ALL SELECT 'column quotes.' || name FROM pragma_table_info('quotes')",
    )?;
    let present: HashSet<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let required: Vec<String> = TABLES
        .iter()
        .map(|table| format!("table {table}"))
        .collect();
    Ok(Missing::of(&present, &required, objects(), &COLUMNS))
}

pub fn audit(connection: &Connection) -> rusqlite::Result<Audit> {
    Ok(find_missing(connection)?.audit())
}

pub fn repair(connection: &mut Connection) -> rusqlite::Result<Repaired> {
    // Most looks find nothing missing: no write lock for them.
    let found = find_missing(connection)?;
    if found.is_empty() {
        return Ok(Repaired {
            unrepairable: found.unrepairable,
            ..Repaired::default()
        });
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Again under the write lock: another process may have repaired.
    let missing = find_missing(&transaction)?;
    for statement in missing.statements() {
        transaction.execute_batch(&statement)?;
    }
    let mut repaired = missing.recreated();
    if missing.keeps(Keeps::Armings) {
        transaction.execute_batch(
            "UPDATE arming_counter SET last = last + 1 WHERE id = 1;
             INSERT INTO change_log (quote_ticker) VALUES (NULL);",
        )?;
        repaired.rearmed = transaction.execute(
            "UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1),
                                     change_seq = last_insert_rowid()
             WHERE enabled = 1",
            [],
        )? as u64;
    }
    if missing.keeps(Keeps::QuoteChanges) {
        // A change of its own to stand at, the log's last: every job's
        // watermark is below it, so each reads every quote once.
        transaction.execute_batch(
            "INSERT INTO change_log (quote_ticker) VALUES (NULL);
             UPDATE change_log_pruned SET through = max(through, last_insert_rowid()) WHERE id = 1;",
        )?;
        repaired.quotes_read_again = true;
    }
    transaction.commit()?;
    Ok(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::normalized;

    fn migrated() -> Connection {
        let mut connection = Connection::open_in_memory().unwrap();
        super::super::migrate(&mut connection).unwrap();
        connection
    }

    /// Every object's definition as SQLite keeps it, by name.
    fn definitions(connection: &Connection) -> Vec<(String, String)> {
        let mut statement = connection
            .prepare(
                "SELECT type || ' ' || name, sql FROM sqlite_schema
                 WHERE tbl_name IN ('price_alerts', 'quotes') AND sql IS NOT NULL ORDER BY 1",
            )
            .unwrap();
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, normalized(&row.get::<_, String>(1)?)))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn these_are_what_the_migrations_made() {
        let connection = migrated();
        let made = definitions(&connection);
        let mut ours: Vec<(String, String)> = objects()
            .iter()
            .map(|object| (object.named(), normalized(&object.sql)))
            .collect();
        ours.sort();
        // The table's own definition is the application's.
        let made: Vec<_> = made
            .into_iter()
            .filter(|(name, _)| !name.starts_with("table"))
            .collect();
        assert_eq!(made, ours);
        let columns: Vec<String> = connection
            .prepare("SELECT name FROM pragma_table_info('price_alerts') ORDER BY cid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut expected: Vec<&str> = crate::store::schema::CONTRACT_COLUMNS
            .iter()
            .filter_map(|column| column.strip_prefix("price_alerts."))
            .collect();
        expected.extend(COLUMNS.iter().map(|(name, _, _)| *name));
        let mut columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        columns.sort_unstable();
        expected.sort_unstable();
        assert_eq!(columns, expected);
        assert_eq!(audit(&connection).unwrap(), Audit::default());
    }

    #[test]
    fn what_a_rebuild_dropped_is_recreated_as_it_was_and_armed_alerts_rearmed() {
        let mut connection = migrated();
        let before = definitions(&connection);
        connection
            .execute_batch(
                "INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('A', 'above', 1, 'x');
                 INSERT INTO price_alerts (ticker, condition, target_price, created_at, enabled) VALUES ('B', 'above', 1, 'x', 0);
                 -- The usual rebuild, without the daemon's columns.
                 CREATE TABLE new_alerts (id INTEGER PRIMARY KEY, ticker TEXT NOT NULL, condition TEXT NOT NULL,
                     target_price REAL NOT NULL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
                     triggered_at TEXT, triggered_price REAL, created_at TEXT NOT NULL, user_id TEXT, note TEXT);
                 INSERT INTO new_alerts SELECT id, ticker, condition, target_price, reference_price, enabled,
                     triggered_at, triggered_price, created_at, user_id, note FROM price_alerts;
                 DROP TABLE price_alerts;
                 ALTER TABLE new_alerts RENAME TO price_alerts;
                 DROP TRIGGER quotes_changed_on_update;",
            )
            .unwrap();
        let audited = audit(&connection).unwrap();
        assert!(
            audited
                .missing
                .contains(&"column price_alerts.arming".to_owned()),
            "{audited:?}"
        );
        assert!(
            audited
                .missing
                .contains(&"trigger quotes_changed_on_update".to_owned())
        );
        assert!(
            audited
                .missing
                .contains(&"index price_alerts_level".to_owned())
        );
        assert!(audited.unrepairable.is_empty());
        let last_arming: i64 = connection
            .query_row("SELECT last FROM arming_counter", [], |row| row.get(0))
            .unwrap();

        let repaired = repair(&mut connection).unwrap();
        assert_eq!(repaired.recreated, audited.missing);
        assert_eq!((repaired.rearmed, repaired.quotes_read_again), (1, true));
        let definitions: Vec<_> = definitions(&connection)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("table"))
            .collect();
        let before: Vec<_> = before
            .into_iter()
            .filter(|(name, _)| !name.starts_with("table"))
            .collect();
        assert_eq!(definitions, before);
        let armings: Vec<(i64, i64)> = connection
            .prepare("SELECT enabled, arming FROM price_alerts ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(armings, [(1, last_arming + 1), (0, 0)]);
        let pruned = super::super::changes::pruned_through(&connection).unwrap();
        assert_eq!(
            pruned,
            super::super::changes::last_change(&connection).unwrap()
        );
        // Nothing more to do, and nothing done.
        assert_eq!(audit(&connection).unwrap(), Audit::default());
        assert_eq!(repair(&mut connection).unwrap(), Repaired::default());
    }

    #[test]
    fn a_contract_column_the_application_renamed_is_named_not_recreated() {
        let connection = migrated();
        connection
            .execute_batch("ALTER TABLE quotes RENAME COLUMN updated_at TO stamp")
            .unwrap();
        let audited = audit(&connection).unwrap();
        assert_eq!(audited.unrepairable, ["column quotes.updated_at"]);
    }

    #[test]
    fn a_missing_table_of_the_daemons_is_named_not_recreated() {
        let mut connection = migrated();
        connection
            .execute_batch("DROP TABLE outbox; DROP INDEX price_alerts_level;")
            .unwrap();
        let audited = audit(&connection).unwrap();
        assert_eq!(audited.unrepairable, ["table outbox"]);
        assert!(audited.missing.is_empty(), "{audited:?}");
        let repaired = repair(&mut connection).unwrap();
        assert_eq!(repaired.unrepairable, ["table outbox"]);
        assert!(repaired.recreated.is_empty());
    }
}
