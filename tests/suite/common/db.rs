//! A test's database on either engine (an SQLite file, or a database of its
//! own in the shared PostgreSQL cluster), the application's writes to it, and
//! `on_every_engine!`, which runs one test body on each engine.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use price_alertd::config::{self, DatabaseConfig};
use price_alertd::store::{self, Pool};
use rusqlite::Connection;

/// The engines a test body runs on (see [`on_every_engine!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgresql,
}

/// A test's database: an SQLite file in its own temporary folder, or a
/// database of its own in the suite's PostgreSQL cluster (dropped with
/// the `Db`). The folder holds the test's config either way.
pub struct Db {
    pub dir: tempfile::TempDir,
    /// The SQLite file (unused on PostgreSQL).
    pub path: PathBuf,
    pub engine: Engine,
    /// The PostgreSQL database's name.
    database: String,
    /// The cluster it is on.
    cluster: fn() -> &'static postgresql::Cluster,
    /// The application's connection to it, made on first use.
    app_client: Mutex<Option<postgres::Client>>,
    /// On the cluster its tests restart, that cluster, for this test alone.
    _restarts: Option<std::sync::MutexGuard<'static, ()>>,
}

/// The application's PostgreSQL connection, borrowed.
pub struct AppClient<'a>(std::sync::MutexGuard<'a, Option<postgres::Client>>);

impl std::ops::Deref for AppClient<'_> {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("connected")
    }
}

impl std::ops::DerefMut for AppClient<'_> {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("connected")
    }
}

/// A value for [`Db::execute`], whichever the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
    Null,
}

impl From<i64> for Param {
    fn from(value: i64) -> Param {
        Param::Int(value)
    }
}

impl From<f64> for Param {
    fn from(value: f64) -> Param {
        Param::Real(value)
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Param {
        Param::Text(value.to_owned())
    }
}

impl From<String> for Param {
    fn from(value: String) -> Param {
        Param::Text(value)
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(value: Option<T>) -> Param {
        value.map_or(Param::Null, Into::into)
    }
}

/// Parameters for [`Db::execute`]: `values![1, "x", 2.5]`.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        &[$($crate::common::Param::from($value)),*][..]
    };
}

impl Param {
    /// As an integer (an integer column, or a boolean as 0 or 1).
    pub fn integer(&self) -> i64 {
        match self {
            Param::Int(value) => *value,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// As text: NULL is "NULL".
    pub fn text(&self) -> String {
        match self {
            Param::Text(value) => value.clone(),
            Param::Int(value) => value.to_string(),
            Param::Real(value) => value.to_string(),
            Param::Null => "NULL".to_owned(),
        }
    }

    fn sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self {
            Param::Int(value) => Value::Integer(*value),
            Param::Real(value) => Value::Real(*value),
            Param::Text(value) => Value::Text(value.clone()),
            Param::Null => Value::Null,
        }
    }

    /// As the statement's parameter of type `kind` wants it.
    fn postgres(&self, kind: &postgres::types::Type) -> Box<dyn postgres::types::ToSql + Sync> {
        use postgres::types::Type;
        match (self, kind) {
            (Param::Null, &Type::INT2) => Box::new(None::<i16>),
            (Param::Null, &Type::INT4) => Box::new(None::<i32>),
            (Param::Null, &Type::INT8) => Box::new(None::<i64>),
            (Param::Null, &Type::FLOAT4) => Box::new(None::<f32>),
            (Param::Null, &Type::FLOAT8) => Box::new(None::<f64>),
            (Param::Null, &Type::BOOL) => Box::new(None::<bool>),
            (Param::Null, _) => Box::new(None::<String>),
            (Param::Int(value), &Type::INT2) => Box::new(*value as i16),
            (Param::Int(value), &Type::INT4) => Box::new(*value as i32),
            (Param::Int(value), &Type::FLOAT8) => Box::new(*value as f64),
            (Param::Int(value), &Type::BOOL) => Box::new(*value != 0),
            (Param::Int(value), &Type::TEXT | &Type::VARCHAR) => Box::new(value.to_string()),
            (Param::Int(value), _) => Box::new(*value),
            (Param::Real(value), &Type::FLOAT4) => Box::new(*value as f32),
            (Param::Real(value), &Type::TEXT | &Type::VARCHAR) => Box::new(value.to_string()),
            (Param::Real(value), _) => Box::new(*value),
            (Param::Text(value), _) => Box::new(value.clone()),
        }
    }
}

impl Db {
    /// A fresh SQLite database with the daemon's schema.
    pub fn new() -> Db {
        Db::on(Engine::Sqlite)
    }

