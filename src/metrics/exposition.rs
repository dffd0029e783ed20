//! The exposition: OpenMetrics or the classic text format, by `Accept`,
//! with the outbox's gauges as the database says at the scrape.

use std::time::Duration;

use super::series::Metrics;

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
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub pending: u64,
    pub dead: u64,
    /// How long the oldest pending event has waited; zero if none waits.
    pub oldest_pending: Duration,
}

impl Metrics {
    /// The exposition in `format`, with the outbox gauges as the database
    /// says now.
    pub fn render(&self, format: Format, backlog: Backlog) -> String {
        self.outbox_pending.set(backlog.pending as i64);
        self.outbox_dead.set(backlog.dead as i64);
        self.outbox_oldest.set(backlog.oldest_pending.as_secs_f64());
        let mut text = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        }
        .expect("writing to a String never fails");
        text
    }
}
