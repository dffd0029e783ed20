//! Wiring: opens the store, schedules the jobs, runs until a signal, reloads,
//! drains and stops. The daemon's life is one loop over [`LoopEvent`].

mod deadlines;
mod deliverer;
mod events;
mod heartbeat;
mod job_report;
mod jobs;
mod main_loop;
mod reacting;
mod reload;
mod run_job;
mod runner;
mod status;

pub use job_report::JobReport;
pub use run_job::{RunJobSummary, run_job};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{Config, ConfigOrigin};
use crate::recurring::Recurring;
use crate::schedule::Scheduler;
use crate::signals::{self, Signal};
use crate::store::cluster::Me;
use crate::{membership, metrics, store, systemd};

use deadlines::Deadlines;
use deliverer::DeliveryTask;
use events::LoopEvent;
use heartbeat::{beat, book_heartbeat};
use job_report::log_run;
use jobs::Jobs;
use reacting::{Reacting, names};
use reload::log_warnings;
use runner::{Runner, RunsFor};
use status::SystemdStatus;

/// Runs the daemon until SIGTERM or SIGINT: it starts, serves its events,
/// then stops (running jobs finish, the outbox drains for up to
/// `webhook.drain_timeout`).
pub async fn run(source: ConfigOrigin, config: Config) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(source, config).await?;
    daemon.serve().await;
    daemon.stop().await
}

/// A running daemon: the store, the deliverer, the schedule, and what its
/// loop keeps from one event to the next.
struct Daemon {
    source: ConfigOrigin,
    /// The configuration it started with: its `[database]` and `[evaluator]`
    /// hold until a restart.
    config: Config,
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
    /// Opens the store, starts the metrics endpoint, the deliverer, the
    /// schedule and the heartbeat, and tells systemd it is ready.
    async fn start(source: ConfigOrigin, config: Config) -> anyhow::Result<Daemon> {
        log_warnings(&source, &config);
        let me = Arc::new(membership::me());
        let wake_deliverer = Arc::new(tokio::sync::Notify::new());
        let runs_for = RunsFor::Member {
            me: me.clone(),
            wake_deliverer: wake_deliverer.clone(),
        };
        let runner = Runner::open(&config, runs_for).await?;
        if let Some(listen) = config.metrics.listen {
            metrics::serve(listen, runner.metrics.clone(), runner.pool.clone()).await?;
        }
        let (signal_sender, signals) = mpsc::unbounded_channel();
        let signal_handle = signals::forward(signal_sender)?;
        let (events, inbox) = mpsc::unbounded_channel::<LoopEvent>();
        let deliverer = DeliveryTask::start(&runner, &config, wake_deliverer)?;

        let scheduler = Scheduler::start().await?;
        let jobs = Jobs::schedule(&scheduler, &config.jobs, 0, &events).await;
        runner
            .metrics
            .jobs(config.jobs.iter().map(|job| job.name.as_str()));
        runner.metrics.jobs_armed(jobs.unarmed.clone());
        let mut deadlines = Deadlines::default();
        deadlines.scheduled(&config.jobs, &runner.metrics, chrono::Utc::now());
        let watchdog = systemd::watchdog_interval();
        if let Some(interval) = watchdog {
            book_heartbeat(&scheduler, interval, &events).await;
        }
        let (reacting_jobs, reacting) = tokio::sync::watch::channel(names(&config.jobs));
        let beating = tokio::spawn(beat(
            runner.pool.clone(),
            runner.metrics.clone(),
            me.clone(),
            reacting,
            events.clone(),
        ));
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

    /// Stops scheduling, lets the running jobs finish, drains the outbox for
    /// up to the drain timeout, and leaves the members.
    async fn stop(mut self) -> anyhow::Result<()> {
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
                LoopEvent::Elsewhere { job } => {
                    self.running.remove(&job);
                }
                LoopEvent::Signal(Signal::Shutdown) => tracing::info!("already stopping"),
                LoopEvent::Due { .. }
                | LoopEvent::Backlog(_)
                | LoopEvent::Orphaned(_)
                | LoopEvent::Changed(_)
                | LoopEvent::Reacting(_)
                | LoopEvent::Heartbeat
                | LoopEvent::Signal(Signal::Reload) => {}
            }
        }
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
}
