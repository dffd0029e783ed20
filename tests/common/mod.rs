//! Helpers shared by the integration tests: a real SQLite file, a config
//! builder, a real loopback HTTP receiver, the real nginx + nchan relay, and the
//! daemon binary as a child process.
#![allow(dead_code)]

pub mod browser;
pub mod postgresql;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use price_alertd::config::{self, Config, DatabaseConfig, Scope};
use price_alertd::deliver::{self, Totals, Webhook};
use price_alertd::evaluate::{self, TickOptions, TickReport};
use price_alertd::store::{self, Pool};
use rusqlite::Connection;
use tokio::sync::{Notify, watch};

/// Generous bound for things that normally take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` until it holds or `PATIENCE` runs out.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engines a test body runs on (see [`on_every_engine!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgresql,
}

/// A test's database: an SQLite file in its own temporary folder, or a
/// database of its own in the test binary's PostgreSQL cluster (dropped with
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
#[macro_export]
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
#[macro_export]
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

/// Where a test config's database is: an SQLite file, or a test's [`Db`].
pub trait Database {
    /// The config file's `[database]` section.
    fn section(&self) -> String;
}

impl Database for Path {
    fn section(&self) -> String {
        format!("[database]\npath = \"{}\"\n", self.display())
    }
}

impl Database for PathBuf {
    fn section(&self) -> String {
        self.as_path().section()
    }
}

impl Database for Db {
    fn section(&self) -> String {
        Db::section(self)
    }
}

/// A TOML configuration for tests.
pub fn config_text(database: &(impl Database + ?Sized), url: &str, schedule: &str) -> String {
    format!(
        r#"
{}
[evaluator]
threads = 10

[webhook]
url = "{url}"
headers = {{ "X-EventSource-Event" = "price_alert" }}
timeout = "5s"
retry_schedule = ["200ms", "400ms"]
drain_timeout = "10s"

[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "{schedule}"
"#,
        database.section()
    )
}

/// The validated form of [`config_text`], for tests that call the library.
pub fn lib_config(db: &Db, url: &str) -> Config {
    config::parse(&config_text(db, url, "* * * * * *"), db.dir.path(), None).unwrap()
}

/// One evaluation tick, as a job run does it.
pub fn tick(db: &Db, config: &Config) -> TickReport {
    tick_scoped(db, config, &Scope::all())
}

/// One evaluation tick over the tickers of `scope`.
pub fn tick_scoped(db: &Db, config: &Config, scope: &Scope) -> TickReport {
    let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
    tick_on(
        &db.pool(config.evaluator.threads as u32 + 2),
        &workers,
        config,
        scope,
    )
}

/// One evaluation tick as of `now` (quotes' age, expiries and cooldowns
/// are judged by it).
pub fn tick_at(db: &Db, config: &Config, now: chrono::DateTime<chrono::Utc>) -> TickReport {
    let workers = evaluate::thread_pool(config.evaluator.threads).unwrap();
    tick_on_at(
        &db.pool(config.evaluator.threads as u32 + 2),
        &workers,
        config,
        &Scope::all(),
        now,
    )
}

/// One evaluation tick with a given pool and threads, as one daemon runs it.
pub fn tick_on(
    pool: &Pool,
    workers: &rayon::ThreadPool,
    config: &Config,
    scope: &Scope,
) -> TickReport {
    tick_on_at(pool, workers, config, scope, chrono::Utc::now())
}

/// [`tick_on`] as of `now`.
pub fn tick_on_at(
    pool: &Pool,
    workers: &rayon::ThreadPool,
    config: &Config,
    scope: &Scope,
    now: chrono::DateTime<chrono::Utc>,
) -> TickReport {
    let memory = evaluate::TickMemory::default();
    let options = TickOptions {
        job: "evaluate",
        evaluator: &config.evaluator,
        max_age: config.prices.max_age,
        scope,
        fetched: None,
        memory: &memory,
    };
    evaluate::tick_at(workers, pool, &options, now).unwrap()
}

/// Delivers what is pending for up to the drain time, as `run-job` does after
/// its tick.
pub fn deliver_pending(pool: &Pool, config: &Config) -> Totals {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_webhook, webhooks) = watch::channel(Webhook::new(&config.webhook).unwrap());
        let deadline = tokio::time::Instant::now() + config.webhook.drain_timeout;
        let (_stop, stop) = watch::channel(Some(deadline));
        deliver::run(
            pool.clone(),
            webhooks,
            "test".into(),
            Arc::new(Notify::new()),
            stop,
            Arc::default(),
        )
        .await
    })
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// How long to wait before answering (a hanging receiver).
    pub delay: Duration,
    /// A body streamed with the answer (none if unset).
    pub flood: Option<Flood>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            flood: None,
        }
    }

    pub fn hang(delay: Duration) -> Reply {
        Reply {
            delay,
            ..Reply::status(200)
        }
    }

    /// `status` with a huge (`Some(bytes)`) or endless (`None`) body.
    pub fn flood(status: u16, len: Option<u64>) -> Reply {
        Reply {
            flood: Some(Flood { head: "", len }),
            ..Reply::status(status)
        }
    }
}

