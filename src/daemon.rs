//! Wiring: opens the store, schedules the jobs, runs until a signal, reloads,
//! drains and stops. The daemon's life is one loop over [`Event`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{Config, EvaluatorConfig, JobConfig, JobKind, PriceSource, Source};
use crate::deliver::{self, Totals, Webhook};
use crate::evaluate::{self, TickOptions, TickReport};
use crate::log_recurring;
use crate::membership::{self, Taken};
use crate::metrics::{self, Metrics};
use crate::quotes;
use crate::recurring::Recurring;
use crate::schedule::Scheduler;
use crate::signals::{self, Signal};
use crate::store::cluster::{Finish, Fire, Me};
use crate::store::{self, Pool};
use crate::systemd;

/// Everything that can happen to a running daemon.
#[derive(Debug)]
enum Event {
    /// A job's fire time came. `epoch` tells fire times of a replaced schedule apart.
    Due {
        job: String,
        epoch: u64,
        at: DateTime<Utc>,
    },
    /// A job's run ended.
    Finished {
        job: String,
        result: anyhow::Result<JobReport>,
    },
    /// Another member took this fire time of the job (`membership`).
    Elsewhere {
        job: String,
    },
    /// Fire times whose holder stopped beating, for this member to take over.
    Orphaned(Vec<Fire>),
    Signal(Signal),
    /// Time to tell systemd's watchdog that the loop and the scheduler are alive.
    Heartbeat,
}

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

/// What the jobs need, shared by every run of a process.
#[derive(Clone)]
struct Engine {
    pool: Pool,
    workers: Arc<rayon::ThreadPool>,
    evaluator: EvaluatorConfig,
    max_age: std::time::Duration,
    /// The HTTP quote source, if `prices.source = "http"`.
    source: Option<Arc<quotes::Source>>,
    tick_memory: Arc<evaluate::TickMemory>,
    metrics: Arc<Metrics>,
    /// Failures that may repeat every tick, logged at their changes.
    checkpoint_failures: Arc<Mutex<Recurring>>,
    record_failures: Arc<Mutex<Recurring>>,
    /// This daemon among those sharing the database; none for `run-job`.
    me: Option<Arc<Me>>,
}

impl Engine {
    async fn open(config: &Config) -> anyhow::Result<Engine> {
        let database = config.database.clone();
        let readers = config.evaluator.threads as u32;
        let pool = tokio::task::spawn_blocking(move || store::open(&database, readers))
            .await
            .context("opening the store panicked")??;
        let workers = Arc::new(evaluate::thread_pool(config.evaluator.threads)?);
        let source = match &config.prices.source {
            PriceSource::Sqlite => None,
            PriceSource::Http(http) => Some(Arc::new(quotes::Source::new(http)?)),
        };
        Ok(Engine {
            pool,
            workers,
            evaluator: config.evaluator.clone(),
            max_age: config.prices.max_age,
            source,
            tick_memory: Arc::default(),
            metrics: Arc::default(),
            checkpoint_failures: Arc::default(),
            record_failures: Arc::default(),
            me: None,
        })
    }

