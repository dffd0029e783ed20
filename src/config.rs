//! The TOML configuration: a serde mirror of the file (`raw`), then a validated
//! [`Config`] with parsed schedules, URLs, durations and paths. Every error in a
//! file is reported at once, each with its key and `line:col`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::schedule::Schedule;

/// Where the daemon looks when neither `--config` nor `$PRICE_ALERTD_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/price-alertd/price-alertd.toml";

/// Where the package installs the configuration.
const INSTALLED_FOLDER: &str = "/etc/price-alertd";

/// The unit's `StateDirectory=`: a relative `database.path` in the installed
/// configuration resolves here, whether the service reads it (systemd sets
/// `$STATE_DIRECTORY`) or an operator's command does (it is not set), so both
/// open the same database.
pub const STATE_DIRECTORY: &str = "/var/lib/price-alertd";

/// The shipped `etc/price-alertd.toml`, used when no file is named and the
/// default path does not exist, so that a fresh checkout runs as is.
pub const EMBEDDED: &str = include_str!("../etc/price-alertd.toml");

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub evaluator: EvaluatorConfig,
    pub prices: PricesConfig,
    pub webhook: WebhookConfig,
    pub jobs: Vec<JobConfig>,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// What is wrong but does not stop the daemon (a secret others can
    /// read), said as an error would be: `check-config` prints them, `run`
    /// logs them.
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` and `/healthz`; off if unset.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct PricesConfig {
    pub source: PriceSource,
    /// A quote older than this never triggers anything.
    pub max_age: Duration,
}

/// Where quotes come from.
#[derive(Debug, Clone)]
pub enum PriceSource {
    /// The `quotes` table, kept current by the application.
    Sqlite,
    /// Fetched before each evaluation, then stored in `quotes`.
    Http(HttpSource),
}

#[derive(Debug, Clone)]
pub struct HttpSource {
    /// Called as `GET {url}?tickers=A,B,C`; see README for the JSON it answers.
    pub url: Url,
    /// Tickers per request.
    pub batch_size: usize,
    /// Requests in flight at once: one slow batch holds one of them.
    pub concurrency: usize,
    /// Bound on one request.
    pub timeout: Duration,
    /// Static headers, e.g. an API key (marked sensitive: never printed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The largest answer read; a longer one is a failed fetch.
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub engine: Engine,
    /// How long a statement waits for a lock (SQLite's write lock, a
    /// PostgreSQL row lock) before failing.
    pub busy_timeout: Duration,
    /// The most connections the daemon holds at once, all told; unset: as
    /// many as its evaluation threads need (see `store::open`).
    pub max_connections: Option<u32>,
}

/// Which database, `database.path` or `database.url`.
#[derive(Debug, Clone, PartialEq)]
pub enum Engine {
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
            engine: Engine::Sqlite { path },
            busy_timeout,
            max_connections: None,
        }
    }

    /// The database as operators name it: the file, or the URL without its
    /// password.
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Sqlite { path } => path.display().to_string(),
            Engine::Postgres(postgres) => postgres.display.clone(),
        }
    }
}

/// A PostgreSQL server (`database.url`).
#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    /// The connection URL without `sslmode`, `sslrootcert` and `options`,
    /// and without a password; the password is in `password`.
    pub url: String,
    /// The connection as it will be made, the password masked: the user
    /// the server sees, the host, the database and the TLS mode. For logs,
    /// `check-config` and `status`.
    pub display: String,
    /// From the URL, `database.password_file`, or `$PGPASSWORD`.
    pub password: Option<Password>,
    pub tls: PostgresTls,
    /// `sslrootcert`: trust only this CA (PEM) instead of the system's roots.
    pub root_certificate: Option<PathBuf>,
    /// The URL's `options` parameter, which is not used: the daemon sets
    /// the session's options itself (`lock_timeout`). Shown by `check-config`.
    pub dropped_options: Option<String>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.display)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("root_certificate", &self.root_certificate)
            .finish()
    }
}

/// `sslmode`, as libpq reads it, except that every TLS connection is
/// verified: the daemon never talks TLS to a server whose certificate no
/// trusted root vouches for (the system's roots, or `sslrootcert`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresTls {
    /// Never TLS.
    Disable,
    /// Without TLS first; with TLS (verified as `verify-full`) if the
    /// server refuses a connection without it.
    Allow,
    /// TLS (verified as `verify-full`) if the server offers it, else
    /// without: libpq's default. Anyone on the path can strip it.
    Prefer,
    /// TLS or no connection; the certificate verified as `verify-full`.
    Require,
    /// TLS or no connection; the certificate's chain verified, not its name.
    VerifyCa,
    /// TLS or no connection; the chain and the server's name verified.
    VerifyFull,
}

impl PostgresTls {
    /// The mode as `sslmode` names it.
    pub fn name(self) -> &'static str {
        match self {
            PostgresTls::Disable => "disable",
            PostgresTls::Allow => "allow",
            PostgresTls::Prefer => "prefer",
            PostgresTls::Require => "require",
            PostgresTls::VerifyCa => "verify-ca",
            PostgresTls::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<PostgresTls> {
        [
            PostgresTls::Disable,
            PostgresTls::Allow,
            PostgresTls::Prefer,
            PostgresTls::Require,
            PostgresTls::VerifyCa,
            PostgresTls::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.name() == text)
    }

    /// Whether a connection without TLS is refused.
    pub fn required(self) -> bool {
        matches!(
            self,
            PostgresTls::Require | PostgresTls::VerifyCa | PostgresTls::VerifyFull
        )
    }
}

/// A database password. Never in a log line or `Debug` output.
#[derive(Clone, PartialEq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    /// The fixed size of the rayon pool that evaluates alerts.
    pub threads: usize,
    /// Claims per write transaction.
    pub claim_batch: usize,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
    /// With `{user_id}` in `url`: where the events of alerts without a
    /// user_id go; unset, they become dead letters that say why.
    pub url_without_user_id: Option<Url>,
    /// Standard Webhooks signing secrets; the first signs, all are sent during rotation.
    pub secrets: Vec<Secret>,
    /// Static headers sent with every event.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Waits between attempts; the last one repeats once the list is used up.
    pub retry_schedule: Vec<Duration>,
    /// How long a stop, or `run-job`, keeps delivering before it gives up.
    pub drain_timeout: Duration,
}

/// `webhook.url`: one URL for every event, or a template in which
/// `{user_id}` stands for one path segment, the alert's `user_id`
/// percent-encoded, so that a relay publishes each event to its user's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// The URL, parsed: a template's path holds [`USER_ID_PARSED`].
    url: Url,
    per_user: bool,
}

/// The placeholder as `webhook.url` writes it.
const USER_ID_PROBE: &str = "{user_id}";
/// The placeholder once the URL is parsed (its braces percent-encoded): no
/// user id's segment reads so, as a user id's braces are encoded too.
const USER_ID_PARSED: &str = "%7Buser_id%7D";

/// Characters a user id keeps as they are in its path segment: RFC 3986's
/// unreserved ones; everything else is percent-encoded, `/` included.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl WebhookUrl {
    /// Whether `{user_id}` routes each event to its user's URL.
    pub fn per_user(&self) -> bool {
        self.per_user
    }

    /// The URL, a template's with its placeholder (`%7Buser_id%7D`): for its
    /// scheme, host and credentials.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL as it may be shown, `{user_id}` included (see [`display_url`]).
    pub fn display(&self) -> String {
        display_url(&self.url).replace(USER_ID_PARSED, USER_ID_PROBE)
    }

    /// The URL text of `user_id`'s events: `url_text` (this URL's text, as
    /// the deliverer sends it, without credentials) with the user's segment
    /// for the placeholder; `url_text` itself for a URL without one. A user id that cannot be one segment
    /// (empty, `.` or `..`, which a server would resolve as a path step)
    /// is refused with why.
    pub fn for_user(&self, url_text: &str, user_id: &str) -> Result<String, String> {
        if !self.per_user {
            return Ok(url_text.to_owned());
        }
        if matches!(user_id, "" | "." | "..") {
            return Err(format!(
                "the alert's user_id {user_id:?} cannot be a path segment of webhook.url"
            ));
        }
        let segment = percent_encoding::utf8_percent_encode(user_id, SEGMENT).to_string();
        Ok(url_text.replacen(USER_ID_PARSED, &segment, 1))
    }
}

/// A URL as it may be shown (check-config, logs): a password, or a query
/// (which may carry a token), is masked. Every URL the daemon prints goes
/// through here.
pub fn display_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
    }
    url.to_string()
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub kind: JobKind,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Read enabled alerts and quotes, claim the triggered alerts, queue their events.
    Evaluate { scope: Scope },
    /// Delete delivered outbox rows delivered longer than `keep` ago. Pending
    /// events and dead letters are never deleted.
    Purge { keep: Duration },
}

/// The tickers an `evaluate` job covers: glob patterns such as `BTC-*`
/// (`*`, `?` and `[...]`, case-sensitive); empty means every ticker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<glob::Pattern>);

impl Scope {
    pub fn all() -> Scope {
        Scope(Vec::new())
    }

    pub fn parse(patterns: &[&str]) -> Result<Scope, String> {
        patterns
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern)
                    .map_err(|error| format!("{pattern:?} is not a ticker pattern: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Scope)
    }

    pub fn covers(&self, ticker: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|pattern| pattern.matches(ticker))
    }

    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "all tickers".to_owned()
        } else {
            self.0
                .iter()
                .map(|pattern| pattern.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `price_alertd=debug`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (without timestamps under systemd, which adds its own).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A webhook signing key. Its bytes never reach a log line or `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses a Standard Webhooks secret: `whsec_` followed by base64.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.trim().strip_prefix("whsec_").unwrap_or(text.trim());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the secret is not base64 after its whsec_ prefix".to_owned())?;
        if bytes.len() < 24 {
            return Err(format!(
                "the secret decodes to {} bytes; at least 24 are required",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key the problem is about, e.g. `jobs[1].schedule`; empty for syntax errors.
    pub key: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // About the file, not a place in it (e.g. it cannot be read).
            f.write_str(&self.message)
        } else if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.key, self.message
            )
        }
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            f,
            "{}: {count} error{}",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            if error.line == 0 {
                write!(f, "\n  {}: {error}", self.origin)?;
            } else {
                write!(f, "\n  {}:{error}", self.origin)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where a configuration came from; relative paths resolve against its folder.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// The shipped file compiled into the binary; relative paths resolve against the working directory.
    Embedded,
}

