//! Operators' commands on the database: alerts, quotes, the outbox, status.
//! They open the store like the daemon does and print for a terminal or, with
//! `--json`, for scripts.

use std::io::Write;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::Config;
use crate::evaluate::Condition;
use crate::store::{self, alerts, cluster, outbox, runs};

/// Opens the database for a command that only reads: never created, never
/// migrated. Says which database on stderr, so that an operator sees whether
/// it is the one the service uses.
fn connect_to_read(config: &Config) -> anyhow::Result<store::Connection> {
    announce(config);
    store::open_read_only(&config.database)
}

/// Opens (and migrates, if this version is newer) the existing database for a
/// command that writes.
fn connect(config: &Config) -> anyhow::Result<store::Connection> {
    announce(config);
    store::open_existing(&config.database)
}

fn announce(config: &Config) {
    eprintln!("database: {}", config.database.describe());
}

/// Prints up to `limit` undelivered events (or only dead letters), oldest first.
pub fn outbox_list(
    config: &Config,
    filter: outbox::Filter,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let entries = outbox::list(&mut connection, filter, limit).context("listing the outbox")?;
    let (pending, dead) = outbox::backlog(&mut connection).context("counting the outbox")?;
    if json {
        return print_json_lines(&entries, out);
    }
    writeln!(
        out,
        "{:<24} {:>10} {:<8} {:>8} {:<24} {:<20} LAST ERROR",
        "EVENT ID", "ALERT", "STATE", "ATTEMPTS", "CREATED", "NEXT ATTEMPT"
    )?;
    for entry in &entries {
        let next = entry.next_attempt_at.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{:<24} {:>10} {:<8} {:>8} {:<24} {:<20} {}",
            entry.event_id,
            entry.alert_id,
            entry.state,
            entry.attempts,
            entry.created_at,
            next,
            entry.last_error.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(out, "{pending} pending, {dead} dead")?;
    Ok(())
}

/// What to replay.
pub enum Replay {
    Events(Vec<String>),
    AllDead,
}

/// Puts events back on a fresh retry schedule, due now, with their ids and
/// bodies unchanged. A running daemon picks them up within seconds. Fails if a
/// named event does not exist or was delivered.
pub fn outbox_replay(config: &Config, what: Replay, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    let now = Utc::now().timestamp_millis();
    match what {
        Replay::AllDead => {
            let count =
                outbox::replay_all_dead(&mut connection, now).context("replaying dead letters")?;
            writeln!(
                out,
                "replayed {count} dead letter{}",
                if count == 1 { "" } else { "s" }
            )?;
        }
        Replay::Events(ids) => {
            let replayed =
                outbox::replay(&mut connection, &ids, now).context("replaying events")?;
            for id in &replayed {
                writeln!(out, "replayed {id}")?;
            }
            let missing: Vec<&String> = ids.iter().filter(|id| !replayed.contains(id)).collect();
            anyhow::ensure!(
                missing.is_empty(),
                "not replayed (unknown, or already delivered): {missing:?}"
            );
        }
    }
    Ok(())
}

/// Re-arms a triggered, expired or disabled alert: its next trigger carries a
/// new event id. Fails if there is no such alert or it is already armed.
pub fn alerts_rearm(config: &Config, id: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    anyhow::ensure!(
        store::alerts::rearm(&mut connection, id).context("re-arming the alert")?,
        "alert {id} does not exist or is already armed"
    );
    writeln!(out, "re-armed alert {id}")?;
    Ok(())
}

/// Prints alerts, newest first.
pub fn alerts_list(
    config: &Config,
    filter: alerts::Filter,
    ticker: Option<&str>,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let mut entries =
        alerts::list(&mut connection, filter, ticker, limit).context("listing alerts")?;
    // The application may write SQLite's own time format: show one format.
    for entry in &mut entries {
        for time in [
            &mut entry.triggered_at,
            &mut entry.expires_at,
            &mut entry.expired_at,
        ]
        .into_iter()
        .flatten()
        {
            *time = rfc3339(time);
        }
    }
    if json {
        return print_json_lines(&entries, out);
    }
    writeln!(
        out,
        "{:>8} {:<10} {:<16} {:>12} {:>10} {:<9} {:<8} {:<24} {:>12} NOTE",
        "ID",
        "TICKER",
        "CONDITION",
        "TARGET",
        "REFERENCE",
        "STATE",
        "COOLDOWN",
        "TRIGGERED AT",
        "AT PRICE"
    )?;
    for entry in &entries {
        let state = match (
            entry.enabled,
            &entry.rearm_at,
            &entry.triggered_at,
            &entry.expired_at,
        ) {
            (true, ..) => "armed",
            (false, Some(_), ..) => "cooling",
            (false, None, Some(_), _) => "triggered",
            (false, None, None, Some(_)) => "expired",
            (false, None, None, None) => "disabled",
        };
        writeln!(
            out,
            "{:>8} {:<10} {:<16} {:>12} {:>10} {:<9} {:<8} {:<24} {:>12} {}",
            entry.id,
            entry.ticker,
            entry.condition,
            number(entry.target_price),
            number(entry.reference_price),
            state,
            entry
                .cooldown
                .as_deref()
                .map(str::trim)
                .filter(|cooldown| !cooldown.is_empty())
                .unwrap_or("-"),
            entry.triggered_at.as_deref().unwrap_or("-"),
            number(entry.triggered_price),
            entry.note.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// A time as every `--json` output gives it: RFC 3339 in UTC (the database
/// may hold SQLite's `YYYY-MM-DD HH:MM:SS`); text that is not a time stays
/// as it is.
fn rfc3339(text: &str) -> String {
    crate::evaluate::parse_time(text).map_or_else(|| text.to_owned(), crate::store::timestamp)
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn print_json_lines<T: serde::Serialize>(items: &[T], out: &mut impl Write) -> anyhow::Result<()> {
    for item in items {
        writeln!(out, "{}", serde_json::to_string(item)?)?;
    }
    Ok(())
}

/// Adds an alert, checked as the evaluator would judge it; prints its id.
pub fn alerts_add(
    config: &Config,
    alert: &alerts::NewAlert<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let ticker = alert.ticker.trim();
    anyhow::ensure!(!ticker.is_empty(), "the ticker is empty");
    let condition = Condition::parse(alert.condition).with_context(|| {
        format!(
            "unknown condition {:?}; expected above, below, crossing_up, crossing_down, moving_up_pct or moving_down_pct",
            alert.condition
        )
    })?;
    anyhow::ensure!(
        alert.target_price.is_finite(),
        "the target is not a finite number"
    );
    if matches!(condition, Condition::MovingUpPct | Condition::MovingDownPct) {
        anyhow::ensure!(
            alert
                .reference_price
                .is_some_and(|reference| reference.is_finite() && reference > 0.0),
            "{} needs --reference, a positive price",
            alert.condition
        );
    }
    if let Some(expiry) = alert.expires_at {
        anyhow::ensure!(
            crate::evaluate::parse_time(expiry).is_some(),
            "--expires {expiry:?} is not an RFC 3339 time"
        );
    }
    if let Some(cooldown) = alert.cooldown {
        crate::evaluate::parse_cooldown(cooldown)
            .map_err(|reason| anyhow::anyhow!("--cooldown: {reason}"))?;
    }
    let mut connection = connect(config)?;
    let id = alerts::add(
        &mut connection,
        &alerts::NewAlert { ticker, ..*alert },
        &store::timestamp(Utc::now()),
    )
    .context("adding the alert")?;
    writeln!(out, "{id}")?;
    Ok(())
}

/// Disables an armed alert without an event.
pub fn alerts_disable(config: &Config, id: i64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect(config)?;
    anyhow::ensure!(
        alerts::disable(&mut connection, id).context("disabling the alert")?,
        "alert {id} does not exist, or is neither armed nor waiting out a cooldown"
    );
    writeln!(out, "disabled alert {id}")?;
    Ok(())
}

/// Sets how long a repeating alert waits after each trigger before it is
/// re-armed, or (`None`) makes it fire once.
pub fn alerts_cooldown(
    config: &Config,
    id: i64,
    cooldown: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cooldown = match cooldown {
        Some(text) => {
            crate::evaluate::parse_cooldown(text).map_err(|reason| anyhow::anyhow!(reason))?;
            Some(text.trim())
        }
        None => None,
    };
    let mut connection = connect(config)?;
    anyhow::ensure!(
        alerts::set_cooldown(&mut connection, id, cooldown).context("setting the cooldown")?,
        "alert {id} does not exist"
    );
    match cooldown {
        Some(cooldown) => writeln!(
            out,
            "alert {id} repeats, re-armed {cooldown} after each trigger"
        )?,
        None => writeln!(out, "alert {id} fires once")?,
    }
    Ok(())
}

/// Sets a quote, stamped now (for testing and manual operation).
pub fn quotes_set(
    config: &Config,
    ticker: &str,
    price: f64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    anyhow::ensure!(!ticker.trim().is_empty(), "the ticker is empty");
    anyhow::ensure!(
        price.is_finite() && price > 0.0,
        "the price must be a positive number"
    );
    let mut connection = connect(config)?;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    alerts::upsert_quotes(
        &mut connection,
        &[(ticker.trim().to_owned(), price, now.clone())],
    )
    .context("setting the quote")?;
    writeln!(out, "{} {price} at {now}", ticker.trim())?;
    Ok(())
}

#[derive(serde::Serialize)]
struct QuoteLine {
    ticker: String,
    price: Option<f64>,
    updated_at: String,
}

/// Prints every quote.
pub fn quotes_list(config: &Config, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let mut quotes: Vec<QuoteLine> = alerts::quotes(&mut connection)
        .context("reading quotes")?
        .into_iter()
        .map(|quote| QuoteLine {
            ticker: quote.ticker,
            price: quote.price,
            updated_at: rfc3339(&quote.updated_at),
        })
        .collect();
    quotes.sort_by(|a, b| a.ticker.cmp(&b.ticker));
    if json {
        return print_json_lines(&quotes, out);
    }
    writeln!(out, "{:<12} {:>14} UPDATED AT", "TICKER", "PRICE")?;
    for quote in &quotes {
        writeln!(
            out,
            "{:<12} {:>14} {}",
            quote.ticker,
            number(quote.price),
            quote.updated_at
        )?;
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Status {
    jobs: Vec<JobStatus>,
    outbox_pending: u64,
    outbox_dead: u64,
    /// The daemons sharing the database that beat within the last day.
    members: Vec<cluster::Member>,
}

/// One job as `status` shows it: every configured job, run or not, and any
/// job that ran but is no longer configured.
#[derive(serde::Serialize)]
struct JobStatus {
    job: String,
    configured: bool,
    /// `ok`, `failed`, or `never` (no recorded run).
    result: String,
    started_at: Option<String>,
    duration_ms: Option<i64>,
    last_success_at: Option<String>,
    detail: Option<String>,
    /// The next fire time, for a configured job.
    next_run_at: Option<String>,
    /// The daemon that ran it last (none for `run-job`).
    ran_by: Option<String>,
}

impl JobStatus {
    fn of(name: &str, run: Option<&runs::Run>, next_run_at: Option<String>) -> JobStatus {
        JobStatus {
            job: name.to_owned(),
            configured: next_run_at.is_some(),
            result: run.map_or_else(|| "never".to_owned(), |run| run.result.clone()),
            started_at: run.map(|run| rfc3339(&run.started_at)),
            duration_ms: run.map(|run| run.duration_ms),
            last_success_at: run.and_then(|run| run.last_success_at.as_deref().map(rfc3339)),
            detail: run.map(|run| run.detail.clone()),
            next_run_at,
            ran_by: run.and_then(|run| run.member.clone()),
        }
    }
}

/// Per job: its last run, how long it took and its result, and its next fire
/// time; the outbox's pending and dead counts.
pub fn status(config: &Config, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let mut connection = connect_to_read(config)?;
    let recorded = runs::list(&mut connection).context("reading job runs")?;
    let (outbox_pending, outbox_dead) =
        outbox::backlog(&mut connection).context("counting the outbox")?;
    let members = cluster::members(&mut connection).context("reading the members")?;
    let now = Utc::now();
    let mut jobs: Vec<JobStatus> = config
        .jobs
        .iter()
        .map(|job| {
            let next = job
                .schedule
                .next_after(now)
                .map(crate::store::timestamp)
                .unwrap_or_default();
            let run = recorded.iter().find(|run| run.job == job.name);
            JobStatus::of(&job.name, run, Some(next))
        })
        .collect();
    jobs.extend(
        recorded
            .iter()
            .filter(|run| !config.jobs.iter().any(|job| job.name == run.job))
            .map(|run| JobStatus::of(&run.job, Some(run), None)),
    );
    let status = Status {
        jobs,
        outbox_pending,
        outbox_dead,
        members,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&status)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16} {:<24} {:>10} {:<7} {:<24} {:<24} {:<28} DETAIL",
        "JOB", "LAST RUN", "TOOK (ms)", "RESULT", "LAST SUCCESS", "NEXT RUN", "RAN BY"
    )?;
    for job in &status.jobs {
        writeln!(
            out,
            "{:<16} {:<24} {:>10} {:<7} {:<24} {:<24} {:<28} {}",
            job.job,
            job.started_at.as_deref().unwrap_or("never"),
            job.duration_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            job.result,
            job.last_success_at.as_deref().unwrap_or("-"),
            job.next_run_at.as_deref().unwrap_or("(not configured)"),
            job.ran_by.as_deref().unwrap_or("-"),
            job.detail.as_deref().unwrap_or("-")
        )?;
    }
    writeln!(
        out,
        "outbox: {} pending, {} dead",
        status.outbox_pending, status.outbox_dead
    )?;
    if status.members.is_empty() {
        writeln!(out, "members: none running")?;
        return Ok(());
    }
    writeln!(out, "members:")?;
    writeln!(
        out,
        "  {:<28} {:<20} {:>8} {:<10} {:<24} LAST HEARTBEAT",
        "MEMBER", "HOST", "PID", "VERSION", "STARTED"
    )?;
    for member in &status.members {
        writeln!(
            out,
            "  {:<28} {:<20} {:>8} {:<10} {:<24} {} ({:.1} s ago)",
            member.member,
            member.host,
            member.pid,
            member.version,
            member.started_at,
            member.heartbeat_at,
            member.heartbeat_age_ms as f64 / 1000.0
        )?;
    }
    Ok(())
}
