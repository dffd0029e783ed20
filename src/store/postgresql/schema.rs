//! PostgreSQL: the daemon's own objects in the application's tables, as its
//! migrations left them (see `store::schema`), how to find the missing ones,
//! and how to recreate them, under the migrations' advisory lock.

use std::collections::HashSet;

use super::PgConnection;
use super::PgResult as Result;
use super::migrate::{ALERT_CHANGED_6, MIGRATION_LOCK};
use crate::store::schema::{Audit, Column, Keeps, Missing, Object, Repaired};
use crate::store::shared::LEVEL;

/// One of the daemon's indexes on `price_alerts`; `{level}` is [`LEVEL`].
fn index(name: &'static str, sql: &str) -> Object {
    Object::index(name, sql.replace("{level}", &format!("({LEVEL})")))
}

/// One of the daemon's triggers; `{alert_changed}` is [`ALERT_CHANGED_6`].
fn trigger(name: &'static str, sql: &str, keeps: Keeps) -> Object {
    Object::trigger(name, sql.replace("{alert_changed}", ALERT_CHANGED_6), keeps)
}

/// The daemon's indexes and triggers on `price_alerts` and `quotes`, as the
/// last migration that made each left it (`tests` on the test cluster
/// check them against the migrations'). A migration that changes one
/// changes it here.
fn objects() -> Vec<Object> {
    vec![
        index(
            "idx_price_alerts_enabled",
            "CREATE INDEX idx_price_alerts_enabled ON price_alerts (ticker, enabled)",
        ),
        index(
            "price_alerts_changed",
            "CREATE INDEX price_alerts_changed ON price_alerts (change_seq)",
        ),
        index(
            "price_alerts_level",
            "CREATE INDEX price_alerts_level ON price_alerts (ticker, condition, ({level})) WHERE enabled = '1'",
        ),
        index(
            "idx_price_alerts_expiry",
            "CREATE INDEX idx_price_alerts_expiry ON price_alerts (expires_at)
             WHERE enabled = '1' AND expires_at IS NOT NULL",
        ),
        index(
            "price_alerts_return_below",
            "CREATE INDEX price_alerts_return_below ON price_alerts (ticker, return_below)
             WHERE return_below IS NOT NULL AND enabled = '0'",
        ),
        index(
            "price_alerts_return_above",
            "CREATE INDEX price_alerts_return_above ON price_alerts (ticker, return_above)
             WHERE return_above IS NOT NULL AND enabled = '0'",
        ),
        index(
            "price_alerts_rearm",
            "CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at)
             WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL",
        ),
        index(
            "price_alerts_snoozed",
            "CREATE INDEX price_alerts_snoozed ON price_alerts (id) WHERE snoozed_until IS NOT NULL",
        ),
        index(
            "price_alerts_upper",
            "CREATE INDEX price_alerts_upper ON price_alerts (ticker, condition, upper_price)
             WHERE enabled = '1' AND upper_price IS NOT NULL",
        ),
        trigger(
            "price_alerts_armed_on_insert",
            "CREATE TRIGGER price_alerts_armed_on_insert BEFORE INSERT ON price_alerts
             FOR EACH ROW EXECUTE FUNCTION price_alerts_track()",
            Keeps::Armings,
        ),
        trigger(
            "price_alerts_changed_on_update",
            "CREATE TRIGGER price_alerts_changed_on_update BEFORE UPDATE ON price_alerts
             FOR EACH ROW {alert_changed}
             EXECUTE FUNCTION price_alerts_track()",
            Keeps::Armings,
        ),
        trigger(
            "price_alerts_notify_on_insert",
            "CREATE TRIGGER price_alerts_notify_on_insert AFTER INSERT ON price_alerts
             FOR EACH ROW EXECUTE FUNCTION price_alertd_notify_alert()",
            Keeps::Nothing,
        ),
        trigger(
            "price_alerts_notify_on_update",
            "CREATE TRIGGER price_alerts_notify_on_update AFTER UPDATE ON price_alerts
             FOR EACH ROW {alert_changed}
             EXECUTE FUNCTION price_alertd_notify_alert()",
            Keeps::Nothing,
        ),
        trigger(
            "quotes_changed_on_insert",
            "CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
             REFERENCING NEW TABLE AS changed
             FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_quotes_changed()",
            Keeps::QuoteChanges,
        ),
        trigger(
            "quotes_changed_on_update",
            "CREATE TRIGGER quotes_changed_on_update AFTER UPDATE ON quotes
             REFERENCING OLD TABLE AS before NEW TABLE AS changed
             FOR EACH STATEMENT EXECUTE FUNCTION price_alertd_quotes_changed()",
            Keeps::QuoteChanges,
        ),
    ]
}

