//! `check-config`: what a valid configuration means, checked as `run` will
//! use it (the database, the metrics and stream addresses), with each job's
//! next fire times.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::{self, Config, ConfigOrigin, JobKind, PriceSource};
use crate::serving::{self, Listen};
use crate::{metrics, store, stream};

/// What `check-config` checks besides the file.
#[derive(Debug, Clone, Copy)]
pub enum Checks {
    /// As `run` starts: the database can be used and the addresses it
    /// listens on are free.
    Start,
    /// As a reload applies the file: nothing the running daemon holds.
    Reload,
}

/// Writes what a valid configuration means to `out`: the database (checked
/// as `run` will open it), the webhook, the quote source, the metrics and
/// stream addresses and each job's next fire times; its warnings to `err`.
/// The report is written whatever the checks find; then it fails as `run`
/// would if `run` could not use the database or an address (the database's
/// failure first). An address that a running price-alertd holds is no
/// failure: a restart hands it over.
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
    metrics: Option<anyhow::Result<Listen>>,
    /// The stream origin's address, if one is set.
    stream: Option<anyhow::Result<Listen>>,
}

impl Found {
    fn check(config: &Config, checks: Checks) -> Found {
        match checks {
            Checks::Start => Found {
                database: store::check(&config.database),
                metrics: (config.metrics.listen)
                    .map(|listen| serving::check(listen, metrics::METRICS)),
                stream: (config.stream.as_ref())
                    .map(|stream| serving::check(stream.listen, stream::STREAM)),
            },
            Checks::Reload => Found {
                database: Ok("not checked: a reload keeps the running database".to_owned()),
                metrics: None,
                stream: None,
            },
        }
    }

    fn failure(&self) -> Option<&anyhow::Error> {
        fn failed(found: &Option<anyhow::Result<Listen>>) -> Option<&anyhow::Error> {
            found.as_ref().and_then(|found| found.as_ref().err())
        }
        (self.database.as_ref().err())
            .or(failed(&self.metrics))
            .or(failed(&self.stream))
    }

    fn into_failure(self) -> Option<anyhow::Error> {
        (self.database.err())
            .or(self.metrics.and_then(Result::err))
            .or(self.stream.and_then(Result::err))
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
        let how = listening(&found.metrics);
        writeln!(out, "metrics   http://{listen}/metrics ({how})")?;
    }
    if let Some(stream) = &config.stream {
        let how = listening(&found.stream);
        writeln!(
            out,
            "stream    http://{}/ for Pushpin ({how}); who a browser is: GET {}",
            stream.listen,
            config::display_url(&stream.auth_url)
        )?;
    }
    Ok(())
}

/// What the check of an address found, as the report says it.
fn listening(found: &Option<anyhow::Result<Listen>>) -> &'static str {
    match found {
        Some(Ok(Listen::Free)) => "free",
        Some(Ok(Listen::HeldByTheDaemon)) => "served by the running price-alertd",
        Some(Err(_)) => "run cannot listen there: see below",
        None => "not checked: a reload keeps the running listener",
    }
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