    /// Does the work of one fire time of `job`, unless another member took
    /// it first; tells the loop how it went.
    async fn run_fire(
        &self,
        job: String,
        kind: JobKind,
        fire: Fire,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let me = self
            .me
            .as_ref()
            .map(|me| me.member.clone())
            .unwrap_or_default();
        match membership::take(&self.pool, &me, &fire).await {
            Taken::Elsewhere => {
                self.metrics.tick_elsewhere(&job);
                tracing::debug!(job, at = fire.at_ms, "another member took this fire time");
                let _ = events.send(Event::Elsewhere { job });
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
        let result = self.run_recorded(&job, kind).await;
        let finish = if result.is_ok() {
            Finish::Done
        } else {
            Finish::Failed
        };
        membership::finish(&self.pool, &me, &fire, finish).await;
        let _ = events.send(Event::Finished { job, result });
    }

    /// Runs one job and records the run: in `job_runs` (for `status`) and in
    /// the metrics.
    async fn run_recorded(&self, job: &str, kind: JobKind) -> anyhow::Result<JobReport> {
        let started_at = store::timestamp(Utc::now());
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
        let run = store::runs::Run {
            job: job.to_owned(),
            started_at,
            duration_ms: duration.as_millis() as i64,
            result: outcome.to_owned(),
            detail,
            last_success_at: None,
            member: self.me.as_ref().map(|me| me.member.clone()),
        };
        let recorded = store::blocking(&self.pool, "recording the run", move |connection| {
            store::runs::record(connection, &run)
        })
        .await;
        let mut record_failures = lock(&self.record_failures);
        match recorded {
            Ok(()) => {
                record_failures.succeeded();
            }
            Err(error) => log_recurring!(
                warn,
                record_failures,
                format!("{error:#}"),
                job,
                "recording the run failed"
            ),
        }
        result
    }

    /// Runs one job to its end. Blocking work goes to `spawn_blocking`.
    async fn run(&self, job: &str, kind: JobKind) -> anyhow::Result<JobReport> {
        let engine = self.clone();
        match kind {
            JobKind::Evaluate { scope } => {
                // One time for the fetch and the tick: the fetch asks for the
                // tickers of the alerts the tick will re-arm as of then.
                let now = Utc::now();
                let mut refresh = match &self.source {
                    Some(source) => Some(
                        source
                            .refresh(&self.pool, &scope, now.timestamp_millis())
                            .await,
                    ),
                    None => None,
                };
                let job = job.to_owned();
                let fetched = refresh
                    .as_mut()
                    .map(|refresh| std::mem::take(&mut refresh.fetched));
                let ticked = tokio::task::spawn_blocking(move || {
                    let options = TickOptions {
                        job: &job,
                        evaluator: &engine.evaluator,
                        max_age: engine.max_age,
                        scope: &scope,
                        fetched: fetched.as_ref(),
                        memory: &engine.tick_memory,
                    };
                    evaluate::tick_at(&engine.workers, &engine.pool, &options, now)
                })
                .await
                .context("the evaluation panicked")?;
                self.checkpoint().await;
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
            JobKind::Purge { keep } => {
                let started = std::time::Instant::now();
                let before = store::timestamp(
                    Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX),
                );
                let deleted =
                    store::blocking(&self.pool, "purging delivered events", move |connection| {
                        store::outbox::purge_delivered(connection, &before)
                    })
                    .await?;
                Ok(JobReport::Purged {
                    deleted: deleted as u64,
                    duration: started.elapsed(),
                })
            }
        }
    }

    /// Checkpoints the WAL after a tick's writes (see `store::checkpoint`).
    async fn checkpoint(&self) {
        let checkpointed = store::blocking(&self.pool, "checkpointing the WAL", |connection| {
            store::checkpoint(connection)
        })
        .await;
        let mut failures = lock(&self.checkpoint_failures);
        match checkpointed {
            Ok(()) => {
                failures.succeeded();
            }
            Err(error) => {
                log_recurring!(warn, failures, format!("{error:#}"), "checkpoint failed")
            }
        }
    }

    /// Events still pending, and dead letters.
    async fn backlog(&self) -> anyhow::Result<(u64, u64)> {
        store::blocking(&self.pool, "counting the outbox", |connection| {
            store::outbox::backlog(connection)
        })
        .await
    }
}

/// What a tick that failed part-way committed before it failed (see
/// `evaluate::TickFailed`): none for other failures.
fn committed(error: &anyhow::Error) -> Option<&TickReport> {
    error
        .downcast_ref::<evaluate::TickFailed>()
        .map(|failed| &*failed.report)
}

/// A name for this process's outbox leases.
fn lease_owner() -> String {
    format!("{}-{}", std::process::id(), Uuid::new_v4().simple())
}

/// The scheduled jobs of one configuration.
struct Jobs {
    epoch: u64,
    jobs: HashMap<String, JobConfig>,
    /// The scheduler job holding each job's next fire time.
    pending: HashMap<String, Uuid>,
}

impl Jobs {
    /// Books every job's first fire time. A job the scheduler refuses is
    /// logged and left out; the others run.
    async fn schedule(
        scheduler: &Scheduler,
        configs: &[JobConfig],
        epoch: u64,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Jobs {
        let mut jobs = Jobs {
            epoch,
            jobs: HashMap::new(),
            pending: HashMap::new(),
        };
        for job in configs {
            jobs.jobs.insert(job.name.clone(), job.clone());
            if let Err(error) = jobs.arm(scheduler, &job.name, Utc::now(), events).await {
                tracing::error!(
                    job = job.name,
                    error = format!("{error:#}"),
                    "scheduling the job failed"
                );
            }
        }
        jobs
    }

    /// Books the job's first fire time after `after`.
    async fn arm(
        &mut self,
        scheduler: &Scheduler,
        name: &str,
        after: DateTime<Utc>,
        events: &mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<()> {
        let Some(job) = self.jobs.get(name) else {
            return Ok(());
        };
        let Some(at) = job.schedule.next_after(after) else {
            tracing::warn!(job = name, "the schedule has no further fire times");
            return Ok(());
        };
        let (events, job_name, epoch) = (events.clone(), name.to_owned(), self.epoch);
        let id = scheduler
            .add_at(
                at,
                Box::new(move || {
                    let _ = events.send(Event::Due {
                        job: job_name.clone(),
                        epoch,
                        at,
                    });
                    Box::pin(async {})
                }),
            )
            .await?;
        self.pending.insert(name.to_owned(), id);
        Ok(())
    }

    async fn cancel(&mut self, scheduler: &Scheduler) {
        for (_, id) in self.pending.drain() {
            scheduler.remove(&id).await;
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT: it starts, serves its events,
/// then stops (running jobs finish, the outbox drains for up to
/// `webhook.drain_timeout`).
pub async fn run(source: Source, config: Config) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(source, config).await?;
    daemon.serve().await;
    daemon.stop().await
}

/// A running daemon: the store, the deliverer, the schedule, and what its
/// loop keeps from one event to the next.
struct Daemon {
    source: Source,
    /// The configuration it started with: its `[database]` and `[evaluator]`
    /// hold until a restart.
    config: Config,
    engine: Engine,
    me: Arc<Me>,
    signals: mpsc::UnboundedReceiver<Signal>,
    signal_handle: signal_hook::iterator::Handle,
    /// Where the scheduler, the runs and the heartbeat send their events.
    events: mpsc::UnboundedSender<Event>,
    inbox: mpsc::UnboundedReceiver<Event>,
    deliverer: Deliverer,
    scheduler: Scheduler,
    jobs: Jobs,
    /// systemd's watchdog interval, if it watches.
    watchdog: Option<std::time::Duration>,
    beating: tokio::task::JoinHandle<()>,
    /// Jobs with a run under way here: a job runs once at a time.
    running: HashSet<String>,
    failures: HashMap<String, Recurring>,
    status: Status,
}

/// The deliverer's task and the means to steer it.
struct Deliverer {
    task: tokio::task::JoinHandle<Totals>,
    /// A reload's webhook settings.
    webhooks: watch::Sender<Webhook>,
    /// The drain deadline, once stopping.
    stop: watch::Sender<Option<Instant>>,
    wake: Arc<Notify>,
    drain_timeout: std::time::Duration,
    /// Wakes it when another daemon sharing the database queues events.
    _listener: store::Listener,
}

impl Deliverer {
    /// Starts delivering: first the events queued before this start (a
    /// crash, a dead webhook), then those this daemon or another sharing the
    /// database queues, as they commit.
    fn start(engine: &Engine, config: &Config) -> anyhow::Result<Deliverer> {
        let (webhooks, receiver) = watch::channel(Webhook::new(&config.webhook)?);
        let (stop, stopping) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(deliver::run(
            engine.pool.clone(),
            receiver,
            lease_owner(),
            wake.clone(),
            stopping,
            engine.metrics.clone(),
        ));
        wake.notify_one();
        let listener = {
            let wake = wake.clone();
            engine.pool.on_new_events(move || wake.notify_one())?
        };
        Ok(Deliverer {
            task,
            webhooks,
            stop,
            wake,
            drain_timeout: config.webhook.drain_timeout,
            _listener: listener,
        })
    }

    /// Takes a reloaded `[webhook]`; on an error the old one stays.
    fn reconfigure(&mut self, config: &Config) {
        match Webhook::new(&config.webhook) {
            Ok(webhook) => {
                let _ = self.webhooks.send(webhook);
            }
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "keeping the old webhook settings"
            ),
        }
        self.drain_timeout = config.webhook.drain_timeout;
    }

    /// Drains for up to the drain timeout, then stops.
    async fn drain(self) -> anyhow::Result<Totals> {
        let _ = self.stop.send(Some(Instant::now() + self.drain_timeout));
        self.wake.notify_one();
        self.task.await.context("the deliverer panicked")
    }
}

impl Daemon {
    /// Opens the store, starts the metrics endpoint, the deliverer, the
    /// schedule and the heartbeat, and tells systemd it is ready.
    async fn start(source: Source, config: Config) -> anyhow::Result<Daemon> {
        log_warnings(&source, &config);
        let mut engine = Engine::open(&config).await?;
        let me = Arc::new(membership::me());
        engine.me = Some(me.clone());
        if let Some(listen) = config.metrics.listen {
            metrics::serve(listen, engine.metrics.clone(), engine.pool.clone()).await?;
        }
        let (signal_sender, signals) = mpsc::unbounded_channel();
        let signal_handle = signals::forward(signal_sender)?;
        let (events, inbox) = mpsc::unbounded_channel::<Event>();
        let deliverer = Deliverer::start(&engine, &config)?;

        let scheduler = Scheduler::start().await?;
        let jobs = Jobs::schedule(&scheduler, &config.jobs, 0, &events).await;
        engine
            .metrics
            .jobs(config.jobs.iter().map(|job| job.name.as_str()));
        let watchdog = systemd::watchdog_interval();
        if let Some(interval) = watchdog {
            book_heartbeat(&scheduler, interval, &events).await;
        }
        let beating = tokio::spawn(beat(engine.pool.clone(), me.clone(), events.clone()));
        tracing::info!(
            config = %source.describe(),
            database = %config.database.describe(),
            jobs = config.jobs.len(),
            threads = config.evaluator.threads,
            readers = engine.pool.readers(),
            max_connections = engine.pool.most_connections(),
            "price-alertd started"
        );
        if config.jobs.is_empty() {
            tracing::warn!("no [[jobs]] are configured: nothing will be evaluated");
        }
        systemd::ready();
        Ok(Daemon {
            source,
            config,
            engine,
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
            failures: HashMap::new(),
            status: Status::default(),
        })
    }

    async fn next_event(&mut self) -> Event {
        tokio::select! {
            Some(signal) = self.signals.recv() => Event::Signal(signal),
            Some(event) = self.inbox.recv() => event,
        }
    }

    /// The daemon's life: one event after another, until told to stop.
    async fn serve(&mut self) {
        loop {
            match self.next_event().await {
                Event::Due { job, epoch, at } => self.due(job, epoch, at).await,
                Event::Orphaned(fires) => self.take_over(fires),
                Event::Elsewhere { job } => {
                    self.running.remove(&job);
                }
                Event::Finished { job, result } => self.finished(job, result).await,
                Event::Heartbeat => {
                    // Pinged from the loop, booked through the scheduler: a
                    // stuck loop or a dead scheduler stops the pings.
                    systemd::watchdog();
                    if let Some(interval) = self.watchdog {
                        book_heartbeat(&self.scheduler, interval, &self.events).await;
                    }
                }
                Event::Signal(Signal::Reload) => self.reload().await,
                Event::Signal(Signal::Shutdown) => return,
            }
        }
    }

    /// A job's fire time came: book the next one, and run this one unless
    /// the job's previous run is still going.
    async fn due(&mut self, job: String, epoch: u64, at: DateTime<Utc>) {
        if epoch != self.jobs.epoch {
            return;
        }
        let Some(kind) = self.jobs.jobs.get(&job).map(|config| config.kind.clone()) else {
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
        }
        if !self.running.insert(job.clone()) {
            self.engine.metrics.tick_skipped(&job);
            tracing::warn!(job, due = %at, "tick skipped: the previous run of this job is still going");
            return;
        }
        let fire = Fire {
            job: job.clone(),
            at_ms: at.timestamp_millis(),
        };
        self.spawn_run(job, kind, fire);
    }

    /// Fire times whose member stopped beating: each is run here, unless a
    /// run of its job is going here already (that run takes whatever the
    /// orphan left: its lease runs on; a later heartbeat finds it superseded).
    fn take_over(&mut self, fires: Vec<Fire>) {
        for fire in fires {
            let Some(kind) = self
                .jobs
                .jobs
                .get(&fire.job)
                .map(|config| config.kind.clone())
            else {
                continue;
            };
            if !self.running.insert(fire.job.clone()) {
                continue;
            }
            self.spawn_run(fire.job.clone(), kind, fire);
        }
    }

    fn spawn_run(&self, job: String, kind: JobKind, fire: Fire) {
        let (engine, events) = (self.engine.clone(), self.events.clone());
        tokio::spawn(async move { engine.run_fire(job, kind, fire, &events).await });
    }

    /// A run ended: log it, wake the deliverer if it queued events, and
    /// tell systemd.
    async fn finished(&mut self, job: String, result: anyhow::Result<JobReport>) {
        self.running.remove(&job);
        log_run(&job, &result, self.failures.entry(job.clone()).or_default());
        if matches!(&result, Ok(JobReport::Evaluated(report)) if report.triggered > 0) {
            self.deliverer.wake.notify_one();
        }
        self.status.ran(&job, &result);
        systemd::status(&self.status.text(self.engine.backlog().await.ok()));
    }

    /// SIGHUP: a valid configuration replaces the webhook settings and the
    /// schedule; an invalid one is refused, and the running ones stay.
    async fn reload(&mut self) {
        systemd::reloading();
        let reloaded = reload(&self.source, &self.config).await;
        self.engine.metrics.reloaded(reloaded.is_ok());
        self.status.reload = reloaded.as_ref().err().map(|why| {
            format!(
                "reload refused at {}: {why}; running the previous configuration",
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        });
        if let Ok(new) = reloaded {
            self.deliverer.reconfigure(&new);
            self.jobs.cancel(&self.scheduler).await;
            self.jobs = Jobs::schedule(
                &self.scheduler,
                &new.jobs,
                self.jobs.epoch + 1,
                &self.events,
            )
            .await;
            self.engine
                .metrics
                .jobs(new.jobs.iter().map(|job| job.name.as_str()));
            tracing::info!(jobs = new.jobs.len(), "configuration reloaded");
        }
        systemd::ready();
        systemd::status(&self.status.text(self.engine.backlog().await.ok()));
    }

    /// Stops scheduling, lets the running jobs finish, drains the outbox for
    /// up to the drain timeout, and leaves the members.
    async fn stop(mut self) -> anyhow::Result<()> {
        systemd::stopping();
        tracing::info!(
            running = self.running.len(),
            "stopping: no new ticks; letting running jobs finish"
        );
        self.jobs.cancel(&self.scheduler).await;
        self.scheduler.shutdown().await;
        while !self.running.is_empty() {
            match self.next_event().await {
                Event::Finished { job, result } => {
                    self.running.remove(&job);
                    log_run(&job, &result, self.failures.entry(job.clone()).or_default());
                }
                Event::Elsewhere { job } => {
                    self.running.remove(&job);
                }
                Event::Signal(Signal::Shutdown) => tracing::info!("already stopping"),
                Event::Due { .. }
                | Event::Orphaned(_)
                | Event::Heartbeat
                | Event::Signal(Signal::Reload) => {}
            }
        }
        // Beating until here: the fire times of the runs that were finishing
        // stayed this member's.
        self.beating.abort();
        let totals = self.deliverer.drain().await?;
        membership::leave(&self.engine.pool, &self.me.member).await;
        let (pending, dead) = self.engine.backlog().await?;
        self.signal_handle.close();
        tracing::info!(
            delivered = totals.delivered,
            pending,
            dead,
            "price-alertd stopped"
        );
        Ok(())
    }
}

/// This member's heartbeats, every `membership::HEARTBEAT`: each renews the
/// leases of the fires it holds and hands the loop the fires whose member
/// stopped beating. Failures are logged when they start and end.
async fn beat(pool: Pool, me: Arc<Me>, events: mpsc::UnboundedSender<Event>) {
    let mut failures = Recurring::default();
    let mut interval = tokio::time::interval(membership::HEARTBEAT);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match membership::beat(&pool, &me).await {
            Ok(orphaned) => {
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(failed, "the heartbeat works again");
                }
                if !orphaned.is_empty() && events.send(Event::Orphaned(orphaned)).is_err() {
                    return;
                }
            }
            Err(error) => log_recurring!(
                warn,
                failures,
                format!("{error:#}"),
                "the heartbeat failed: this daemon's fire times may be taken over"
            ),
        }
    }
}

/// Books the next watchdog heartbeat through the scheduler.
async fn book_heartbeat(
    scheduler: &Scheduler,
    interval: std::time::Duration,
    events: &mpsc::UnboundedSender<Event>,
) {
    let at =
        Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::seconds(1));
    let events = events.clone();
    let booked = scheduler
        .add_at(
            at,
            Box::new(move || {
                let _ = events.send(Event::Heartbeat);
                Box::pin(async {})
            }),
        )
        .await;
    if let Err(error) = booked {
        tracing::error!(
            error = format!("{error:#}"),
            "booking the watchdog heartbeat failed"
        );
    }
}

/// Re-reads the configuration; on any error logs every problem and returns
/// why it was refused, so the running configuration stays.
async fn reload(source: &Source, running: &Config) -> Result<Config, String> {
    let loading = source.clone();
    let loaded = tokio::task::spawn_blocking(move || loading.load()).await;
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(errors)) => {
            for error in &errors.errors {
                tracing::error!(config = %errors.origin, %error, "invalid configuration");
            }
            tracing::error!(
                errors = errors.errors.len(),
                "reload refused; the running jobs stay as they were"
            );
            let count = errors.errors.len();
            return Err(format!(
                "{count} error{} in {}",
                if count == 1 { "" } else { "s" },
                errors.origin
            ));
        }
        Err(error) => {
            tracing::error!(%error, "reading the configuration panicked; the running jobs stay as they were");
            return Err("reading the configuration panicked".to_owned());
        }
    };
    log_warnings(source, &new);
    if new.database.engine != running.database.engine
        || new.evaluator.threads != running.evaluator.threads
    {
        tracing::warn!("changes to [database] and [evaluator] take effect at the next restart");
    }
    tracing::info!(
        "a reload applies [webhook] and [[jobs]]; [database], [evaluator], [prices], [metrics] and [log] apply at the next restart"
    );
    Ok(new)
}

/// Logs what is wrong in a configuration that does not stop the daemon.
fn log_warnings(source: &Source, config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(config = %source.describe(), %warning, "configuration");
    }
}

