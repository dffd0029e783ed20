//! Every method of [`Metrics`]: what the daemon records (job runs and
//! their ticks' counts, reloads, fire times taken over, delivery attempts,
//! its readiness) and the exposition of it all.

use std::time::Duration;

use crate::evaluate::{Series, TickReport};

use crate::store::clock::Offset;

use super::exposition::{Format, Readings};
use super::labels::{
    Cause, CauseLabels, Delivery, DeliveryLabels, JobLabels, MemberLabels, MemberState, Response,
    SkipLabels, TickLabels, TickResult,
};
use super::series::{Metrics, now_seconds};

impl Metrics {
    /// Creates the series of these jobs at zero, so that they exist before
    /// their first run (at start and after a reload).
    pub fn jobs<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            let labels = JobLabels::of(name);
            for cause in Cause::ALL {
                let _ = self.tick_causes.get_or_create(&CauseLabels {
                    job_name: name.to_owned(),
                    cause,
                });
            }
            for result in TickResult::ALL {
                let _ = self.ticks.get_or_create(&TickLabels {
                    job_name: name.to_owned(),
                    result,
                });
            }
            let _ = self.tick_seconds.get_or_create(&labels);
            let _ = self.quote_to_claim.get_or_create(&labels);
            let _ = self.tickers_changed.get_or_create(&labels);
            let _ = self.evaluated.get_or_create(&labels);
            let _ = self.triggered.get_or_create(&labels);
            let _ = self.rearmed.get_or_create(&labels);
            let _ = self.quote_errors.get_or_create(&labels);
            let _ = self.last_success.get_or_create(&labels);
            let _ = self.takeovers.get_or_create(&labels);
        }
    }

    /// When `job` becomes overdue unless a run of it succeeds first; `None`:
    /// never (its schedule has no more fire times).
    pub fn job_deadline(&self, job: &str, deadline: Option<chrono::DateTime<chrono::Utc>>) {
        let seconds = deadline.map_or(f64::INFINITY, |at| at.timestamp_millis() as f64 / 1000.0);
        self.deadline
            .get_or_create(&JobLabels::of(job))
            .set(seconds);
    }

    /// A job no longer configured (a reload): its deadline goes, so that it
    /// never becomes overdue. Its counters stay, as counters do.
    pub fn forget_job(&self, job: &str) {
        self.deadline.remove(&JobLabels::of(job));
    }

    #[cfg(test)]
    pub(crate) fn deadline_of(&self, job: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let labels = JobLabels::of(job);
        let seconds = self.deadline.get(&labels)?.get();
        chrono::DateTime::from_timestamp_millis((seconds * 1000.0) as i64)
    }

    /// A SIGHUP reload: applied, or refused (the running configuration stays).
    pub fn reloaded(&self, applied: bool) {
        self.reload_successful.set(i64::from(applied));
        if applied {
            self.reload_success_time.set(now_seconds());
        }
    }

    /// Whether a reload left keys that apply only at a restart.
    pub fn restart_pending(&self, pending: bool) {
        self.restart_pending.set(i64::from(pending));
    }

    fn tick(&self, job: &str, result: TickResult) {
        self.ticks
            .get_or_create(&TickLabels {
                job_name: job.to_owned(),
                result,
            })
            .inc();
    }

    /// A run of `job` starts, because of its schedule or a change.
    pub fn tick_caused(&self, job: &str, cause: Cause) {
        self.tick_causes
            .get_or_create(&CauseLabels {
                job_name: job.to_owned(),
                cause,
            })
            .inc();
    }

    pub fn tick_skipped(&self, job: &str) {
        self.tick(job, TickResult::Skipped);
    }

    /// Another member took this fire time.
    pub fn tick_elsewhere(&self, job: &str) {
        self.tick(job, TickResult::Elsewhere);
    }

    /// This member took over a fire time from one that stopped beating.
    pub fn taken_over(&self, job: &str) {
        self.takeovers.get_or_create(&JobLabels::of(job)).inc();
    }

    /// A job run that failed; `committed`, for an evaluation that failed
    /// part-way, what it committed before it failed.
    pub fn tick_failed(&self, job: &str, duration: Duration, committed: Option<&TickReport>) {
        self.tick(job, TickResult::Failed);
        self.tick_seconds
            .get_or_create(&JobLabels::of(job))
            .observe(duration.as_secs_f64());
        if let Some(report) = committed {
            self.count(job, report);
        }
    }

    /// A job run that finished without error; `report` for evaluations.
    pub fn tick_succeeded(&self, job: &str, duration: Duration, report: Option<&TickReport>) {
        let labels = JobLabels::of(job);
        self.tick(job, TickResult::Ok);
        self.tick_seconds
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        self.last_success.get_or_create(&labels).set(now_seconds());
        if let Some(report) = report {
            self.count(job, report);
        }
    }

    /// A tick's counts.
    fn count(&self, job: &str, report: &TickReport) {
        let labels = JobLabels::of(job);
        for count in report.counts() {
            let family = match count.series {
                Series::TickersChanged => &self.tickers_changed,
                Series::AlertsEvaluated => &self.evaluated,
                Series::AlertsTriggered => &self.triggered,
                Series::AlertsRearmed => &self.rearmed,
                Series::QuoteErrors => &self.quote_errors,
                Series::AlertsSkipped => {
                    self.skipped
                        .get_or_create(&SkipLabels { reason: count.name })
                        .inc_by(count.value);
                    continue;
                }
                Series::Unexported => continue,
            };
            family.get_or_create(&labels).inc_by(count.value);
        }
    }

    /// A claim of a tick of `job` committed, its alerts' quotes this old.
    pub fn claimed(&self, job: &str, quote_ages: impl Iterator<Item = Duration>) {
        let histogram = self.quote_to_claim.get_or_create(&JobLabels::of(job));
        for age in quote_ages {
            histogram.observe(age.as_secs_f64());
        }
    }

    /// An event reached its receiver (a 2xx), this long after its claim
    /// (its `triggered_at`, the tick's time).
    pub fn delivered_after_claim(&self, since_claim: Duration) {
        self.claim_to_delivery.observe(since_claim.as_secs_f64());
    }

    pub fn delivery(&self, outcome: Delivery, response: Response, duration: Duration) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome,
                response: response.label(),
            })
            .inc();
        self.delivery_seconds.observe(duration.as_secs_f64());
    }

    /// The loop booked its jobs' fire times, all but `unarmed`'s.
    pub fn jobs_armed(&self, unarmed: Vec<String>) {
        self.readiness.jobs_armed(unarmed);
    }

    /// The daemon stops: it starts no more runs.
    pub fn stopping(&self) {
        self.readiness.stopping();
    }

    /// This member's heartbeat renewed its leases, and measured its clock
    /// against the database's.
    pub fn beat(&self, clock: Offset) {
        self.readiness.beat(clock);
        self.last_heartbeat.set(now_seconds());
        self.clock_offset.set(clock.ms as f64 / 1000.0);
    }

    /// Why the daemon is not ready to do its work, besides its database;
    /// empty when it is.
    pub(super) fn not_ready(&self) -> Vec<String> {
        self.readiness.not_ready()
    }

    /// The exposition in `format`, with the outbox's and the members'
    /// gauges as the database says now.
    /// Measures the quotes of `jobs`' scopes at each scrape, against
    /// `max_age` (at the start, and at each reload).
    pub fn watch_quotes(&self, jobs: &[crate::config::JobConfig], max_age: std::time::Duration) {
        let watched: Vec<(String, crate::config::Scope)> = jobs
            .iter()
            .filter_map(|job| Some((job.name.clone(), job.scope()?.clone())))
            .collect();
        let mut current = crate::lock::lock(&self.watched);
        for (job, _) in &current.jobs {
            if !watched.iter().any(|(name, _)| name == job) {
                self.forget_quotes(job);
            }
        }
        *current = super::series::Watched {
            jobs: watched,
            max_age,
        };
        self.quote_max_age.set(max_age.as_secs_f64());
    }

    /// Whether a scrape should read the quotes.
    pub fn watches_quotes(&self) -> bool {
        !crate::lock::lock(&self.watched).jobs.is_empty()
    }

    fn forget_quotes(&self, job: &str) {
        let labels = JobLabels::of(job);
        self.quote_newest_age.remove(&labels);
        self.quote_oldest_age.remove(&labels);
        self.quotes_stale.remove(&labels);
        self.quotes_missing.remove(&labels);
    }

    /// Each watched job's [`Freshness`](crate::freshness::Freshness), from
    /// what the scrape read. A job without tickers with enabled alerts has
    /// no series (nothing to be fresh); one whose tickers have no quote at
    /// all is infinitely old.
    fn measure_quotes(&self, readings: &Readings) {
        let watched = crate::lock::lock(&self.watched);
        for (job, scope) in &watched.jobs {
            let freshness = crate::freshness::Freshness::of(
                &readings.alerted,
                scope,
                watched.max_age,
                readings.now,
            );
            if freshness.tickers == 0 {
                self.forget_quotes(job);
                continue;
            }
            let labels = JobLabels::of(job);
            self.quote_newest_age
                .get_or_create(&labels)
                .set(freshness.newest_age_seconds.unwrap_or(f64::INFINITY));
            self.quote_oldest_age
                .get_or_create(&labels)
                .set(freshness.oldest_age_seconds.unwrap_or(f64::INFINITY));
            self.quotes_stale
                .get_or_create(&labels)
                .set(freshness.stale as i64);
            self.quotes_missing
                .get_or_create(&labels)
                .set(freshness.missing as i64);
        }
    }

    /// The jobs that react to changes now (at start and after a reload):
    /// their pace is kept, the others' series go.
    pub fn reacting(&self, jobs: &[String]) {
        crate::lock::lock(&self.paces).keep(jobs);
        self.reacting_lag.clear();
        self.reacting_runs.clear();
        for job in jobs {
            let labels = JobLabels::of(job);
            let _ = self.reacting_lag.get_or_create(&labels);
            let _ = self.reacting_runs.get_or_create(&labels);
        }
    }

    /// A change that reacting `job` covers was heard.
    pub fn change_heard(&self, job: &str) {
        crate::lock::lock(&self.paces).heard(job, std::time::Instant::now());
    }

    /// A run of `job` started: it judges the changes heard before.
    pub fn run_started(&self, job: &str) {
        crate::lock::lock(&self.paces).started(job);
    }

    /// A run of `job` ended.
    pub fn run_ended(&self, job: &str, succeeded: bool) {
        crate::lock::lock(&self.paces).ended(
            job,
            succeeded,
            std::time::Instant::now(),
            self.origin,
        );
    }

    /// A reacting job's pace now; `None` for a job that does not react.
    pub fn pace(&self, job: &str) -> Option<super::Pace> {
        let mut paces = crate::lock::lock(&self.paces);
        paces
            .read(std::time::Instant::now(), self.origin)
            .find(|(name, _)| *name == job)
            .map(|(_, reading)| reading)
    }

    fn measure_paces(&self) {
        let mut paces = crate::lock::lock(&self.paces);
        for (job, reading) in paces.read(std::time::Instant::now(), self.origin) {
            let labels = JobLabels::of(job);
            self.reacting_lag
                .get_or_create(&labels)
                .set(reading.lag.as_secs_f64());
            self.reacting_runs
                .get_or_create(&labels)
                .set(reading.runs_per_second);
        }
    }

    pub fn render(&self, format: Format, readings: Readings) -> String {
        self.measure_quotes(&readings);
        self.measure_paces();
        self.outbox_pending.set(readings.pending as i64);
        self.outbox_dead.set(readings.dead as i64);
        self.outbox_oldest
            .set(readings.oldest_pending.as_secs_f64());
        for (state, count) in [
            (MemberState::Live, readings.live_members),
            (MemberState::Lost, readings.lost_members),
        ] {
            self.members
                .get_or_create(&MemberLabels { state })
                .set(count as i64);
        }
        let mut text = String::new();
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
        }
        .expect("writing to a String never fails");
        text
    }
}
