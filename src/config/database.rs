//! `[database]`: an SQLite file (`path`, the default) or a PostgreSQL server
//! (`url`, see `postgres`), and how many connections the daemon may hold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::errors::Report;
use super::fields::{BUSY_TIMEOUT, count, duration, resolve};
use super::postgres::{PostgresConfig, postgres};
use super::raw;

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub engine: EngineChoice,
    /// How long a statement waits for a lock (SQLite's write lock, a
    /// PostgreSQL row lock) before failing.
    pub busy_timeout: Duration,
    /// The most connections the daemon holds at once, all told; unset: as
    /// many as its evaluation threads need (see `store::open`).
    pub max_connections: Option<u32>,
}

/// Which database, `database.path` or `database.url`.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineChoice {
    /// The SQLite file; created with its schema if missing.
    Sqlite {
        path: PathBuf,
    },
    Postgres(PostgresConfig),
}

impl DatabaseConfig {
    /// An SQLite database at `path`.
    pub fn sqlite(path: PathBuf, busy_timeout: Duration) -> DatabaseConfig {
        DatabaseConfig {
            engine: EngineChoice::Sqlite { path },
            busy_timeout,
            max_connections: None,
        }
    }

    /// The database as operators name it: the file, or the URL without its
    /// password.
    pub fn describe(&self) -> String {
        match &self.engine {
            EngineChoice::Sqlite { path } => path.display().to_string(),
            EngineChoice::Postgres(postgres) => postgres.display.clone(),
        }
    }
}

/// The `[database]` section: `path` (SQLite, the default) or `url`
/// (PostgreSQL). A relative path resolves against the state directory if
/// there is one, else against the config's folder.
pub(super) fn database(
    raw: &raw::RawDatabase,
    base: &Path,
    state_directory: Option<&Path>,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> DatabaseConfig {
    let busy_timeout = duration(
        &raw.busy_timeout,
        "database.busy_timeout",
        "5s",
        BUSY_TIMEOUT,
        report,
    );
    let max_connections = raw.max_connections.as_ref().map(|_| {
        count(
            &raw.max_connections,
            "database.max_connections",
            LEAST_CONNECTIONS,
            LEAST_CONNECTIONS..=1000,
            report,
        ) as u32
    });
    if let (Some(_), Some(url)) = (&raw.path, &raw.url) {
        report(
            "database.url",
            url.span(),
            "set database.path (SQLite) or database.url (PostgreSQL), not both".to_owned(),
        );
    }
    if let Some(url) = &raw.url {
        return DatabaseConfig {
            engine: EngineChoice::Postgres(postgres(
                url,
                raw.password_file.as_ref(),
                base,
                report,
                warn,
            )),
            busy_timeout,
            max_connections,
        };
    }
    if let Some(file) = &raw.password_file {
        report(
            "database.password_file",
            file.span(),
            "is for database.url (PostgreSQL); SQLite has no password".to_owned(),
        );
    }
    let base = state_directory.unwrap_or(base);
    let path = match &raw.path {
        Some(path) if path.get_ref().trim().is_empty() => {
            report("database.path", path.span(), "must not be empty".to_owned());
            PathBuf::new()
        }
        Some(path) => resolve(Path::new(path.get_ref()), base),
        None => resolve(Path::new("price-alertd.db"), base),
    };
    DatabaseConfig {
        max_connections,
        ..DatabaseConfig::sqlite(path, busy_timeout)
    }
}

/// The fewest connections a daemon runs with: a tick's writer, one reader
/// and (PostgreSQL) its helper claimer, the deliverer's exchange, one for
/// heartbeats, metrics and run records, and (PostgreSQL) the listener.
pub const LEAST_CONNECTIONS: usize = 6;
