//! The SQLite engine: the embedded default. Opening (WAL mode, pragmas),
//! the schema and its migrations (`PRAGMA user_version`), checks, and
//! checkpoints. The queries of each concern live beside the other engine's in
//! `alerts`, `changes`, `outbox` and `runs`.

pub mod alerts;
pub mod changes;
pub mod cluster;
pub mod outbox;
pub mod runs;

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Classify as _, DatabaseFailure, Unusable, failure};

pub type SqlitePool = r2d2::Pool<SqliteConnectionManager>;

/// An SQLite error while `doing` something to the database: a file that is
/// not a database is bad data, anything else an I/O problem.
fn sqlite_failure(error: rusqlite::Error, doing: String) -> anyhow::Error {
    let kind = match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Unusable::Data,
        _ => Unusable::Io,
    };
    // rusqlite's own words, without its source, which says them again.
    anyhow::Error::msg(error.to_string()).context(DatabaseFailure {
        kind,
        message: doing,
    })
}

/// The schema version this build migrates to (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 9;

/// Opens (creating if missing) and migrates the database, then builds a pool
/// of `size` connections. WAL mode and migrations run on one connection before
/// the pool exists; per-connection pragmas run on every pooled connection.
pub fn open(path: &Path, busy_timeout: Duration, size: u32) -> anyhow::Result<SqlitePool> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).because(Unusable::Create, || {
            format!("creating the database folder {}", parent.display())
        })?;
    }
    create_for_the_umask(path)?;
    let mut connection = Connection::open(path).map_err(|error| {
        sqlite_failure(error, format!("opening the database {}", path.display()))
    })?;
    prepare_connection(&mut connection, busy_timeout)
        .map_err(|error| sqlite_failure(error, format!("configuring {}", path.display())))?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|error| {
            sqlite_failure(error, format!("switching {} to WAL mode", path.display()))
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(failure(
            Unusable::Io,
            format!(
                "{} refused WAL mode (journal_mode is {mode})",
                path.display()
            ),
        ));
    }
    let version = schema_version(&connection, path)?;
    if version > SCHEMA_VERSION {
        return Err(newer(path, version));
    }
    migrate(&mut connection).because(Unusable::Io, || format!("migrating {}", path.display()))?;
    drop(connection);

    let manager = SqliteConnectionManager::file(path)
        .with_init(move |connection| prepare_connection(connection, busy_timeout));
    super::builder(size)
        .connection_timeout(Duration::from_secs(60))
        .build(manager)
        .because(Unusable::Io, || {
            format!("opening a pool of {size} connections to {}", path.display())
        })
}

fn newer(path: &Path, version: i64) -> anyhow::Error {
    failure(
        Unusable::Data,
        format!(
            "{} is at schema version {version}, newer than this price-alertd's {SCHEMA_VERSION}: \
             a newer version migrated it",
            path.display()
        ),
    )
}

/// Creates a missing database file with mode 0666 less the umask, as most
/// programs create files: SQLite would use 0644, which no umask can make
/// group-writable, and the unit's `UMask=0007` is how the database becomes
/// writable by the group it shares with the application. (SQLite gives the
/// -wal and -shm files the database file's mode.) An empty file is an empty
/// database.
fn create_for_the_umask(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).because(Unusable::Create, || {
            format!("creating the database {}", path.display())
        }),
    }
}

fn prepare_connection(connection: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    connection.busy_timeout(busy_timeout)?;
    // NORMAL is durable in WAL mode across process crashes; only an OS crash or
    // power loss can drop the last commits, never corrupt the file. A 512 KiB
    // page cache per connection (SQLite's default is 2 MiB; a tick's readers
    // take 256 KiB, see `take_role`) keeps a pool of `threads + 4`
    // connections small; the OS caches the file anyway. No
    // automatic checkpoints: they would land in whichever commit crosses the
    // threshold, often a claim mid-tick; `checkpoint` runs after each tick and
    // delivery burst instead (the application's connections keep theirs).
    connection.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;",
    )
}

/// What a pooled connection is taken for, which sets its page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Claims and every other use: a claim's reads are random, and a cache
    /// under 512 KiB made claiming a quarter slower (1M alerts, 1% of the
    /// tickers moved: 75 ms to 100 ms).
    Writing,
    /// A tick's reader, scanning index ranges: 256 KiB is as fast, and saves
    /// ten readers 2.5 MB.
    Reading,
}

/// Sizes a pooled connection's page cache for `role` (a no-op when it has
/// that size: SQLite keeps the pages it may).
pub fn take_role(connection: &Connection, role: Role) -> rusqlite::Result<()> {
    let kib: i64 = match role {
        Role::Writing => 512,
        Role::Reading => 256,
    };
    connection.pragma_update(None, "cache_size", -kib)
}

