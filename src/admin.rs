//! Operators' commands on the database: alerts, quotes, the outbox, status.
//! They open the store like the daemon does and print for a terminal or, with
//! `--json`, for scripts.

use std::io::Write;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::Config;
use crate::evaluate::Condition;
use crate::membership::FIRE_LEASE;
use crate::store::{self, alerts, cluster, outbox, runs};

/// Opens the database for a command that only reads: never created, never
/// migrated. (Its errors name the database; `status` shows it.)
fn connect_to_read(config: &Config) -> anyhow::Result<store::Connection> {
    store::open_read_only(&config.database)
}

/// Opens (and migrates, if this version is newer) the existing database for a
/// command that writes.
fn connect(config: &Config) -> anyhow::Result<store::Connection> {
    store::open_existing(&config.database)
}

/// How a column lines its cells up.
#[derive(Clone, Copy)]
enum Align {
    Left,
    /// Numbers.
    Right,
}

/// A table for a terminal: each column as wide as its widest cell, so that
/// no value pushes the rest of its row under the wrong heading; the last
/// column is not padded.
struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    fn write(&self, indent: &str, out: &mut impl Write) -> std::io::Result<()> {
        let headings: Vec<String> = self
            .columns
            .iter()
            .map(|(heading, _)| heading.to_string())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|at| {
                std::iter::once(&headings)
                    .chain(&self.rows)
                    .map(|row| row[at].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&headings).chain(&self.rows) {
            let mut line = indent.to_owned();
            for (at, cell) in row.iter().enumerate() {
                let pad = " ".repeat(widths[at] - cell.chars().count());
                match self.columns[at].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
                line.push_str("  ");
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Prints up to `limit` undelivered events (or only dead letters), oldest first.
pub fn outbox_list(
    config: &Config,
    filter: outbox::OutboxFilter,
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
    let mut table = Table::new(&[
        ("EVENT ID", Align::Left),
        ("ALERT", Align::Right),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("CREATED", Align::Left),
        ("NEXT ATTEMPT", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for entry in entries {
        table.row(vec![
            entry.event_id,
            entry.alert_id.to_string(),
            entry.state,
            entry.attempts.to_string(),
            entry.created_at,
            entry.next_attempt_at.unwrap_or_else(|| "-".to_owned()),
            entry.last_error.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
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
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| !replayed.contains(id))
                .map(String::as_str)
                .collect();
            anyhow::ensure!(
                missing.is_empty(),
                "not replayed (unknown, or already delivered): {}",
                missing.join(", ")
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
    filter: alerts::AlertFilter,
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
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("TICKER", Align::Left),
        ("CONDITION", Align::Left),
        ("TARGET", Align::Right),
        ("REFERENCE", Align::Right),
        ("STATE", Align::Left),
        ("COOLDOWN", Align::Left),
        ("TRIGGERED AT", Align::Left),
        ("AT PRICE", Align::Right),
        ("NOTE", Align::Left),
    ]);
    for entry in entries {
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
        table.row(vec![
            entry.id.to_string(),
            entry.ticker,
            entry.condition,
            number(entry.target_price),
            number(entry.reference_price),
            state.to_owned(),
            entry
                .cooldown
                .as_deref()
                .map(str::trim)
                .filter(|cooldown| !cooldown.is_empty())
                .unwrap_or("-")
                .to_owned(),
            entry.triggered_at.unwrap_or_else(|| "-".to_owned()),
            number(entry.triggered_price),
            entry
                .note
                .filter(|note| !note.is_empty())
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
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
    let mut table = Table::new(&[
        ("TICKER", Align::Left),
        ("PRICE", Align::Right),
        ("UPDATED AT", Align::Left),
    ]);
    for quote in quotes {
        table.row(vec![quote.ticker, number(quote.price), quote.updated_at]);
    }
    table.write("", out)?;
    Ok(())
}

#[derive(serde::Serialize)]
struct StatusReport {
    /// The database, as it is connected to.
    database: String,
    jobs: Vec<JobStatus>,
    outbox_pending: u64,
    outbox_dead: u64,
    /// The daemons sharing the database that beat within the last day.
    members: Vec<MemberStatus>,
}

/// A daemon sharing the database, and whether it is presumed alive: its
/// last heartbeat is within the fire-time lease (after which the others
/// take over its work).
#[derive(serde::Serialize)]
struct MemberStatus {
    #[serde(flatten)]
    member: cluster::Member,
    alive: bool,
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
    /// The next fire time, for a configured job while a daemon runs.
    next_run_at: Option<String>,
    /// The daemon that ran it last (none for `run-job`).
    ran_by: Option<String>,
}

impl JobStatus {
    fn of(
        name: &str,
        run: Option<&runs::Run>,
        configured: bool,
        next_run_at: Option<String>,
    ) -> JobStatus {
        JobStatus {
            job: name.to_owned(),
            configured,
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
    let members: Vec<MemberStatus> = cluster::members(&mut connection)
        .context("reading the members")?
        .into_iter()
        .map(|member| MemberStatus {
            alive: member.heartbeat_age_ms <= FIRE_LEASE.as_millis() as i64,
            member,
        })
        .collect();
    // Fire times are a running daemon's: with none beating, none is due.
    let running = members.iter().any(|member| member.alive);
    let now = Utc::now();
    let mut jobs: Vec<JobStatus> = config
        .jobs
        .iter()
        .map(|job| {
            let next = running
                .then(|| job.schedule.next_after(now).map(crate::store::timestamp))
                .flatten();
            let run = recorded.iter().find(|run| run.job == job.name);
            JobStatus::of(&job.name, run, true, next)
        })
        .collect();
    jobs.extend(
        recorded
            .iter()
            .filter(|run| !config.jobs.iter().any(|job| job.name == run.job))
            .map(|run| JobStatus::of(&run.job, Some(run), false, None)),
    );
    let status = StatusReport {
        database: config.database.describe(),
        jobs,
        outbox_pending,
        outbox_dead,
        members,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&status)?)?;
        return Ok(());
    }
    writeln!(out, "database: {}", status.database)?;
    let mut table = Table::new(&[
        ("JOB", Align::Left),
        ("LAST RUN", Align::Left),
        ("TOOK (ms)", Align::Right),
        ("RESULT", Align::Left),
        ("LAST SUCCESS", Align::Left),
        ("NEXT RUN", Align::Left),
        ("RAN BY", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for job in &status.jobs {
        let next = match (&job.next_run_at, job.configured, running) {
            (Some(next), ..) => next.clone(),
            (None, false, _) => "(not configured)".to_owned(),
            (None, true, false) => "- (no daemon running)".to_owned(),
            (None, true, true) => "-".to_owned(),
        };
        table.row(vec![
            job.job.clone(),
            job.started_at.clone().unwrap_or_else(|| "never".to_owned()),
            job.duration_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            job.result.clone(),
            job.last_success_at
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            next,
            job.ran_by.clone().unwrap_or_else(|| "-".to_owned()),
            job.detail.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table.write("", out)?;
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
    let mut table = Table::new(&[
        ("MEMBER", Align::Left),
        ("HOST", Align::Left),
        ("PID", Align::Right),
        ("VERSION", Align::Left),
        ("STARTED", Align::Left),
        ("LAST HEARTBEAT", Align::Left),
        ("STATE", Align::Left),
    ]);
    for MemberStatus { member, alive } in &status.members {
        table.row(vec![
            member.member.clone(),
            member.host.clone(),
            member.pid.to_string(),
            member.version.clone(),
            member.started_at.clone(),
            format!(
                "{} ({:.1} s ago)",
                member.heartbeat_at,
                member.heartbeat_age_ms as f64 / 1000.0
            ),
            if *alive {
                "alive".to_owned()
            } else {
                format!(
                    "presumed dead (no heartbeat for over {} s)",
                    FIRE_LEASE.as_secs()
                )
            },
        ]);
    }
    table.write("  ", out)?;
    Ok(())
}
