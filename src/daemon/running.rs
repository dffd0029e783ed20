//! A running daemon: its start (the store, the metrics endpoint, the
//! deliverer, the schedule, the heartbeat), its loop, one event after
//! another (a fire time, a change, a run's end, a fire time to take over,
//! a heartbeat, a signal) until told to stop, and its stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigOrigin, JobKind};
use crate::metrics::Cause;
use crate::recurring::Recurring;
use crate::schedule::Scheduler;
use crate::signals::{self, Signal};
use crate::store::cluster::{Fire, Me};
use crate::store::listen::Changed;
use crate::{deliver, evaluate, membership, metrics, store, systemd};

use super::deadlines::Deadlines;
use super::deliverer::DeliveryTask;
use super::events::LoopEvent;
use super::heartbeat::{beat, book_heartbeat};
use super::job_report::{JobReport, log_run};
use super::jobs::Jobs;
use super::reacting::{Reacting, concerned, follow, names};
use super::reload::{Reloaded, log_warnings, reload};
use super::runner::{Runner, RunsFor};
use super::status::SystemdStatus;

/// A running daemon: the store, the deliverer, the schedule, and what its
/// loop keeps from one event to the next.
pub(super) struct Daemon {
    source: ConfigOrigin,
    /// The configuration it started with: what a reload does not apply
    /// holds until a restart.
    config: Config,
    /// The configuration last applied (at the start, or by a reload).
    applied: Config,
    runner: Runner,
    me: Arc<Me>,
    signals: mpsc::UnboundedReceiver<Signal>,
    signal_handle: signal_hook::iterator::Handle,
    /// Where the scheduler, the runs and the heartbeat send their events.
    events: mpsc::UnboundedSender<LoopEvent>,
    inbox: mpsc::UnboundedReceiver<LoopEvent>,
    deliverer: DeliveryTask,
    scheduler: Scheduler,
    jobs: Jobs,
    /// systemd's watchdog interval, if it watches.
    watchdog: Option<std::time::Duration>,
    beating: tokio::task::JoinHandle<()>,
    /// Jobs with a run under way here: a job runs once at a time.
    running: HashSet<String>,
    /// Hears of events queued and of changes, from any process.
    listener: store::listen::Listener,
    /// The reacting jobs this member holds, and the runs owed to them.
    reacting: Reacting,
    /// The jobs that react, for the heartbeat to take their leases.
    reacting_jobs: tokio::sync::watch::Sender<Vec<String>>,
    failures: HashMap<String, Recurring>,
    status: SystemdStatus,
    /// When each job becomes overdue, for the metrics.
    deadlines: Deadlines,
}