/// Every request that reached the receiver, answered or not.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// Path and query.
    pub uri: String,
    pub webhook_id: String,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    arrivals: Vec<Arrival>,
    replies: VecDeque<Reply>,
    /// Used once `replies` is empty, for requests whose path starts with
    /// the prefix; the first that matches.
    by_path: Vec<(String, Reply)>,
    /// Used once `replies` is empty and no `by_path` matches; 200 at once if unset.
    default: Option<Reply>,
    /// Record arrivals without their bodies, and no `received`: for tests
    /// that send hundreds of thousands of events.
    lean: bool,
}

/// A real HTTP server (hyper) on a loopback port chosen at run time. It
/// answers each request with the next queued reply, else the default one,
/// else 200; it records every arrival, and the requests it answered with a
/// 2xx once the answer was sent.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
    _server: HttpServer,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::start_on(0)
    }

    /// A receiver that records only each arrival's time, id and status.
    pub fn start_lean() -> Receiver {
        let receiver = Receiver::start_on(0);
        receiver.state.lock().unwrap().lean = true;
        receiver
    }

    /// Starts on a given loopback port (0: any free one).
    pub fn start_on(port: u16) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let server = HttpServer::start(
            port,
            Arc::new(move |request| {
                let state = shared.clone();
                Box::pin(async move { answer(request, &state).await })
            }),
        );
        Receiver {
            url: format!("http://127.0.0.1:{}/events", server.port),
            state,
            _server: server,
        }
    }

    /// Answers the next requests with these statuses.
    pub fn fail_with(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .replies
            .extend(statuses.iter().map(|&status| Reply::status(status)));
    }

    /// Answers the next requests with these replies.
    pub fn reply_with(&self, replies: &[Reply]) {
        self.state.lock().unwrap().replies.extend(replies);
    }

    /// Answers every request without a queued reply with this one.
    pub fn set_default(&self, reply: Option<Reply>) {
        self.state.lock().unwrap().default = reply;
    }

    /// Answers every request whose path starts with `prefix`, and that
    /// finds no queued reply, with `reply`.
    pub fn set_default_for(&self, prefix: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .by_path
            .push((prefix.to_owned(), reply));
    }

    /// The requests answered with a 2xx.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Every request that arrived, in order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }

    pub fn wait_for(&self, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} deliveries"), || {
            self.state.lock().unwrap().received.len() >= count
        });
        self.received()
    }
}

