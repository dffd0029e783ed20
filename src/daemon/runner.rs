//! The job runner: what every run of a process shares (the store, the
//! evaluation threads, the quote source, the metrics), and one run of a job
//! from its fire time to its record.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::config::{Config, EvaluatorConfig, JobKind, PriceSource, Scope};
use crate::deliver::Handoff;
use crate::evaluate::{self, TickOptions, TickReport};
use crate::membership::{self, Taken};
use crate::metrics::Metrics;
use crate::quotes;
use crate::recurring::Recurring;
use crate::store::alerts::Trigger;
use crate::store::cluster::{Finish, Fire, Me};
use crate::store::outbox::Lessee;
use crate::store::{self, Pool};

use super::events::LoopEvent;
use super::job_report::{JobReport, committed};
use super::records::Records;
use crate::metrics::Cause;

/// What the jobs need, shared by every run of a process.
#[derive(Clone)]
pub(super) struct Runner {
    pub(super) pool: Pool,
    workers: Arc<rayon::ThreadPool>,
    evaluator: EvaluatorConfig,
    max_age: std::time::Duration,
    /// The HTTP quote source, if `prices.source = "http"`.
    source: Option<Arc<quotes::QuoteSource>>,
    tick_memory: Arc<evaluate::TickMemory>,
    pub(super) metrics: Arc<Metrics>,
    /// The store's chores after a tick's writes.
    checkpoints: Arc<store::Upkeep>,
    pruning: Arc<store::Upkeep>,
    /// The daemon's own objects in the application's tables, looked for
    /// every few seconds, and at once after a failed tick.
    repairs: Arc<store::Upkeep>,
    /// Each job's last run, recorded at most once a second.
    pub(super) records: Arc<Records>,
    /// Failures that may repeat every tick, logged at their changes.
    fire_failures: Arc<Mutex<Recurring>>,
    runs_for: RunsFor,
}

/// Whom a runner's runs are for.
#[derive(Clone)]
pub(super) enum RunsFor {
    /// A daemon among those sharing the database: its runs are recorded as
    /// this member's, and each claim leases what it queues to its
    /// deliverer, as far as it takes them, and wakes it for the rest.
    Member { me: Arc<Me>, handoff: Arc<Handoff> },
    /// `run-job`: one run, whose events are delivered after it.
    OneRun,
}

impl Runner {
    pub(super) async fn open(config: &Config, runs_for: RunsFor) -> anyhow::Result<Runner> {
        let database = config.database.clone();
        let readers = config.evaluator.threads as u32;
        let pool = tokio::task::spawn_blocking(move || store::open(&database, readers))
            .await
            .context("opening the store panicked")??;
        let workers = Arc::new(evaluate::thread_pool(config.evaluator.threads)?);
        let source = match &config.prices.source {
            PriceSource::Table => None,
            PriceSource::Http(http) => Some(Arc::new(quotes::QuoteSource::new(http)?)),
        };
        Ok(Runner {
            records: Arc::new(Records::new(pool.clone())),
            pool,
            workers,
            evaluator: config.evaluator.clone(),
            max_age: config.prices.max_age,
            source,
            tick_memory: Arc::default(),
            metrics: Arc::default(),
            checkpoints: Arc::new(store::Upkeep::checkpoints_at_rest()),
            pruning: Arc::new(store::Upkeep::pruning()),
            repairs: Arc::new(store::Upkeep::repairs()),
            fire_failures: Arc::default(),
            runs_for,
        })
    }

