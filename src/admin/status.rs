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
    detail: Option<String>,
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
            detail: run.map(|run| run.detail.clone()),
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
    write_jobs(&status, out)?;
    write_quotes(&status.jobs, config, out)?;
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

/// The jobs' table.
fn write_jobs(status: &StatusReport, out: &mut impl Write) -> anyhow::Result<()> {
    let running = status.members.iter().any(|member| member.alive);
    let mut table = Table::new(&[
        ("JOB", Align::Left),
        ("LAST RUN", Align::Left),
        ("TOOK (ms)", Align::Right),
        ("RESULT", Align::Left),
        ("LAST SUCCESS", Align::Left),
        ("NEXT RUN", Align::Left),
        ("ON CHANGE", Align::Left),
        ("RAN BY", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
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
            or_dash(&job.last_success_at),
            next,
            match (job.on_change, &job.reacting_member) {
                (true, Some(member)) => format!("reacts ({member})"),
                (true, None) => "reacts".to_owned(),
                (false, _) => "-".to_owned(),
            },
            or_dash(&job.ran_by),
            or_dash(&job.detail),
        ]);
    }
    table.write("", out)?;
    Ok(())
}

/// How fresh each evaluate job's quotes are, a line each.
fn write_quotes(jobs: &[JobStatus], config: &Config, out: &mut impl Write) -> anyhow::Result<()> {
    let seconds = |age: Option<f64>| {
        age.map_or_else(
            || "-".to_owned(),
            |age| config::show_duration(std::time::Duration::from_secs(age as u64)),
        )
    };
    for job in jobs {
        let Some(quotes) = &job.quotes else {
            continue;
        };
        writeln!(
            out,
            "quotes of {}: {} tickers with alerts; newest {} old, oldest {}; {} stale, {} without a quote (max age {})",
            job.job,
            quotes.tickers,
            seconds(quotes.newest_age_seconds),
            seconds(quotes.oldest_age_seconds),
            quotes.stale,
            quotes.missing,
            config::show_duration(config.prices.max_age)
        )?;
    }
    Ok(())
}

/// The members' table, or that none runs.
fn write_members(members: &[MemberStatus], out: &mut impl Write) -> anyhow::Result<()> {
    if members.is_empty() {
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
    for MemberStatus { member, alive } in members {
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
                    Leases::in_force().fire.as_secs()
                )
            },
        ]);
    }
    table.write("  ", out)?;
    Ok(())
}