    /// A fresh database on `engine`, with the daemon's schema.
    pub fn on(engine: Engine) -> Db {
        let db = Db::empty(engine);
        drop(db.pool(2));
        db
    }

    /// A fresh database on `engine` without the daemon's schema (an
    /// application's, or none).
    pub fn empty(engine: Engine) -> Db {
        Db::empty_on(engine, postgresql::cluster)
    }

    /// A fresh PostgreSQL database with the daemon's schema, on the cluster
    /// with TLS (connected to without it: `sslmode=disable`).
    pub fn on_tls_cluster() -> Db {
        let db = Db::empty_on(Engine::Postgresql, postgresql::cluster_with_tls);
        drop(db.pool(2));
        db
    }

    /// A fresh PostgreSQL database with the daemon's schema, on the cluster
    /// that its tests restart ([`postgresql::cluster_to_restart`]).
    /// One test at a time has it: a restart cuts every connection to it.
    pub fn on_cluster_to_restart() -> Db {
        static RESTARTS: Mutex<()> = Mutex::new(());
        let exclusive = RESTARTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut db = Db::empty_on(Engine::Postgresql, postgresql::cluster_to_restart);
        db._restarts = Some(exclusive);
        drop(db.pool(2));
        db
    }

    /// A fresh SQLite database with the daemon's schema, in a folder of its
    /// own inside `folder` (a small file system a test mounted).
    pub fn in_folder(folder: &std::path::Path) -> Db {
        let mut db = Db::empty_on(Engine::Sqlite, postgresql::cluster);
        db.dir = tempfile::tempdir_in(folder).unwrap();
        db.path = db.dir.path().join("alerts.db");
        drop(db.pool(2));
        db
    }

    fn empty_on(engine: Engine, cluster: fn() -> &'static postgresql::Cluster) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.db");
        let database = match engine {
            Engine::Sqlite => String::new(),
            Engine::Postgresql => cluster().create_database(),
        };
        Db {
            dir,
            path,
            engine,
            database,
            cluster,
            app_client: Mutex::new(None),
            _restarts: None,
        }
    }

    /// The PostgreSQL cluster the database is on.
    pub fn cluster(&self) -> &'static postgresql::Cluster {
        (self.cluster)()
    }

    /// The `[database]` section's settings for this database.
    pub fn database_config(&self) -> DatabaseConfig {
        let text = format!(
            "{}\n[webhook]\nurl = \"http://127.0.0.1:9/\"\n",
            self.section()
        );
        config::parse(&text, self.dir.path(), None)
            .unwrap()
            .database
    }

    /// The PostgreSQL database's name.
    pub fn database_name(&self) -> &str {
        &self.database
    }

    /// The config file's `[database]` section.
    pub fn section(&self) -> String {
        match self.engine {
            Engine::Sqlite => format!("[database]\npath = \"{}\"\n", self.path.display()),
            Engine::Postgresql => format!(
                "[database]\nurl = \"{}\"\n",
                self.cluster().url(&self.database)
            ),
        }
    }

    pub fn pool(&self, size: u32) -> Pool {
        let mut config = self.database_config();
        config.busy_timeout = Duration::from_secs(30);
        store::open(&config, size).unwrap()
    }

    /// Writes `text` as the configuration file next to the database.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("price-alertd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A plain SQLite connection, as the application writing alerts would
    /// have (for tests of SQLite's own behaviour; [`Db::execute`] and the
    /// other helpers work on every engine).
    pub fn app(&self) -> Connection {
        assert_eq!(self.engine, Engine::Sqlite, "app() is SQLite's");
        let connection = Connection::open(&self.path).unwrap();
        connection.busy_timeout(Duration::from_secs(30)).unwrap();
        connection
    }

