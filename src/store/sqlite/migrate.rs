//! SQLite's schema: the migrations, in order, under `PRAGMA user_version`,
//! each in one `BEGIN IMMEDIATE` transaction.

use rusqlite::{Connection, TransactionBehavior};

use super::schema::{ARM, LOG_QUOTE};

/// The schema version this build migrates to (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 16;

/// Adds an optional column of the application's to `price_alerts`
/// (`expires_at`, `cooldown`, ...), as TEXT, unless the application added
/// it already.
fn add_alert_column_if_missing(
    transaction: &rusqlite::Transaction<'_>,
    column: &str,
) -> rusqlite::Result<()> {
    add_typed_alert_column_if_missing(transaction, column, "TEXT")
}

/// As [`add_alert_column_if_missing`], of the given type.
fn add_typed_alert_column_if_missing(
    transaction: &rusqlite::Transaction<'_>,
    column: &str,
    kind: &str,
) -> rusqlite::Result<()> {
    let exists: bool = transaction.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('price_alerts') WHERE name = ?1",
        [column],
        |row| row.get(0),
    )?;
    if !exists {
        // A name of ours, never input: it cannot be a parameter here.
        transaction.execute_batch(&format!(
            "ALTER TABLE price_alerts ADD COLUMN {column} {kind};"
        ))?;
    }
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]. Runs in one IMMEDIATE transaction,
/// so two daemons starting at once migrate once.
pub fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(connection, SCHEMA_VERSION)
}

/// One migration: its number is its place in [`MIGRATIONS`], plus one.
type Migration = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    |transaction| transaction.execute_batch(MIGRATION_1),
    |transaction| {
        add_alert_column_if_missing(transaction, "expires_at")?;
        transaction.execute_batch(MIGRATION_2)
    },
    |transaction| transaction.execute_batch(MIGRATION_3),
    |transaction| transaction.execute_batch(MIGRATION_4),
    |transaction| transaction.execute_batch(MIGRATION_5),
    |transaction| {
        transaction.execute_batch(&MIGRATION_6.replace("{level}", crate::store::shared::LEVEL))
    },
    |transaction| {
        transaction.execute_batch(MIGRATION_7)?;
        transaction.execute_batch(crate::store::cluster::SCHEMA)
    },
    |transaction| {
        transaction.execute_batch(MIGRATION_8)?;
        users_from_bodies(transaction)
    },
    |transaction| {
        add_alert_column_if_missing(transaction, "cooldown")?;
        transaction.execute_batch(MIGRATION_9)
    },
    // Each reacting job's member (`store::cluster`).
    |transaction| transaction.execute_batch(crate::store::cluster::REACTORS_SCHEMA),
    |transaction| transaction.execute_batch(&MIGRATION_11.replace("{arm}", ARM)),
    |transaction| {
        add_alert_column_if_missing(transaction, "snoozed_until")?;
        add_typed_alert_column_if_missing(transaction, "max_triggers", "INTEGER")?;
        add_typed_alert_column_if_missing(transaction, "upper_price", "REAL")?;
        add_typed_alert_column_if_missing(transaction, "rearm_band", "REAL")?;
        transaction.execute_batch(MIGRATION_12)
    },
    |transaction| transaction.execute_batch(crate::store::outbox::ATTEMPTS_SCHEMA),
    // The tickers each job holds back (`store::watermarks::Hold`).
    |transaction| {
        transaction
            .execute_batch(&crate::store::watermarks::HOLDS_SCHEMA.replace("{bool}", "INTEGER"))
    },
    // Users' channels (`store::channels`).
    |transaction| {
        transaction
            .execute_batch(&crate::store::channels::SCHEMA.replace("{bigint}", "INTEGER"))?;
        transaction.execute_batch(
            &crate::store::channels::KEY_SCHEMA.replace("{key}", "lower(hex(randomblob(32)))"),
        )
    },
    |transaction| transaction.execute_batch(&MIGRATION_16.replace("{log_quote}", LOG_QUOTE)),
];

