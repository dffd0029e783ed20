//! The daemon: it opens the store, schedules the jobs, runs until a signal,
//! reloads, drains and stops (`running`); its life is one loop over
//! `LoopEvent`.

mod deadlines;
mod deliverer;
mod events;
mod heartbeat;
mod job_report;
mod jobs;
mod reacting;
mod records;
mod reload;
mod run_job;
mod runner;
mod running;
mod status;

pub use job_report::JobReport;
pub use run_job::{RunJobSummary, run_job};

use crate::config::{Config, ConfigOrigin};

use running::Daemon;

/// Runs the daemon until SIGTERM or SIGINT: it starts, serves its events,
/// then stops (running jobs finish, the outbox drains for up to
/// `webhook.drain_timeout`).
pub async fn run(source: ConfigOrigin, config: Config) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(source, config).await?;
    daemon.serve().await;
    daemon.stop().await
}
