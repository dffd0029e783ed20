//! What one run of a job did, and how a finished run is logged.

use crate::evaluate::{self, TickReport};
use crate::log_recurring;
use crate::recurring::Recurring;

/// What one run of a job did.
#[derive(Debug, Clone)]
pub enum JobReport {
    Evaluated(TickReport),
    Purged {
        deleted: u64,
        duration: std::time::Duration,
    },
}

impl JobReport {
    /// The run's `key=value` account, as `status` shows it (a tick's is
    /// [`TickReport::summary`]).
    pub fn summary(&self) -> String {
        match self {
            JobReport::Evaluated(tick) => tick.summary(),
            JobReport::Purged { deleted, .. } => format!("purged={deleted}"),
        }
    }
}

/// What a tick that failed part-way committed before it failed (see
/// `evaluate::TickFailed`): none for other failures.
pub(super) fn committed(error: &anyhow::Error) -> Option<&TickReport> {
    error
        .downcast_ref::<evaluate::TickFailed>()
        .map(|failed| &*failed.report)
}

/// Logs a finished tick at `$level`, every count a field (see
/// `evaluate::tick_counts!`).
macro_rules! log_tick {
    ($level:ident, $job:ident, $report:ident; $($name:ident: $series:ident,)*) => {
        tracing::$level!(
            job = $job,
            $($name = $report.$name,)*
            duration_ms = $report.duration.as_millis() as u64,
            fetch_ms = $report.fetch_duration.as_millis() as u64,
            "tick finished"
        )
    };
}

/// Logs a tick that failed part-way as a recurring failure, with what it
/// committed before it failed: the triggered alerts are claimed and their
/// events queued; the unclaimed ones are judged again by the next tick.
macro_rules! log_failed_tick {
    ($failures:ident, $error:ident, $job:ident, $report:ident; $($name:ident: $series:ident,)*) => {
        log_recurring!(
            error,
            $failures,
            format!("{:#}", $error),
            job = $job,
            $($name = $report.$name,)*
            "job failed"
        )
    };
}

/// Logs a finished run. A failure is logged when it starts or changes and
/// then once a minute (`failures` is this job's), and its end once.
pub(super) fn log_run(job: &str, result: &anyhow::Result<JobReport>, failures: &mut Recurring) {
    if result.is_ok()
        && let Some(failed) = failures.succeeded()
    {
        tracing::info!(job, failed, "the job runs again after failing");
    }
    match result {
        Ok(JobReport::Evaluated(report)) if report.notable() => {
            evaluate::tick_counts!(log_tick!(info, job, report;))
        }
        Ok(JobReport::Evaluated(report)) => evaluate::tick_counts!(log_tick!(debug, job, report;)),
        Ok(JobReport::Purged { deleted, duration }) => {
            tracing::info!(
                job,
                deleted,
                duration_ms = duration.as_millis() as u64,
                "purge finished"
            )
        }
        Err(error) => match committed(error) {
            // What it did commit is said (the triggered alerts are claimed
            // and their events queued), and what it did not (the unclaimed
            // ones, which the next tick judges again).
            Some(partial) => {
                evaluate::tick_counts!(log_failed_tick!(failures, error, job, partial;))
            }
            None => log_recurring!(error, failures, format!("{error:#}"), job, "job failed"),
        },
    }
}