/// Brings the schema to `target` (a test's older version, or
/// [`SCHEMA_VERSION`]).
fn migrate_to(connection: &mut Connection, target: i64) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for migration in &MIGRATIONS[version.min(target) as usize..target as usize] {
        migration(&transaction)?;
    }
    if version < target {
        transaction.pragma_update(None, "user_version", target)?;
    }
    transaction.commit()
}

/// The contract's tables (kept as the application made them if they exist),
/// the arming generation behind stable event ids, and the outbox.
const MIGRATION_1: &str = r#"
CREATE TABLE IF NOT EXISTS price_alerts (
    id INTEGER PRIMARY KEY,
    ticker TEXT NOT NULL,
    condition TEXT NOT NULL,
    target_price REAL NOT NULL,
    reference_price REAL,
    enabled INTEGER NOT NULL DEFAULT 1,
    triggered_at TEXT,
    triggered_price REAL,
    created_at TEXT NOT NULL,
    user_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS idx_price_alerts_enabled ON price_alerts (ticker, enabled);
CREATE TABLE IF NOT EXISTS quotes (
    ticker TEXT PRIMARY KEY,
    price REAL NOT NULL,
    updated_at TEXT NOT NULL
);

-- Invariant 3: an event id is (alert id, arming). Every arming of an alert, its
-- insertion or a re-enable by anyone, takes a fresh number from one counter
-- that never goes back, so a re-armed alert, or a new alert that reuses a
-- deleted alert's id, never repeats an event id.
CREATE TABLE arming_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO arming_counter (id, last) VALUES (1, (SELECT coalesce(max(id), 0) FROM price_alerts));
ALTER TABLE price_alerts ADD COLUMN arming INTEGER NOT NULL DEFAULT 0;
UPDATE price_alerts SET arming = id;
CREATE TRIGGER price_alerts_armed_on_insert AFTER INSERT ON price_alerts
BEGIN
    UPDATE arming_counter SET last = last + 1 WHERE id = 1;
    UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1) WHERE id = NEW.id;
END;
CREATE TRIGGER price_alerts_armed_on_enable AFTER UPDATE OF enabled ON price_alerts
WHEN OLD.enabled = 0 AND NEW.enabled = 1
BEGIN
    UPDATE arming_counter SET last = last + 1 WHERE id = 1;
    UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1) WHERE id = NEW.id;
END;

-- Invariant 2: one row per claimed alert, inserted in the claim's transaction.
-- The body is fixed at the claim, so every attempt sends the same bytes.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    alert_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,      -- unix milliseconds
    lease_owner TEXT,                      -- the deliverer sending it now
    lease_until INTEGER,                   -- unix milliseconds
    last_error TEXT,
    delivered_at TEXT,
    dead_at TEXT
);
CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
CREATE INDEX outbox_due ON outbox (state, next_attempt_at) WHERE state = 'pending';
"#;

/// Expiry, and the prices the daemon observed (for crossings).
const MIGRATION_2: &str = r#"
-- Set by the daemon when it disables an alert whose expires_at has passed.
ALTER TABLE price_alerts ADD COLUMN expired_at TEXT;
CREATE INDEX idx_price_alerts_expiry ON price_alerts (expires_at) WHERE enabled = 1 AND expires_at IS NOT NULL;

-- The last quote the daemon evaluated for each ticker: the "previous price"
-- of crossing_up and crossing_down. It advances only after the claims of the
-- tick that evaluated it committed, so a crash never skips a crossing.
CREATE TABLE observations (
    ticker TEXT PRIMARY KEY,
    price REAL NOT NULL,
    quote_time TEXT NOT NULL,
    observed_at TEXT NOT NULL
);
"#;

/// The last run of each job, for `price-alertd status`.
const MIGRATION_3: &str = r#"
CREATE TABLE job_runs (
    job TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'failed')),
    detail TEXT NOT NULL,              -- the run's summary, or its error
    last_success_at TEXT
);
"#;

