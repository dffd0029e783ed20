//! The TOML configuration: a serde mirror of the file (`raw`), then a validated
//! [`Config`] with parsed schedules, URLs, durations and paths. Every error in a
//! file is reported at once, each with its key and `line:col`.

mod database;
mod errors;
mod fields;
mod jobs;
mod postgres;
mod prices;
mod raw;
mod service;
mod settings;
mod stream;
mod webhook;

pub use database::{DatabaseConfig, EngineChoice, LEAST_CONNECTIONS};
pub use errors::{ConfigError, ConfigErrors};
pub use fields::{display_url, show_duration};
pub use jobs::{JobConfig, JobKind, Scope};
pub use postgres::{Password, PostgresConfig, PostgresTls};
pub use prices::{HttpSource, PriceSource, PricesConfig};
pub use service::{EvaluatorConfig, LogConfig, LogFormat, MetricsConfig};
pub use settings::Settings;
pub use stream::StreamConfig;
pub use webhook::{
    DEFAULT_RETRY_SCHEDULE, MAX_BATCH, Secret, USER_ID_PLACEHOLDER, WebhookConfig, WebhookFormat,
    WebhookUrl,
};

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use database::database;
use errors::{LineIndex, deserialize_all};
use jobs::jobs;
use prices::prices;
use service::{evaluator, log, metrics};
use stream::stream;
use webhook::webhook;

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
pub const EMBEDDED: &str = include_str!("../../etc/price-alertd.toml");

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
    /// The stream origin Pushpin asks; off if unset.
    pub stream: Option<StreamConfig>,
    /// What is wrong but does not stop the daemon (a secret others can
    /// read), said as an error would be: `check-config` prints them, `run`
    /// logs them.
    pub warnings: Vec<ConfigError>,
    /// Its keys as written, for a reload to say which changed.
    pub settings: Settings,
}

/// Where a configuration came from; relative paths resolve against its folder.
#[derive(Debug, Clone)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// The shipped file compiled into the binary; relative paths resolve against the working directory.
    Embedded,
}

impl ConfigOrigin {
    /// Picks the file the CLI names, else `$PRICE_ALERTD_CONFIG` (both passed in
    /// by clap), else the default path, else the embedded default.
    pub fn choose(explicit: Option<PathBuf>) -> ConfigOrigin {
        match explicit {
            Some(path) => ConfigOrigin::File(path),
            None if Path::new(DEFAULT_PATH).exists() => {
                ConfigOrigin::File(PathBuf::from(DEFAULT_PATH))
            }
            None => ConfigOrigin::Embedded,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigOrigin::File(path) => path.display().to_string(),
            ConfigOrigin::Embedded => "<embedded etc/price-alertd.toml>".to_owned(),
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
            ConfigOrigin::File(path) => {
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
            ConfigOrigin::Embedded => {
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
        Some(config) if errors.is_empty() => Ok(Config {
            settings: Settings::of(text),
            ..config
        }),
        _ => {
            errors.sort_by_key(|error| (error.line, error.column));
            Err(errors)
        }
    }
}

/// Builds the validated config from the mirror, one section at a time,
/// reporting every problem.
fn validate(
    raw: raw::RawFile,
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
    let prices = prices(&raw.prices, &mut report, &mut warn);
    // As written, not as validated: the checks across keys run even when
    // the section they read has errors of its own.
    let fetched = raw
        .prices
        .source
        .as_ref()
        .is_some_and(|source| source.get_ref() == "http");
    let jobs = jobs(&raw.jobs, fetched, &mut report);
    let log = log(&raw.log, &mut report);
    let metrics = metrics(&raw.metrics, &mut report);
    let pushpin = raw
        .webhook
        .as_ref()
        .and_then(|webhook| webhook.get_ref().format.as_ref())
        .is_some_and(|format| format.get_ref() == "pushpin");
    let stream = stream(raw.stream.as_ref(), pushpin, &mut report);
    Some(Config {
        database,
        evaluator,
        prices,
        webhook: webhook?,
        jobs,
        log,
        metrics,
        stream,
        warnings,
        settings: Settings::default(),
    })
}

#[cfg(test)]
mod tests;