    /// Does the work of one fire time of `job`, unless another member took
    /// it first; tells the loop how it went. `me` is this daemon's member.
    pub(super) async fn run_fire(
        &self,
        me: &str,
        job: String,
        kind: JobKind,
        fire: Fire,
        events: &mpsc::UnboundedSender<LoopEvent>,
    ) {
        match membership::take(&self.pool, me, &fire, &self.fire_failures).await {
            Taken::Elsewhere => {
                self.metrics.tick_elsewhere(&job);
                tracing::debug!(job, at = fire.at_ms, "another member took this fire time");
                let _ = events.send(LoopEvent::Elsewhere { job });
                return;
            }
            Taken::TakenOver => {
                self.metrics.taken_over(&job);
                tracing::warn!(
                    job,
                    at = fire.at_ms,
                    "taking over a fire time whose member stopped beating"
                );
            }
            Taken::Mine => {}
        }
        self.metrics.tick_caused(&job, Cause::Schedule);
        let result = self.run_recorded(&job, kind).await;
        let finish = if result.is_ok() {
            Finish::Done
        } else {
            Finish::Failed
        };
        membership::finish(&self.pool, me, &fire, finish).await;
        let _ = events.send(LoopEvent::Finished {
            job,
            result: Box::new(result),
        });
    }

    /// A claim of a tick of `job` committed (its events are with the
    /// deliverer: `deliver::Handoff`): the age of each claimed alert's
    /// quote is observed (from its `updated_at`: the application's commit,
    /// as near as the daemon can tell).
    fn claimed(&self, job: &str, triggers: &[&Trigger]) {
        let now = Utc::now();
        self.metrics.claimed(
            job,
            triggers
                .iter()
                .map(|trigger| (now - trigger.quote_time.at).to_std().unwrap_or_default()),
        );
    }

    /// Does one run of `job` that no fire time stands for (a change, or a
    /// fire time that came while it ran); tells the loop how it went.
    pub(super) async fn run_unleased(
        &self,
        job: String,
        kind: JobKind,
        events: &mpsc::UnboundedSender<LoopEvent>,
    ) {
        let result = self.run_recorded(&job, kind).await;
        let _ = events.send(LoopEvent::Finished {
            job,
            result: Box::new(result),
        });
    }

    /// Runs one job and records the run: in `job_runs` (for `status`) and in
    /// the metrics.
    pub(super) async fn run_recorded(&self, job: &str, kind: JobKind) -> anyhow::Result<JobReport> {
        let started = std::time::Instant::now();
        let result = self.run(job, kind).await;
        let duration = started.elapsed();
        let (outcome, detail) = match &result {
            Ok(report) => {
                let tick = match report {
                    JobReport::Evaluated(tick) => Some(tick),
                    JobReport::Purged { .. } => None,
                };
                self.metrics.tick_succeeded(job, duration, tick);
                ("ok", report.summary())
            }
            Err(error) => {
                let partial = committed(error);
                self.metrics.tick_failed(job, duration, partial);
                let detail = match partial {
                    Some(tick) => format!(
                        "{error:#} (before it failed: {})",
                        JobReport::Evaluated(tick.clone()).summary()
                    ),
                    None => format!("{error:#}"),
                };
                ("failed", detail)
            }
        };
        let detail = match self.metrics.pace(job) {
            // A reacting job's pace, as its run ends.
            Some(pace) => format!(
                "{detail} runs_per_second={:.1} lag_ms={}",
                pace.runs_per_second,
                pace.lag.as_millis()
            ),
            None => detail,
        };
        let run = store::runs::Run {
            job: job.to_owned(),
            started_at: String::new(),
            duration_ms: duration.as_millis() as i64,
            result: outcome.to_owned(),
            detail,
            last_success_at: None,
            member: match &self.runs_for {
                RunsFor::Member { me, .. } => Some(me.member.clone()),
                RunsFor::OneRun => None,
            },
        };
        self.records.ended(run, duration).await;
        result
    }

    /// Runs one job to its end. Blocking work goes to `spawn_blocking`.
    async fn run(&self, job: &str, kind: JobKind) -> anyhow::Result<JobReport> {
        match kind {
            JobKind::Evaluate { scope, on_change } => self.evaluate(job, scope, on_change).await,
            JobKind::Purge { keep } => self.purge(keep).await,
        }
    }

