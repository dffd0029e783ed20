//! Each job's last run in `job_runs`, for `status`: written as a run ends,
//! but at most once every [`RECORD_EVERY`] for a job, the latest run then
//! written as the spacing ends. A job that reacts to a feed runs tens of
//! times a second, and a write transaction for each run would cost the
//! daemon more than most of those runs. A failed run is written at once;
//! a stop writes what waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock::lock;
use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::{self, Pool, runs::Run};

/// The least time between two records of one job's runs.
pub(super) const RECORD_EVERY: Duration = Duration::from_secs(1);

/// The runs to record, and how recording went.
pub(super) struct Records {
    pool: Pool,
    jobs: Mutex<HashMap<String, Latest>>,
    failures: Mutex<Recurring>,
}

/// One job's: when its run was last written, and the run waiting for the
/// spacing to end.
#[derive(Default)]
struct Latest {
    written_at: Option<Instant>,
    waiting: Option<Ended>,
    /// A write of the waiting run is booked.
    booked: bool,
}

/// A run as it ended: its record, when it ended, and how long it took.
struct Ended {
    run: Run,
    at: Instant,
    took: Duration,
}

impl Records {
    pub(super) fn new(pool: Pool) -> Records {
        Records {
            pool,
            jobs: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// A run of `run.job` ended now, after `took`: written now, unless the
    /// job's last was written within [`RECORD_EVERY`] and this one
    /// succeeded (then it waits, replacing any run that waited before it).
    pub(super) async fn ended(self: &Arc<Records>, run: Run, took: Duration) {
        let ended = Ended {
            run,
            at: Instant::now(),
            took,
        };
        let now = ended.at;
        let write = {
            let mut jobs = lock(&self.jobs);
            let latest = jobs.entry(ended.run.job.clone()).or_default();
            let spaced = latest
                .written_at
                .is_none_or(|at| now.duration_since(at) >= RECORD_EVERY);
            if spaced || ended.run.result != "ok" {
                latest.written_at = Some(now);
                latest.waiting = None;
                Some(ended)
            } else {
                let job = ended.run.job.clone();
                latest.waiting = Some(ended);
                if !latest.booked {
                    latest.booked = true;
                    let after = latest
                        .written_at
                        .map_or(Duration::ZERO, |at| RECORD_EVERY.saturating_sub(now - at));
                    let records = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        records.write_waiting(&job).await;
                    });
                }
                None
            }
        };
        if let Some(ended) = write {
            self.write(ended).await;
        }
    }

    /// Writes the runs that wait (a stop).
    pub(super) async fn flush(&self) {
        let jobs: Vec<String> = lock(&self.jobs).keys().cloned().collect();
        for job in jobs {
            self.write_waiting(&job).await;
        }
    }

    async fn write_waiting(&self, job: &str) {
        let waiting = {
            let mut jobs = lock(&self.jobs);
            let Some(latest) = jobs.get_mut(job) else {
                return;
            };
            latest.booked = false;
            let waiting = latest.waiting.take();
            if waiting.is_some() {
                latest.written_at = Some(Instant::now());
            }
            waiting
        };
        if let Some(ended) = waiting {
            self.write(ended).await;
        }
    }

    /// Writes one run, its start by the database's clock: now, less the
    /// time since it ended and the time it took.
    async fn write(&self, ended: Ended) {
        let Ended { mut run, at, took } = ended;
        let job = run.job.clone();
        let recorded = store::blocking(&self.pool, "recording the run", move |connection| {
            let now = store::clock::now(connection)?;
            let ago = chrono::Duration::from_std(took + at.elapsed()).unwrap_or_default();
            run.started_at = store::timestamp(now - ago);
            store::runs::record(connection, &run)
        })
        .await;
        let mut failures = lock(&self.failures);
        match recorded {
            Ok(()) => {
                failures.succeeded();
            }
            Err(error) => log_recurring!(
                warn,
                failures,
                format!("{error:#}"),
                job,
                "recording the run failed"
            ),
        }
    }
}