/// What `systemctl status` shows (the notify protocol's `STATUS=`): the last
/// run, the events waiting, and a refused reload until one succeeds.
#[derive(Default)]
struct Status {
    last_run: Option<String>,
    reload: Option<String>,
}

impl Status {
    fn ran(&mut self, job: &str, result: &anyhow::Result<JobReport>) {
        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.last_run = Some(match result {
            Ok(JobReport::Evaluated(report)) => format!(
                "last tick {job} at {at}: {} evaluated, {} triggered",
                report.evaluated, report.triggered
            ),
            Ok(JobReport::Purged { deleted, .. }) => {
                format!("last run {job} at {at}: {deleted} purged")
            }
            Err(_) => format!("last run {job} at {at} failed (see the journal)"),
        });
    }

    /// The text, with the number of pending events if it could be read.
    fn text(&self, backlog: Option<(u64, u64)>) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.reload.clone());
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

/// Logs a finished run. A failure is logged when it starts or changes and
/// then once a minute (`failures` is this job's), and its end once.
fn log_run(job: &str, result: &anyhow::Result<JobReport>, failures: &mut Recurring) {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `run-job` did.
#[derive(Debug)]
pub struct RunJobSummary {
    pub job: String,
    pub report: anyhow::Result<JobReport>,
    pub delivery: Totals,
    pub delivery_time: std::time::Duration,
    pub pending: u64,
    pub dead: u64,
}

impl RunJobSummary {
    /// One line of `key=value` pairs.
    pub fn line(&self) -> String {
        let (result, tick, purged, duration) = match &self.report {
            Ok(JobReport::Evaluated(report)) => ("ok", report.clone(), 0, report.duration),
            Ok(JobReport::Purged { deleted, duration }) => {
                ("ok", TickReport::default(), *deleted, *duration)
            }
            Err(error) => {
                let partial = committed(error).cloned().unwrap_or_default();
                let duration = partial.duration;
                ("failed", partial, 0, duration)
            }
        };
        let mut line = format!("job={} result={result}", self.job);
        for (key, value) in tick.counts() {
            line.push_str(&format!(" {key}={value}"));
        }
        line.push_str(&format!(
            " purged={purged} delivered={} failed={} dead={} pending={} dead_total={} duration_ms={} fetch_ms={} delivery_ms={} peak_rss_kib={}",
            self.delivery.delivered,
            self.delivery.failed,
            self.delivery.dead,
            self.pending,
            self.dead,
            duration.as_millis(),
            tick.fetch_duration.as_millis(),
            self.delivery_time.as_millis(),
            peak_rss_kib().unwrap_or(0)
        ));
        line
    }
}

/// This process's peak resident memory (Linux: VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs one job now, then delivers what is pending for up to the drain time.
pub async fn run_job(config: Config, name: &str) -> anyhow::Result<RunJobSummary> {
    let Some(job) = config.jobs.iter().find(|job| job.name == name) else {
        let names: Vec<&str> = config.jobs.iter().map(|job| job.name.as_str()).collect();
        anyhow::bail!("no job is named {name:?}; the configuration has {names:?}");
    };
    let engine = Engine::open(&config).await?;
    let report = engine.run_recorded(name, job.kind.clone()).await;
    if let Err(error) = &report {
        tracing::error!(job = name, error = format!("{error:#}"), "job failed");
    }
    let (_webhook_sender, webhooks) = watch::channel(Webhook::new(&config.webhook)?);
    let (_stop_sender, stop) = watch::channel(Some(Instant::now() + config.webhook.drain_timeout));
    let delivering = std::time::Instant::now();
    let delivery = deliver::run(
        engine.pool.clone(),
        webhooks,
        lease_owner(),
        Arc::new(Notify::new()),
        stop,
        engine.metrics.clone(),
    )
    .await;
    let delivery_time = delivering.elapsed();
    let (pending, dead) = engine.backlog().await?;
    Ok(RunJobSummary {
        job: name.to_owned(),
        report,
        delivery,
        delivery_time,
        pending,
        dead,
    })
}
