//! The store: the only module tree that knows SQL, and the only one that
//! knows which engine it talks to. Callers hold a [`Pool`] and
//! [`Connection`]s and call the functions of `alerts` (the claim), `changes`
//! (what a tick reads), `outbox` (the delivery queue), `runs` and `cluster`
//! (daemons sharing the database); each hands the call to its engine's
//! version, in `sqlite` (the embedded default) or `postgresql`, which also
//! open, migrate and check their databases.

pub mod alerts;
pub mod changes;
pub mod channels;
pub mod clock;
pub mod cluster;
mod engine;
pub mod listen;
pub mod observations;
pub mod outbox;
mod postgresql;
pub mod quotes;
pub mod runs;
pub mod schema;
mod shared;
mod sqlite;
pub mod watermarks;

use anyhow::Context as _;

use crate::config::{self, DatabaseConfig};
use crate::recurring::Recurring;

/// Why the database cannot be used, attached to an error (as its context) so
/// that the CLI can answer with the matching sysexits code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Not an SQLite database, a URL the client cannot use, or a database a
    /// newer version migrated (EX_DATAERR).
    Data,
    /// There is no database (EX_NOINPUT).
    Missing,
    /// It cannot be created (EX_CANTCREAT).
    Create,
    /// It cannot be opened, read or written (EX_IOERR).
    Io,
}

/// An [`Unusable`] and what was being done.
#[derive(Debug)]
pub struct DatabaseFailure {
    pub kind: Unusable,
    message: String,
}

impl std::fmt::Display for DatabaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DatabaseFailure {}

fn failure(kind: Unusable, message: String) -> anyhow::Error {
    anyhow::Error::new(DatabaseFailure { kind, message })
}

/// Marks an error with what it makes of the database.
trait Classify<T> {
    fn because(self, kind: Unusable, message: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E> Classify<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn because(self, kind: Unusable, message: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|error| {
            // The error's own words only: an engine's error tends to repeat
            // them as its source (SQLite's "Error code 26: ...").
            anyhow::Error::msg(error.to_string()).context(DatabaseFailure {
                kind,
                message: message(),
            })
        })
    }
}