async fn answer(request: Incoming, state: &Mutex<ReceiverState>) -> Answer {
    let reply = {
        let mut state = state.lock().unwrap();
        let by_path = state
            .by_path
            .iter()
            .find(|(prefix, _)| request.uri.starts_with(prefix.as_str()))
            .map(|(_, reply)| *reply);
        let reply = state
            .replies
            .pop_front()
            .or(by_path)
            .or(state.default)
            .unwrap_or(Reply::status(200));
        let webhook_id = request.header("webhook-id").unwrap_or_default().to_owned();
        let body = if state.lean {
            String::new()
        } else {
            request.body.clone()
        };
        state.arrivals.push(Arrival {
            at: Instant::now(),
            uri: request.uri.clone(),
            webhook_id,
            body,
            status: reply.status,
        });
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut state = state.lock().unwrap();
    if (200..300).contains(&reply.status) && !state.lean {
        state.received.push(Received {
            uri: request.uri,
            headers: request.headers,
            body: request.body,
        });
    }
    let headers = reply
        .retry_after
        .map(|seconds| ("retry-after", seconds.to_string()))
        .into_iter()
        .collect();
    Answer {
        status: reply.status,
        headers,
        body: reply.flood.map_or(Body::Text(String::new()), Body::Flood),
    }
}

/// A request as a test server's handler sees it.
pub struct Incoming {
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What a test server's handler answers.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

pub enum Body {
    Text(String),
    Flood(Flood),
}

/// A body a test server streams without ever holding it: `head`, then spaces,
/// `len` bytes in all (with a `content-length`), or endless if `len` is `None`
/// (chunked). A hostile receiver or quote source.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub head: &'static str,
    pub len: Option<u64>,
}

struct FloodBody {
    head: Option<&'static str>,
    /// Bytes left after the head; `None`: endless.
    left: Option<u64>,
}

impl FloodBody {
    fn new(flood: Flood) -> FloodBody {
        FloodBody {
            head: Some(flood.head).filter(|head| !head.is_empty()),
            left: flood
                .len
                .map(|len| len.saturating_sub(flood.head.len() as u64)),
        }
    }
}

impl hyper::body::Body for FloodBody {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        static FILL: [u8; 65536] = [b' '; 65536];
        let this = self.get_mut();
        let data = if let Some(head) = this.head.take() {
            hyper::body::Bytes::from_static(head.as_bytes())
        } else {
            let size = this
                .left
                .map_or(FILL.len() as u64, |left| left.min(FILL.len() as u64));
            if size == 0 {
                return std::task::Poll::Ready(None);
            }
            if let Some(left) = &mut this.left {
                *left -= size;
            }
            hyper::body::Bytes::from_static(&FILL[..size as usize])
        };
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.left {
            Some(left) => hyper::body::SizeHint::with_exact(
                left + self.head.map_or(0, |head| head.len() as u64),
            ),
            None => hyper::body::SizeHint::default(),
        }
    }
}

pub type Handler = Arc<
    dyn Fn(Incoming) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>
        + Send
        + Sync,
>;

/// A real HTTP/1.1 server (hyper) on loopback, on its own runtime, calling
/// `handler` for every request. Stops when dropped.
pub struct HttpServer {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    pub fn start(port: u16, handler: Handler) -> HttpServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let uri = request.uri().to_string();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(name, value)| {
                                    (
                                        name.to_string(),
                                        value.to_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect();
                            let body = request.into_body().collect().await?.to_bytes();
                            let answer = handler(Incoming {
                                uri,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            })
                            .await;
                            let mut response = hyper::Response::new(match answer.body {
                                Body::Text(text) => http_body_util::Either::Left(
                                    http_body_util::Full::new(hyper::body::Bytes::from(text)),
                                ),
                                Body::Flood(flood) => {
                                    http_body_util::Either::Right(FloodBody::new(flood))
                                }
                            });
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(answer.status).unwrap();
                            for (name, value) in answer.headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        HttpServer {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Default)]
struct QuoteState {
    /// ticker → (price, time) as JSON values, so tests can serve bad ones.
    quotes: HashMap<String, (serde_json::Value, serde_json::Value)>,
    /// Statuses (with a Retry-After) for the next requests; 200 with quotes after.
    failures: VecDeque<(u16, Option<u64>)>,
    /// Bodies for the next requests, after `failures`.
    floods: VecDeque<Flood>,
    /// The `tickers` parameter of every request.
    requests: Vec<String>,
    /// How long to wait before answering a request for each ticker.
    delays: HashMap<String, Duration>,
    /// Tickers given twice in an answer, the second time at this price.
    twice: HashMap<String, f64>,
    /// `Location`s of 302 answers to the next requests.
    redirects: VecDeque<String>,
    most_in_flight: usize,
}

/// A real HTTP quote source on loopback, answering `GET /quotes?tickers=A,B`
/// with `{"quotes": [...]}` for the tickers it knows.
pub struct QuoteServer {
    pub url: String,
    state: Arc<Mutex<QuoteState>>,
    _server: HttpServer,
}

impl QuoteServer {
    pub fn start() -> QuoteServer {
        let state = Arc::new(Mutex::new(QuoteState::default()));
        let shared = state.clone();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = HttpServer::start(
            0,
            Arc::new(move |request: Incoming| {
                let state = shared.clone();
                let in_flight = in_flight.clone();
                Box::pin(async move {
                    use std::sync::atomic::Ordering;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    let (answer, delay) = {
                        let mut state = state.lock().unwrap();
                        state.most_in_flight = state.most_in_flight.max(now);
                        QuoteServer::answer(&mut state, &request)
                    };
                    tokio::time::sleep(delay).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    answer
                })
            }),
        );
        QuoteServer {
            url: format!("http://127.0.0.1:{}/quotes", server.port),
            state,
            _server: server,
        }
    }