/// Adds an optional TEXT column of the application's to `price_alerts`
/// (`expires_at`, `cooldown`), unless the application added it already.
fn add_alert_column_if_missing(
    transaction: &rusqlite::Transaction<'_>,
    column: &str,
) -> rusqlite::Result<()> {
    let exists: bool = transaction.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('price_alerts') WHERE name = ?1",
        [column],
        |row| row.get(0),
    )?;
    if !exists {
        // A name of ours, never input: it cannot be a parameter here.
        transaction.execute_batch(&format!(
            "ALTER TABLE price_alerts ADD COLUMN {column} TEXT;"
        ))?;
    }
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]. Runs in one IMMEDIATE transaction,
/// so two daemons starting at once migrate once.
pub fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version < 1 {
        transaction.execute_batch(MIGRATION_1)?;
    }
    if version < 2 {
        add_alert_column_if_missing(&transaction, "expires_at")?;
        transaction.execute_batch(MIGRATION_2)?;
    }
    if version < 3 {
        transaction.execute_batch(MIGRATION_3)?;
    }
    if version < 4 {
        transaction.execute_batch(MIGRATION_4)?;
    }
    if version < 5 {
        transaction.execute_batch(MIGRATION_5)?;
    }
    if version < 6 {
        transaction.execute_batch(&MIGRATION_6.replace("{level}", changes::LEVEL))?;
    }
    if version < 7 {
        transaction.execute_batch(MIGRATION_7)?;
        transaction.execute_batch(crate::store::cluster::SCHEMA)?;
    }
    if version < 8 {
        transaction.execute_batch(MIGRATION_8)?;
        users_from_bodies(&transaction)?;
    }
    if version < 9 {
        add_alert_column_if_missing(&transaction, "cooldown")?;
        transaction.execute_batch(MIGRATION_9)?;
    }
    if version < SCHEMA_VERSION {
        transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
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

/// The id this database got at its first migration (see `MIGRATION_4`).
pub fn installation_id(connection: &Connection) -> rusqlite::Result<String> {
    connection.query_row(
        "SELECT installation_id FROM installation WHERE id = 1",
        [],
        |row| row.get(0),
    )
}

/// Copies what the WAL holds into the database file, as far as readers allow
/// (`PASSIVE`: it never waits for, or blocks, anyone).
pub fn checkpoint(connection: &Connection) -> rusqlite::Result<()> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Opens an existing database, migrated by this version, for reading only:
/// it never creates, migrates or writes one (operators' read-only commands).
pub fn open_read_only(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    exists(path)?;
    let (connection, version) = connect_existing(
        path,
        busy_timeout,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
        "to read",
    )?;
    if version < SCHEMA_VERSION {
        return Err(failure(
            Unusable::Data,
            format!(
                "{} is at schema version {version}, this price-alertd reads version {SCHEMA_VERSION}: \
                 start the daemon of this version once to migrate it",
                path.display()
            ),
        ));
    }
    Ok(connection)
}

/// One connection to an existing database, never creating it, `purpose`
/// ("to read") naming the opening in errors; refuses a newer version's.
/// Returns it with its schema version.
fn connect_existing(
    path: &Path,
    busy_timeout: Duration,
    access: OpenFlags,
    purpose: &str,
) -> anyhow::Result<(Connection, i64)> {
    let connection = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .because(Unusable::Io, || {
            format!("opening the database {} {purpose}", path.display())
        })?;
    connection
        .busy_timeout(busy_timeout)
        .because(Unusable::Io, || format!("configuring {}", path.display()))?;
    let version = schema_version(&connection, path)?;
    if version > SCHEMA_VERSION {
        return Err(newer(path, version));
    }
    Ok((connection, version))
}

/// Opens an existing database to change it (migrating it like the daemon
/// would), never creating a new one: operators' commands that write.
pub fn open_existing(path: &Path, busy_timeout: Duration) -> anyhow::Result<SqlitePool> {
    exists(path)?;
    open(path, busy_timeout, 1)
}

fn exists(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    Err(failure(
        Unusable::Missing,
        format!(
            "there is no database at {}: the daemon creates it when it first starts \
             (is this the configuration the service runs with?)",
            path.display()
        ),
    ))
}

fn schema_version(connection: &Connection, path: &Path) -> anyhow::Result<i64> {
    connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| {
            let what = match error.sqlite_error_code() {
                // Said in full: SQLite's "file is not a database" adds nothing.
                Some(rusqlite::ErrorCode::NotADatabase) => {
                    return failure(
                        Unusable::Data,
                        format!("the database {} is not an SQLite database", path.display()),
                    );
                }
                Some(rusqlite::ErrorCode::ReadOnly) => "cannot be written",
                _ => "cannot be read",
            };
            sqlite_failure(error, format!("the database {} {what}", path.display()))
        })
}

