//! The sections that shape the process itself: `[evaluator]` (its threads
//! and batches), `[log]` and `[metrics]`.

use super::errors::Report;
use super::fields::count;
use super::raw;

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` and `/healthz`; off if unset.
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    /// The fixed size of the rayon pool that evaluates alerts.
    pub threads: usize,
    /// Claims per write transaction.
    pub claim_batch: usize,
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

/// The `[evaluator]` section.
pub(super) fn evaluator(raw: &raw::RawEvaluator, report: &mut impl Report) -> EvaluatorConfig {
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

/// The `[log]` section.
pub(super) fn log(raw: &raw::RawLog, report: &mut impl Report) -> LogConfig {
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
pub(super) fn metrics(raw: &raw::RawMetrics, report: &mut impl Report) -> MetricsConfig {
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