    /// The answer to one request, and how long to wait before giving it.
    fn answer(state: &mut QuoteState, request: &Incoming) -> (Answer, Duration) {
        let tickers = request
            .uri
            .split_once("tickers=")
            .map(|(_, list)| list.replace("%2C", ","))
            .unwrap_or_default();
        state.requests.push(tickers.clone());
        let delay = tickers
            .split(',')
            .filter_map(|ticker| state.delays.get(ticker))
            .max()
            .copied()
            .unwrap_or_default();
        if let Some((status, retry_after)) = state.failures.pop_front() {
            let headers = retry_after
                .map(|seconds| ("retry-after", seconds.to_string()))
                .into_iter()
                .collect();
            let answer = Answer {
                status,
                headers,
                body: Body::Text("{}".into()),
            };
            return (answer, delay);
        }
        if let Some(location) = state.redirects.pop_front() {
            let answer = Answer {
                status: 302,
                headers: vec![("location", location)],
                body: Body::Text(String::new()),
            };
            return (answer, delay);
        }
        if let Some(flood) = state.floods.pop_front() {
            let answer = Answer {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: Body::Flood(flood),
            };
            return (answer, delay);
        }
        let mut quotes: Vec<serde_json::Value> = Vec::new();
        for ticker in tickers.split(',') {
            let Some((price, time)) = state.quotes.get(ticker) else {
                continue;
            };
            quotes.push(serde_json::json!({"ticker": ticker, "price": price, "time": time}));
            if let Some(again) = state.twice.get(ticker) {
                quotes.push(serde_json::json!({"ticker": ticker, "price": again, "time": time}));
            }
        }
        let answer = Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: Body::Text(serde_json::json!({"quotes": quotes}).to_string()),
        };
        (answer, delay)
    }

    /// Answers every request that asks for `ticker` only after `delay`.
    pub fn delay(&self, ticker: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .delays
            .insert(ticker.to_owned(), delay);
    }

    /// Gives `ticker` twice in each answer, the second time at `price`.
    pub fn twice(&self, ticker: &str, price: f64) {
        self.state
            .lock()
            .unwrap()
            .twice
            .insert(ticker.to_owned(), price);
    }

    /// Answers the next request with a 302 to `location`.
    pub fn redirect_next(&self, location: &str) {
        self.state
            .lock()
            .unwrap()
            .redirects
            .push_back(location.to_owned());
    }

    /// The most requests it answered at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    /// Serves `ticker` at `price`, timed `age` ago.
    pub fn set(&self, ticker: &str, price: f64, age: Duration) {
        let time = (chrono::Utc::now() - chrono::Duration::from_std(age).unwrap()).to_rfc3339();
        self.set_raw(ticker, serde_json::json!(price), serde_json::json!(time));
    }

    pub fn set_raw(&self, ticker: &str, price: serde_json::Value, time: serde_json::Value) {
        self.state
            .lock()
            .unwrap()
            .quotes
            .insert(ticker.to_owned(), (price, time));
    }

    pub fn fail_next(&self, status: u16, retry_after: Option<u64>) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push_back((status, retry_after));
    }

    /// Answers the next request with 200 and this body.
    pub fn flood_next(&self, flood: Flood) {
        self.state.lock().unwrap().floods.push_back(flood);
    }