/// Checks, without creating or changing anything, that `run` can open the
/// database: an existing file must be an SQLite database of this version or
/// an older one, which this process can write; a missing one must be
/// creatable. Returns what it found, for `check-config`.
pub fn check(path: &Path, busy_timeout: Duration) -> anyhow::Result<String> {
    if !path.exists() {
        let folder = path
            .ancestors()
            .skip(1)
            .find(|folder| folder.as_os_str().is_empty() || folder.exists())
            .map(|folder| {
                if folder.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    folder
                }
            })
            .unwrap_or(Path::new("/"));
        writable_folder(folder).because(Unusable::Create, || {
            format!(
                "the database {} does not exist and cannot be created",
                path.display()
            )
        })?;
        return Ok("missing; created at start".to_owned());
    }
    if !path.is_file() {
        return Err(failure(
            Unusable::Data,
            format!("the database {} is not a file", path.display()),
        ));
    }
    let (mut connection, version) = connect_existing(
        path,
        busy_timeout,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        "to write",
    )?;
    // A write transaction that changes nothing: it fails as `run` would on a
    // read-only file, or where the -wal and -shm files cannot be made.
    connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .and_then(|transaction| transaction.rollback())
        .because(Unusable::Io, || {
            format!("the database {} cannot be written", path.display())
        })?;
    Ok(format!("schema version {version}, writable"))
}

/// Fails unless this process can create files in `folder` (tried for real:
/// permissions, ACLs, read-only mounts and sandboxes all count).
fn writable_folder(folder: &Path) -> std::io::Result<()> {
    let probe = folder.join(format!(".price-alertd-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn path(dir: &Path) -> std::path::PathBuf {
        dir.join("sub/alerts.db")
    }

    #[test]
    fn a_missing_database_is_created_in_wal_mode_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&path(dir.path()), TIMEOUT, 2).unwrap();
        let connection = pool.get().unwrap();
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), version), ("wal", SCHEMA_VERSION));
        assert_eq!(SCHEMA_VERSION, 9);
        let installation = installation_id(&connection).unwrap();
        drop(connection);
        // Opening again is a no-op migration: the same installation.
        let pool = open(&path(dir.path()), TIMEOUT, 2).unwrap();
        assert_eq!(installation_id(&pool.get().unwrap()).unwrap(), installation);
    }

    #[test]
    fn each_database_gets_its_own_random_installation_id() {
        let ids: std::collections::HashSet<String> = (0..20)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let pool = open(&path(dir.path()), TIMEOUT, 1).unwrap();
                installation_id(&pool.get().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(ids.len(), 20);
        assert!(
            ids.iter()
                .all(|id| id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit())),
            "{ids:?}"
        );
    }

    #[test]
    fn an_application_database_keeps_its_rows_and_gains_armings() {
        let dir = tempfile::tempdir().unwrap();
        let path = path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let app = Connection::open(&path).unwrap();
        app.execute_batch(
            "CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT NOT NULL, condition TEXT NOT NULL,
                 target_price REAL NOT NULL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
                 triggered_at TEXT, triggered_price REAL, created_at TEXT NOT NULL, user_id TEXT, note TEXT);
             CREATE TABLE quotes (ticker TEXT PRIMARY KEY, price REAL NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('AAPL', 'above', 200, '2026-01-01T00:00:00Z');
             INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('MSFT', 'below', 300, '2026-01-01T00:00:00Z');",
        )
        .unwrap();
        drop(app);
        let pool = open(&path, TIMEOUT, 2).unwrap();
        let connection = pool.get().unwrap();
        connection
            .execute(
                "INSERT INTO price_alerts (ticker, condition, target_price, created_at) VALUES ('TSLA', 'above', 1, '2026-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
        let armings: Vec<i64> = connection
            .prepare("SELECT arming FROM price_alerts ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(armings, vec![1, 2, 3]);
    }

    #[test]
    fn re_enabling_or_reinserting_takes_a_new_arming() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&path(dir.path()), TIMEOUT, 2).unwrap();
        let connection = pool.get().unwrap();
        let arming = || -> i64 {
            connection
                .query_row("SELECT arming FROM price_alerts WHERE id = 7", [], |row| {
                    row.get(0)
                })
                .unwrap()
        };
        connection
            .execute("INSERT INTO price_alerts (id, ticker, condition, target_price, created_at) VALUES (7, 'A', 'above', 1, 'x')", [])
            .unwrap();
        let first = arming();
        connection
            .execute("UPDATE price_alerts SET enabled = 1 WHERE id = 7", [])
            .unwrap();
        assert_eq!(arming(), first, "a no-op update is not a new arming");
        connection
            .execute("UPDATE price_alerts SET enabled = 0 WHERE id = 7", [])
            .unwrap();
        assert_eq!(arming(), first);
        connection
            .execute("UPDATE price_alerts SET enabled = 1 WHERE id = 7", [])
            .unwrap();
        let second = arming();
        assert!(second > first);
        connection
            .execute("DELETE FROM price_alerts WHERE id = 7", [])
            .unwrap();
        connection
            .execute("INSERT INTO price_alerts (id, ticker, condition, target_price, created_at) VALUES (7, 'A', 'above', 1, 'x')", [])
            .unwrap();
        assert!(arming() > second, "a reused id is a new arming");
    }
}
