//! The PostgreSQL engine: for several daemons on several hosts sharing one
//! database. Connecting (TLS over rustls, a password from the URL, a file or
//! `$PGPASSWORD`), the pool (r2d2, each connection with its own cache of
//! prepared statements), the schema and its migrations. The queries of each
//! concern live beside SQLite's in `alerts`, `changes`, `outbox` and `runs`.
//!
//! What differs from SQLite, and why:
//! - **Change numbers are transaction ids.** SQLite has one writer at a
//!   time, so a counter bumped by triggers numbers changes in commit order.
//!   Here writers commit in any order: a change numbered 100 may commit after
//!   one numbered 101 was read. So a row's `change_seq` is the id of the
//!   transaction that last changed it (`pg_current_xact_id()`, 64 bits, never
//!   reused). A tick reads every change its snapshot sees, but moves the
//!   watermark only to just below the snapshot's `xmin`: every transaction
//!   with a smaller id has ended, so nothing below the watermark can still
//!   appear. A change from a transaction that is still open is read by the
//!   first tick after it commits.
//! - **`enabled` may be an integer or a boolean.** The application may have
//!   made the table either way; every statement writes `enabled` as the
//!   untyped literals `'1'` and `'0'`, which PostgreSQL reads as the
//!   column's type.

pub mod alerts;
pub mod changes;
pub mod cluster;
mod connect;
pub mod outbox;
pub mod runs;

use std::collections::HashMap;
use std::time::Duration;

use postgres::{Client, Statement};

use connect::{Manager, manager};

use super::{Unusable, failure};
use crate::config::PostgresConfig;

/// The schema version this build migrates a PostgreSQL database to
/// (`price_alertd_schema.version`).
pub const SCHEMA_VERSION: i32 = 3;

/// What the engine's statements return: the client's error, which the store
/// wraps into its own.
pub(super) type PgResult<T> = std::result::Result<T, postgres::Error>;

/// A connection and the statements prepared on it: each statement is parsed
/// and planned once per connection, not once per call.
pub struct PgConnection {
    /// Always there until the connection is dropped.
    client: Option<Client>,
    statements: HashMap<&'static str, Statement>,
}

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

/// The channel the claim (and a replay) notifies when it queues events...
const OUTBOX_CHANNEL: &str = "price_alertd_outbox";
/// ...with this statement, in its transaction: delivered at commit.
pub(super) const NOTIFY_OUTBOX: &str = "SELECT pg_notify('price_alertd_outbox', '')";

