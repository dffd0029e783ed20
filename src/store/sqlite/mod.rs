//! The SQLite engine: the embedded default. Opening (WAL mode, pragmas),
//! the schema and its migrations (`PRAGMA user_version`), checks, and
//! checkpoints. Where the engines differ, each concern's statements live
//! beside the other engine's (`alerts`, `quotes`, `observations`, `changes`,
//! `outbox`); where they agree, once, in `store` (see `store::shared`).
//!
//! A statement here bounds its rows by a parameter as `LIMIT ?N + 0`, an
//! expression, never a bare `LIMIT ?N`: the bundled SQLite is built with
//! `STAT4`, whose planner reads a bare limit's bound value, and so prepares
//! the statement again at every run (a parse and a plan each time: the
//! change watcher's looks and the deliverer's leases spent 4% of a busy
//! daemon's CPU so). The plans are the same either way.

mod migrate;
pub mod schema;
mod wal;

pub use migrate::{SCHEMA_VERSION, migrate};
pub(super) use wal::Turn;

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Classify as _, DatabaseFailure, Unusable, failure};

pub mod alerts;

mod engine;

pub mod changes;

pub mod outbox;

mod rows;

mod shared;

pub mod observations;

pub mod quotes;

pub mod watch;

pub type SqlitePool = r2d2::Pool<SqliteConnectionManager>;

/// An SQLite error while `doing` something to the database: a file that is
/// not a database is bad data, anything else an I/O problem.
pub(super) fn sqlite_failure(error: rusqlite::Error, doing: String) -> anyhow::Error {
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

/// Opens (creating the file if missing, never its folder: a folder that is
/// not there is a mistyped path or a state directory not set up) and
/// migrates the database, then builds a pool of `size` connections. WAL mode and migrations run on one connection before
/// the pool exists; per-connection pragmas run on every pooled connection.
pub fn open(path: &Path, busy_timeout: Duration, size: u32) -> anyhow::Result<SqlitePool> {
    folder(path)?;
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
    let repaired = schema::repair(&mut connection).because(Unusable::Io, || {
        format!("recreating the daemon's objects in {}", path.display())
    })?;
    crate::store::schema::log_repaired(&repaired);
    if let Some(error) = crate::store::schema::unrepairable(&repaired.unrepairable) {
        return Err(failure(
            Unusable::Data,
            format!("{}: {error}", path.display()),
        ));
    }
    drop(connection);

    let manager = SqliteConnectionManager::file(path)
        .with_init(move |connection| prepare_connection(connection, busy_timeout));
    super::builder(size)
        .connection_timeout(Duration::from_secs(60))
        // A connection to a file does not go stale: r2d2's check at every
        // checkout (an empty statement prepared) was 1% of a busy daemon's
        // CPU. A failing connection fails its statement, as ever.
        .test_on_check_out(false)
        .build(manager)
        .because(Unusable::Io, || {
            format!("opening a pool of {size} connections to {}", path.display())
        })
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

/// Prepared statements a connection keeps: every statement a tick, an
/// exchange or the upkeep makes is prepared once. (rusqlite keeps 16 by
/// default, fewer than the statements of one tick, a dozen of which read
/// a moved ticker's ranges: each was parsed again every time.)
const STATEMENTS_KEPT: usize = 256;

fn prepare_connection(connection: &mut Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    wait_for_the_lock(connection, busy_timeout)?;
    connection.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    // NORMAL is durable in WAL mode across process crashes; only an OS crash or
    // power loss can drop the last commits, never corrupt the file. A 512 KiB
    // page cache per connection (SQLite's default is 2 MiB; a tick's readers
    // take 256 KiB, see `take_role`) keeps a pool of `threads + 4`
    // connections small; the OS caches the file anyway. No
    // automatic checkpoints: they would land in whichever commit crosses the
    // threshold, often a claim mid-tick; `Checkpoints` run after ticks and
    // delivery bursts instead, at most one a second (the application's
    // connections keep theirs).
    // The daemon's checkpoints empty the WAL file (see `wal`); a reset by
    // anyone else's checkpoint truncates it to `wal::WAL_LIMIT`.
    connection.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -512; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = {};",
        wal::WAL_LIMIT
    ))
}