/// The columns of `price_alerts` beyond the contract's, as PostgreSQL adds
/// them (see `store::schema::Column`).
const COLUMNS: [Column; 13] = [
    ("expires_at", "TEXT", Keeps::Nothing),
    ("expired_at", "TEXT", Keeps::Nothing),
    ("arming", "BIGINT NOT NULL DEFAULT 0", Keeps::Armings),
    ("change_seq", "BIGINT NOT NULL DEFAULT 0", Keeps::Armings),
    ("cooldown", "TEXT", Keeps::Nothing),
    ("rearm_at", "BIGINT", Keeps::Nothing),
    ("trigger_count", "BIGINT NOT NULL DEFAULT 0", Keeps::Nothing),
    ("return_below", "DOUBLE PRECISION", Keeps::Nothing),
    ("return_above", "DOUBLE PRECISION", Keeps::Nothing),
    ("snoozed_until", "TEXT", Keeps::Nothing),
    ("max_triggers", "BIGINT", Keeps::Nothing),
    ("upper_price", "DOUBLE PRECISION", Keeps::Nothing),
    ("rearm_band", "DOUBLE PRECISION", Keeps::Nothing),
];

/// The tables and the sequence: the application's two tables, and the
/// daemon's own, which only a restore gives back.
const RELATIONS: [(&str, &str); 18] = [
    ("table", "price_alerts"),
    ("table", "quotes"),
    ("table", "price_alertd_schema"),
    ("table", "outbox"),
    ("table", "observations"),
    ("table", "job_runs"),
    ("table", "installation"),
    ("table", "job_watermarks"),
    ("table", "job_holds"),
    ("table", "cluster_members"),
    ("table", "job_fires"),
    ("table", "job_reactors"),
    ("table", "change_log"),
    ("table", "change_log_pruned"),
    ("table", "delivery_attempts"),
    ("table", "stream_channels"),
    ("table", "stream_key"),
    ("sequence", "price_alerts_arming"),
];

/// The daemon's functions its triggers run.
const FUNCTIONS: [&str; 4] = [
    "price_alerts_track",
    "price_alertd_notify_alert",
    "price_alertd_quotes_changed",
    "price_alertd_time",
];

/// Names of what exists, as `kind name`, in the schema the daemon's
/// tables are in (its search path's first).
const PRESENT: &str = "
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'i' THEN 'index'
                      WHEN 'S' THEN 'sequence' ELSE 'other' END || ' ' || c.relname
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema()
UNION ALL
SELECT 'trigger ' || t.tgname
FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
     JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname IN ('price_alerts', 'quotes') AND NOT t.tgisinternal
UNION ALL
SELECT 'function ' || p.proname
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = current_schema()
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname
FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
     JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname IN ('price_alerts', 'quotes') AND a.attnum > 0
  AND NOT a.attisdropped";

fn find_missing(client: &mut impl postgres::GenericClient) -> Result<Missing> {
    let present: HashSet<String> = client
        .query(PRESENT, &[])?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_>>()?;
    let required: Vec<String> = RELATIONS
        .iter()
        .map(|(kind, name)| format!("{kind} {name}"))
        .chain(FUNCTIONS.iter().map(|name| format!("function {name}")))
        .collect();
    Ok(Missing::of(&present, &required, objects(), &COLUMNS))
}

pub fn audit(connection: &mut PgConnection) -> Result<Audit> {
    Ok(find_missing(connection.client())?.audit())
}

pub fn repair(connection: &mut PgConnection) -> Result<Repaired> {
    let found = find_missing(connection.client())?;
    if found.is_empty() {
        return Ok(Repaired {
            unrepairable: found.unrepairable,
            ..Repaired::default()
        });
    }
    // As a migration: daemons starting at once repair once.
    super::connect::without_statement_timeout(connection.client(), |client| {
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let repaired = repair_locked(client);
        let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        let repaired = repaired?;
        unlocked?;
        Ok(repaired)
    })
}

fn repair_locked(client: &mut postgres::Client) -> Result<Repaired> {
    let mut transaction = client.transaction()?;
    let missing = find_missing(&mut transaction)?;
    for statement in missing.statements() {
        transaction.batch_execute(&statement)?;
    }
    let mut repaired = missing.recreated();
    if missing.keeps(Keeps::Armings) {
        repaired.rearmed = transaction.execute(
            "UPDATE price_alerts SET arming = nextval('price_alerts_arming'),
                                     change_seq = pg_current_xact_id()::text::bigint
             WHERE enabled = '1'",
            &[],
        )?;
    }
    if missing.keeps(Keeps::QuoteChanges) {
        // Every job's watermark is below this transaction's id: each reads
        // every quote once.
        transaction.execute(
            "UPDATE change_log_pruned SET through = greatest(through, pg_current_xact_id()::text::bigint)
             WHERE id = 1",
            &[],
        )?;
        repaired.quotes_read_again = true;
    }
    if !missing.is_empty() {
        // Jobs that react hear that anything may have changed.
        transaction.batch_execute("NOTIFY price_alertd_changes, '*'")?;
    }
    transaction.commit()?;
    Ok(repaired)
}
