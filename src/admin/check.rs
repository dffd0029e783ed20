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
/// as `run` will open it), the webhook, the quote source, the metrics
/// address and each job's next fire times; its warnings to `err`. The report
/// is written whatever the checks find; then it fails as `run` would if
/// `run` could not use the database or the metrics address (the database's
/// failure first). A metrics address that a running price-alertd holds is
/// no failure: a restart hands it over.
pub fn check_config(
    origin: &ConfigOrigin,
    config: &Config,
    checks: Checks,
    from: DateTime<Utc>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let found = Found::check(config, checks);
    for warning in &config.warnings {
        writeln!(
            err,
            "price-alertd: {}:{warning} (a warning)",
            origin.describe()
        )?;
    }
    let verdict = if found.failure().is_some() {
        "valid, but run would fail (below)"
    } else {
        "ok"
    };
    writeln!(out, "{}: {verdict}", origin.describe())?;
    write_settings(config, &found, out)?;
    write_jobs(config, from, out)?;
    match found.into_failure() {
        Some(error) => Err(error.context(origin.describe())),
        None => Ok(()),
    }
}

/// What the checks `run` makes at its start found.
struct Found {
    /// The database as `run` opens it, described, or why it cannot be.
    database: anyhow::Result<String>,
    /// The metrics address, if one is set.
    metrics: Option<anyhow::Result<metrics::Listen>>,
}

impl Found {
    fn check(config: &Config, checks: Checks) -> Found {
        match checks {
            Checks::Start => Found {
                database: store::check(&config.database),
                metrics: config.metrics.listen.map(metrics::check_listen),
            },
            Checks::Reload => Found {
                database: Ok("not checked: a reload keeps the running database".to_owned()),
                metrics: None,
            },
        }
    }

    fn failure(&self) -> Option<&anyhow::Error> {
        let metrics = self.metrics.as_ref().and_then(|found| found.as_ref().err());
        self.database.as_ref().err().or(metrics)
    }

    fn into_failure(self) -> Option<anyhow::Error> {
        let metrics = self.metrics.and_then(Result::err);
        self.database.err().or(metrics)
    }
}

/// The database, the webhook, the threads, the quote source and metrics.
fn write_settings(config: &Config, found: &Found, out: &mut impl Write) -> anyhow::Result<()> {
    let database = match &found.database {
        Ok(database) => database.clone(),
        Err(_) => "run cannot use it: see below".to_owned(),
    };
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
        let how = match &found.metrics {
            Some(Ok(metrics::Listen::Free)) => "free",
            Some(Ok(metrics::Listen::HeldByTheDaemon)) => "served by the running price-alertd",
            Some(Err(_)) => "run cannot listen there: see below",
            None => "not checked: a reload keeps the running endpoint",
        };
        writeln!(out, "metrics   http://{listen}/metrics ({how})")?;
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