    /// A PostgreSQL connection, as the application would have.
    pub fn postgres_app(&self) -> AppClient<'_> {
        assert_eq!(
            self.engine,
            Engine::Postgresql,
            "postgres_app() is PostgreSQL's"
        );
        let mut client = self.app_client.lock().unwrap();
        // Reconnected when the server went away meanwhile (a test restarts it).
        let alive = client
            .as_mut()
            .is_some_and(|client| client.is_valid(Duration::from_secs(5)).is_ok());
        if !alive {
            *client = Some(
                postgres::Client::connect(&self.cluster().url(&self.database), postgres::NoTls)
                    .unwrap(),
            );
        }
        AppClient(client)
    }

    /// Runs several statements without parameters as the application would
    /// (a script in one transaction, say), on its engine.
    pub fn script(&self, sql: &str) {
        match self.engine {
            Engine::Sqlite => self.app().execute_batch(sql).unwrap(),
            Engine::Postgresql => self.postgres_app().batch_execute(sql).unwrap(),
        }
    }

    /// Runs one statement as the application would, on either engine;
    /// parameters are `$1`, `$2`, ... in order of first use (SQLite numbers
    /// them so too). Returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[Param]) -> u64 {
        match self.engine {
            Engine::Sqlite => self
                .app()
                .execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(Param::sqlite)),
                )
                .unwrap() as u64,
            Engine::Postgresql => {
                let mut client = self.postgres_app();
                let statement = client.prepare(sql).unwrap();
                let values: Vec<Box<dyn postgres::types::ToSql + Sync>> = params
                    .iter()
                    .zip(statement.params())
                    .map(|(param, kind)| param.postgres(kind))
                    .collect();
                let references: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    values.iter().map(|value| value.as_ref()).collect();
                client.execute(&statement, &references).unwrap()
            }
        }
    }

    /// Inserts an alert with only the contract's columns; returns its id.
    pub fn add_alert(&self, ticker: &str, condition: &str, target: f64) -> i64 {
        let sql = "INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
                   VALUES ($1, $2, $3, '2026-01-01T00:00:00Z', 'u1')";
        match self.engine {
            Engine::Sqlite => {
                let app = self.app();
                app.execute(sql, rusqlite::params![ticker, condition, target])
                    .unwrap();
                app.last_insert_rowid()
            }
            Engine::Postgresql => self
                .postgres_app()
                .query_one(
                    &format!("{sql} RETURNING id"),
                    &[&ticker, &condition, &target],
                )
                .unwrap()
                .get(0),
        }
    }

    /// An alert of `user` (`None`: no user) that the next tick triggers once
    /// AAPL is quoted above 1; its id.
    pub fn add_alert_of(&self, user: Option<&str>) -> i64 {
        let id = self.add_alert("AAPL", "above", 1.0);
        self.execute(
            "UPDATE price_alerts SET user_id = $1 WHERE id = $2",
            &[
                user.map_or(Param::Null, |user| Param::Text(user.to_owned())),
                Param::Int(id),
            ],
        );
        id
    }

    /// Inserts `(ticker, condition, target)` alerts with only the contract's
    /// columns, in one transaction.
    pub fn add_alerts(&self, alerts: &[(String, &str, f64)]) {
        match self.engine {
            Engine::Sqlite => {
                let mut app = self.app();
                let transaction = app.transaction().unwrap();
                {
                    let mut insert = transaction
                        .prepare(
                            "INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
                             VALUES (?1, ?2, ?3, '2026-01-01T00:00:00Z', 'u1')",
                        )
                        .unwrap();
                    for (ticker, condition, target) in alerts {
                        insert
                            .execute(rusqlite::params![ticker, condition, target])
                            .unwrap();
                    }
                }
                transaction.commit().unwrap();
            }
            Engine::Postgresql => {
                let tickers: Vec<&str> = alerts.iter().map(|alert| alert.0.as_str()).collect();
                let conditions: Vec<&str> = alerts.iter().map(|alert| alert.1).collect();
                let targets: Vec<f64> = alerts.iter().map(|alert| alert.2).collect();
                self.postgres_app()
                    .execute(
                        "INSERT INTO price_alerts (ticker, condition, target_price, created_at, user_id)
                         SELECT t, c, p, '2026-01-01T00:00:00Z', 'u1'
                         FROM unnest($1::text[], $2::text[], $3::float8[]) AS a (t, c, p)",
                        &[&tickers, &conditions, &targets],
                    )
                    .unwrap();
            }
        }
    }

    /// Sets a quote stamped now.
    pub fn set_quote(&self, ticker: &str, price: f64) {
        self.execute(
            "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
            values![ticker, price, chrono::Utc::now().to_rfc3339()],
        );
    }

    /// The first column of the first row, as an integer.
    pub fn scalar(&self, sql: &str) -> i64 {
        self.rows(sql)
            .first()
            .unwrap_or_else(|| panic!("no row from {sql}"))[0]
            .integer()
    }

    /// The first column of every row, as integers.
    pub fn ids(&self, sql: &str) -> Vec<i64> {
        self.rows(sql).iter().map(|row| row[0].integer()).collect()
    }

    /// The first two columns of every row, as text and an integer.
    pub fn texts_and_ids(&self, sql: &str) -> Vec<(String, i64)> {
        self.rows(sql)
            .iter()
            .map(|row| (row[0].text(), row[1].integer()))
            .collect()
    }

    /// The first column of every row, as text (NULL as "NULL").
    pub fn texts(&self, sql: &str) -> Vec<String> {
        self.rows(sql).iter().map(|row| row[0].text()).collect()
    }

    /// Every row `sql` returns, each column as a [`Param`] (integers,
    /// booleans as 0 or 1, reals, text, NULL).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Param>> {
        match self.engine {
            Engine::Sqlite => {
                let app = self.app();
                let mut statement = app.prepare(sql).unwrap();
                let columns = statement.column_count();
                statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|column| {
                                Ok(match row.get::<_, rusqlite::types::Value>(column)? {
                                    rusqlite::types::Value::Integer(value) => Param::Int(value),
                                    rusqlite::types::Value::Real(value) => Param::Real(value),
                                    rusqlite::types::Value::Text(value) => Param::Text(value),
                                    rusqlite::types::Value::Null => Param::Null,
                                    rusqlite::types::Value::Blob(_) => panic!("a blob"),
                                })
                            })
                            .collect()
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Engine::Postgresql => self
                .postgres_app()
                .query(sql, &[])
                .unwrap()
                .iter()
                .map(|row| {
                    use postgres::types::Type;
                    (0..row.len())
                        .map(|column| match *row.columns()[column].type_() {
                            Type::INT2 => row
                                .get::<_, Option<i16>>(column)
                                .map_or(Param::Null, |value| Param::Int(value.into())),
                            Type::INT4 => row
                                .get::<_, Option<i32>>(column)
                                .map_or(Param::Null, |value| Param::Int(value.into())),
                            Type::INT8 => row
                                .get::<_, Option<i64>>(column)
                                .map_or(Param::Null, Param::Int),
                            Type::BOOL => row
                                .get::<_, Option<bool>>(column)
                                .map_or(Param::Null, |value| Param::Int(value.into())),
                            Type::FLOAT8 => row
                                .get::<_, Option<f64>>(column)
                                .map_or(Param::Null, Param::Real),
                            _ => row
                                .get::<_, Option<String>>(column)
                                .map_or(Param::Null, Param::Text),
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(client) = self.app_client.get_mut() {
            drop(client.take());
        }
        if self.engine == Engine::Postgresql {
            self.cluster().drop_database(&self.database);
        }
    }
}

/// Runs a test body on every engine: `on_every_engine! { fn name(db: Engine)
/// { ... } }` makes the tests `name::sqlite` and `name::postgresql`, each
/// calling the body with its engine.
macro_rules! on_every_engine {
    ($(#[$meta:meta])* fn $name:ident($engine:ident: Engine) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($engine: $crate::common::Engine) $body

            #[test]
            fn sqlite() {
                body($crate::common::Engine::Sqlite)
            }

            #[test]
            fn postgresql() {
                body($crate::common::Engine::Postgresql)
            }
        }
    };
}