/// The database's own identity, in every event id.
const MIGRATION_4: &str = r#"
-- 96 random bits (SQLite's PRNG, seeded from the OS), chosen once, when the
-- database is first migrated: every event id carries it, so ids from two
-- databases never collide, and every daemon sharing this one uses the same.
CREATE TABLE installation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    installation_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO installation (id, installation_id, created_at)
VALUES (1, lower(hex(randomblob(12))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
"#;

/// The oldest pending event at a glance, for the metrics: pending rows in
/// queue order, whatever the delivered rows before them.
const MIGRATION_5: &str = r#"
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
"#;

/// What changed since a job last looked (see `changes`): one counter,
/// advanced by triggers on every quote write and every alert insert, re-arm
/// or edit by anyone; the number of each row's last change; each job's
/// watermark; and the index that makes the alerts a price can trigger a range.
const MIGRATION_6: &str = r#"
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO change_counter (id, last) VALUES (1, 0);
CREATE TABLE job_watermarks (
    job TEXT PRIMARY KEY,              -- the job's name, scope and quote age
    change_seq INTEGER NOT NULL,       -- every change up to it was seen
    updated_at TEXT NOT NULL
);

ALTER TABLE price_alerts ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX price_alerts_changed ON price_alerts (change_seq);
CREATE INDEX price_alerts_level ON price_alerts (ticker, condition, {level}) WHERE enabled = 1;
ALTER TABLE quotes ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX quotes_changed ON quotes (change_seq);

-- An insert and a re-arm take a new arming (invariant 3) and a change number
-- in one statement; an edit of what the evaluation reads takes a change
-- number. The claim (enabled 1 -> 0) takes neither.
DROP TRIGGER price_alerts_armed_on_insert;
CREATE TRIGGER price_alerts_armed_on_insert AFTER INSERT ON price_alerts
BEGIN
    UPDATE arming_counter SET last = last + 1 WHERE id = 1;
    UPDATE change_counter SET last = last + 1 WHERE id = 1;
    UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1),
                            change_seq = (SELECT last FROM change_counter WHERE id = 1)
    WHERE id = NEW.id;
END;
DROP TRIGGER price_alerts_armed_on_enable;
CREATE TRIGGER price_alerts_armed_on_enable AFTER UPDATE OF enabled ON price_alerts
WHEN OLD.enabled = 0 AND NEW.enabled = 1
BEGIN
    UPDATE arming_counter SET last = last + 1 WHERE id = 1;
    UPDATE change_counter SET last = last + 1 WHERE id = 1;
    UPDATE price_alerts SET arming = (SELECT last FROM arming_counter WHERE id = 1),
                            change_seq = (SELECT last FROM change_counter WHERE id = 1)
    WHERE id = NEW.id;
END;
CREATE TRIGGER price_alerts_changed_on_edit
AFTER UPDATE OF ticker, condition, target_price, reference_price, expires_at ON price_alerts
WHEN NEW.enabled = 1 AND (OLD.ticker IS NOT NEW.ticker OR OLD.condition IS NOT NEW.condition
    OR OLD.target_price IS NOT NEW.target_price OR OLD.reference_price IS NOT NEW.reference_price
    OR OLD.expires_at IS NOT NEW.expires_at)
BEGIN
    UPDATE change_counter SET last = last + 1 WHERE id = 1;
    UPDATE price_alerts SET change_seq = (SELECT last FROM change_counter WHERE id = 1)
    WHERE id = NEW.id;
END;
CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
BEGIN
    UPDATE change_counter SET last = last + 1 WHERE id = 1;
    UPDATE quotes SET change_seq = (SELECT last FROM change_counter WHERE id = 1)
    WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER quotes_changed_on_update AFTER UPDATE OF price, updated_at ON quotes
WHEN OLD.price IS NOT NEW.price OR OLD.updated_at IS NOT NEW.updated_at
BEGIN
    UPDATE change_counter SET last = last + 1 WHERE id = 1;
    UPDATE quotes SET change_seq = (SELECT last FROM change_counter WHERE id = 1)
    WHERE rowid = NEW.rowid;
END;
"#;

/// Daemons sharing the database, and who does each fire time's work
/// (`store::cluster`); who ran each job last. Times in unix milliseconds.
const MIGRATION_7: &str = "ALTER TABLE job_runs ADD COLUMN member TEXT;";

/// Each event's user, for routing by `{user_id}` (`deliver`): the claim
/// stores it beside the body; the events still to deliver take theirs from
/// their bodies (`users_from_bodies`).
const MIGRATION_8: &str = "ALTER TABLE outbox ADD COLUMN user_id TEXT;";

/// Fills the user of every event still to deliver from its body, a chunk of
/// rows at a time, in the migration's transaction. Not one `UPDATE ...
/// json_extract(body)`: a statement whose functions may fail keeps a
/// statement journal of every page it changes, in memory (`temp_store`),
/// 50 MB for 100,000 pending events.
fn users_from_bodies(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    const CHUNK: i64 = 10_000;
    let mut read = transaction.prepare(
        "SELECT id, body FROM outbox WHERE state <> 'delivered' AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut write = transaction.prepare("UPDATE outbox SET user_id = ?2 WHERE id = ?1")?;
    let mut after = i64::MIN;
    loop {
        let chunk: Vec<(i64, Option<String>)> = read
            .query_map(rusqlite::params![after, CHUNK], |row| {
                let body: String = row.get(1)?;
                let user = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|event| event["data"]["user_id"].as_str().map(str::to_owned));
                Ok((row.get(0)?, user))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _)) = chunk.last() else {
            return Ok(());
        };
        for (id, user) in chunk {
            if let Some(user) = user {
                write.execute(rusqlite::params![id, user])?;
            }
        }
        after = last;
    }
}

/// Repeating alerts: when the claim of an alert with a `cooldown` makes it
/// due to be re-armed (unix ms), through a partial index of those waiting.
const MIGRATION_9: &str = "
ALTER TABLE price_alerts ADD COLUMN rearm_at INTEGER;
CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at) WHERE rearm_at IS NOT NULL;
";

/// Change numbers become a log (`change_log`), one row per change, its
/// number the row's id: a quote write appends its ticker, an alert's insert,
/// re-arm or edit a row without one and stamps its number into the alert.
/// A quote's number was stamped into its row and an index, and taken from a
/// counter row, which made a feed's writes 1.6-1.9 times as costly; a
/// trigger of one append costs a fraction. A new row's id is one past the
/// largest, and pruning (`store::changes`) never deletes the largest, so
/// numbers only grow. The log starts with every quote's last change and
/// the counter's last number, so that no job reads everything again; a job
/// whose watermark is below `change_log_pruned` reads every quote. The
/// ticker column has no constraint: the application's rows may hold
/// anything, and its writes must never fail for a trigger of ours.
const MIGRATION_11: &str = r#"
CREATE TABLE change_log (
    change_seq INTEGER PRIMARY KEY,    -- the change's number
    quote_ticker                       -- a quote write's ticker; NULL for an alert's change
);
INSERT INTO change_log (change_seq, quote_ticker)
    SELECT change_seq, ticker FROM quotes WHERE change_seq > 0;
INSERT OR IGNORE INTO change_log (change_seq, quote_ticker)
    VALUES ((SELECT last FROM change_counter WHERE id = 1), NULL);
CREATE TABLE change_log_pruned (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL           -- changes up to it may be gone
);
INSERT INTO change_log_pruned (id, through) VALUES (1, 0);

DROP TRIGGER quotes_changed_on_insert;
DROP TRIGGER quotes_changed_on_update;
DROP INDEX quotes_changed;
ALTER TABLE quotes DROP COLUMN change_seq;
CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
BEGIN
    INSERT INTO change_log (quote_ticker) VALUES (NEW.ticker);
END;
CREATE TRIGGER quotes_changed_on_update AFTER UPDATE OF price, updated_at ON quotes
WHEN OLD.price IS NOT NEW.price OR OLD.updated_at IS NOT NEW.updated_at
BEGIN
    INSERT INTO change_log (quote_ticker) VALUES (NEW.ticker);
END;

-- An alert's change: a row of the log, whose id (`last_insert_rowid()`
-- while the trigger runs) the alert keeps.
DROP TRIGGER price_alerts_armed_on_insert;
CREATE TRIGGER price_alerts_armed_on_insert AFTER INSERT ON price_alerts
BEGIN
{arm}
END;
DROP TRIGGER price_alerts_armed_on_enable;
CREATE TRIGGER price_alerts_armed_on_enable AFTER UPDATE OF enabled ON price_alerts
WHEN OLD.enabled = 0 AND NEW.enabled = 1
BEGIN
{arm}
END;
DROP TRIGGER price_alerts_changed_on_edit;
CREATE TRIGGER price_alerts_changed_on_edit
AFTER UPDATE OF ticker, condition, target_price, reference_price, expires_at ON price_alerts
WHEN NEW.enabled = 1 AND (OLD.ticker IS NOT NEW.ticker OR OLD.condition IS NOT NEW.condition
    OR OLD.target_price IS NOT NEW.target_price OR OLD.reference_price IS NOT NEW.reference_price
    OR OLD.expires_at IS NOT NEW.expires_at)
