//! What the daemon records: job runs and their ticks' counts, reloads,
//! fire times taken over, delivery attempts.

use std::time::Duration;

use crate::evaluate::{Series, TickReport};

use super::series::{
    CauseLabels, DeliveryLabels, JobLabels, Metrics, SkipLabels, TICK_CAUSES, TICK_RESULTS,
    TickLabels, now_seconds,
};

/// How one delivery attempt ended, for the `deliveries_total` series.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    Delivered,
    Failed,
    Dead,
    Released,
}

/// What the receiver answered to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Status(u16),
    Timeout,
    Connection,
    Error,
    /// Not sent to the end: the daemon stopped.
    None,
}

impl Response {
    fn label(self) -> &'static str {
        match self {
            Response::Status(200..=299) => "2xx",
            Response::Status(300..=399) => "3xx",
            Response::Status(400..=499) => "4xx",
            Response::Status(500..=599) => "5xx",
            Response::Status(_) | Response::Error => "error",
            Response::Timeout => "timeout",
            Response::Connection => "connection",
            Response::None => "none",
        }
    }
}

impl Metrics {
    /// Creates the series of these jobs at zero, so that they exist before
    /// their first run (at start and after a reload).
    pub fn jobs<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            let labels = JobLabels {
                job_name: name.to_owned(),
            };
            for cause in TICK_CAUSES {
                let _ = self.tick_causes.get_or_create(&CauseLabels {
                    job_name: name.to_owned(),
                    cause,
                });
            }
            for result in TICK_RESULTS {
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
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .set(seconds);
    }

    /// A job no longer configured (a reload): its deadline goes, so that it
    /// never becomes overdue. Its counters stay, as counters do.
    pub fn forget_job(&self, job: &str) {
        self.deadline.remove(&JobLabels {
            job_name: job.to_owned(),
        });
    }

    #[cfg(test)]
    pub(crate) fn deadline_of(&self, job: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let labels = JobLabels {
            job_name: job.to_owned(),
        };
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

    fn tick(&self, job: &str, result: &'static str) {
        self.ticks
            .get_or_create(&TickLabels {
                job_name: job.to_owned(),
                result,
            })
            .inc();
    }

    /// A run of `job` starts, because of its schedule or a change.
    pub fn tick_caused(&self, job: &str, cause: &'static str) {
        self.tick_causes
            .get_or_create(&CauseLabels {
                job_name: job.to_owned(),
                cause,
            })
            .inc();
    }

    pub fn tick_skipped(&self, job: &str) {
        self.tick(job, "skipped");
    }

    /// Another member took this fire time.
    pub fn tick_elsewhere(&self, job: &str) {
        self.tick(job, "elsewhere");
    }

    /// This member took over a fire time from one that stopped beating.
    pub fn taken_over(&self, job: &str) {
        self.takeovers
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .inc();
    }

    /// A job run that failed; `committed`, for an evaluation that failed
    /// part-way, what it committed before it failed.
    pub fn tick_failed(&self, job: &str, duration: Duration, committed: Option<&TickReport>) {
        self.tick(job, "failed");
        self.tick_seconds
            .get_or_create(&JobLabels {
                job_name: job.to_owned(),
            })
            .observe(duration.as_secs_f64());
        if let Some(report) = committed {
            self.count(job, report);
        }
    }

    /// A job run that finished without error; `report` for evaluations.
    pub fn tick_succeeded(&self, job: &str, duration: Duration, report: Option<&TickReport>) {
        let labels = JobLabels {
            job_name: job.to_owned(),
        };
        self.tick(job, "ok");
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
        let labels = JobLabels {
            job_name: job.to_owned(),
        };
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
        let histogram = self.quote_to_claim.get_or_create(&JobLabels {
            job_name: job.to_owned(),
        });
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
        let outcome = match outcome {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dead => "dead",
            Delivery::Released => "released",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome,
                response: response.label(),
            })
            .inc();
        self.delivery_seconds.observe(duration.as_secs_f64());
    }
}
