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
    /// A short `key=value` account, as `status` shows it.
    pub fn summary(&self) -> String {
        match self {
            JobReport::Evaluated(tick) => format!(
                "evaluated={} triggered={} locked={} expired={} stale_alerts={} no_quote={} unavailable={} malformed_alerts={} malformed_quotes={} quote_errors={}",
                tick.evaluated,
                tick.triggered,
                tick.locked,
                tick.expired,
                tick.stale_alerts,
                tick.no_quote,
                tick.unavailable,
                tick.malformed_alerts,
                tick.malformed_quotes,
                tick.quote_errors
            ),
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

/// Logs a finished run. A failure is logged when it starts or changes and
/// then once a minute (`failures` is this job's), and its end once.
pub(super) fn log_run(job: &str, result: &anyhow::Result<JobReport>, failures: &mut Recurring) {
    if result.is_ok()
        && let Some(failed) = failures.succeeded()
    {
        tracing::info!(job, failed, "the job runs again after failing");
    }
    match result {
        Ok(JobReport::Evaluated(report))
            if report.triggered > 0
                || report.locked > 0
                || report.expired > 0
                || report.malformed_alerts > 0
                || report.malformed_quotes > 0
                || report.quote_errors > 0 =>
        {
            tracing::info!(
                job,
                evaluated = report.evaluated,
                triggered = report.triggered,
                locked = report.locked,
                expired = report.expired,
                stale_alerts = report.stale_alerts,
                unavailable = report.unavailable,
                malformed_alerts = report.malformed_alerts,
                malformed_quotes = report.malformed_quotes,
                quote_errors = report.quote_errors,
                duration_ms = report.duration.as_millis() as u64,
                "tick finished"
            )
        }
        Ok(JobReport::Evaluated(report)) => tracing::debug!(
            job,
            tickers_changed = report.tickers_changed,
            alerts_read = report.evaluated,
            duration_ms = report.duration.as_millis() as u64,
            "tick finished"
        ),
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
            Some(partial) => log_recurring!(
                error,
                failures,
                format!("{error:#}"),
                job,
                triggered = partial.triggered,
                unclaimed = partial.unclaimed,
                locked = partial.locked,
                expired = partial.expired,
                rearmed = partial.rearmed,
                "job failed"
            ),
            None => log_recurring!(error, failures, format!("{error:#}"), job, "job failed"),
        },
    }
}
