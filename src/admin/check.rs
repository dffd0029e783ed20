//! `check-config`: what a valid configuration means, checked as `run` will
//! use it (the database, the metrics address), with each job's next fire
//! times.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::{self, Config, ConfigOrigin, JobKind, PriceSource};
use crate::{metrics, store};

/// What `check-config` checks besides the file.
#[derive(Debug, Clone, Copy)]
pub enum Checks {
    /// As `run` starts: the database can be used and the metrics address is free.
    Start,
    /// As a reload applies the file: nothing the running daemon holds.
    Reload,
}

/// Writes what a valid configuration means to `out`: the database (checked
/// as `run` will open it), the webhook, the quote source and each job's next
/// fire times; its warnings to `err`. Fails as `run` would if `run` could
/// not use the database or the metrics address.
pub fn check_config(
    origin: &ConfigOrigin,
    config: &Config,
    checks: Checks,
    from: DateTime<Utc>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let database = check(config, checks).map_err(|error| error.context(origin.describe()))?;
    for warning in &config.warnings {
        writeln!(
            err,
            "price-alertd: {}:{warning} (a warning)",
            origin.describe()
        )?;
    }
    writeln!(out, "{}: ok", origin.describe())?;
    write_settings(config, &database, out)?;
    write_jobs(config, from, out)
}

/// What `checks` asks for: the database as `run` opens it (described), and
/// the metrics address.
fn check(config: &Config, checks: Checks) -> anyhow::Result<String> {
    match checks {
        Checks::Start => {
            let database = store::check(&config.database)?;
            if let Some(listen) = config.metrics.listen {
                metrics::check_listen(listen)?;
            }
            Ok(database)
        }
        Checks::Reload => Ok("not checked: a reload keeps the running database".to_owned()),
    }
}

/// The database, the webhook, the threads, the quote source and metrics.
fn write_settings(config: &Config, database: &str, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(out, "database  {} ({database})", config.database.describe())?;
    if let config::EngineChoice::Postgres(postgres) = &config.database.engine
        && let Some(options) = &postgres.dropped_options
    {
        writeln!(
            out,
            "          the URL's options={options:?} are not used: price-alertd sets the session's options (lock_timeout)"
        )?;
    }
    let signing = match config.webhook.secrets.len() {
        0 => "unsigned".to_owned(),
        n => format!("signed with {n} secret{}", if n == 1 { "" } else { "s" }),
    };
    writeln!(
        out,
        "webhook   {} ({signing})",
        config.webhook.url.display()
    )?;
    if config.webhook.url.per_user() {
        let without = match &config.webhook.url_without_user_id {
            Some(url) => format!("to {}", config::display_url(url)),
            None => "a dead letter".to_owned(),
        };
        writeln!(
            out,
            "          each event to its user's URL, {{user_id}} percent-encoded; an alert without a user_id: {without}"
        )?;
    }
    let (connections, readers) =
        store::footprint(&config.database, config.evaluator.threads as u32);
    writeln!(
        out,
        "threads   {} (a tick reads with {readers} at once; at most {connections} database connections)",
        config.evaluator.threads
    )?;
    let max_age = config::show_duration(config.prices.max_age);
    match &config.prices.source {
        PriceSource::Table => writeln!(out, "prices    the quotes table (max age {max_age})")?,
        PriceSource::Http(http) => writeln!(
            out,
            "prices    GET {} in batches of {} (max age {max_age})",
            config::display_url(&http.url),
            http.batch_size,
        )?,
    }
    if let Some(listen) = config.metrics.listen {
        writeln!(out, "metrics   http://{listen}/metrics")?;
    }
    Ok(())
}

/// Each job, and its next three fire times after `from`, in UTC and in its
/// zone.
fn write_jobs(config: &Config, from: DateTime<Utc>, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "fire times after {}",
        from.to_rfc3339_opts(SecondsFormat::Secs, true)
    )?;
    for job in &config.jobs {
        let kind = match &job.kind {
            JobKind::Evaluate {
                scope,
                on_change: false,
            } => format!("evaluate {}", scope.describe()),
            JobKind::Evaluate {
                scope,
                on_change: true,
            } => format!(
                "evaluate {}; reacts to their changes at once",
                scope.describe()
            ),
            JobKind::Purge { keep } => format!(
                "purge delivered events older than {}",
                config::show_duration(*keep)
            ),
        };
        let zone = job.schedule.zone();
        writeln!(
            out,
            "job {:?}: {kind}; schedule {:?} in {zone}",
            job.name,
            job.schedule.expression()
        )?;
        for at in job.schedule.upcoming(from, 3) {
            let utc = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            if zone == chrono_tz::UTC {
                writeln!(out, "  next {utc}")?;
            } else {
                writeln!(
                    out,
                    "  next {utc}  ({} {zone})",
                    at.with_timezone(&zone).format("%Y-%m-%dT%H:%M:%S%:z")
                )?;
            }
        }
    }
    Ok(())
}
