//! `status`: each job's last run and next fire time, whether it reacts to
//! changes and on which member, the outbox, and the daemons sharing the
//! database.

use std::io::Write;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::{self, Config, JobConfig};
use crate::freshness::Freshness;
use crate::membership::{self, Leases};
use crate::store::{clock, cluster, outbox, quotes, runs};

use super::open::connect_to_read;
use super::output::rfc3339;
use super::table::{Align, Table};

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
    /// The last run's summary, each count under its name (`triggered`,
    /// `delivered`, ...), as `run-job` prints it.
    detail: Option<serde_json::Map<String, serde_json::Value>>,
    /// The same summary, as `run-job` prints it (for the text).
    #[serde(skip)]
    summary: Option<String>,
    /// The next fire time, for a configured job while a daemon runs.
    next_run_at: Option<String>,
    /// Whether it also runs as soon as what it covers changes (`on_change`).
    on_change: bool,
    /// The daemon that reacts to its changes, while its lease runs.
    reacting_member: Option<String>,
    /// The daemon that ran it last (none for `run-job`).
    ran_by: Option<String>,
    /// For an evaluate job, how fresh the quotes of its tickers with
    /// enabled alerts are.
    quotes: Option<Freshness>,
}

impl JobStatus {
    fn of(
        name: &str,
        run: Option<&runs::Run>,
        configured: Option<&JobConfig>,
        next_run_at: Option<String>,
    ) -> JobStatus {
        JobStatus {
            job: name.to_owned(),
            configured: configured.is_some(),
            on_change: configured.is_some_and(JobConfig::reacts),
            reacting_member: None,
            result: run.map_or_else(|| "never".to_owned(), |run| run.result.clone()),
            started_at: run.map(|run| rfc3339(&run.started_at)),
            duration_ms: run.map(|run| run.duration_ms),
            last_success_at: run.and_then(|run| run.last_success_at.as_deref().map(rfc3339)),
            detail: run.map(|run| summary_fields(&run.detail)),
            summary: run.map(|run| run.detail.clone()),
            next_run_at,
            ran_by: run.and_then(|run| run.member.clone()),
            quotes: None,
        }
    }
}

/// Per job: its last run, how long it took and its result, and its next fire
/// time; the outbox's pending and dead counts.
pub fn status(config: &Config, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let status = read(config)?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&status)?)?;
        return Ok(());
    }
    writeln!(out, "database: {}", status.database)?;
    write_jobs(&status, config, out)?;
    writeln!(
        out,
        "outbox: {} pending, {} dead",
        status.outbox_pending, status.outbox_dead
    )?;
    write_members(&status.members, out)
}

/// What `status` shows, read from the database: the recorded runs of the
/// configured jobs (and of jobs no longer configured), the backlog, and the
/// members. A next fire time only while a member is alive: fire times are a
/// running daemon's.
fn read(config: &Config) -> anyhow::Result<StatusReport> {
    let mut connection = connect_to_read(config)?;
    let recorded = runs::list(&mut connection).context("reading job runs")?;
    let (outbox_pending, outbox_dead) =
        outbox::backlog(&mut connection).context("counting the outbox")?;
    let members: Vec<MemberStatus> = cluster::members(&mut connection)
        .context("reading the members")?
        .into_iter()
        .map(|member| MemberStatus {
            alive: membership::beating(&member),
            member,
        })
        .collect();
    let reactors = cluster::reactors(&mut connection).context("reading the reacting members")?;
    let alerted = quotes::alerted(&mut connection).context("reading the quotes")?;
    let db_now = clock::now(&mut connection).context("reading the database's clock")?;
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
            let mut status = JobStatus::of(&job.name, run, Some(job), next);
            status.quotes = job
                .scope()
                .map(|scope| Freshness::of(&alerted, scope, config.prices.max_age, db_now));
            status.reacting_member = reactors
                .iter()
                .find(|(reacting, _)| *reacting == job.name)
                .map(|(_, member)| member.clone());
            status
        })
        .collect();
    jobs.extend(
        recorded
            .iter()
            .filter(|run| !config.jobs.iter().any(|job| job.name == run.job))
            .map(|run| JobStatus::of(&run.job, Some(run), None, None)),
    );
    Ok(StatusReport {
        database: config.database.describe(),
        jobs,
        outbox_pending,
        outbox_dead,
        members,
    })
}