/// An error from the database engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shown by its own words only: rusqlite's error already says what its
    /// source (SQLite's "Error code 5: database is locked") would say again.
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// What the daemon cannot recreate of its own objects (`schema`).
    #[error("{0}")]
    Unrepairable(String),
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Sqlite(error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pool of connections to the configured database.
#[derive(Clone)]
pub struct Pool {
    of: PoolOf,
    /// How many of a tick's readers may hold a connection at once.
    readers: usize,
    /// The most connections the daemon holds, the listener's included.
    most: u32,
}

#[derive(Clone)]
enum PoolOf {
    Sqlite {
        pool: sqlite::SqlitePool,
        /// For a connection of its own (`listen`).
        path: std::path::PathBuf,
        busy_timeout: std::time::Duration,
    },
    Postgres(Box<postgresql::PgPool>),
}

/// One connection, from a [`Pool`] or opened on its own.
pub struct Connection(EngineConnection);

/// The engine behind a connection: the store's functions match on it.
enum EngineConnection {
    Sqlite(Box<dyn std::ops::DerefMut<Target = rusqlite::Connection> + Send>),
    Postgres(Box<dyn std::ops::DerefMut<Target = postgresql::PgConnection> + Send>),
}

impl Pool {
    /// Takes a connection, waiting for one to be free.
    pub fn get(&self) -> anyhow::Result<Connection> {
        self.take(sqlite::Role::Writing)
    }

    /// Takes a connection for one of a tick's readers, which scan ranges
    /// and write nothing: on SQLite with a smaller page cache (ten readers'
    /// caches are most of a large tick's heap; a claim's random reads are
    /// what a cache serves).
    pub fn get_to_read(&self) -> anyhow::Result<Connection> {
        self.take(sqlite::Role::Reading)
    }

    fn take(&self, role: sqlite::Role) -> anyhow::Result<Connection> {
        match &self.of {
            PoolOf::Sqlite { pool, .. } => {
                let connection = pool.get().context("taking a database connection")?;
                sqlite::take_role(&connection, role).context("sizing the page cache")?;
                Ok(Connection(EngineConnection::Sqlite(Box::new(connection))))
            }
            PoolOf::Postgres(pool) => Ok(Connection(EngineConnection::Postgres(Box::new(
                pool.get().context("taking a database connection")?,
            )))),
        }
    }
}

impl Pool {
    /// How many of a tick's readers may hold a connection at once (see
    /// [`Sizing`]).
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// The most connections a daemon on this pool holds at once, its
    /// listener's included (see [`Sizing`]).
    pub fn most_connections(&self) -> u32 {
        self.most
    }

    /// How many claims of disjoint batches may usefully run at once: one on
    /// SQLite, which writes one transaction at a time; more on PostgreSQL,
    /// which locks rows and runs each on a server process of its own (the
    /// pool holds a connection for each).
    pub fn claim_writers(&self) -> usize {
        match &self.of {
            PoolOf::Sqlite { .. } => 1,
            PoolOf::Postgres(_) => postgresql::CLAIM_WRITERS,
        }
    }
}

/// How many connections a daemon holds, and what for: each of a tick's
/// readers (up to `evaluator.threads` at once); the tick's writer, and on
/// PostgreSQL its helper claimer; the deliverer's exchange with the outbox;
/// one for everything else (heartbeats, fire times, metrics, run records);
/// and on PostgreSQL the listener, a connection outside the pool. With
/// `database.max_connections` the readers are as many as the rest leaves.
/// The pool opens connections as they are asked for and closes each after
/// [`IDLE_TIMEOUT`] unused.
struct Sizing {
    pool: u32,
    readers: u32,
    /// The pool's and the listener's.
    most: u32,
}

/// How long a connection stays open unused (r2d2 looks every 30 s). None is
/// kept for its own sake: an idle daemon's heartbeat and its deliverer's
/// look at the outbox, each every 5 s, keep one or two open.
///
/// r2d2's `min_idle` is not used to keep more: it keeps that many *idle*,
/// opening another whenever a take leaves fewer (several at once when takes
/// follow a reap, for it counts none being opened), while its reaper closes
/// idle ones after the timeout all the same. With two kept, an idle daemon
/// reopened two to four connections a minute and, on a busy machine,
/// held four to seven.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn sizing(config: &DatabaseConfig, readers: u32) -> Sizing {
    let (helpers, listener) = match config.engine {
        config::EngineChoice::Sqlite { .. } => (0, 0),
        config::EngineChoice::Postgres(_) => (postgresql::CLAIM_WRITERS as u32 - 1, 1),
    };
    let others = 3 + helpers;
    let readers = readers.max(1);
    match config.max_connections {
        None => Sizing {
            pool: readers + others,
            readers,
            most: readers + others + listener,
        },
        Some(most) => {
            let pool = most.saturating_sub(listener).max(others + 1);
            Sizing {
                pool,
                readers: readers.min(pool - others),
                most: pool + listener,
            }
        }
    }
}

/// How many connections a daemon whose ticks read with `readers` threads
/// holds at most, and how many of its readers hold one at once (see
/// [`Sizing`]): for `check-config`.
pub fn footprint(config: &DatabaseConfig, readers: u32) -> (u32, u32) {
    let sizing = sizing(config, readers);
    (sizing.most, sizing.readers)
}

/// Opens the database, creating and migrating it if needed, with a pool
/// for a daemon whose ticks read with `readers` threads (see [`Sizing`]).
pub fn open(config: &DatabaseConfig, readers: u32) -> anyhow::Result<Pool> {
    let Sizing {
        pool,
        readers,
        most,
    } = sizing(config, readers);
    let of =
        match &config.engine {
            config::EngineChoice::Sqlite { path } => PoolOf::Sqlite {
                pool: sqlite::open(path, config.busy_timeout, pool)?,
                path: path.clone(),
                busy_timeout: config.busy_timeout,
            },
            config::EngineChoice::Postgres(postgres) => PoolOf::Postgres(Box::new(
                postgresql::open(postgres, config.busy_timeout, pool)?,
            )),
        };
    Ok(Pool {
        of,
        readers: readers as usize,
        most,
    })
}

