//! The serde mirror of the file: every key, as written. Every key is
//! documented in `etc/price-alertd.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub evaluator: RawEvaluator,
    #[serde(default)]
    pub prices: RawPrices,
    pub webhook: Option<Spanned<RawWebhook>>,
    #[serde(default)]
    pub jobs: Vec<Spanned<RawJob>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub metrics: RawMetrics,
    pub stream: Option<Spanned<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub listen: Option<Spanned<String>>,
    pub auth_url: Option<Spanned<String>>,
    pub auth_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub path: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub busy_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEvaluator {
    pub threads: Option<Spanned<i64>>,
    pub claim_batch: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
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
    pub format: Option<Spanned<String>>,
    pub batch: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
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
    /// For `kind = "evaluate"`: whether it also runs when what it covers changes.
    pub on_change: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPrices {
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
pub struct RawLog {
    pub level: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
}
