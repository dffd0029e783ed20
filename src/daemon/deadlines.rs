//! Each job's deadline, for the alerting rule `PriceAlertdJobOverdue`: the
//! time by which a run of it should have succeeded, here or, its fire time
//! taken by another member, elsewhere. It is the job's `OVERDUE_AFTER`th
//! fire time after the last run that did, or after the job was first
//! scheduled here; so a job that runs on weekdays only is not overdue on
//! Sunday, and a stuck daemon's deadline stays put while the time passes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::JobConfig;
use crate::metrics::Metrics;
use crate::schedule::Schedule;

/// How many fire times a job may miss before it is overdue.
pub(super) const OVERDUE_AFTER: usize = 3;

/// When each configured job last made progress.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    since: HashMap<String, DateTime<Utc>>,
}

impl Deadlines {
    /// The jobs of a configuration (at the start, or a reload): a new job's
    /// deadline counts from now, a known one's from its last progress, by
    /// its schedule now; the deadlines of jobs no longer configured go.
    pub(super) fn scheduled<'a>(
        &mut self,
        jobs: impl IntoIterator<Item = &'a JobConfig>,
        metrics: &Metrics,
        now: DateTime<Utc>,
    ) {
        let mut since = HashMap::new();
        for job in jobs {
            let from = self.since.remove(&job.name).unwrap_or(now);
            metrics.job_deadline(&job.name, deadline(&job.schedule, from));
            since.insert(job.name.clone(), from);
        }
        for gone in self.since.keys() {
            metrics.forget_job(gone);
        }
        self.since = since;
    }

    /// A run of `job` succeeded here, or its fire time went to another
    /// member, at `at`.
    pub(super) fn progressed(&mut self, job: &JobConfig, metrics: &Metrics, at: DateTime<Utc>) {
        if let Some(since) = self.since.get_mut(&job.name) {
            *since = at;
            metrics.job_deadline(&job.name, deadline(&job.schedule, at));
        }
    }
}

/// The `OVERDUE_AFTER`th fire time after `since`; none when the schedule
/// has no more.
fn deadline(schedule: &Schedule, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (0..OVERDUE_AFTER).try_fold(since, |at, _| schedule.next_after(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JobKind, Scope};

    fn job(name: &str, cron: &str) -> JobConfig {
        JobConfig {
            name: name.to_owned(),
            kind: JobKind::Evaluate {
                scope: Scope::default(),
                on_change: false,
            },
            schedule: Schedule::parse(cron, None).unwrap(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_third_fire_time_after_the_last_progress_by_the_schedule_now() {
        let weekdays = job("weekdays", "0 * 9-17 * * Mon-Fri");
        // Friday 16:58: 16:59, 17:00, 17:01.
        assert_eq!(
            deadline(&weekdays.schedule, at("2026-12-04T16:58:00Z")),
            Some(at("2026-12-04T17:01:00Z"))
        );
        // After Friday's last fire time, Monday's third.
        assert_eq!(
            deadline(&weekdays.schedule, at("2026-12-04T17:59:00Z")),
            Some(at("2026-12-07T09:02:00Z"))
        );

        let metrics = Metrics::default();
        let mut deadlines = Deadlines::default();
        let now = at("2026-12-03T10:00:30Z");
        let minutely = job("minutely", "0 * * * * *");
        deadlines.scheduled([&minutely, &weekdays], &metrics, now);
        assert_eq!(
            metrics.deadline_of("minutely"),
            Some(at("2026-12-03T10:03:00Z"))
        );
        deadlines.progressed(&minutely, &metrics, at("2026-12-03T10:05:00Z"));
        assert_eq!(
            metrics.deadline_of("minutely"),
            Some(at("2026-12-03T10:08:00Z"))
        );
        // A reload that makes it hourly keeps its last progress; a job gone
        // loses its series.
        let hourly = job("minutely", "0 0 * * * *");
        deadlines.scheduled([&hourly], &metrics, at("2026-12-03T11:30:00Z"));
        assert_eq!(
            metrics.deadline_of("minutely"),
            Some(at("2026-12-03T13:00:00Z"))
        );
        assert_eq!(metrics.deadline_of("weekdays"), None);
    }
}
