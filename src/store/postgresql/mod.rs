//! The PostgreSQL engine: for several daemons on several hosts sharing one
//! database. Connecting (TLS over rustls, a password from the URL, a file or
//! `$PGPASSWORD`), the pool (r2d2, each connection with its own cache of
//! prepared statements), the schema and its migrations. Where the engines
//! differ, each concern's statements live beside SQLite's (`alerts`,
//! `quotes`, `observations`, `changes`, `outbox`); where they agree, once,
//! in `store` (see `store::shared`).
//!
//! What differs from SQLite, and why:
//! - **Change numbers are transaction ids.** SQLite has one writer at a
//!   time, so the change log's row ids number changes in commit order.
//!   Here writers commit in any order: a change numbered 100 may commit after
//!   one numbered 101 was read. So an alert's `change_seq`, and a quote
//!   change's in `change_log`, is the id of the transaction that made it
//!   (`pg_current_xact_id()`, 64 bits, never reused). A tick reads every change its snapshot sees, but moves the
//!   watermark only to just below the snapshot's `xmin`: every transaction
//!   with a smaller id has ended, so nothing below the watermark can still
//!   appear. A change from a transaction that is still open is read by the
//!   first tick after it commits.
//! - **`enabled` may be an integer or a boolean.** The application may have
//!   made the table either way; every statement writes `enabled` as the
//!   untyped literals `'1'` and `'0'`, which PostgreSQL reads as the
//!   column's type.

pub(in crate::store) mod listen;
mod migrate;
pub mod schema;

pub use migrate::{SCHEMA_VERSION, migrate};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::{Client, Statement};

use crate::config::PostgresConfig;

use super::{Unusable, failure};
use connect::{Manager, manager};
use migrate::{newer, schema_version};

pub mod alerts;

mod engine;

pub mod changes;

mod connect;

pub mod outbox;

mod rows;

pub mod observations;

pub mod quotes;

/// What the engine's statements return: the client's error, which the store
/// wraps into its own.
pub(super) type PgResult<T> = std::result::Result<T, postgres::Error>;

/// A connection and the statements prepared on it: each statement is parsed
/// and planned once per connection, not once per call.
pub struct PgConnection {
    /// Always there until the connection is dropped.
    client: Option<Client>,
    statements: HashMap<&'static str, Statement>,
    /// When it last answered: opened, or answered the pool's check (see
    /// [`CHECKED_WITHIN`]).
    answered_at: Instant,
    /// The database's installation id, once read: it never changes.
    installation: Option<String>,
}

/// How long after its last check (or its opening) a connection goes to
/// its next user unchecked. The pool's check is an empty query, a round
/// trip, and a busy daemon takes a connection several times a tick: it was
/// an eighth of its statements at 10,000 quote writes a second. A
/// connection that went bad within this window fails its statement, and
/// the tick or delivery with it, as one that goes bad right after its
/// check always could (HikariCP bypasses its check for 500 ms the same
/// way). Returning to the pool is no sign of life: a client learns that
/// the server ended the connection only when it next reads.
const CHECKED_WITHIN: Duration = Duration::from_millis(500);

impl Drop for PgConnection {
    /// The sync client says goodbye to the server by running its own small
    /// runtime, which panics on a thread that runs a tokio runtime (a pool
    /// dropped by the async code): there it closes from a thread of its own.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

impl PgConnection {
    pub fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }

    /// The prepared form of `sql`, prepared on first use.
    pub fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client().prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// The pool, and how to open a connection of its own (for `listen`).
#[derive(Clone)]
pub struct PgPool {
    pool: r2d2::Pool<Manager>,
    manager: Manager,
}

impl PgPool {
    /// A connection, waiting up to [`POOL_WAIT`] for one; if none came, why
    /// the server could not be reached (refused, a name that does not
    /// resolve, a login refused), not only that the wait ran out.
    pub fn get(&self) -> anyhow::Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|error| {
            let waited = format!("no connection within {}s", POOL_WAIT.as_secs());
            match self.manager.last_failure() {
                Some(cause) => anyhow::anyhow!("{waited}; the last attempt to connect: {cause}"),
                None => anyhow::anyhow!("{waited} ({error})"),
            }
        })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection {
            client: Some(Manager::connect(self)?),
            statements: HashMap::new(),
            answered_at: Instant::now(),
            installation: None,
        })
    }

    fn is_valid(&self, connection: &mut PgConnection) -> Result<(), postgres::Error> {
        if connection.answered_at.elapsed() < CHECKED_WITHIN {
            return Ok(());
        }
        connection.client().simple_query("")?;
        connection.answered_at = Instant::now();
        Ok(())
    }

    fn has_broken(&self, connection: &mut PgConnection) -> bool {
        connection.client().is_closed()
    }
}

/// Claims that run side by side in a tick (`store::Pool::claim_writers`):
/// each batch's work is the server's, and two keep both of a small host's
/// cores busy.
pub const CLAIM_WRITERS: usize = 2;

/// How long taking a connection from the pool may wait.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The oldest server this daemon runs on: 13 brought `pg_current_xact_id()`
/// and the snapshot functions change numbers rest on, and a built-in
/// `gen_random_uuid()`.
const OLDEST_SERVER: i32 = 130_000;

/// A first connection: the server is one this daemon runs on, and its
/// database is at a schema version this build knows. Returns it with that
/// version (0: never migrated).
fn first_connection(
    config: &PostgresConfig,
    lock_timeout: Duration,
) -> anyhow::Result<(Manager, PgConnection, i32)> {
    let manager = manager(config, lock_timeout)?;
    let mut connection = r2d2::ManageConnection::connect(&manager)
        .map_err(|error| unreachable_database(config, error))?;
    let server: i32 = connection
        .client()
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|error| failure_of(error, "reading the server's version".into()))?;
    if server < OLDEST_SERVER {
        return Err(failure(
            Unusable::Data,
            format!(
                "{} runs PostgreSQL {}.{}; price-alertd needs 13 or later",
                config.display,
                server / 10_000,
                server % 10_000 / 100
            ),
        ));
    }
    let version = schema_version(connection.client())
        .map_err(|error| failure_of(error, "reading the schema version".into()))?;
    if version > SCHEMA_VERSION {
        return Err(newer(config, version));
    }
    Ok((manager, connection, version))
}

/// Connects, migrates, and builds a pool of at most `size` connections.
pub fn open(config: &PostgresConfig, lock_timeout: Duration, size: u32) -> anyhow::Result<PgPool> {
    let (manager, mut first, _) = first_connection(config, lock_timeout)?;
    migrate_and_repair(config, &mut first)?;
    drop(first);
    let pool = super::builder(size)
        // Connections are only ever busy for a statement or a short
        // transaction: a longer wait means the server is gone, and the tick
        // or round should fail (and be retried) rather than hang.
        .connection_timeout(POOL_WAIT)
        .build(manager.clone())
        .map_err(|error| {
            failure(
                Unusable::Io,
                format!(
                    "opening a pool of {size} connections to {}: {error}",
                    config.display
                ),
            )
        })?;
    Ok(PgPool { pool, manager })
}

/// One connection to a database this version migrated, for reading only:
/// it never migrates one (operators' read-only commands).
pub fn open_read_only(
    config: &PostgresConfig,
    lock_timeout: Duration,
) -> anyhow::Result<PgConnection> {
    let (_, connection, version) = first_connection(config, lock_timeout)?;
    if version < SCHEMA_VERSION {
        return Err(failure(
            Unusable::Data,
            format!(
                "{} is at schema version {version}, this price-alertd reads version {SCHEMA_VERSION}: \
                 start the daemon of this version once to migrate it",
                config.display
            ),
        ));
    }
    Ok(connection)
}