/// The pool settings both engines share: at most `size` connections, opened
/// as they are asked for, closed after [`IDLE_TIMEOUT`] unused.
fn builder<M: r2d2::ManageConnection>(size: u32) -> r2d2::Builder<M> {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .idle_timeout(Some(IDLE_TIMEOUT))
        // The store's callers report failures, once when they start and once
        // when they end; r2d2's own handler would log every attempt.
        .error_handler(Box::new(r2d2::NopErrorHandler))
}

/// Opens an existing database, migrated by this version, for reading only:
/// it never creates, migrates or writes one (operators' read-only commands).
pub fn open_read_only(config: &DatabaseConfig) -> anyhow::Result<Connection> {
    Ok(Connection(match &config.engine {
        config::EngineChoice::Sqlite { path } => EngineConnection::Sqlite(Box::new(Plain(
            sqlite::open_read_only(path, config.busy_timeout)?,
        ))),
        config::EngineChoice::Postgres(postgres) => EngineConnection::Postgres(Box::new(Plain(
            postgresql::open_read_only(postgres, config.busy_timeout)?,
        ))),
    }))
}

/// Opens an existing database to change it (migrating it like the daemon
/// would), never creating a new one: operators' commands that write.
pub fn open_existing(config: &DatabaseConfig) -> anyhow::Result<Connection> {
    Ok(Connection(match &config.engine {
        config::EngineChoice::Sqlite { path } => EngineConnection::Sqlite(Box::new(
            sqlite::open_existing(path, config.busy_timeout)?
                .get()
                .context("taking a database connection")?,
        )),
        config::EngineChoice::Postgres(postgres) => EngineConnection::Postgres(Box::new(Plain(
            postgresql::open_existing(postgres, config.busy_timeout)?,
        ))),
    }))
}

/// Checks, without creating or changing anything, that `run` can open the
/// database. Returns what it found, for `check-config`.
pub fn check(config: &DatabaseConfig) -> anyhow::Result<String> {
    match &config.engine {
        config::EngineChoice::Sqlite { path } => sqlite::check(path, config.busy_timeout),
        config::EngineChoice::Postgres(postgres) => {
            postgresql::check(postgres, config.busy_timeout)
        }
    }
}

/// A connection of its own, not a pool's.
struct Plain<C>(C);

impl<C> std::ops::Deref for Plain<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}

impl<C> std::ops::DerefMut for Plain<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.0
    }
}

/// The id this database got at its first migration: every event id carries
/// it.
pub fn installation_id(connection: &mut Connection) -> Result<String> {
    connection.engine().installation_id()
}

/// Now, as stored in the database: RFC 3339, UTC, milliseconds.
pub fn timestamp(instant: chrono::DateTime<chrono::Utc>) -> String {
    instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix milliseconds, as stored for the daemon's own times (heartbeats,
/// re-arming), as a timestamp like [`timestamp`]'s; one out of range as
/// the number.
pub(super) fn millis_to_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), timestamp)
}