BEGIN
    INSERT INTO change_log (quote_ticker) VALUES (NULL);
    UPDATE price_alerts SET change_seq = last_insert_rowid() WHERE id = NEW.id;
END;
DROP TABLE change_counter;
"#;

/// Trigger policies: the application's `snoozed_until`, `max_triggers`,
/// `upper_price` and `rearm_band` (added if it has none), how many times the
/// claim fired each alert, and the prices a banded alert's quote must come
/// back to before it is re-armed. Waking a snoozed alert (clearing its
/// `snoozed_until`) is an edit: a change the next tick reads, and judges at
/// the price of then. Snoozed alerts are few: a partial index of them. A
/// channel's upper level has an index of its own beside
/// `price_alerts_level`, which holds its lower one: a price leaves or enters
/// a channel through either. The alerts waiting for their price to come
/// back have two indexes, by ticker and price, and leave the index of
/// those waiting out a cooldown only: a price's return is seen where the
/// price moves.
const MIGRATION_12: &str = r#"
ALTER TABLE price_alerts ADD COLUMN trigger_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE price_alerts ADD COLUMN return_below REAL;
ALTER TABLE price_alerts ADD COLUMN return_above REAL;
CREATE INDEX price_alerts_return_below ON price_alerts (ticker, return_below)
    WHERE return_below IS NOT NULL AND enabled = 0;