/// How a pooled connection waits for the write lock, up to `busy_timeout`:
/// it tries again every 100 µs for the first 10 ms, then every
/// millisecond. SQLite's own handler sleeps 1, 2, 5, 10, 15 ... ms between
/// tries: for a lock held a fraction of a millisecond (a claim, a
/// delivery's record, the application's commit), a writer would wait ten
/// times as long as it was held, and a deliverer would find no gap between
/// a large tick's claims until the tick ends.
fn wait_for_the_lock(connection: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    /// The handler: `timeout_us` is the busy timeout itself, in
    /// microseconds, passed as the pointer SQLite hands back.
    unsafe extern "C" fn busy(
        timeout_us: *mut std::ffi::c_void,
        tries: std::ffi::c_int,
    ) -> std::ffi::c_int {
        const QUICK_TRIES: u64 = 100;
        let tries = tries.max(0) as u64;
        let waited_us = if tries <= QUICK_TRIES {
            tries * 100
        } else {
            QUICK_TRIES * 100 + (tries - QUICK_TRIES) * 1000
        };
        let bound_us = WAIT_AT_MOST_US
            .try_with(std::cell::Cell::get)
            .unwrap_or(u64::MAX);
        let timeout_us = (timeout_us as usize as u64).min(bound_us);
        if waited_us >= timeout_us {
            return 0;
        }
        let pause = if tries < QUICK_TRIES { 100 } else { 1000 };
        std::thread::sleep(Duration::from_micros(pause));
        1
    }
    let timeout_us = busy_timeout.as_micros().min(usize::MAX as u128) as usize;
    // SAFETY: the handle is this open connection's; the handler keeps no
    // pointer (its argument is a number), and lives as long as the program.
    let status = unsafe {
        rusqlite::ffi::sqlite3_busy_handler(
            connection.handle(),
            Some(busy),
            timeout_us as *mut std::ffi::c_void,
        )
    };
    if status == rusqlite::ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(status),
            Some("setting the busy handler".to_owned()),
        ))
    }
}

thread_local! {
    /// A bound below the busy timeout on this thread's waits for a lock
    /// ([`waiting_at_most`]), in microseconds.
    static WAIT_AT_MOST_US: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Runs `work` with this thread's waits for a lock (SQLite calls the busy
/// handler on the thread that waits) bounded by `bound`.
pub(super) fn waiting_at_most<T>(bound: Duration, work: impl FnOnce() -> T) -> T {
    /// Puts the bound back, however `work` ends.
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            WAIT_AT_MOST_US.set(self.0);
        }
    }
    let _restore = Restore(WAIT_AT_MOST_US.replace(bound.as_micros().min(u64::MAX as u128) as u64));
    work()
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
    let sql = match role {
        Role::Writing => "PRAGMA cache_size = -512",
        Role::Reading => "PRAGMA cache_size = -256",
    };
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The id this database got at its first migration (see `MIGRATION_4`).
pub fn installation_id(connection: &Connection) -> rusqlite::Result<String> {
    connection
        .prepare_cached("SELECT installation_id FROM installation WHERE id = 1")?
        .query_row([], |row| row.get(0))
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

/// The folder the database is in, which must exist: the daemon creates the
/// file, never its folder (a folder that is not there is a mistyped path,
/// or a state directory not set up).
fn folder(path: &Path) -> anyhow::Result<&Path> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if folder.is_dir() {
        return Ok(folder);
    }
    Err(failure(
        Unusable::Create,
        format!(
            "the database's folder {} does not exist: create it (the shipped unit's \
             StateDirectory= does), or correct database.path",
            folder.display()
        ),
    ))
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

/// Checks, without creating or changing anything, that `run` can open the
/// database: an existing file must be an SQLite database of this version or
/// an older one, which this process can write; a missing one must be
/// creatable. Returns what it found, for `check-config`.
pub fn check(path: &Path, busy_timeout: Duration) -> anyhow::Result<String> {
    if !path.exists() {
        writable_folder(folder(path)?).because(Unusable::Create, || {
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
    if version < SCHEMA_VERSION {
        return Ok(format!(
            "schema version {version}, writable; migrated at start"
        ));
    }
    let audit = schema::audit(&connection).because(Unusable::Io, || {
        format!("looking for the daemon's objects in {}", path.display())
    })?;
    crate::store::schema::report(version, audit)
        .map_err(|error| failure(Unusable::Data, format!("{}: {error}", path.display())))
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

/// A database a newer price-alertd migrated: refused, never downgraded.
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

/// The database's schema version, or why it cannot be read.
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn path(dir: &Path) -> std::path::PathBuf {
        dir.join("alerts.db")
    }

    #[test]
    fn a_missing_folder_is_refused_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let error = open(&dir.path().join("typo/alerts.db"), TIMEOUT, 2).unwrap_err();
        let failure = error.downcast_ref::<DatabaseFailure>().unwrap();
        assert_eq!(failure.kind, Unusable::Create);
        assert!(
            format!("{error:#}").contains("typo does not exist"),
            "{error:#}"
        );
        assert!(!dir.path().join("typo").exists());
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
        assert_eq!(SCHEMA_VERSION, 16);
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