/// Runs `call` in one read transaction: what it reads is one snapshot.
pub fn read_transaction<T>(
    connection: &mut Connection,
    call: impl FnOnce(&mut Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let begin = connection.engine().begin_read();
    connection
        .engine()
        .execute_unprepared(begin)
        .context("starting a read transaction")?;
    let result = call(connection);
    let end =
        connection
            .engine()
            .execute_unprepared(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    end.context("ending a read transaction")?;
    Ok(value)
}

/// Runs a store call with a pooled connection on tokio's blocking threads:
/// the database is never called from a tokio worker (invariant 5). `what`
/// names the call in errors.
pub async fn blocking<T, F>(pool: &Pool, what: &'static str, call: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
{
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = pool.get()?;
        call(&mut connection).context(what)
    })
    .await
    .with_context(|| format!("{what} panicked"))?
}

/// Lets the engine tidy up after a burst of writes: SQLite copies what the
/// WAL holds into the database file, as far as readers allow (`PASSIVE`: it
/// never waits for, or blocks, anyone).
pub fn checkpoint(connection: &mut Connection) -> Result<()> {
    connection.engine().checkpoint()
}

/// Lets the engine tidy up after a run, at rest: SQLite starts the WAL over
/// already past half its bound, waiting a tenth of a second at most for
/// readers, so that the next burst of claims starts with room.
pub fn checkpoint_at_rest(connection: &mut Connection) -> Result<()> {
    connection.engine().checkpoint_at_rest()
}

/// A chore of the store's that the daemon runs after its writes (a tick's,
/// the deliveries'), off the tokio workers, at most once per its spacing:
/// a job that reacts to a feed ticks many times a second, and a chore's
/// cost would add up. A failure is logged when it starts or changes and is
/// not returned: the next run does what this one did not.
pub struct Upkeep {
    what: &'static str,
    spacing: std::time::Duration,
    chore: fn(&mut Connection) -> Result<()>,
    /// The last run, and the failures in a row.
    state: std::sync::Mutex<(Option<std::time::Instant>, Recurring)>,
}

/// The least time between two [`Upkeep::checkpoints`].
pub const CHECKPOINT_SPACING: std::time::Duration = std::time::Duration::from_secs(1);

/// The least time between two [`Upkeep::pruning`]s.
pub const PRUNE_SPACING: std::time::Duration = std::time::Duration::from_secs(60);

/// The least time between two [`Upkeep::repairs`], but after a failed tick.
pub const REPAIR_SPACING: std::time::Duration = std::time::Duration::from_secs(10);

impl Upkeep {
    fn new(
        what: &'static str,
        spacing: std::time::Duration,
        chore: fn(&mut Connection) -> Result<()>,
    ) -> Upkeep {
        Upkeep {
            what,
            spacing,
            chore,
            state: Default::default(),
        }
    }

    /// [`checkpoint`]s: beside claims (the deliverer's), never waiting.
    pub fn checkpoints() -> Upkeep {
        Upkeep::new("checkpointing the WAL", CHECKPOINT_SPACING, checkpoint)
    }

    /// [`checkpoint_at_rest`]s: after a run.
    pub fn checkpoints_at_rest() -> Upkeep {
        Upkeep::new(
            "checkpointing the WAL",
            CHECKPOINT_SPACING,
            checkpoint_at_rest,
        )
    }

    /// [`changes::prune_change_log`].
    pub fn pruning() -> Upkeep {
        Upkeep::new("pruning the change log", PRUNE_SPACING, |connection| {
            let now = clock::now(connection)?;
            let deleted = changes::prune_change_log(connection, now)?;
            tracing::debug!(deleted, "pruned the change log");
            Ok(())
        })
    }

    /// [`schema::repair`]s: the daemon's objects the application's tables
    /// lost are recreated, what cannot be is an error.
    pub fn repairs() -> Upkeep {
        Upkeep::new(
            "recreating the daemon's objects",
            REPAIR_SPACING,
            |connection| {
                let repaired = schema::repair(connection)?;
                schema::log_repaired(&repaired);
                match schema::unrepairable(&repaired.unrepairable) {
                    Some(error) => Err(Error::Unrepairable(error)),
                    None => Ok(()),
                }
            },
        )
    }

    /// Runs the chore unless it ran within its spacing.
    pub async fn after_writes(&self, pool: &Pool) {
        self.run(pool, false).await
    }

    /// Runs the chore now, whenever it last ran: a tick failed, maybe for
    /// want of what it looks after.
    pub async fn at_once(&self, pool: &Pool) {
        self.run(pool, true).await
    }

    async fn run(&self, pool: &Pool, at_once: bool) {
        {
            let mut state = crate::lock::lock(&self.state);
            let now = std::time::Instant::now();
            if !at_once
                && state
                    .0
                    .is_some_and(|last| now.duration_since(last) < self.spacing)
            {
                return;
            }
            state.0 = Some(now);
        }
        let done = blocking(pool, self.what, self.chore).await;
        let failures = &mut crate::lock::lock(&self.state).1;
        match done {
            Ok(()) => {
                failures.succeeded();
            }
            Err(error) => crate::log_recurring!(
                warn,
                failures,
                format!("{error:#}"),
                chore = self.what,
                "the store's upkeep failed"
            ),
        }
    }
}

impl Connection {
    /// The connection's engine, through the store's contract with engines.
    fn engine(&mut self) -> &mut dyn engine::Engine {
        match &mut self.0 {
            EngineConnection::Sqlite(connection) => &mut ***connection,
            EngineConnection::Postgres(connection) => &mut ***connection,
        }
    }
}