    /// One tick of an `evaluate` job over `scope`, after the quote source's
    /// fetch if there is one: the fetch and the tick take one time, the
    /// database's, so the fetch asks for the tickers of the alerts the tick
    /// will re-arm as of then. The fetch's errors and time are the tick's.
    /// A reacting job's tick in the daemon, without a source, may leave its
    /// progress unwritten (`evaluate::carried`): the loop writes it in time.
    async fn evaluate(&self, job: &str, scope: Scope, reacts: bool) -> anyhow::Result<JobReport> {
        let unwritten =
            reacts && self.source.is_none() && matches!(self.runs_for, RunsFor::Member { .. });
        let mut refresh = match &self.source {
            Some(source) => Some(source.refresh(&self.pool, &scope).await),
            None => None,
        };
        let fetched = refresh
            .as_mut()
            .map(|refresh| std::mem::take(&mut refresh.fetched));
        let at = refresh.as_ref().and_then(|refresh| refresh.at);
        let (runner, job) = (self.clone(), job.to_owned());
        let ticked = tokio::task::spawn_blocking(move || {
            let claimed = |triggers: &[&Trigger]| runner.claimed(&job, triggers);
            let lessee = match &runner.runs_for {
                RunsFor::Member { handoff, .. } => Some(&**handoff as &dyn Lessee),
                RunsFor::OneRun => None,
            };
            let options = TickOptions {
                claimed: &claimed,
                lessee,
                head_start: crate::evaluate::HEAD_START,
                head_start_after: crate::evaluate::HEAD_START_AFTER,
                page: crate::evaluate::PAGE,
                job: &job,
                evaluator: &runner.evaluator,
                max_age: runner.max_age,
                scope: &scope,
                fetched: fetched.as_ref(),
                memory: &runner.tick_memory,
                unwritten,
            };
            match at {
                Some(at) => evaluate::tick_at(&runner.workers, &runner.pool, &options, at),
                None => evaluate::tick(&runner.workers, &runner.pool, &options),
            }
        })
        .await
        .context("the evaluation panicked")?;
        // Pruning first: the checkpoint then starts over the WAL it left.
        self.pruning.after_writes(&self.pool).await;
        self.checkpoints.after_writes(&self.pool).await;
        match &ticked {
            Ok(_) => self.repairs.after_writes(&self.pool).await,
            // Perhaps for want of an index or a column the application's
            // change of its tables dropped: the next tick finds it again.
            Err(_) => self.repairs.at_once(&self.pool).await,
        }
        let with_fetch = |report: &mut TickReport| {
            if let Some(refresh) = &refresh {
                report.quote_errors = refresh.errors;
                report.fetch_duration = refresh.duration;
                report.duration += refresh.duration;
            }
        };
        match ticked {
            Ok(mut report) => {
                with_fetch(&mut report);
                Ok(JobReport::Evaluated(report))
            }
            Err(mut failed) => {
                with_fetch(&mut failed.report);
                Err(anyhow::Error::new(failed))
            }
        }
    }

    /// Writes what a reacting job's runs carried unwritten
    /// (`evaluate::carried`); a failure is logged, and the job's next run
    /// reads its window again from the stored watermark.
    pub(super) async fn write_unwritten(&self, job: &str, scope: Scope) {
        let key = evaluate::watermark_of(job, &scope, self.max_age);
        let runner = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            evaluate::write_carried(&runner.pool, &runner.tick_memory, &key)
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(error)) => format!("{error:#}"),
            Err(panicked) => format!("the write panicked: {panicked}"),
        };
        tracing::warn!(
            job,
            error,
            "writing what the job's runs observed failed; its next run reads those changes again"
        );
    }

    /// A `purge` job: deletes the delivered events older than `keep`.
    async fn purge(&self, keep: std::time::Duration) -> anyhow::Result<JobReport> {
        let started = std::time::Instant::now();
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let deleted = store::blocking(&self.pool, "purging delivered events", move |connection| {
            let now = store::clock::now(connection)?;
            let before = store::timestamp(now.checked_sub_signed(keep).unwrap_or_default());
            store::outbox::purge_delivered(connection, &before)
        })
        .await?;
        Ok(JobReport::Purged {
            deleted: deleted as u64,
            duration: started.elapsed(),
        })
    }

    /// Events still pending, and dead letters.
    pub(super) async fn backlog(&self) -> anyhow::Result<(u64, u64)> {
        store::blocking(&self.pool, "counting the outbox", |connection| {
            store::outbox::backlog(connection)
        })
        .await
    }
}