impl Daemon {
    /// Opens the store, starts the metrics endpoint, the stream origin, the deliverer, the
    /// schedule and the heartbeat, and tells systemd it is ready.
    pub(super) async fn start(source: ConfigOrigin, config: Config) -> anyhow::Result<Daemon> {
        log_warnings(&source, &config);
        let me = Arc::new(membership::me());
        let handoff = Arc::new(deliver::Handoff::new(
            super::deliverer::lease_owner(),
            Arc::new(tokio::sync::Notify::new()),
        ));
        let runs_for = RunsFor::Member {
            me: me.clone(),
            handoff: handoff.clone(),
        };
        let runner = Runner::open(&config, runs_for).await?;
        if let Some(listen) = config.metrics.listen {
            metrics::serve(listen, runner.metrics.clone(), runner.pool.clone()).await?;
        }
        if let Some(stream) = &config.stream {
            crate::stream::serve(stream, runner.pool.clone()).await?;
        }
        let (signal_sender, signals) = mpsc::unbounded_channel();
        let signal_handle = signals::forward(signal_sender)?;
        let (events, inbox) = mpsc::unbounded_channel::<LoopEvent>();
        let deliverer = DeliveryTask::start(&runner, &config, handoff)?;

        let scheduler = Scheduler::start().await?;
        let jobs = Jobs::schedule(&scheduler, &config.jobs, 0, &events).await;
        runner
            .metrics
            .jobs(config.jobs.iter().map(|job| job.name.as_str()));
        runner.metrics.reacting(&names(&config.jobs));
        runner
            .metrics
            .watch_quotes(&config.jobs, config.prices.max_age);
        runner.metrics.jobs_armed(jobs.unarmed.clone());
        let mut deadlines = Deadlines::default();
        deadlines.scheduled(&config.jobs, &runner.metrics, chrono::Utc::now());
        let watchdog = systemd::watchdog_interval();
        if let Some(interval) = watchdog {
            book_heartbeat(&scheduler, interval, &events).await;
        }
        let (reacting_jobs, reacting) = tokio::sync::watch::channel(names(&config.jobs));
        let (joined, first_beat) = tokio::sync::oneshot::channel();
        let beating = tokio::spawn(beat(
            runner.pool.clone(),
            runner.metrics.clone(),
            me.clone(),
            reacting,
            events.clone(),
            joined,
        ));
        // A member before it says it runs: `status` right after the start
        // lists it (a first heartbeat that fails is logged, and retried).
        let _ = tokio::time::timeout(membership::Leases::in_force().fire, first_beat).await;
        let listener = {
            let wake = deliverer.wake.clone();
            store::listen::listen(&runner.pool, move || wake.notify_one())?
        };
        tracing::info!(
            config = %source.describe(),
            database = %config.database.describe(),
            jobs = config.jobs.len(),
            reacting = config.jobs.iter().filter(|job| job.reacts()).count(),
            threads = config.evaluator.threads,
            readers = runner.pool.readers(),
            max_connections = runner.pool.most_connections(),
            "price-alertd started"
        );
        if config.jobs.is_empty() {
            tracing::warn!("no [[jobs]] are configured: nothing will be evaluated");
        }
        systemd::ready();
        Ok(Daemon {
            source,
            applied: config.clone(),
            config,
            runner,
            me,
            signals,
            signal_handle,
            events,
            inbox,
            deliverer,
            scheduler,
            jobs,
            watchdog,
            beating,
            running: HashSet::new(),
            listener,
            reacting: Reacting::default(),
            reacting_jobs,
            failures: HashMap::new(),
            status: SystemdStatus::default(),
            deadlines,
        })
    }