impl Source {
    /// Picks the file the CLI names, else `$PRICE_ALERTD_CONFIG` (both passed in
    /// by clap), else the default path, else the embedded default.
    pub fn choose(explicit: Option<PathBuf>) -> Source {
        match explicit {
            Some(path) => Source::File(path),
            None if Path::new(DEFAULT_PATH).exists() => Source::File(PathBuf::from(DEFAULT_PATH)),
            None => Source::Embedded,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Embedded => "<embedded etc/price-alertd.toml>".to_owned(),
        }
    }

    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let origin = self.describe();
        let fail = |message: String| ConfigErrors {
            origin: origin.clone(),
            errors: vec![ConfigError {
                key: String::new(),
                line: 0,
                column: 0,
                message,
            }],
        };
        let (text, base) = match self {
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    fail(match error.kind() {
                        std::io::ErrorKind::NotFound => format!(
                            "there is no such file (from --config, $PRICE_ALERTD_CONFIG or {DEFAULT_PATH})"
                        ),
                        _ => format!("the file cannot be read: {error}"),
                    })
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (text, base)
            }
            Source::Embedded => {
                let base = std::env::current_dir()
                    .map_err(|error| fail(format!("cannot read the working directory: {error}")))?;
                (EMBEDDED.to_owned(), base)
            }
        };
        let state_directory = state_directory(&base, std::env::var_os("STATE_DIRECTORY"));
        parse(&text, &base, state_directory.as_deref())
            .map_err(|errors| ConfigErrors { origin, errors })
    }
}

/// Where a relative `database.path` resolves for a config in `base`: systemd's
/// `$STATE_DIRECTORY` when set; [`STATE_DIRECTORY`] for the installed config,
/// so operators' commands open the service's database; else nowhere special
/// (the config's folder).
fn state_directory(base: &Path, from_systemd: Option<std::ffi::OsString>) -> Option<PathBuf> {
    from_systemd
        .map(PathBuf::from)
        .or_else(|| (base == Path::new(INSTALLED_FOLDER)).then(|| STATE_DIRECTORY.into()))
}

/// Parses and validates `text`. `base` is the folder relative paths resolve
/// against; `state_directory` (systemd's `$STATE_DIRECTORY`) takes its place
/// for the database.
pub fn parse(
    text: &str,
    base: &Path,
    state_directory: Option<&Path>,
) -> Result<Config, Vec<ConfigError>> {
    let lines = LineIndex::new(text);
    let (table, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|error| {
                let (line, column) = lines.locate(error.span().map_or(0, |span| span.start));
                ConfigError {
                    key: String::new(),
                    line,
                    column,
                    message: error.message().to_owned(),
                }
            })
            .collect());
    }
    let mut errors = Vec::new();
    let raw = deserialize_all(table, &lines, &mut errors);
    let serde_errors = errors.len();
    let config = raw.and_then(|raw| validate(raw, base, state_directory, &lines, &mut errors));
    // A bad value serde rejected was taken out of the table; `validate` then
    // finds that key missing, which says nothing new.
    let (serde_found, validated) = errors.split_at(serde_errors);
    let restated = |error: &ConfigError| {
        error.message.starts_with("missing field")
            && serde_found.iter().any(|found| found.key == error.key)
    };
    let validated: Vec<ConfigError> = validated
        .iter()
        .filter(|error| !restated(error))
        .cloned()
        .collect();
    errors.truncate(serde_errors);
    errors.extend(validated);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            errors.sort_by_key(|error| (error.line, error.column));
            Err(errors)
        }
    }
}