/// One connection to an existing database, to change it (migrating it
/// like the daemon would): operators' commands that write.
pub fn open_existing(
    config: &PostgresConfig,
    lock_timeout: Duration,
) -> anyhow::Result<PgConnection> {
    let (_, mut connection, _) = first_connection(config, lock_timeout)?;
    migrate_and_repair(config, &mut connection)?;
    Ok(connection)
}

/// Brings the schema to this version, and recreates the daemon's objects
/// the application's tables lost (`store::schema`); fails naming what
/// cannot be recreated.
fn migrate_and_repair(
    config: &PostgresConfig,
    connection: &mut PgConnection,
) -> anyhow::Result<()> {
    migrate(connection.client())
        .map_err(|error| failure_of(error, format!("migrating {}", config.display)))?;
    let repaired = schema::repair(connection).map_err(|error| {
        failure_of(
            error,
            format!("recreating the daemon's objects in {}", config.display),
        )
    })?;
    super::schema::log_repaired(&repaired);
    match super::schema::unrepairable(&repaired.unrepairable) {
        Some(error) => Err(failure(
            Unusable::Data,
            format!("{}: {error}", config.display),
        )),
        None => Ok(()),
    }
}

/// Checks, without changing anything, that the daemon can use the database:
/// reachable, logged in, at this version or an older one, and writable.
pub fn check(config: &PostgresConfig, lock_timeout: Duration) -> anyhow::Result<String> {
    let (_, mut connection, version) = first_connection(config, lock_timeout)?;
    let client = connection.client();
    let server: String = client
        .query_one("SHOW server_version", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|error| failure_of(error, "reading the server's version".into()))?;
    let writable: bool = client
        .query_one(
            "SELECT NOT pg_is_in_recovery() AND has_database_privilege(current_database(), 'CREATE')",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|error| failure_of(error, "checking privileges".into()))?;
    if !writable {
        return Err(failure(
            Unusable::Io,
            format!(
                "{} cannot be written by this user (a standby, or no CREATE privilege on the database)",
                config.display
            ),
        ));
    }
    if version < SCHEMA_VERSION {
        return Ok(match version {
            0 => format!("PostgreSQL {server}, not migrated yet; migrated at start"),
            version => format!(
                "PostgreSQL {server}, schema version {version}, writable; migrated at start"
            ),
        });
    }
    let audit = schema::audit(&mut connection).map_err(|error| {
        failure_of(
            error,
            format!("looking for the daemon's objects in {}", config.display),
        )
    })?;
    super::schema::report(version, audit)
        .map(|report| format!("PostgreSQL {server}, {report}"))
        .map_err(|error| failure(Unusable::Data, format!("{}: {error}", config.display)))
}

fn unreachable_database(config: &PostgresConfig, error: postgres::Error) -> anyhow::Error {
    let kind = match error.as_db_error().map(|error| error.code().code()) {
        // invalid_catalog_name: no such database.
        Some("3D000") => Unusable::Missing,
        _ => Unusable::Io,
    };
    anyhow::Error::new(error).context(super::DatabaseFailure {
        kind,
        message: format!("connecting to {}", config.display),
    })
}

fn failure_of(error: postgres::Error, doing: String) -> anyhow::Error {
    anyhow::Error::new(error).context(super::DatabaseFailure {
        kind: Unusable::Io,
        message: doing,
    })
}

/// The id this database got at its first migration.
pub fn installation_id(connection: &mut PgConnection) -> Result<String, postgres::Error> {
    if let Some(installation) = &connection.installation {
        return Ok(installation.clone());
    }
    let statement = connection.prepared("SELECT installation_id FROM installation WHERE id = 1")?;
    let installation: String = connection.client().query_one(&statement, &[])?.try_get(0)?;
    connection.installation = Some(installation.clone());
    Ok(installation)
}
