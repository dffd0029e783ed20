//! How the daemon's logs are written: to stderr, filtered by `RUST_LOG` or
//! `log.level`, as text for people or JSON for shippers; under journald with
//! each line's priority (sd-daemon(3)'s `<3>` prefixes) and no timestamp of
//! its own; in colour only on a terminal and without `NO_COLOR`.

use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

pub use crate::bounded::bounded;

/// Libraries whose failures reach the daemon as errors it reports itself,
/// in its own recurring conditions (logged when they start, change and
/// clear): their own log lines would say the same again, once per
/// request. rustls-platform-verifier, for one, logs two errors per refused
/// certificate: 4,000 lines for 2,000 events to a webhook whose
/// certificate nothing vouches for. A filter that names one of them logs
/// it as it says.
const FOLDED: [&str; 8] = [
    "rustls_platform_verifier",
    "rustls",
    "hyper",
    "hyper_util",
    "reqwest",
    "tokio_postgres",
    "postgres",
    "r2d2",
];

/// Starts logging for the process. A filter that does not name the
/// scheduler library keeps it at `warn`: at `info` it says "Job creator
/// created" for every fire time; one that does not name one of the
/// [`FOLDED`] libraries keeps that one quiet.
pub fn init(config: &LogConfig) {
    let text = std::env::var("RUST_LOG")
        .ok()
        .filter(|text| !text.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&text)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.level));
    for directive in defaults(&text) {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let _ = JSON.set(config.format == LogFormat::Json);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let colour = !journald && std::io::stderr().is_terminal() && !no_color();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match (config.format, journald) {
        (LogFormat::Json, true) => builder
            .fmt_fields(format::JsonFields::new())
            .event_format(Priority(format().json().with_current_span(false)))
            .init(),
        (LogFormat::Json, false) => builder.json().with_current_span(false).init(),
        (LogFormat::Text, true) => builder
            .fmt_fields(Logfmt)
            .event_format(Priority(format().without_time().with_ansi(false)))
            .init(),
        (LogFormat::Text, false) => builder.fmt_fields(Logfmt).init(),
    }
}

/// The directives added to a filter `text` that does not name their
/// targets.
fn defaults(text: &str) -> Vec<String> {
    let names = |target: &str| {
        text.split(',').any(|directive| {
            let directive = directive.trim();
            directive == target
                || directive.starts_with(&format!("{target}="))
                || directive.starts_with(&format!("{target}::"))
                || directive.starts_with(&format!("{target}["))
        })
    };
    let mut directives = Vec::new();
    if !names("tokio_cron_scheduler") {
        directives.push("tokio_cron_scheduler=warn".to_owned());
    }
    directives.extend(
        FOLDED
            .iter()
            .filter(|target| !names(target))
            .map(|target| format!("{target}=off")),
    );
    directives
}

fn format() -> format::Format<format::Full, time::SystemTime> {
    format::Format::default()
}

/// `NO_COLOR` set to anything but the empty string (no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes each line of another format with its priority.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(context, writer, event)
    }
}

/// A text line's fields as logfmt writes them, whatever the call site
/// wrote (`%error`, `error = format!(..)`, `?wait`): the message first, as
/// it is, then `key=value`, the value in double quotes (with Rust's escapes)
/// when it is empty or holds a space, a quote, an `=` or a control
/// character, and bare otherwise.
struct Logfmt;

impl<'writer> FormatFields<'writer> for Logfmt {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = LogfmtFields {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LogfmtFields<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    result: std::fmt::Result,
    first: bool,
}

impl LogfmtFields<'_, '_> {
    fn write(&mut self, name: &str, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value}")
        } else if logfmt_bare(value) {
            write!(self.writer, "{separator}{name}={value}")
        } else {
            write!(self.writer, "{separator}{name}={value:?}")
        };
    }
}

/// Whether a logfmt value may stand without quotes.
fn logfmt_bare(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

impl tracing::field::Visit for LogfmtFields<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.write(field.name(), value);
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.write(field.name(), &error_chain(value));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field.name(), &format!("{value:?}"));
    }
}

/// An error and what it says it came from, `: `-separated ("error
/// connecting to server: Connection refused (os error 111)"), for an error
/// that is not an `anyhow::Error` (whose `{:#}` does this).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether logs are JSON, once [`init`] chose.
static JSON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Reports a command's fatal error once, the same way for every command: one
/// line on stderr, `price-alertd: <error>` (under journald with the error
/// priority). Only where the logs are JSON, for a shipper that reads JSON,
/// is it a log event instead.
pub fn fatal(error: &anyhow::Error) {
    if JSON.get() == Some(&true) {
        tracing::error!(error = format!("{error:#}"), "price-alertd failed");
        return;
    }
    let priority = if std::env::var_os("JOURNAL_STREAM").is_some() {
        format!("<{}>", priority(Level::ERROR))
    } else {
        String::new()
    };
    eprintln!("{priority}price-alertd: {error:#}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_are_logfmt_however_they_were_recorded() {
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(Logfmt)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other("disk full");
            tracing::error!(%error, "tick failed");
            tracing::warn!(error = format!("{}", error), "tick failed");
            tracing::info!(
                job = "evaluate",
                count = 3,
                empty = "",
                quoted = "a\"b",
                "ran"
            );
        });
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "ERROR tick failed error=\"disk full\"",
                " WARN tick failed error=\"disk full\"",
                " INFO ran job=evaluate count=3 empty=\"\" quoted=\"a\\\"b\"",
            ]
        );
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn libraries_the_daemon_reports_for_stay_quiet_unless_named() {
        let added = defaults("info");
        assert!(added.contains(&"tokio_cron_scheduler=warn".to_owned()));
        assert!(added.contains(&"rustls_platform_verifier=off".to_owned()));
        assert!(added.contains(&"rustls=off".to_owned()));
        let added = defaults("price_alertd=debug,rustls=trace,tokio_cron_scheduler=info");
        assert!(
            !added
                .iter()
                .any(|directive| directive.starts_with("rustls="))
        );
        assert!(
            !added
                .iter()
                .any(|directive| directive.starts_with("tokio_cron"))
        );
        assert!(added.contains(&"rustls_platform_verifier=off".to_owned()));
    }
}