/// The jobs: a table of their runs; then each job's other facts, its last
/// run's summary and its quotes, each line within [`WIDTH`].
fn write_jobs(status: &StatusReport, config: &Config, out: &mut impl Write) -> anyhow::Result<()> {
    let running = status.members.iter().any(|member| member.alive);
    let mut table = Table::new(&[
        ("JOB", Align::Left),
        ("RESULT", Align::Left),
        ("LAST RUN", Align::Left),
        ("TOOK (ms)", Align::Right),
        ("NEXT RUN", Align::Left),
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
            job.result.clone(),
            job.started_at.clone().unwrap_or_else(|| "never".to_owned()),
            job.duration_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            next,
        ]);
    }
    table.write("", out)?;
    for job in &status.jobs {
        let mut facts = Vec::new();
        match (job.on_change, &job.reacting_member) {
            (true, Some(member)) => facts.push(format!("reacts to changes, on {member}")),
            (true, None) => facts.push("reacts to changes".to_owned()),
            (false, _) => facts.push("on its schedule".to_owned()),
        }
        if let Some(success) = &job.last_success_at {
            facts.push(format!("last success {success}"));
        }
        if let Some(member) = &job.ran_by {
            facts.push(format!("ran by {member}"));
        }
        write_wrapped(&format!("{}:", job.job), &facts.join("; "), out)?;
        if let Some(summary) = &job.summary {
            write_wrapped(" ", summary, out)?;
        }
        if let Some(quotes) = &job.quotes {
            write_wrapped(" ", &quotes_line(quotes, config), out)?;
        }
    }
    Ok(())
}

/// The widest line `status` writes.
const WIDTH: usize = 100;

/// `text` after `head`, wrapped at spaces within [`WIDTH`], the lines
/// after the first indented by two (a word longer than a line stands
/// alone).
fn write_wrapped(head: &str, text: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let mut line = head.to_owned();
    let mut words = 0;
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        if words > 0 && line.chars().count() + 1 + word.chars().count() > WIDTH {
            writeln!(out, "{line}")?;
            line = " ".to_owned();
            words = 0;
        }
        line.push(' ');
        line.push_str(word);
        words += 1;
    }
    if words > 0 {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A run's summary (`triggered=2 delivered=2 ...`) as named values: a
/// number where it is one.
fn summary_fields(summary: &str) -> serde_json::Map<String, serde_json::Value> {
    summary
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| {
            let value = value
                .parse::<i64>()
                .map(serde_json::Value::from)
                .or_else(|_| value.parse::<f64>().map(serde_json::Value::from))
                .unwrap_or_else(|_| serde_json::Value::from(value));
            (key.to_owned(), value)
        })
        .collect()
}

/// How fresh a job's quotes are, in a line.
fn quotes_line(quotes: &Freshness, config: &Config) -> String {
    let age = |age: Option<f64>| {
        age.map_or_else(
            || "-".to_owned(),
            |age| config::show_duration(std::time::Duration::from_secs(age as u64)),
        )
    };
    format!(
        "quotes: {} tickers with alerts; newest {} old, oldest {}; {} stale, {} without a quote (max age {})",
        quotes.tickers,
        age(quotes.newest_age_seconds),
        age(quotes.oldest_age_seconds),
        quotes.stale,
        quotes.missing,
        config::show_duration(config.prices.max_age)
    )
}

/// The members, a line each, or that none runs.
fn write_members(members: &[MemberStatus], out: &mut impl Write) -> anyhow::Result<()> {
    if members.is_empty() {
        writeln!(out, "members: none running")?;
        return Ok(());
    }
    writeln!(out, "members:")?;
    for MemberStatus { member, alive } in members {
        let state = if *alive {
            "alive".to_owned()
        } else {
            format!(
                "presumed dead (no heartbeat for over {} s)",
                Leases::in_force().fire.as_secs()
            )
        };
        write_wrapped(
            &format!("  {}", member.member),
            &format!(
                "{state}: heartbeat {:.1} s ago ({}); version {}, host {}, pid {}, started {}",
                member.heartbeat_age_ms as f64 / 1000.0,
                member.heartbeat_at,
                member.version,
                member.host,
                member.pid,
                member.started_at
            ),
            out,
        )?;
    }
    Ok(())
}