    /// The `tickers` parameter of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real SSE relay: nginx with nchan, publisher on `/events`, subscribers on
/// `/api/stream`. `tests/run` installs it.
pub struct Relay {
    pub port: u16,
    dir: tempfile::TempDir,
    nginx: Child,
}

pub const NCHAN_MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

impl Relay {
    /// The relay of the shipped single-channel setup: publisher on
    /// `/events`, subscribers on `/api/stream`.
    pub fn start() -> Relay {
        let port = free_port();
        Relay::serving(
            &format!(
                r#"
    map "$http_if_modified_since$http_if_none_match" $price_alerts_id_asked {{ "" 0; default 1; }}
    map $host $price_alerts_no_message_id {{ default ""; }}
    server {{
        listen 127.0.0.1:{port};
        location = /events {{
            nchan_publisher;
            nchan_channel_id price_alerts;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 1h;
        }}
        location = /api/stream {{
            if ($price_alerts_id_asked) {{ return 400; }}
            nchan_subscriber eventsource;
            nchan_channel_id price_alerts;
            nchan_subscriber_first_message oldest;
            nchan_subscriber_last_message_id $price_alerts_no_message_id;
        }}
    }}
"#
            ),
            port,
        )
    }

    /// nginx with nchan serving `servers` (server blocks of its `http`
    /// block); `port` is one of theirs, `Relay::port`, waited for.
    pub fn serving(servers: &str, port: u16) -> Relay {
        assert!(
            Path::new(NCHAN_MODULE).exists(),
            "{NCHAN_MODULE} is missing: run the tests with tests/run, which installs nginx-light and libnginx-mod-nchan"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let conf = format!(
            r#"
load_module {NCHAN_MODULE};
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    nchan_max_reserved_memory 256M;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{servers}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        // Its own process group, so that stopping it can check that no worker
        // of this relay is left behind.
        let nginx = Command::new("nginx")
            .process_group(0)
            .args([
                "-p",
                &root,
                "-c",
                &format!("{root}/nginx.conf"),
                "-e",
                &format!("{root}/error.log"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx (run the tests with tests/run, which installs it)");
        let relay = Relay { port, dir, nginx };
        wait_until("nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        relay
    }

    /// How many of its workers died (each a line of nginx's error log).
    pub fn workers_died(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("error.log"))
            .unwrap_or_default()
            .matches("exited on signal")
            .count()
    }

    pub fn publish_url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// Subscribes to `/api/stream` and collects every SSE event from now on.
    pub fn subscribe(&self) -> Subscriber {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::Write;
        write!(
            stream,
            "GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(Mutex::new(false));
        {
            let (events, connected) = (events.clone(), connected.clone());
            std::thread::spawn(move || read_sse(stream, &events, &connected));
        }
        wait_until("the SSE subscription", || *connected.lock().unwrap());
        Subscriber { events }
    }
}

impl Drop for Relay {
    /// Stops nginx as its own scripts do: SIGTERM to the master, which stops
    /// its workers and exits after them; SIGKILL to the whole group only if
    /// that takes longer than `PATIENCE`. Then checks that no process of the
    /// relay is left (unless the test already failed).
    fn drop(&mut self) {
        let master = self.nginx.id();
        let stopped = signal(master, "TERM") && wait_for_exit(&mut self.nginx, PATIENCE).is_some();
        if !stopped {
            signal_group(master, "KILL");
            let _ = self.nginx.wait();
        }
        let left = group_members(master);
        if !left.is_empty() {
            signal_group(master, "KILL");
        }
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
            eprintln!("nginx error.log:\n{log}");
            return;
        }
        assert!(stopped, "nginx did not stop within {PATIENCE:?} of SIGTERM");
        assert!(
            left.is_empty(),
            "processes of the relay outlived it: {left:?}"
        );
    }
}

/// Sends `kill -NAME pid`; false if it failed.
fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Sends `kill -NAME -- -group` to every process of a process group.
fn signal_group(group: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// The live processes whose process group is `group`, as `pid command`
/// (zombies count: an unreaped worker is a leak too).
pub fn group_members(group: u32) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let pgrp = rest.split_whitespace().nth(2);
        if pgrp == Some(group.to_string().as_str()) {
            members.push(head.replace(" (", " "));
        }
    }
    members
}

/// Waits up to `patience` for a child to exit; `None` if it is still running.
pub fn wait_for_exit(child: &mut Child, patience: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

pub struct Subscriber {
    events: Arc<Mutex<Vec<SseEvent>>>,
}

impl Subscriber {
    pub fn events(&self) -> Vec<SseEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn wait_for(&self, count: usize) -> Vec<SseEvent> {
        wait_until(&format!("{count} SSE events"), || {
            self.events.lock().unwrap().len() >= count
        });
        self.events()
    }
}

/// Reads an HTTP/1.1 event stream: the response head, then (chunked) SSE
/// frames separated by blank lines.
fn read_sse(stream: std::net::TcpStream, events: &Mutex<Vec<SseEvent>>, connected: &Mutex<bool>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    *connected.lock().unwrap() = true;
    let mut text = String::new();
    loop {
        if chunked {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                continue;
            };
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        } else {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            text.push_str(&line);
        }
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut event = SseEvent {
                event: "message".into(),
                data: String::new(),
            };
            let mut has_data = false;
            for field in frame.lines() {
                if let Some(value) = field.strip_prefix("event:") {
                    event.event = value.trim().to_owned();
                } else if let Some(value) = field.strip_prefix("data:") {
                    if has_data {
                        event.data.push('\n');
                    }
                    event
                        .data
                        .push_str(value.strip_prefix(' ').unwrap_or(value));
                    has_data = true;
                }
            }
            if has_data {
                events.lock().unwrap().push(event);
            }
        }
    }
}

/// Parses `run-job`'s summary (its last line) into its key=value pairs.
pub fn summary(stdout: &str) -> HashMap<String, String> {
    let line = stdout.lines().last().unwrap_or_default();
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Runs the CLI with `--config path`; returns stdout, failing the test if the
/// command failed.
pub fn cli(path: &Path, args: &[&str]) -> String {
    let output = binary()
        .args(["--config", path.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The daemon binary as a child process, its stderr collected.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_price-alertd"));
    command
        .env_remove("PRICE_ALERTD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY");
    command
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_logging(config, "price_alertd=debug,info")
    }

    /// A daemon that logs warnings and errors only (and its start).
    pub fn start_quiet(config: &Path) -> Daemon {
        Daemon::start_logging(config, "price_alertd=info,warn")
    }

    pub fn start_logging(config: &Path, filter: &str) -> Daemon {
        let mut child = binary()
            .args(["--config", &config.display().to_string(), "run"])
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        {
            let (stderr, log) = (child.stderr.take().unwrap(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("daemon: {line}");
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let daemon = Daemon { child, log };
        daemon.wait_for_log("price-alertd started");
        daemon
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, text: &str) {
        wait_until(&format!("the daemon to log {text:?}"), || {
            self.log.lock().unwrap().contains(text)
        });
    }

    pub fn signal(&self, name: &str) {
        assert!(signal(self.child.id(), name), "kill -{name} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        wait_for_exit(&mut self.child, PATIENCE)
            .expect("the daemon did not exit")
            .code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Another (unprivileged) identity to run a program as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: &'static [u32],
    /// The umask the program starts with.
    pub umask: u32,
}

impl User {
    /// `nobody`, in no other group.
    pub const NOBODY: User = User {
        uid: 65534,
        gid: 65534,
        groups: &[],
        umask: 0o022,
    };

    /// `program` run as this user, through util-linux's `setpriv` (which
    /// needs no entry in /etc/passwd). The tests run as root, as CI does.
    pub fn command(&self, program: &Path) -> Command {
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(
            root, 0,
            "switching users needs root: run the tests as root (CI does) or under sudo"
        );
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        let mut command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.gid),
                groups,
                "--".to_owned(),
                "sh".to_owned(),
                "-c".to_owned(),
                format!("umask {:04o} && exec \"$@\"", self.umask),
                "sh".to_owned(),
            ])
            .arg(program)
            .env_remove("PRICE_ALERTD_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("STATE_DIRECTORY");
        command
    }
}

/// `Key=Value` of the shipped unit, `systemd/price-alertd.service` (the last
/// one wins, as in systemd).
pub fn unit_setting(key: &str) -> String {
    include_str!("../../systemd/price-alertd.service")
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().to_owned())
        .next_back()
        .unwrap_or_else(|| panic!("the unit sets no {key}="))
}

/// The daemon binary's path.
pub fn binary_path() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_price-alertd"))
}