/// Calls `wake` whenever a transaction that queued events commits, on any
/// member, until `stop` is set: `LISTEN` on a connection of its own, on a
/// thread of its own. Notifications are lost while the connection is down,
/// so `wake` is also called after every (re)connection; the deliverers poll
/// besides.
pub fn listen(
    pool: &PgPool,
    wake: std::sync::Arc<dyn Fn() + Send + Sync>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use postgres::fallible_iterator::FallibleIterator as _;
    use std::sync::atomic::Ordering;
    let manager = pool.manager.clone();
    std::thread::Builder::new()
        .name("outbox-listener".into())
        .spawn(move || {
            let mut backoff = Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let listening = manager.connect().and_then(|mut client| {
                    client.batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}"))?;
                    Ok(client)
                });
                let mut client = match listening {
                    Ok(client) => client,
                    Err(error) => {
                        tracing::debug!(%error, "listening for new events failed; polling meanwhile");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                };
                backoff = Duration::from_secs(1);
                wake();
                while !stop.load(Ordering::Relaxed) && !client.is_closed() {
                    let mut notifications = client.notifications();
                    let next = notifications.timeout_iter(Duration::from_secs(1)).next();
                    match next {
                        Ok(Some(_)) => {
                            // Coalesce what else arrived: one wake is enough.
                            while let Ok(Some(_)) = notifications.iter().next() {}
                            wake();
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::debug!(%error, "the listening connection failed; reconnecting");
                            break;
                        }
                    }
                }
            }
        })
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection {
            client: Some(Manager::connect(self)?),
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, connection: &mut PgConnection) -> Result<(), postgres::Error> {
        connection.client().simple_query("").map(|_| ())
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
    migrate(first.client())
        .map_err(|error| failure_of(error, format!("migrating {}", config.display)))?;
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

/// One connection, for operators' commands, to a database this version
/// migrated (or an older one, when `migrate` is set: it is migrated).
pub fn connect(
    config: &PostgresConfig,
    lock_timeout: Duration,
    migrate_it: bool,
) -> anyhow::Result<PgConnection> {
    let (_, mut connection, version) = first_connection(config, lock_timeout)?;
    if migrate_it {
        migrate(connection.client())
            .map_err(|error| failure_of(error, format!("migrating {}", config.display)))?;
    } else if version < SCHEMA_VERSION {
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
    Ok(match version {
        0 => format!("PostgreSQL {server}, not migrated yet; migrated at start"),
        version => format!("PostgreSQL {server}, schema version {version}, writable"),
    })
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

fn newer(config: &PostgresConfig, version: i32) -> anyhow::Error {
    failure(
        Unusable::Data,
        format!(
            "{} is at schema version {version}, newer than this price-alertd's {SCHEMA_VERSION}: \
             a newer version migrated it",
            config.display
        ),
    )
}

/// The schema version, 0 for a database this daemon never migrated.
fn schema_version(client: &mut impl postgres::GenericClient) -> Result<i32, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('price_alertd_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM price_alertd_schema WHERE id = 1", &[])?;
    row.map_or(Ok(0), |row| row.try_get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, under an
/// advisory lock, so that daemons starting at once migrate once. The lock is
/// taken before the transaction begins: a transaction that began before the
/// winner committed could still see the catalog without the winner's tables.
pub fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let migrated = migrate_locked(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    migrated?;
    unlocked.map(|_| ())
}

fn migrate_locked(client: &mut Client) -> Result<(), postgres::Error> {
    let mut transaction = client.transaction()?;
    let version = schema_version(&mut transaction)?;
    if version < 1 {
        transaction.batch_execute(
            &MIGRATION_1
                .replace("{level}", changes::LEVEL)
                .replace("{cluster}", crate::store::cluster::SCHEMA),
        )?;
    }
    if version < 2 {
        transaction.batch_execute(MIGRATION_2)?;
    }
    if version < 3 {
        transaction.batch_execute(MIGRATION_3)?;
    }
    if version < SCHEMA_VERSION {
        transaction.execute(
            "UPDATE price_alertd_schema SET version = $1 WHERE id = 1",
            &[&SCHEMA_VERSION],
        )?;
    }
    transaction.commit()
}

/// The advisory lock key migrations take ("pa-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x70_61_2d_6d_69_67_72;

/// Everything SQLite's six migrations made, at once: the contract's tables
/// (kept as the application made them if they exist), armings and change
/// numbers kept by a trigger, the outbox, observations, watermarks, runs,
/// and the installation id.
const MIGRATION_1: &str = r#"
CREATE TABLE price_alertd_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO price_alertd_schema (id, version) VALUES (1, 0);

CREATE TABLE IF NOT EXISTS price_alerts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ticker TEXT NOT NULL,
    condition TEXT NOT NULL,
    target_price DOUBLE PRECISION NOT NULL,
    reference_price DOUBLE PRECISION,
    enabled INTEGER NOT NULL DEFAULT 1,
    triggered_at TEXT,
    triggered_price DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    user_id TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS idx_price_alerts_enabled ON price_alerts (ticker, enabled);
CREATE TABLE IF NOT EXISTS quotes (
    ticker TEXT PRIMARY KEY,
    price DOUBLE PRECISION NOT NULL,
    updated_at TEXT NOT NULL
);
-- `expires_at` is the application's to write; it may have added it.
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS expires_at TEXT;
ALTER TABLE price_alerts ADD COLUMN expired_at TEXT;

-- Invariant 3: every arming of an alert, its insertion or a re-enable by
-- anyone, takes a fresh number from one sequence. Existing alerts keep their
-- id as their first arming.
ALTER TABLE price_alerts ADD COLUMN arming BIGINT NOT NULL DEFAULT 0;
UPDATE price_alerts SET arming = id;
CREATE SEQUENCE price_alerts_arming;
-- The next arming is one past the largest id, as on SQLite.
SELECT setval('price_alerts_arming', coalesce((SELECT max(id) FROM price_alerts), 0) + 1, false);

-- What changed: the id of the transaction that last inserted, re-armed or
-- edited an alert (or wrote a quote). See `store::postgres`.
ALTER TABLE price_alerts ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE quotes ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX price_alerts_changed ON price_alerts (change_seq);
CREATE INDEX price_alerts_level ON price_alerts (ticker, condition, ({level})) WHERE enabled = '1';
CREATE INDEX idx_price_alerts_expiry ON price_alerts (expires_at) WHERE enabled = '1' AND expires_at IS NOT NULL;
CREATE INDEX quotes_changed ON quotes (change_seq);

CREATE FUNCTION price_alerts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.arming := nextval('price_alerts_arming');
    ELSIF OLD.enabled = '0' THEN
        NEW.arming := nextval('price_alerts_arming');
    END IF;
    NEW.change_seq := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER price_alerts_armed_on_insert BEFORE INSERT ON price_alerts
FOR EACH ROW EXECUTE FUNCTION price_alerts_track();
-- A re-arm (0 -> 1) takes an arming and a change number; an edit of what the
-- evaluation reads, a change number. The claim (1 -> 0) takes neither.
CREATE TRIGGER price_alerts_changed_on_update BEFORE UPDATE ON price_alerts
FOR EACH ROW WHEN (NEW.enabled = '1' AND (OLD.enabled IS DISTINCT FROM NEW.enabled
    OR OLD.ticker IS DISTINCT FROM NEW.ticker OR OLD.condition IS DISTINCT FROM NEW.condition
    OR OLD.target_price IS DISTINCT FROM NEW.target_price
    OR OLD.reference_price IS DISTINCT FROM NEW.reference_price
    OR OLD.expires_at IS DISTINCT FROM NEW.expires_at))
EXECUTE FUNCTION price_alerts_track();

CREATE FUNCTION quotes_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END $$;
CREATE TRIGGER quotes_changed_on_insert BEFORE INSERT ON quotes
FOR EACH ROW EXECUTE FUNCTION quotes_track();
CREATE TRIGGER quotes_changed_on_update BEFORE UPDATE ON quotes
FOR EACH ROW WHEN (OLD.price IS DISTINCT FROM NEW.price OR OLD.updated_at IS DISTINCT FROM NEW.updated_at)
EXECUTE FUNCTION quotes_track();

-- A text time as the application wrote it, or NULL when it is not one:
-- a malformed expiry must not fail the whole expiry statement.
CREATE FUNCTION price_alertd_time(value TEXT) RETURNS TIMESTAMPTZ LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- Invariant 2: one row per claimed alert, inserted in the claim's
-- transaction. The body is fixed at the claim. Leased rows move their
-- `next_attempt_at` to the lease's end, out of the due range.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    alert_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,       -- unix milliseconds
    lease_owner TEXT,
    lease_until BIGINT,                    -- unix milliseconds
    last_error TEXT,
    delivered_at TEXT,
    dead_at TEXT
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';

CREATE TABLE observations (
    ticker TEXT PRIMARY KEY,
    price DOUBLE PRECISION NOT NULL,
    quote_time TEXT NOT NULL,
    observed_at TEXT NOT NULL
);
CREATE TABLE job_runs (
    job TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'failed')),
    detail TEXT NOT NULL,
    last_success_at TEXT,
    member TEXT                        -- who ran it (store::cluster::Me)
);
{cluster}
CREATE TABLE job_watermarks (
    job TEXT PRIMARY KEY,
    change_seq BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
-- 96 random bits from the server's strong generator, chosen once.
CREATE TABLE installation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    installation_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO installation (id, installation_id, created_at)
VALUES (1, substr(encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex'), 1, 24),
        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
"#;

/// Each event's user, for routing by `{user_id}` (`deliver`): the claim
/// stores it beside the body; the events still to deliver take theirs from
/// their bodies (which the daemon wrote: always JSON).
const MIGRATION_2: &str = "
ALTER TABLE outbox ADD COLUMN user_id TEXT;
UPDATE outbox SET user_id = body::jsonb -> 'data' ->> 'user_id' WHERE state <> 'delivered';
";

/// Repeating alerts: the application's `cooldown` (added if it has none),
/// and when the claim of an alert with one makes it due to be re-armed (unix
/// ms), through a partial index of those waiting.
const MIGRATION_3: &str = "
ALTER TABLE price_alerts ADD COLUMN IF NOT EXISTS cooldown TEXT;
ALTER TABLE price_alerts ADD COLUMN rearm_at BIGINT;
CREATE INDEX price_alerts_rearm ON price_alerts (rearm_at) WHERE rearm_at IS NOT NULL;
";

/// The id this database got at its first migration.
pub fn installation_id(connection: &mut PgConnection) -> Result<String, postgres::Error> {
    let statement = connection.prepared("SELECT installation_id FROM installation WHERE id = 1")?;
    connection.client().query_one(&statement, &[])?.try_get(0)
}