/// The serde mirror of the file. Every key is documented in `etc/price-alertd.toml`.
mod raw {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub database: Database,
        #[serde(default)]
        pub evaluator: Evaluator,
        #[serde(default)]
        pub prices: Prices,
        pub webhook: Option<Spanned<Webhook>>,
        #[serde(default)]
        pub jobs: Vec<Spanned<Job>>,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub metrics: Metrics,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub listen: Option<Spanned<String>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Database {
        pub path: Option<Spanned<String>>,
        pub url: Option<Spanned<String>>,
        pub password_file: Option<Spanned<String>>,
        pub busy_timeout: Option<Spanned<String>>,
        pub max_connections: Option<Spanned<i64>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Evaluator {
        pub threads: Option<Spanned<i64>>,
        pub claim_batch: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Webhook {
        pub url: Option<Spanned<String>>,
        pub url_without_user_id: Option<Spanned<String>>,
        pub secret: Option<Spanned<String>>,
        pub secret_file: Option<Spanned<String>>,
        #[serde(default)]
        pub headers: BTreeMap<String, Spanned<String>>,
        pub timeout: Option<Spanned<String>>,
        pub connect_timeout: Option<Spanned<String>>,
        pub concurrency: Option<Spanned<i64>>,
        pub retry_schedule: Option<Spanned<Vec<Spanned<String>>>>,
        pub drain_timeout: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Job {
        // Required, but optional here so that `validate` reports a missing one
        // with the job's index, rather than serde dropping the whole entry.
        pub name: Option<Spanned<String>>,
        pub kind: Option<Spanned<String>>,
        pub schedule: Option<Spanned<String>>,
        pub timezone: Option<Spanned<String>>,
        /// For `kind = "purge"`: how long delivered events are kept.
        pub keep: Option<Spanned<String>>,
        /// For `kind = "evaluate"`: the ticker patterns it covers.
        pub tickers: Option<Spanned<Vec<Spanned<String>>>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Prices {
        pub source: Option<Spanned<String>>,
        pub max_age: Option<Spanned<String>>,
        pub url: Option<Spanned<String>>,
        pub batch_size: Option<Spanned<i64>>,
        pub concurrency: Option<Spanned<i64>>,
        pub timeout: Option<Spanned<String>>,
        #[serde(default)]
        pub headers: BTreeMap<String, Spanned<String>>,
        pub max_response_bytes: Option<Spanned<i64>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        pub level: Option<Spanned<String>>,
        pub format: Option<Spanned<String>>,
    }
}

/// Deserializes the mirror, collecting every serde error: after each error the
/// offending entry is taken out of the table and the rest is tried again.
fn deserialize_all(
    mut table: Spanned<DeTable<'_>>,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> Option<raw::File> {
    loop {
        let attempt = raw::File::deserialize(toml::de::Deserializer::from(table.clone()));
        let error = match attempt {
            Ok(file) => return Some(file),
            Err(error) => error,
        };
        let span = error.span().unwrap_or(0..0);
        let mut path = Vec::new();
        let found = take_entry(table.get_mut(), &span, &mut path);
        let (line, column) = lines.locate(span.start);
        errors.push(ConfigError {
            key: path.join(".").replace(".[", "["),
            line,
            column,
            message: error.message().to_owned(),
        });
        if !found {
            return None;
        }
    }
}

/// Removes the innermost entry (key and value, or array element) whose span
/// holds `span`, recording its path. Returns false if no entry holds it.
/// Searches every entry: the span of a `[section]` covers only its header.
fn take_entry(table: &mut DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    let keys: Vec<String> = table.keys().map(|key| key.get_ref().to_string()).collect();
    for key in keys {
        let entry = table
            .get_mut(key.as_str())
            .expect("the key was just listed");
        path.push(key.clone());
        if take_in_value(entry.get_mut(), span, path) {
            return true;
        }
        let (key_span, value_span) = match table.get_key_value(key.as_str()) {
            Some((key, value)) => (key.span(), value.span()),
            None => unreachable!("the key was just listed"),
        };
        if holds(&key_span, span) || holds(&value_span, span) {
            table.remove(key.as_str());
            return true;
        }
        path.pop();
    }
    false
}

fn take_in_value(value: &mut DeValue<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(inner) => take_entry(inner, span, path),
        DeValue::Array(items) => {
            let slice: &mut [Spanned<DeValue<'_>>] = items;
            let mut at_fault = None;
            for (index, item) in slice.iter_mut().enumerate() {
                path.push(format!("[{index}]"));
                if take_in_value(item.get_mut(), span, path) {
                    return true;
                }
                if holds(&item.span(), span) {
                    at_fault = Some(index);
                    break;
                }
                path.pop();
            }
            // The element itself is at fault (e.g. a table of the wrong type): drop it.
            let Some(index) = at_fault else { return false };
            let mut kept = toml::de::DeArray::new();
            for (at, item) in items.iter().enumerate() {
                if at != index {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            true
        }
        _ => false,
    }
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    *inner != (0..0) && outer.start <= inner.start && inner.end <= outer.end
}

/// Where validation reports a problem: the key, its span in the file, what is wrong.
trait Report: FnMut(&str, Range<usize>, String) {}
impl<F: FnMut(&str, Range<usize>, String)> Report for F {}

/// Builds the validated config from the mirror, one section at a time,
/// reporting every problem.
fn validate(
    raw: raw::File,
    base: &Path,
    state_directory: Option<&Path>,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> Option<Config> {
    let problem = |key: &str, span: Range<usize>, message: String| {
        let (line, column) = lines.locate(span.start);
        ConfigError {
            key: key.to_owned(),
            line,
            column,
            message,
        }
    };
    let mut report = |key: &str, span: Range<usize>, message: String| {
        errors.push(problem(key, span, message));
    };
    let mut warnings = Vec::new();
    let mut warn = |key: &str, span: Range<usize>, message: String| {
        warnings.push(problem(key, span, message));
    };
    let database = database(&raw.database, base, state_directory, &mut report, &mut warn);
    let evaluator = evaluator(&raw.evaluator, &mut report);
    let webhook = webhook(raw.webhook.as_ref(), base, &mut report, &mut warn);
    let jobs = jobs(&raw.jobs, &mut report);
    let prices = prices(&raw.prices, &mut report);
    let log = log(&raw.log, &mut report);
    let metrics = metrics(&raw.metrics, &mut report);
    Some(Config {
        database,
        evaluator,
        prices,
        webhook: webhook?,
        jobs,
        log,
        metrics,
        warnings,
    })
}

/// The `[database]` section: `path` (SQLite, the default) or `url`
/// (PostgreSQL). A relative path resolves against the state directory if
/// there is one, else against the config's folder.
fn database(
    raw: &raw::Database,
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
            engine: Engine::Postgres(postgres(
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

/// `database.url` and `database.password_file`. The URL is checked here, so
/// that `check-config` reports it; `sslmode`, `sslrootcert` and `options` are
/// taken out of it (the daemon's TLS and session options are its own), and
/// so is the password.
fn postgres(
    url: &Spanned<String>,
    password_file: Option<&Spanned<String>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> PostgresConfig {
    let mut config = PostgresConfig {
        url: String::new(),
        display: String::new(),
        password: None,
        tls: PostgresTls::Prefer,
        root_certificate: None,
        dropped_options: None,
    };
    let mut complain = |message: String| report("database.url", url.span(), message);
    let Some(parts) = PostgresUrl::split(url.get_ref().trim()) else {
        complain("must be a postgres:// or postgresql:// URL".to_owned());
        return config;
    };
    let kept = postgres_options(parts.query, base, &mut config, &mut complain);
    config.url = parts.rebuilt(&kept);
    match config.url.parse::<postgres::Config>() {
        Ok(client) => config.display = shown(&client, parts.password.is_some(), &config, &kept),
        Err(error) => complain(format!(
            "is not a PostgreSQL URL the client understands: {error}"
        )),
    }
    if config.root_certificate.is_some() && config.tls == PostgresTls::Disable {
        complain("sslrootcert is set but sslmode=disable turns TLS off".to_owned());
    }
    config.password = postgres_password(parts.password, password_file, base, report, warn);
    config
}

/// The connection as the client will make it, for people: the user the
/// server sees (a `user` parameter names it, not the URL's user part), the
/// hosts, the database, the TLS mode, and the other parameters; a password
/// masked.
fn shown(
    client: &postgres::Config,
    has_password: bool,
    config: &PostgresConfig,
    kept: &[&str],
) -> String {
    use postgres::config::Host;
    let user = client.get_user().unwrap_or("");
    let credentials = match (user.is_empty(), has_password) {
        (true, _) => String::new(),
        (false, false) => format!("{user}@"),
        (false, true) => format!("{user}:***@"),
    };
    let ports = client.get_ports();
    let mut sockets = Vec::new();
    let hosts: Vec<String> = client
        .get_hosts()
        .iter()
        .enumerate()
        .filter_map(|(at, host)| {
            let port = ports.get(at).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => Some(format!("[{name}]:{port}")),
                Host::Tcp(name) => Some(format!("{name}:{port}")),
                Host::Unix(path) => {
                    sockets.push(format!("host={}", path.display()));
                    None
                }
            }
        })
        .collect();
    let mut parameters = vec![format!("sslmode={}", config.tls.name())];
    if let Some(root) = &config.root_certificate {
        parameters.push(format!("sslrootcert={}", root.display()));
    }
    parameters.extend(sockets);
    parameters.extend(
        kept.iter()
            .filter(|pair| !matches!(parameter_name(pair), "user" | "host" | "port" | "dbname"))
            .map(|pair| pair.to_string()),
    );
    format!(
        "postgresql://{credentials}{}/{}?{}",
        hosts.join(","),
        client.get_dbname().unwrap_or(user),
        parameters.join("&")
    )
}

fn parameter_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(key, _)| key)
}

/// A `postgres://` URL's parts, as written.
struct PostgresUrl<'a> {
    user: &'a str,
    password: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: &'a str,
}

impl<'a> PostgresUrl<'a> {
    fn split(text: &'a str) -> Option<PostgresUrl<'a>> {
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (user_info, hosts) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = match user_info.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (user_info, None),
        };
        Some(PostgresUrl {
            user,
            password,
            hosts,
            path,
            query,
        })
    }

    /// The URL the client connects with: no password, only the `kept`
    /// parameters.
    fn rebuilt(&self, kept: &[&str]) -> String {
        let (user, hosts) = (self.user, self.hosts);
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let user_part = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path)
        };
        format!("postgresql://{user_part}{hosts}{path}{query}")
    }
}

/// Takes `sslmode`, `sslrootcert` and `options` from a URL's query into
/// `config`, refuses a `password` parameter, and returns the other
/// parameters, for the client.
fn postgres_options<'a>(
    query: &'a str,
    base: &Path,
    config: &mut PostgresConfig,
    complain: &mut impl FnMut(String),
) -> Vec<&'a str> {
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match key {
            "sslmode" => {
                config.tls = PostgresTls::parse(value.as_ref()).unwrap_or_else(|| {
                    complain(format!(
                        "sslmode={value} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ));
                    PostgresTls::VerifyFull
                })
            }
            "sslrootcert" => config.root_certificate = Some(resolve(Path::new(value.as_ref()), base)),
            "options" => config.dropped_options = Some(value.into_owned()),
            "password" => complain(
                "give the password in the URL's user part, in database.password_file or in $PGPASSWORD, not as a parameter".to_owned(),
            ),
            _ => kept.push(pair),
        }
    }
    kept
}

/// The password: from the URL, `database.password_file` (not both) or
/// `$PGPASSWORD`.
fn postgres_password(
    in_url: Option<&str>,
    password_file: Option<&Spanned<String>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<Password> {
    match (in_url, password_file) {
        (Some(_), Some(file)) => {
            report(
                "database.password_file",
                file.span(),
                "the URL has a password already: give it in one place".to_owned(),
            );
            None
        }
        (Some(password), None) => Some(Password(
            percent_encoding::percent_decode_str(password)
                .decode_utf8_lossy()
                .into_owned(),
        )),
        (None, Some(file)) => {
            let path = resolve(Path::new(file.get_ref()), base);
            let text = secret_file(&path, "database.password_file", file.span(), report, warn)?;
            Some(Password(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None) => std::env::var("PGPASSWORD").ok().map(Password),
    }
}

/// The `[evaluator]` section.
fn evaluator(raw: &raw::Evaluator, report: &mut impl Report) -> EvaluatorConfig {
    EvaluatorConfig {
        threads: count(&raw.threads, "evaluator.threads", 10, 1..=256, report),
        claim_batch: count(
            &raw.claim_batch,
            "evaluator.claim_batch",
            1000,
            1..=100_000,
            report,
        ),
    }
}

/// The `[webhook]` section; `None` without a usable URL.
fn webhook(
    section: Option<&Spanned<raw::Webhook>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<WebhookConfig> {
    let Some(section) = section else {
        report(
            "webhook",
            0..0,
            "missing section [webhook]; it needs at least `url`".to_owned(),
        );
        return None;
    };
    let webhook = section.get_ref();
    let url = match &webhook.url {
        None => {
            report(
                "webhook.url",
                section.span(),
                "missing field `url`".to_owned(),
            );
            None
        }
        Some(url) => webhook_url(url, report),
    };
    let headers = header_list(
        &webhook.headers,
        "webhook.headers",
        &WEBHOOK_HEADERS,
        report,
    );
    if let Some(url) = &url {
        one_source_of_credentials(url.url(), &headers, "webhook", &webhook.headers, report);
    }
    let url_without_user_id = webhook.url_without_user_id.as_ref().and_then(|fallback| {
        if url.as_ref().is_some_and(|url| !url.per_user()) {
            report(
                "webhook.url_without_user_id",
                fallback.span(),
                "is for a webhook.url with {user_id}; this one sends every event to one URL"
                    .to_owned(),
            );
        }
        let parsed = http_url(fallback, "webhook.url_without_user_id", report)?;
        one_source_of_credentials(&parsed, &headers, "webhook", &webhook.headers, report);
        Some(parsed)
    });
    // Every field is checked, whether or not the URL is usable.
    let secrets = secrets(webhook, base, report, warn);
    let timeout = duration(
        &webhook.timeout,
        "webhook.timeout",
        "15s",
        REQUEST_TIMEOUT,
        report,
    );
    let connect_timeout = duration(
        &webhook.connect_timeout,
        "webhook.connect_timeout",
        "5s",
        REQUEST_TIMEOUT,
        report,
    );
    let concurrency = count(
        &webhook.concurrency,
        "webhook.concurrency",
        16,
        1..=1024,
        report,
    );
    let retry_schedule = retry_schedule(&webhook.retry_schedule, report);
    let drain_timeout = duration(
        &webhook.drain_timeout,
        "webhook.drain_timeout",
        "30s",
        DRAIN_TIMEOUT,
        report,
    );
    Some(WebhookConfig {
        url: url?,
        url_without_user_id,
        secrets,
        headers,
        timeout,
        connect_timeout,
        concurrency,
        retry_schedule,
        drain_timeout,
    })
}

/// `webhook.secret` or `webhook.secret_file`: one or two signing secrets.
fn secrets(
    webhook: &raw::Webhook,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Vec<Secret> {
    if let (Some(_), Some(file)) = (&webhook.secret, &webhook.secret_file) {
        report(
            "webhook.secret_file",
            file.span(),
            "set webhook.secret or webhook.secret_file, not both".to_owned(),
        );
    }
    let mut secrets = Vec::new();
    if let Some(secret) = &webhook.secret {
        match parse_secrets(secret.get_ref()) {
            Ok(parsed) => secrets = parsed,
            Err(message) => report("webhook.secret", secret.span(), message),
        }
    }
    if let Some(file) = &webhook.secret_file {
        let path = resolve(Path::new(file.get_ref()), base);
        if let Some(text) = secret_file(&path, "webhook.secret_file", file.span(), report, warn) {
            match parse_secrets(&text) {
                Ok(parsed) => secrets = parsed,
                Err(message) => report(
                    "webhook.secret_file",
                    file.span(),
                    format!("{}: {message}", path.display()),
                ),
            }
        }
    }
    secrets
}

/// The most of a file holding a secret that is read: a secret is a line.
const SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The text of a file holding a secret (`database.password_file`,
/// `webhook.secret_file`): a regular file, of at most [`SECRET_FILE_BYTES`]
/// (a device or a pipe is never read without end). Warns when users other
/// than its owner and group can read it.
fn secret_file(
    path: &Path,
    key: &str,
    span: Range<usize>,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let read = || -> Result<(String, u32), String> {
        let file = std::fs::File::open(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let metadata = file
            .metadata()
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if !metadata.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        let mut text = String::new();
        file.take(SECRET_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if text.len() as u64 > SECRET_FILE_BYTES {
            return Err(format!(
                "{} holds more than {} KiB; it should hold the secret alone",
                path.display(),
                SECRET_FILE_BYTES / 1024
            ));
        }
        Ok((text, metadata.permissions().mode()))
    };
    match read() {
        Ok((text, mode)) => {
            if mode & 0o004 != 0 {
                warn(
                    key,
                    span,
                    format!(
                        "{} can be read by every user of this host (mode {:o}): chmod o-r it",
                        path.display(),
                        mode & 0o777
                    ),
                );
            }
            Some(text)
        }
        Err(message) => {
            report(key, span, message);
            None
        }
    }
}

/// `webhook.retry_schedule`: Svix's schedule unless given.
fn retry_schedule(
    list: &Option<Spanned<Vec<Spanned<String>>>>,
    report: &mut impl Report,
) -> Vec<Duration> {
    match list {
        None => DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|text| humantime::parse_duration(text).expect("a valid default"))
            .collect(),
        Some(list) if list.get_ref().is_empty() => {
            report(
                "webhook.retry_schedule",
                list.span(),
                "must list at least one duration".to_owned(),
            );
            Vec::new()
        }
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(index, item)| {
                duration(
                    &Some(item.clone()),
                    &format!("webhook.retry_schedule[{index}]"),
                    "1s",
                    RETRY_WAIT,
                    report,
                )
            })
            .collect(),
    }
}

/// The `[[jobs]]` entries; a job with an error is left out (and reported).
fn jobs(raw: &[Spanned<raw::Job>], report: &mut impl Report) -> Vec<JobConfig> {
    let mut jobs = Vec::new();
    let mut names = BTreeMap::new();
    for (index, spanned) in raw.iter().enumerate() {
        if let Some(job) = job(index, spanned, &mut names, report) {
            jobs.push(job);
        }
    }
    jobs
}

/// One `[[jobs]]` entry; `names` holds the names taken by earlier entries.
fn job(
    index: usize,
    spanned: &Spanned<raw::Job>,
    names: &mut BTreeMap<String, usize>,
    report: &mut impl Report,
) -> Option<JobConfig> {
    let job = spanned.get_ref();
    let key = |field: &str| format!("jobs[{index}].{field}");
    for (field, value) in [
        ("name", &job.name),
        ("kind", &job.kind),
        ("schedule", &job.schedule),
    ] {
        if value.is_none() {
            report(
                &key(field),
                spanned.span(),
                format!("missing field `{field}`"),
            );
        }
    }
    let (Some(name), Some(kind), Some(schedule)) = (&job.name, &job.kind, &job.schedule) else {
        return None;
    };
    let name_text = name.get_ref().trim().to_owned();
    if name_text.is_empty() {
        report(&key("name"), name.span(), "must not be empty".to_owned());
    } else if let Some(first) = names.insert(name_text.clone(), index) {
        report(
            &key("name"),
            name.span(),
            format!("{name_text:?} is already the name of jobs[{first}]"),
        );
    }
    let scope = scope(&job.tickers, &key("tickers"), report);
    if let (Some(tickers), "purge") = (&job.tickers, kind.get_ref().as_str()) {
        report(
            &key("tickers"),
            tickers.span(),
            "only an \"evaluate\" job takes `tickers`".to_owned(),
        );
    }
    let kind = match (kind.get_ref().as_str(), &job.keep) {
        ("evaluate", None) => Some(JobKind::Evaluate { scope }),
        ("evaluate", Some(keep)) => {
            report(
                &key("keep"),
                keep.span(),
                "only a \"purge\" job takes `keep`".to_owned(),
            );
            None
        }
        ("purge", Some(_)) => Some(JobKind::Purge {
            keep: duration(&job.keep, &key("keep"), "7d", KEEP, report),
        }),
        ("purge", None) => {
            report(
                &key("keep"),
                kind.span(),
                "a \"purge\" job needs `keep`, e.g. \"7d\"".to_owned(),
            );
            None
        }
        (other, _) => {
            report(
                &key("kind"),
                kind.span(),
                format!("unknown kind {other:?}; expected \"evaluate\" or \"purge\""),
            );
            None
        }
    };
    let zone = job.timezone.as_ref().map(|zone| zone.get_ref().as_str());
    let schedule = match Schedule::parse(schedule.get_ref(), zone) {
        Ok(parsed) => Some(parsed),
        Err(message) => {
            let (field, span) = match &job.timezone {
                Some(zone) if message.contains("time zone") => ("timezone", zone.span()),
                _ => ("schedule", schedule.span()),
            };
            report(&key(field), span, message);
            None
        }
    };
    Some(JobConfig {
        name: name_text,
        kind: kind?,
        schedule: schedule?,
    })
}

/// A job's `tickers`: every ticker if unset.
fn scope(
    tickers: &Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
    report: &mut impl Report,
) -> Scope {
    match tickers {
        None => Scope::all(),
        Some(list) if list.get_ref().is_empty() => {
            report(
                key,
                list.span(),
                "must list at least one pattern (leave it out to cover every ticker)".to_owned(),
            );
            Scope::all()
        }
        Some(list) => {
            let patterns: Vec<&str> = list
                .get_ref()
                .iter()
                .map(|pattern| pattern.get_ref().as_str())
                .collect();
            Scope::parse(&patterns).unwrap_or_else(|message| {
                report(key, list.span(), message);
                Scope::all()
            })
        }
    }
}

/// The `[log]` section.
fn log(raw: &raw::Log, report: &mut impl Report) -> LogConfig {
    let format = match raw
        .format
        .as_ref()
        .map(|format| (format.get_ref().as_str(), format.span()))
    {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, span)) => {
            report(
                "log.format",
                span,
                format!("unknown format {other:?}; expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    if let Some(spanned) = &raw.level
        && let Err(error) = tracing_subscriber::EnvFilter::try_new(spanned.get_ref())
    {
        report(
            "log.level",
            spanned.span(),
            format!("not a log filter: {error}"),
        );
    }
    let level = raw
        .level
        .as_ref()
        .map_or_else(|| "info".to_owned(), |level| level.get_ref().clone());
    LogConfig { level, format }
}

/// The `[metrics]` section.
fn metrics(raw: &raw::Metrics, report: &mut impl Report) -> MetricsConfig {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|listen| match listen.get_ref().parse() {
            Ok(address) => Some(address),
            Err(_) => {
                report(
                    "metrics.listen",
                    listen.span(),
                    format!(
                        "{:?} is not an address such as \"127.0.0.1:9187\"",
                        listen.get_ref()
                    ),
                );
                None
            }
        });
    MetricsConfig { listen }
}

/// The `[prices]` section.
fn prices(raw: &raw::Prices, report: &mut impl Report) -> PricesConfig {
    let max_age = duration(&raw.max_age, "prices.max_age", "15m", MAX_AGE, report);
    let http_only = |report: &mut dyn FnMut(&str, Range<usize>, String),
                     key: &str,
                     span: Option<Range<usize>>| {
        if let Some(span) = span {
            report(key, span, "only used with source = \"http\"".to_owned());
        }
    };
    let source = match raw
        .source
        .as_ref()
        .map(|source| (source.get_ref().as_str(), source.span()))
    {
        None | Some(("sqlite", _)) => {
            http_only(report, "prices.url", raw.url.as_ref().map(Spanned::span));
            http_only(
                report,
                "prices.batch_size",
                raw.batch_size.as_ref().map(Spanned::span),
            );
            http_only(
                report,
                "prices.concurrency",
                raw.concurrency.as_ref().map(Spanned::span),
            );
            http_only(
                report,
                "prices.timeout",
                raw.timeout.as_ref().map(Spanned::span),
            );
            http_only(
                report,
                "prices.headers",
                raw.headers.values().next().map(Spanned::span),
            );
            http_only(
                report,
                "prices.max_response_bytes",
                raw.max_response_bytes.as_ref().map(Spanned::span),
            );
            PriceSource::Sqlite
        }
        Some(("http", span)) => {
            let url = match &raw.url {
                None => {
                    report(
                        "prices.url",
                        span,
                        "source = \"http\" needs `url`".to_owned(),
                    );
                    None
                }
                Some(url) => http_url(url, "prices.url", report),
            };
            let batch_size = count(
                &raw.batch_size,
                "prices.batch_size",
                100,
                1..=10_000,
                report,
            );
            let concurrency = count(&raw.concurrency, "prices.concurrency", 4, 1..=64, report);
            let timeout = duration(
                &raw.timeout,
                "prices.timeout",
                "5s",
                REQUEST_TIMEOUT,
                report,
            );
            let headers = header_list(&raw.headers, "prices.headers", &CONNECTION_HEADERS, report);
            if let Some(url) = &url {
                one_source_of_credentials(url, &headers, "prices", &raw.headers, report);
            }
            let max_response_bytes = count(
                &raw.max_response_bytes,
                "prices.max_response_bytes",
                4 << 20,
                1024..=(256 << 20),
                report,
            );
            match url {
                Some(url) => PriceSource::Http(HttpSource {
                    url,
                    batch_size,
                    concurrency,
                    timeout,
                    headers,
                    max_response_bytes,
                }),
                None => PriceSource::Sqlite,
            }
        }
        Some((other, span)) => {
            report(
                "prices.source",
                span,
                format!("unknown source {other:?}; expected \"sqlite\" or \"http\""),
            );
            PriceSource::Sqlite
        }
    };
    PricesConfig { source, max_age }
}

/// `webhook.url`: an http or https URL, in whose path `{user_id}` may stand
/// once, for a whole segment or part of one.
fn webhook_url(value: &Spanned<String>, report: &mut impl Report) -> Option<WebhookUrl> {
    let text = value.get_ref();
    let per_user = match text.matches(USER_ID_PROBE).count() {
        0 => false,
        1 => true,
        _ => {
            report(
                "webhook.url",
                value.span(),
                "{user_id} may appear once".to_owned(),
            );
            return None;
        }
    };
    let url = http_url(value, "webhook.url", report)?;
    if per_user {
        let holds = |part: &str| part.contains(USER_ID_PROBE) || part.contains(USER_ID_PARSED);
        let elsewhere = holds(url.username())
            || url.password().is_some_and(holds)
            || url.query().is_some_and(holds)
            || url.fragment().is_some_and(holds);
        if elsewhere || !url.path().contains(USER_ID_PARSED) {
            report(
                "webhook.url",
                value.span(),
                "{user_id} may only stand in the URL's path (as in http://127.0.0.1:8080/events/{user_id})"
                    .to_owned(),
            );
            return None;
        }
    }
    Some(WebhookUrl { url, per_user })
}

/// An http or https URL.
fn http_url(value: &Spanned<String>, key: &str, report: &mut impl Report) -> Option<Url> {
    match Url::parse(value.get_ref()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(url) => {
            report(
                key,
                value.span(),
                format!("scheme {:?} is not http or https", url.scheme()),
            );
            None
        }
        Err(error) => {
            report(key, value.span(), format!("not a URL: {error}"));
            None
        }
    }
}

/// Refuses credentials in a URL's userinfo next to an `Authorization`
/// header: the HTTP client would silently send only one of them.
fn one_source_of_credentials(
    url: &Url,
    headers: &[(HeaderName, HeaderValue)],
    section: &str,
    raw: &BTreeMap<String, Spanned<String>>,
    report: &mut impl Report,
) {
    let has_userinfo = !url.username().is_empty() || url.password().is_some();
    let authorization = headers
        .iter()
        .any(|(name, _)| name == reqwest::header::AUTHORIZATION);
    if has_userinfo && authorization {
        let (name, value) = raw
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .expect("a parsed Authorization header has its raw entry");
        report(
            &format!("{section}.headers.{name}"),
            value.span(),
            format!(
                "{section}.url carries credentials (user:password@) and {section}.headers sets Authorization: \
                 only one would be sent; keep one"
            ),
        );
    }
}

/// Static HTTP headers, their values marked sensitive (never printed by `Debug`).
/// Headers the daemon sets itself on every request: the connection's own
/// (`Host`, and the body's framing).
const CONNECTION_HEADERS: [&str; 3] = ["host", "content-length", "transfer-encoding"];
/// ...and on every webhook request, the Standard Webhooks headers, which a
/// consumer verifies.
const WEBHOOK_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn header_list(
    headers: &BTreeMap<String, Spanned<String>>,
    key: &str,
    reserved: &[&str],
    report: &mut impl Report,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut list = Vec::new();
    for (name, value) in headers {
        let key = format!("{key}.{name}");
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.get_ref()),
        ) {
            (Ok(name), Ok(_)) if reserved.contains(&name.as_str()) => report(
                &key,
                value.span(),
                format!("{name} is set by price-alertd itself; it cannot be configured"),
            ),
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                list.push((name, value));
            }
            (Err(_), _) => report(
                &key,
                value.span(),
                "not a valid HTTP header name".to_owned(),
            ),
            (_, Err(_)) => report(
                &key,
                value.span(),
                "not a valid HTTP header value".to_owned(),
            ),
        }
    }
    list
}

/// Svix's schedule, the reference for Standard Webhooks senders.
pub const DEFAULT_RETRY_SCHEDULE: [&str; 7] = ["5s", "5m", "30m", "2h", "5h", "10h", "10h"];

/// One secret, or two separated by whitespace while a secret is being rotated.
fn parse_secrets(text: &str) -> Result<Vec<Secret>, String> {
    let secrets = text
        .split_whitespace()
        .map(Secret::parse)
        .collect::<Result<Vec<_>, _>>()?;
    match secrets.len() {
        0 => Err("the secret is empty".to_owned()),
        1 | 2 => Ok(secrets),
        n => Err(format!(
            "{n} secrets given; at most two (the new and the old) are allowed"
        )),
    }
}

fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The bounds of a duration key: from `0`, at most `1`. Beyond them a value
/// would overflow where it is used (an instant, a C `int` of milliseconds)
/// or makes no sense; the error gives them.
type Bounds = (Duration, Duration);

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `database.busy_timeout`: SQLite and PostgreSQL take it in milliseconds.
const BUSY_TIMEOUT: Bounds = (MILLISECOND, HOUR);
/// `webhook.timeout`, `webhook.connect_timeout`, `prices.timeout`.
const REQUEST_TIMEOUT: Bounds = (MILLISECOND, Duration::from_secs(10 * MINUTE.as_secs()));
/// `webhook.drain_timeout`: the unit's `TimeoutStopSec` must be longer.
const DRAIN_TIMEOUT: Bounds = (MILLISECOND, HOUR);
/// Each wait of `webhook.retry_schedule`.
const RETRY_WAIT: Bounds = (MILLISECOND, Duration::from_secs(7 * DAY.as_secs()));
/// A purge job's `keep`.
const KEEP: Bounds = (SECOND, Duration::from_secs(3650 * DAY.as_secs()));
/// `prices.max_age`.
const MAX_AGE: Bounds = (SECOND, Duration::from_secs(365 * DAY.as_secs()));

fn duration(
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
    (least, most): Bounds,
    report: &mut impl Report,
) -> Duration {
    let Some(value) = value else {
        return humantime::parse_duration(default).expect("a valid default");
    };
    match humantime::parse_duration(value.get_ref()) {
        Ok(parsed) if (least..=most).contains(&parsed) => parsed,
        Ok(_) => {
            report(
                key,
                value.span(),
                format!(
                    "{:?} is out of bounds: from {} to {}",
                    logging_value(value.get_ref()),
                    show_duration(least),
                    show_duration(most)
                ),
            );
            least
        }
        Err(error) => {
            report(
                key,
                value.span(),
                format!(
                    "{:?} is not a duration such as \"250ms\", \"5s\", \"15m\" or \"2h\" ({error})",
                    logging_value(value.get_ref())
                ),
            );
            least
        }
    }
}

/// A duration as people write it in this file: `30d`, `1h 30m`, `5s`,
/// `250ms` (humantime would say `30days`, and 3650 days in months and years).
pub fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut parts = Vec::new();
    let mut rest = millis;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    parts.join(" ")
}

/// A value of the file as an error may show it: cut to a bound.
fn logging_value(text: &str) -> std::borrow::Cow<'_, str> {
    crate::logging::bounded(text)
}

fn count(
    value: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    report: &mut impl Report,
) -> usize {
    let Some(value) = value else { return default };
    match usize::try_from(*value.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            report(
                key,
                value.span(),
                format!("must be between {} and {}", range.start(), range.end()),
            );
            default
        }
    }
}

/// Turns byte offsets into 1-based line and column numbers.
struct LineIndex {
    starts: Vec<usize>,
    text_len: usize,
    text: String,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineIndex {
            starts,
            text_len: text.len(),
            text: text.to_owned(),
        }
    }

    fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text_len);
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[database]
path = "/var/lib/price-alertd/alerts.db"

[evaluator]
threads = 10

[webhook]
url = "http://127.0.0.1:8080/events"

[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "*/10 * * * * *"
"#;

    fn errors_of(text: &str) -> Vec<String> {
        parse(text, Path::new("/etc/x"), None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn with_webhook_url(lines: &str) -> String {
        MINIMAL.replace("url = \"http://127.0.0.1:8080/events\"", lines)
    }

    #[test]
    fn a_url_with_user_id_routes_each_event_to_its_users_segment() {
        let config = parse(
            &with_webhook_url("url = \"http://127.0.0.1:8080/events/{user_id}?k=secret\""),
            Path::new("/etc/x"),
            None,
        )
        .unwrap();
        let url = &config.webhook.url;
        assert!(url.per_user());
        assert_eq!(url.display(), "http://127.0.0.1:8080/events/{user_id}?***");
        let text = url.url().as_str();
        let check = |user: &str, expected: &str| {
            assert_eq!(
                url.for_user(text, user).unwrap(),
                format!("http://127.0.0.1:8080/events/{expected}?k=secret"),
                "{user:?}"
            )
        };
        check("alice", "alice");
        check("u-1.b_c~d", "u-1.b_c~d");
        check("a/b", "a%2Fb");
        check("a b%c", "a%20b%25c");
        check("../x", "..%2Fx");
        check("ünï", "%C3%BCn%C3%AF");
        check("?q#f", "%3Fq%23f");
        for refused in ["", ".", ".."] {
            assert!(
                url.for_user(text, refused)
                    .unwrap_err()
                    .contains("cannot be a path segment"),
                "{refused:?}"
            );
        }
        // Part of a segment is fine too.
        let config = parse(
            &with_webhook_url("url = \"http://relay/events/user-{user_id}.json\""),
            Path::new("/etc/x"),
            None,
        )
        .unwrap();
        let url = &config.webhook.url;
        assert_eq!(
            url.for_user(url.url().as_str(), "a/b").unwrap(),
            "http://relay/events/user-a%2Fb.json"
        );
    }

    #[test]
    fn a_url_without_user_id_sends_everything_to_one_url() {
        let config = parse(MINIMAL, Path::new("/etc/x"), None).unwrap();
        let url = &config.webhook.url;
        assert!(!url.per_user());
        assert_eq!(
            url.for_user(url.url().as_str(), "a/b").unwrap(),
            "http://127.0.0.1:8080/events"
        );
    }

    #[test]
    fn user_id_stands_only_once_and_only_in_the_path() {
        let check = |line: &str, expected: &str| {
            let errors = errors_of(&with_webhook_url(line));
            assert!(
                errors.len() == 1 && errors[0].contains(expected),
                "{line}: {errors:?}"
            );
        };
        check(
            "url = \"http://relay/events/{user_id}/{user_id}\"",
            "webhook.url: {user_id} may appear once",
        );
        check(
            "url = \"http://relay/events?user={user_id}\"",
            "{user_id} may only stand in the URL's path",
        );
        check(
            "url = \"http://relay/events#{user_id}\"",
            "{user_id} may only stand in the URL's path",
        );
        check(
            "url = \"http://{user_id}@relay/events\"",
            "{user_id} may only stand in the URL's path",
        );
        check(
            "url = \"http://{user_id}.relay/events\"",
            "{user_id} may only stand in the URL's path",
        );
    }

    #[test]
    fn url_without_user_id_is_only_for_a_per_user_url() {
        let errors = errors_of(&with_webhook_url(
            "url = \"http://relay/events\"\nurl_without_user_id = \"http://relay/events/nobody\"",
        ));
        assert!(
            errors.len() == 1
                && errors[0]
                    .contains("webhook.url_without_user_id: is for a webhook.url with {user_id}"),
            "{errors:?}"
        );
        let config = parse(
            &with_webhook_url(
                "url = \"http://relay/events/{user_id}\"\nurl_without_user_id = \"http://relay/events/nobody\"",
            ),
            Path::new("/etc/x"),
            None,
        )
        .unwrap();
        assert_eq!(
            config.webhook.url_without_user_id.unwrap().as_str(),
            "http://relay/events/nobody"
        );
    }

    #[test]
    fn the_contract_keys_alone_are_valid_and_defaults_apply() {
        let config = parse(MINIMAL, Path::new("/etc/x"), None).unwrap();
        assert_eq!(
            config.database.engine,
            Engine::Sqlite {
                path: "/var/lib/price-alertd/alerts.db".into()
            }
        );
        assert_eq!(config.evaluator.threads, 10);
        assert_eq!(config.webhook.timeout, Duration::from_secs(15));
        assert_eq!(config.webhook.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.webhook.retry_schedule.len(), 7);
        assert_eq!(config.jobs.len(), 1);
        assert_eq!(config.jobs[0].schedule.expression(), "*/10 * * * * *");
    }

    /// The keys serde knows in a section, from its own "expected ..." list.
    fn known_keys(section: &str) -> Vec<String> {
        let header = format!("[{section}]");
        let text = if section == "jobs" {
            format!("{MINIMAL}\n[[jobs]]\nnot_a_key = 1\n")
        } else if MINIMAL.contains(&header) {
            MINIMAL.replace(&header, &format!("{header}\nnot_a_key = 1"))
        } else {
            format!("{MINIMAL}\n{header}\nnot_a_key = 1\n")
        };
        let errors = errors_of(&text).join("\n");
        let expected = errors
            .split_once("expected ")
            .unwrap_or_else(|| panic!("{section}: {errors}"))
            .1;
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_shipped_file_documents_every_key() {
        for section in [
            "database",
            "evaluator",
            "prices",
            "webhook",
            "jobs",
            "log",
            "metrics",
        ] {
            let keys = known_keys(section);
            assert!(!keys.is_empty(), "{section}");
            for key in keys {
                let shown = EMBEDDED.lines().any(|line| {
                    let line = line.trim_start_matches(['#', ' ']);
                    line.starts_with(&format!("{key} =")) || line.starts_with(&format!("[[{key}]]"))
                });
                assert!(shown, "etc/price-alertd.toml does not show {section}.{key}");
            }
        }
    }

    #[test]
    fn the_shipped_file_is_valid() {
        let config = parse(EMBEDDED, Path::new("/work"), None).unwrap();
        assert!(!config.jobs.is_empty());
    }

    #[test]
    fn the_installed_config_and_the_service_find_the_same_database() {
        let installed = Path::new("/etc/price-alertd");
        let from_systemd = Some(std::ffi::OsString::from("/var/lib/price-alertd"));
        assert_eq!(
            state_directory(installed, from_systemd.clone()),
            state_directory(installed, None),
        );
        assert_eq!(
            state_directory(installed, None).as_deref(),
            Some(Path::new(STATE_DIRECTORY))
        );
        assert_eq!(state_directory(Path::new("/home/op/alerts"), None), None);
        assert_eq!(
            state_directory(Path::new("/home/op/alerts"), from_systemd).as_deref(),
            Some(Path::new("/var/lib/price-alertd"))
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder_or_the_state_directory() {
        let text = MINIMAL.replace("/var/lib/price-alertd/alerts.db", "alerts.db");
        let config = parse(&text, Path::new("/etc/x"), None).unwrap();
        assert_eq!(config.database.describe(), "/etc/x/alerts.db");
        let config = parse(&text, Path::new("/etc/x"), Some(Path::new("/var/lib/p"))).unwrap();
        assert_eq!(config.database.describe(), "/var/lib/p/alerts.db");
    }

    #[test]
    fn every_error_is_reported_with_its_key_and_position() {
        let text = MINIMAL
            .replace(
                "threads = 10",
                "threads = 10\nthreds = 3\nclaim_batch = \"many\"",
            )
            .replace("*/10 * * * * *", "*/10 * * *")
            .replace("[webhook]", "[webhook]\ntimeout = \"soon\"\nextra = 1");
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors[0].starts_with("7:1: evaluator.threds: unknown field `threds`"),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("8:15: evaluator.claim_batch: invalid type"),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("11:11: webhook.timeout: \"soon\" is not a duration"),
            "{errors:#?}"
        );
        assert!(
            errors[3].starts_with("12:1: webhook.extra: unknown field `extra`"),
            "{errors:#?}"
        );
        assert!(
            errors[4].starts_with("18:12: jobs[0].schedule: cron expression"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_bad_required_value_is_reported_once() {
        let errors =
            errors_of(&MINIMAL.replace("url = \"http://127.0.0.1:8080/events\"", "url = 5"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("9:7: webhook.url: invalid type"),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_job_missing_a_field_does_not_hide_later_errors() {
        let text = format!(
            "{MINIMAL}\n[[jobs]]\nname = \"b\"\nkind = \"evaluate\"\n\n[[jobs]]\nname = \"c\"\nkind = \"sweep\"\nschedule = \"* * * * *\"\n"
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].contains("jobs[1].schedule: missing field `schedule`"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("jobs[2].kind: unknown kind \"sweep\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_missing_url_is_reported_at_its_section() {
        let errors = errors_of("\n[webhook]\ntimeout = \"5s\"\n");
        assert_eq!(
            errors,
            vec!["2:1: webhook.url: missing field `url`".to_owned()]
        );
    }

    #[test]
    fn purge_jobs_need_keep_and_only_they_take_it() {
        let job = |kind: &str, keep: &str| {
            format!(
                "{MINIMAL}\n[[jobs]]\nname = \"p\"\nkind = \"{kind}\"\nschedule = \"0 0 3 * * *\"\n{keep}"
            )
        };
        let config = parse(&job("purge", "keep = \"30d\"\n"), Path::new("/"), None).unwrap();
        assert_eq!(
            config.jobs[1].kind,
            JobKind::Purge {
                keep: Duration::from_secs(30 * 86400)
            }
        );
        assert!(
            errors_of(&job("purge", ""))[0].contains("jobs[1].keep: a \"purge\" job needs `keep`")
        );
        assert!(
            errors_of(&job("evaluate", "keep = \"1d\"\n"))[0]
                .contains("jobs[1].keep: only a \"purge\" job takes `keep`")
        );
        assert!(
            errors_of(&job("purge", "keep = \"soon\"\n"))[0]
                .contains("jobs[1].keep: \"soon\" is not a duration")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errors = errors_of("[webhook]\nurl = \"http://x\"\n[[jobs]\n");
        assert!(errors[0].starts_with("3:"), "{errors:#?}");
    }

    #[test]
    fn duplicate_job_names_and_bad_zones_are_errors() {
        let text = format!(
            "{MINIMAL}\n[[jobs]]\nname = \"evaluate\"\nkind = \"evaluate\"\nschedule = \"* * * * *\"\ntimezone = \"Nowhere/City\"\n"
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].contains("jobs[1].name: \"evaluate\" is already the name of jobs[0]"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("jobs[1].timezone: unknown time zone"),
            "{errors:#?}"
        );
    }

    #[test]
    fn credentials_in_urls_are_masked_for_display() {
        let text = MINIMAL.replace(
            "http://127.0.0.1:8080/events",
            "https://user:hunter2@relay.example/events?token=abc",
        );
        let config = parse(&text, Path::new("/"), None).unwrap();
        assert_eq!(
            config.webhook.url.display(),
            "https://user:***@relay.example/events?***"
        );
        assert_eq!(
            display_url(&Url::parse("http://127.0.0.1:9000/quotes").unwrap()),
            "http://127.0.0.1:9000/quotes"
        );
    }

    #[test]
    fn credentials_in_a_url_and_an_authorization_header_are_refused_together() {
        let webhook = MINIMAL.replace(
            "url = \"http://127.0.0.1:8080/events\"",
            "url = \"https://user:hunter2@relay.example/events\"\nheaders = { Authorization = \"Bearer t\" }",
        );
        let errors = errors_of(&webhook);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("webhook.headers.Authorization: webhook.url carries credentials"),
            "{errors:?}"
        );

        let prices = format!(
            "{MINIMAL}\n[prices]\nsource = \"http\"\nurl = \"http://k:s@127.0.0.1:9000/q\"\nheaders = {{ authorization = \"Bearer t\" }}\n"
        );
        let errors = errors_of(&prices);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("prices.headers.authorization"),
            "{errors:?}"
        );
        // Either one alone is fine.
        assert!(parse(&prices.replace("k:s@", ""), Path::new("/"), None).is_ok());
    }

    #[test]
    fn a_postgresql_url_selects_postgresql_with_its_tls_and_a_password_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let with = |database: &str| {
            MINIMAL.replace("path = \"/var/lib/price-alertd/alerts.db\"", database)
        };
        let config = parse(
            &with("url = \"postgres://pa:s3cr%40t@db.example.net:6432/alerts?sslmode=verify-full&sslrootcert=ca.pem&application_name=x\""),
            dir.path(),
            None,
        )
        .unwrap();
        let Engine::Postgres(postgres) = &config.database.engine else {
            panic!("{:?}", config.database);
        };
        assert_eq!(postgres.tls, PostgresTls::VerifyFull);
        assert_eq!(postgres.root_certificate, Some(dir.path().join("ca.pem")));
        assert_eq!(
            postgres.password.as_ref().map(Password::expose),
            Some("s3cr@t")
        );
        assert_eq!(
            postgres.url,
            "postgresql://pa@db.example.net:6432/alerts?application_name=x"
        );
        assert_eq!(
            config.database.describe(),
            format!(
                "postgresql://pa:***@db.example.net:6432/alerts?sslmode=verify-full&sslrootcert={}&application_name=x",
                dir.path().join("ca.pem").display()
            )
        );
        assert!(!format!("{config:?}").contains("s3cr"));

        std::fs::write(dir.path().join("password"), "from-a-file\n").unwrap();
        let config = parse(
            &with("url = \"postgresql://pa@db/alerts\"\npassword_file = \"password\""),
            dir.path(),
            None,
        )
        .unwrap();
        let Engine::Postgres(postgres) = &config.database.engine else {
            panic!();
        };
        assert_eq!(
            postgres.password.as_ref().map(Password::expose),
            Some("from-a-file")
        );
        assert_eq!(postgres.tls, PostgresTls::Prefer);
    }

    #[test]
    fn durations_are_shown_as_the_file_writes_them() {
        for (millis, shown) in [
            (0, "0s"),
            (250, "250ms"),
            (5_000, "5s"),
            (5_400_000, "1h 30m"),
            (2_592_000_000, "30d"),
            (315_360_000_000, "3650d"),
            (90_061_001, "1d 1h 1m 1s 1ms"),
        ] {
            assert_eq!(show_duration(Duration::from_millis(millis)), shown);
        }
    }

    #[test]
    fn a_postgresql_connection_is_shown_as_it_will_be_made() {
        let shown = |url: &str| {
            let config = parse(
                &MINIMAL.replace(
                    "path = \"/var/lib/price-alertd/alerts.db\"",
                    &format!("url = \"{url}\""),
                ),
                Path::new("/etc/x"),
                None,
            )
            .unwrap();
            let Engine::Postgres(postgres) = config.database.engine else {
                panic!()
            };
            (postgres.display, postgres.tls, postgres.dropped_options)
        };
        // A user parameter names the user the server sees; options are not
        // used; the mode is always shown, libpq's default when unset.
        assert_eq!(
            shown("postgresql://app@db/alerts?user=other&options=-c%20search_path%3Dx"),
            (
                "postgresql://other@db:5432/alerts?sslmode=prefer".to_owned(),
                PostgresTls::Prefer,
                Some("-c search_path=x".to_owned())
            )
        );
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let (display, tls, _) = shown(&format!("postgres://db/x?sslmode={mode}"));
            assert_eq!(display, format!("postgresql://db:5432/x?sslmode={mode}"));
            assert_eq!(tls.name(), mode);
            assert_eq!(
                tls.required(),
                mode.starts_with("verify") || mode == "require",
                "{mode}"
            );
        }
        // A Unix socket, and the database named after the user by default.
        assert_eq!(
            shown("postgresql://pa@?host=/run/postgresql").0,
            "postgresql://pa@/pa?sslmode=prefer&host=/run/postgresql"
        );
    }

    #[test]
    fn the_database_is_a_path_or_a_url_and_a_bad_url_is_reported() {
        let with = |database: &str| {
            MINIMAL.replace("path = \"/var/lib/price-alertd/alerts.db\"", database)
        };
        let messages = |text: &str| -> Vec<String> {
            parse(text, Path::new("/etc/x"), None)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let both = messages(&with("path = \"a.db\"\nurl = \"postgres://db/x\""));
        assert!(both.iter().any(|m| m.contains("not both")), "{both:?}");
        let scheme = messages(&with("url = \"mysql://db/x\""));
        assert!(
            scheme.iter().any(|m| m.contains("postgres://")),
            "{scheme:?}"
        );
        let mode = messages(&with("url = \"postgres://db/x?sslmode=sometimes\""));
        assert!(
            mode.iter().any(|m| m.contains("sslmode=sometimes")),
            "{mode:?}"
        );
        let twice = messages(&with(
            "url = \"postgres://u:p@db/x\"\npassword_file = \"/nonexistent\"",
        ));
        assert!(twice.iter().any(|m| m.contains("one place")), "{twice:?}");
        let sqlite = messages(&with("path = \"a.db\"\npassword_file = \"p\""));
        assert!(
            sqlite.iter().any(|m| m.contains("SQLite has no password")),
            "{sqlite:?}"
        );
        let port = messages(&with("url = \"postgres://db:notaport/x\""));
        assert!(port.iter().any(|m| m.contains("database.url")), "{port:?}");
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let errors = errors_of(&MINIMAL.replace(
            "[webhook]",
            &format!("[webhook]\nsecret = \"whsec_{short}\""),
        ));
        assert!(errors[0].contains("16 bytes; at least 24"), "{errors:#?}");
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let config = parse(
            &MINIMAL.replace(
                "[webhook]",
                &format!("[webhook]\nsecret = \"whsec_{good}\""),
            ),
            Path::new("/"),
            None,
        )
        .unwrap();
        assert_eq!(config.webhook.secrets.len(), 1);
        assert!(!format!("{config:?}").contains(&good));
    }
}