    /// Stops scheduling, lets the running jobs finish, writes what their
    /// runs carried, drains the outbox for up to the drain timeout, and
    /// leaves the members.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        systemd::stopping();
        self.runner.metrics.stopping();
        tracing::info!(
            running = self.running.len(),
            "stopping: no new ticks; letting running jobs finish"
        );
        self.listener.stop_hearing_changes();
        self.reacting.stop();
        self.jobs.cancel(&self.scheduler).await;
        self.scheduler.shutdown().await;
        while !self.running.is_empty() {
            match self.next_event().await {
                LoopEvent::Finished { job, result } => {
                    self.running.remove(&job);
                    log_run(&job, &result, self.failures.entry(job.clone()).or_default());
                }
                LoopEvent::Elsewhere { job } | LoopEvent::Written { job } => {
                    self.running.remove(&job);
                }
                LoopEvent::Signal(Signal::Shutdown) => tracing::info!("already stopping"),
                LoopEvent::Due { .. }
                | LoopEvent::Unwritten { .. }
                | LoopEvent::Backlog(_)
                | LoopEvent::Orphaned(_)
                | LoopEvent::Changed(_)
                | LoopEvent::Reacting(_)
                | LoopEvent::Heartbeat
                | LoopEvent::Signal(Signal::Reload) => {}
            }
        }
        // What the reacting jobs' runs carried: the next start need not
        // read those changes again.
        for config in self.jobs.configs.values().filter(|job| job.reacts()) {
            if let JobKind::Evaluate { scope, .. } = &config.kind {
                self.runner
                    .write_unwritten(&config.name, scope.clone())
                    .await;
            }
        }
        self.runner.records.flush().await;
        // Beating until here: the fire times of the runs that were finishing
        // stayed this member's.
        self.beating.abort();
        let totals = self.deliverer.drain().await?;
        membership::leave(&self.runner.pool, &self.me.member).await;
        let (pending, dead) = self.runner.backlog().await?;
        self.signal_handle.close();
        tracing::info!(
            delivered = totals.delivered,
            pending,
            dead,
            "price-alertd stopped"
        );
        Ok(())
    }

    pub(super) async fn next_event(&mut self) -> LoopEvent {
        tokio::select! {
            Some(signal) = self.signals.recv() => LoopEvent::Signal(signal),
            Some(event) = self.inbox.recv() => event,
        }
    }

    /// The daemon's life: one event after another, until told to stop.
    pub(super) async fn serve(&mut self) {
        loop {
            match self.next_event().await {
                LoopEvent::Due { job, epoch, at } => self.due(job, epoch, at).await,
                LoopEvent::Changed(changed) => self.react(&changed),
                LoopEvent::Unwritten { job } => self.write_unwritten(job),
                LoopEvent::Written { job } => self.ended(job),
                LoopEvent::Reacting(held) => self.hold(held),
                LoopEvent::Orphaned(fires) => self.take_over(fires),
                LoopEvent::Elsewhere { job } => {
                    self.runner.metrics.run_ended(&job, false);
                    self.progressed(&job);
                    self.ended(job);
                }
                LoopEvent::Finished { job, result } => self.finished(job, *result).await,
                LoopEvent::Heartbeat => {
                    // Pinged from the loop, booked through the scheduler: a
                    // stuck loop or a dead scheduler stops the pings.
                    systemd::watchdog();
                    if let Some(interval) = self.watchdog {
                        book_heartbeat(&self.scheduler, interval, &self.events).await;
                    }
                }
                LoopEvent::Backlog(backlog) => {
                    if let Some(after) = self.status.counted(backlog) {
                        self.spawn_count(after);
                    }
                    systemd::status(&self.status.text());
                }
                LoopEvent::Signal(Signal::Reload) => self.reload().await,
                LoopEvent::Signal(Signal::Shutdown) => return,
            }
        }
    }

    /// A job's fire time came: book the next one, and run this one unless
    /// the job's previous run is still going (then a job that reacts runs
    /// once more after it; any other skips this fire time).
    async fn due(&mut self, job: String, epoch: u64, at: DateTime<Utc>) {
        if epoch != self.jobs.epoch {
            return;
        }
        let Some(kind) = self.jobs.kind(&job) else {
            return;
        };
        if let Err(error) = self
            .jobs
            .arm(&self.scheduler, &job, at.max(Utc::now()), &self.events)
            .await
        {
            tracing::error!(
                job,
                error = format!("{error:#}"),
                "booking the next fire time failed; the job stops until a reload"
            );
            self.jobs.unarmed.push(job.clone());
            self.runner.metrics.jobs_armed(self.jobs.unarmed.clone());
        }
        if self.running.contains(&job)
            && self.jobs.configs.get(&job).is_some_and(|job| job.reacts())
        {
            self.reacting.owe(&job, Cause::Schedule);
            return;
        }
        if !self.running.insert(job.clone()) {
            self.runner.metrics.tick_skipped(&job);
            tracing::warn!(job, due = %at, "tick skipped: the previous run of this job is still going");
            return;
        }
        let fire = Fire {
            job: job.clone(),
            at_ms: at.timestamp_millis(),
        };
        self.spawn_run(job, kind, fire);
    }

    /// A commit changed quotes or alerts: each reacting job it concerns
    /// whose lease this member holds runs now, or once more after its
    /// running run.
    fn react(&mut self, changed: &Changed) {
        for (job, kind) in concerned(self.jobs.configs.values(), changed) {
            if self.reacting.holds(&job) {
                self.runner.metrics.change_heard(&job);
                self.run_now_or_after(job, kind, Cause::Change);
            }
        }
    }

    /// A run of `job` left its progress unwritten: unless it is booked
    /// already, it is written once it may wait no more, if no run of the
    /// job wrote it meanwhile.
    fn book_unwritten(&mut self, job: &str) {
        if !self.reacting.left_unwritten(job) {
            return;
        }
        let (events, job) = (self.events.clone(), job.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(evaluate::WRITTEN_WITHIN).await;
            let _ = events.send(LoopEvent::Unwritten { job });
        });
    }

    /// The write booked for a job's unwritten progress: unless a run of
    /// the job is under way (which writes it, or books it again), it is
    /// written, the job counting as running meanwhile; even if another
    /// member took the job's lease since (the prices are written where
    /// newer, the watermark only if the store still holds the one known).
    fn write_unwritten(&mut self, job: String) {
        if !self.reacting.write_unwritten(&job) || self.running.contains(&job) {
            return;
        }
        let Some(JobKind::Evaluate { scope, .. }) = self.jobs.kind(&job) else {
            return;
        };
        self.running.insert(job.clone());
        let (runner, events) = (self.runner.clone(), self.events.clone());
        tokio::spawn(async move {
            runner.write_unwritten(&job, scope).await;
            let _ = events.send(LoopEvent::Written { job });
        });
    }

    /// A heartbeat said which reacting jobs this member holds: it hears
    /// changes while it holds one, and those it did not hold before run at
    /// once, for whatever changed before (at the start, or after their
    /// member stopped beating).
    fn hold(&mut self, held: Vec<String>) {
        let newly = self.reacting.hold(held);
        let hearing = self.listener.hears_changes();
        self.follow_changes();
        for job in newly {
            if let Some(config) = self.jobs.configs.get(&job).filter(|job| job.reacts()) {
                tracing::info!(job, "reacting to this job's changes");
                // Hearing starts with "anything may have changed", which
                // runs every reacting job this member holds.
                if hearing {
                    let kind = config.kind.clone();
                    self.run_now_or_after(job, kind, Cause::Change);
                }
            }
        }
    }

    fn run_now_or_after(&mut self, job: String, kind: JobKind, cause: Cause) {
        if !self.running.insert(job.clone()) {
            self.reacting.owe(&job, cause);
            return;
        }
        self.runner.metrics.tick_caused(&job, cause);
        self.runner.metrics.run_started(&job);
        let (runner, events) = (self.runner.clone(), self.events.clone());
        tokio::spawn(async move { runner.run_unleased(job, kind, &events).await });
    }

    /// Fire times whose member stopped beating: each is run here, unless a
    /// run of its job is going here already (that run takes whatever the
    /// orphan left: its lease runs on; a later heartbeat finds it superseded).
    fn take_over(&mut self, fires: Vec<Fire>) {
        for fire in fires {
            let Some(kind) = self.jobs.kind(&fire.job) else {
                continue;
            };
            if !self.running.insert(fire.job.clone()) {
                continue;
            }
            self.spawn_run(fire.job.clone(), kind, fire);
        }
    }

    fn spawn_run(&self, job: String, kind: JobKind, fire: Fire) {
        self.runner.metrics.run_started(&job);
        let (runner, events) = (self.runner.clone(), self.events.clone());
        let me = self.me.clone();
        tokio::spawn(async move { runner.run_fire(&me.member, job, kind, fire, &events).await });
    }

    /// Hears changes while this member reacts for one of its jobs.
    fn follow_changes(&mut self) {
        let jobs = self.jobs.configs.values();
        if let Err(error) = follow(&mut self.listener, jobs, &self.reacting, &self.events) {
            tracing::error!(
                error = format!("{error:#}"),
                "listening for changes failed: the reacting jobs run on their schedules only"
            );
        }
    }

    /// A run of `job` ended here, or went to another member: the run owed
    /// to it, if any, starts.
    fn ended(&mut self, job: String) {
        self.running.remove(&job);
        if let Some(cause) = self.reacting.owed(&job)
            && let Some(kind) = self.jobs.kind(&job)
        {
            self.run_now_or_after(job, kind, cause);
        }
    }

    /// A run ended: log it, run the job again if a run is owed to it, and
    /// tell systemd with the outbox's next count, within a second (a
    /// reacting job's runs end hundreds of times a second under a feed).
    /// (Its claims woke the deliverer as they committed.)
    async fn finished(&mut self, job: String, result: anyhow::Result<JobReport>) {
        self.runner.metrics.run_ended(&job, result.is_ok());
        if result.is_ok() {
            self.progressed(&job);
        }
        if let Ok(JobReport::Evaluated(tick)) = &result
            && tick.unwritten
        {
            self.book_unwritten(&job);
        }
        self.ended(job.clone());
        log_run(&job, &result, self.failures.entry(job.clone()).or_default());
        self.status.ran(&job, &result);
        self.count_backlog();
    }

    /// Counts the outbox for systemd's status, off the loop: its answer
    /// comes back as an event. The loop never waits for the database.
    fn count_backlog(&mut self) {
        if let Some(after) = self.status.count() {
            self.spawn_count(after);
        }
    }

    fn spawn_count(&self, after: std::time::Duration) {
        let (runner, events) = (self.runner.clone(), self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let backlog = runner.backlog().await.ok();
            let _ = events.send(LoopEvent::Backlog(backlog));
        });
    }

    /// A run of `job` succeeded, or its fire time went to another member:
    /// its deadline moves.
    fn progressed(&mut self, job: &str) {
        if let Some(config) = self.jobs.configs.get(job) {
            self.deadlines
                .progressed(config, &self.runner.metrics, Utc::now());
        }
    }

    /// SIGHUP: a valid configuration replaces the webhook settings and the
    /// schedule; an invalid one is refused, and the running ones stay.
    async fn reload(&mut self) {
        systemd::reloading();
        let reloaded = reload(&self.source, &self.config, &self.applied).await;
        self.runner.metrics.reloaded(reloaded.is_ok());
        self.status.reload = reloaded.as_ref().err().map(|why| {
            format!(
                "reload refused at {}: {why}; running the previous configuration",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        });
        if let Ok(Reloaded {
            config: new,
            restart_pending,
        }) = reloaded
        {
            self.runner
                .metrics
                .restart_pending(!restart_pending.is_empty());
            self.status.restart_pending = restart_pending;
            self.deliverer.reconfigure(&new);
            self.jobs.cancel(&self.scheduler).await;
            self.jobs = Jobs::schedule(
                &self.scheduler,
                &new.jobs,
                self.jobs.epoch + 1,
                &self.events,
            )
            .await;
            self.runner
                .metrics
                .jobs(new.jobs.iter().map(|job| job.name.as_str()));
            self.runner.metrics.reacting(&names(&new.jobs));
            // Its max age applies at a restart: the one in force.
            self.runner
                .metrics
                .watch_quotes(&new.jobs, self.config.prices.max_age);
            self.runner.metrics.jobs_armed(self.jobs.unarmed.clone());
            self.deadlines
                .scheduled(&new.jobs, &self.runner.metrics, Utc::now());
            self.reacting_jobs.send_replace(names(&new.jobs));
            self.follow_changes();
            tracing::info!(
                jobs = new.jobs.len(),
                reacting = new.jobs.iter().filter(|job| job.reacts()).count(),
                "configuration reloaded"
            );
            self.applied = new;
        }
        systemd::ready();
        systemd::status(&self.status.text());
        self.count_backlog();
    }
}
