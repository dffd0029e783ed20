//! The exposition: OpenMetrics or the classic text format, by `Accept`,
//! with the outbox's and the members' gauges as the database says at the
//! scrape.

use std::time::Duration;

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, for scrapers that ask for it in `Accept`.
    OpenMetrics,
    /// Prometheus's classic text format (0.0.4), for everyone else.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.trim().starts_with("application/openmetrics-text"))
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What the database says at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub pending: u64,
    pub dead: u64,
    /// How long the oldest pending event has waited; zero if none waits.
    pub oldest_pending: Duration,
    /// Members that beat within the fire lease.
    pub live_members: u64,
    /// Members that stopped beating within the last hour without leaving.
    pub lost_members: u64,
    /// Each ticker with enabled alerts and its quote's time, when quotes
    /// are watched (`store::quotes::alerted`).
    pub alerted: Vec<(String, Option<String>)>,
    /// The database's now.
    pub now: chrono::DateTime<chrono::Utc>,
}
