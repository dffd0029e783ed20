//! What `systemctl status` shows.

use chrono::Utc;

use super::job_report::JobReport;

/// What `systemctl status` shows (the notify protocol's `STATUS=`): the last
/// run, the events waiting, a refused reload until one succeeds, and the
/// keys that wait for a restart.
#[derive(Default)]
pub(super) struct SystemdStatus {
    last_run: Option<String>,
    pub(super) reload: Option<String>,
    /// The keys changed in the file since the start that apply only at a
    /// restart.
    pub(super) restart_pending: Vec<String>,
    /// The outbox as last counted, if the database said.
    backlog: Option<(u64, u64)>,
    /// A count is under way (or booked); another is owed after it.
    counting: bool,
    recount: bool,
    /// When the last count started (or is booked to).
    last_count: Option<std::time::Instant>,
}

/// The least time between two counts of the outbox: a job that reacts to a
/// feed ends runs tens of times a second.
const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl SystemdStatus {
    pub(super) fn ran(&mut self, job: &str, result: &anyhow::Result<JobReport>) {
        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.last_run = Some(match result {
            Ok(JobReport::Evaluated(report)) => {
                format!("last tick {job} at {at}: {}", report.summary())
            }
            Ok(JobReport::Purged { deleted, .. }) => {
                format!("last run {job} at {at}: {deleted} purged")
            }
            Err(_) => format!("last run {job} at {at} failed (see the journal)"),
        });
    }

    /// Whether to count the outbox, and after how long: not while a count
    /// is under way (one more follows it then), so that a database that
    /// does not answer never has counts pile up, and at most once every
    /// [`COUNT_EVERY`].
    pub(super) fn count(&mut self) -> Option<std::time::Duration> {
        if self.counting {
            self.recount = true;
            return None;
        }
        let now = std::time::Instant::now();
        let after = self.last_count.map_or(std::time::Duration::ZERO, |last| {
            COUNT_EVERY.saturating_sub(now.saturating_duration_since(last))
        });
        self.counting = true;
        self.last_count = Some(now + after);
        Some(after)
    }

    /// A count ended; whether to count again, and after how long.
    pub(super) fn counted(&mut self, backlog: Option<(u64, u64)>) -> Option<std::time::Duration> {
        self.backlog = backlog;
        self.counting = false;
        if std::mem::take(&mut self.recount) {
            self.count()
        } else {
            None
        }
    }

    /// The text, with the number of pending events as last counted.
    pub(super) fn text(&self) -> String {
        let backlog = self.backlog;
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.reload.clone());
        if !self.restart_pending.is_empty() {
            parts.push(format!(
                "restart pending: {} changed",
                self.restart_pending.join(", ")
            ));
        }
        parts.push(
            self.last_run
                .clone()
                .unwrap_or_else(|| "running, no tick yet".to_owned()),
        );
        if let Some((pending, dead)) = backlog {
            parts.push(format!("{pending} events pending, {dead} dead"));
        }
        parts.join("; ")
    }
}
