//! `run-job`: one job now, then delivery for up to the drain time, and the
//! summary line.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::deliver::{self, Handoff, Totals, Webhook};
use crate::evaluate::TickReport;

use super::deliverer::lease_owner;
use super::job_report::{JobReport, committed};
use super::runner::{Runner, RunsFor};

/// What `run-job` did.
#[derive(Debug)]
pub struct RunJobSummary {
    pub job: String,
    pub report: anyhow::Result<JobReport>,
    pub delivery: Totals,
    pub delivery_time: std::time::Duration,
    pub pending: u64,
    pub dead: u64,
}

impl RunJobSummary {
    /// One line of `key=value` pairs: the job and its result, the tick's
    /// summary (a purge's is empty but for its time), then the delivery's.
    pub fn line(&self) -> String {
        let (result, tick, purged) = match &self.report {
            Ok(JobReport::Evaluated(report)) => ("ok", report.clone(), 0),
            Ok(JobReport::Purged { deleted, duration }) => {
                let tick = TickReport {
                    duration: *duration,
                    ..TickReport::default()
                };
                ("ok", tick, *deleted)
            }
            Err(error) => ("failed", committed(error).cloned().unwrap_or_default(), 0),
        };
        format!(
            "job={} result={result} {} purged={purged} delivered={} failed={} dead={} pending={} dead_total={} delivery_ms={} peak_rss_kib={}",
            self.job,
            tick.summary(),
            self.delivery.delivered,
            self.delivery.failed,
            self.delivery.dead,
            self.pending,
            self.dead,
            self.delivery_time.as_millis(),
            peak_rss_kib().unwrap_or(0)
        )
    }
}

/// This process's peak resident memory (Linux: VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs one job now, then delivers what is pending for up to the drain time.
pub async fn run_job(config: Config, name: &str) -> anyhow::Result<RunJobSummary> {
    let Some(job) = config.jobs.iter().find(|job| job.name == name) else {
        let names: Vec<&str> = config.jobs.iter().map(|job| job.name.as_str()).collect();
        anyhow::bail!("no job is named {name:?}; the configuration has {names:?}");
    };
    let runner = Runner::open(&config, RunsFor::OneRun).await?;
    let report = runner.run_recorded(name, job.kind.clone()).await;
    if let Err(error) = &report {
        tracing::error!(job = name, error = format!("{error:#}"), "job failed");
    }
    let (_webhook_sender, webhooks) = watch::channel(Webhook::new(&config.webhook)?);
    let (_stop_sender, stop) = watch::channel(Some(Instant::now() + config.webhook.drain_timeout));
    let delivering = std::time::Instant::now();
    let delivery = deliver::run(
        runner.pool.clone(),
        webhooks,
        Arc::new(Handoff::new(lease_owner(), Arc::new(Notify::new()))),
        stop,
        runner.metrics.clone(),
    )
    .await;
    let delivery_time = delivering.elapsed();
    let (pending, dead) = runner.backlog().await?;
    Ok(RunJobSummary {
        job: name.to_owned(),
        report,
        delivery,
        delivery_time,
        pending,
        dead,
    })
}