CREATE INDEX price_alerts_return_above ON price_alerts (ticker, return_above)
    WHERE return_above IS NOT NULL AND enabled = 0;
DROP INDEX price_alerts_rearm;
CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at)
    WHERE rearm_at IS NOT NULL AND return_below IS NULL AND return_above IS NULL;
CREATE INDEX price_alerts_snoozed ON price_alerts (snoozed_until) WHERE snoozed_until IS NOT NULL;
CREATE INDEX price_alerts_upper ON price_alerts (ticker, condition, upper_price)
    WHERE enabled = 1 AND upper_price IS NOT NULL;
DROP TRIGGER price_alerts_changed_on_edit;
CREATE TRIGGER price_alerts_changed_on_edit
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
END;
"#;

/// Fewer pages for each changed ticker's state, which a tick reads from a
/// page cache that the feed's last commit emptied:
/// - the observed prices in one B-tree keyed by ticker, where a rowid
///   table with a text key is two (the key's index, then the table);
/// - each quote write's price and time in the log with its ticker, which a
///   tick reads anyway: it then reads no quote of a ticker it saw written.
///   A quote's delete is a change too, without them: that ticker's quote
///   is read (and found gone), as it is for the log's rows from before.
const MIGRATION_16: &str = r#"
CREATE TABLE observations_by_ticker (
    ticker TEXT PRIMARY KEY NOT NULL,
    price REAL NOT NULL,
    quote_time TEXT NOT NULL,
    observed_at TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO observations_by_ticker (ticker, price, quote_time, observed_at)
    SELECT ticker, price, quote_time, observed_at FROM observations WHERE ticker IS NOT NULL;
DROP TABLE observations;
ALTER TABLE observations_by_ticker RENAME TO observations;

ALTER TABLE change_log ADD COLUMN quote_price;  -- as the application wrote them
ALTER TABLE change_log ADD COLUMN quote_time;
DROP TRIGGER IF EXISTS quotes_changed_on_insert;
DROP TRIGGER IF EXISTS quotes_changed_on_update;
DROP TRIGGER IF EXISTS quotes_changed_on_delete;
CREATE TRIGGER quotes_changed_on_insert AFTER INSERT ON quotes
BEGIN
{log_quote}
END;
CREATE TRIGGER quotes_changed_on_update AFTER UPDATE OF price, updated_at ON quotes
WHEN OLD.price IS NOT NEW.price OR OLD.updated_at IS NOT NEW.updated_at
BEGIN
{log_quote}
END;
CREATE TRIGGER quotes_changed_on_delete AFTER DELETE ON quotes
BEGIN
    INSERT INTO change_log (quote_ticker) VALUES (OLD.ticker);
END;
"#;

#[cfg(test)]
mod tests {
    use super::super::changes;
    use super::*;

    /// A database of the version before the change log: its jobs' windows
    /// read the same quote changes after the upgrade as before, and no job
    /// reads everything again.
    #[test]
    fn the_change_log_starts_with_each_quotes_last_change() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate_to(&mut connection, 10).unwrap();
        connection
            .execute_batch(
                "INSERT INTO quotes (ticker, price, updated_at) VALUES ('A', 1, 't'), ('B', 1, 't');
                 INSERT INTO price_alerts (ticker, condition, target_price, created_at)
                     VALUES ('A', 'above', 1, 'x');
                 UPDATE quotes SET price = 2 WHERE ticker = 'A';",
            )
            .unwrap();
        let last: i64 = connection
            .query_row("SELECT last FROM change_counter", [], |row| row.get(0))
            .unwrap();
        assert_eq!(last, 4);
        migrate(&mut connection).unwrap();
        let log: Vec<(i64, Option<String>)> = connection
            .prepare("SELECT change_seq, quote_ticker FROM change_log ORDER BY change_seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // B's insert (2), A's last write (4), which is also the counter's.
        assert_eq!(log, [(2, Some("B".to_owned())), (4, Some("A".to_owned()))]);
        assert_eq!(changes::horizon(&connection).unwrap().visible, 4);
        connection
            .execute("UPDATE quotes SET price = 3 WHERE ticker = 'B'", [])
            .unwrap();
        assert_eq!(changes::horizon(&connection).unwrap().visible, 5);
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Observed prices kept across the migration that keys them by ticker
    /// alone (a table without a rowid), and written after it as before.
    #[test]
    fn observed_prices_keep_their_values_keyed_by_ticker() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate_to(&mut connection, 15).unwrap();
        connection
            .execute_batch(
                "INSERT INTO observations (ticker, price, quote_time, observed_at)
                 VALUES ('A', 1.5, '2026-01-01T00:00:00Z', 'then'),
                        ('B', 2.5, '2026-01-01T00:00:01Z', 'then');",
            )
            .unwrap();
        migrate(&mut connection).unwrap();
        let shape: String = connection
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'observations'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(shape.ends_with("WITHOUT ROWID"), "{shape}");
        connection
            .execute(
                "INSERT INTO observations (ticker, price, quote_time, observed_at)
                 VALUES ('B', 3.5, '2026-01-01T00:00:02Z', 'now')
                 ON CONFLICT (ticker) DO UPDATE SET price = excluded.price",
                [],
            )
            .unwrap();
        let prices: Vec<(String, f64)> = connection
            .prepare("SELECT ticker, price FROM observations ORDER BY ticker")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(prices, [("A".to_owned(), 1.5), ("B".to_owned(), 3.5)]);
    }
}
