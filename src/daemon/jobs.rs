//! The scheduled jobs of one configuration: each job's next fire time booked
//! with the scheduler, cancelled on a reload.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::{JobConfig, JobKind};
use crate::schedule::Scheduler;

use super::events::LoopEvent;

/// The scheduled jobs of one configuration.
pub(super) struct Jobs {
    pub(super) epoch: u64,
    /// Each job's configuration, by name.
    pub(super) configs: HashMap<String, JobConfig>,
    /// The scheduler job holding each job's next fire time.
    pending: HashMap<String, Uuid>,
    /// Jobs without a booked fire time because booking failed: they run
    /// again after a reload (`/readyz` names them).
    pub(super) unarmed: Vec<String>,
}

impl Jobs {
    /// The kind of the configured job `name`, if it is configured.
    pub(super) fn kind(&self, name: &str) -> Option<JobKind> {
        self.configs.get(name).map(|config| config.kind.clone())
    }

    /// Books every job's first fire time. A job the scheduler refuses is
    /// logged and left out; the others run.
    pub(super) async fn schedule(
        scheduler: &Scheduler,
        configs: &[JobConfig],
        epoch: u64,
        events: &mpsc::UnboundedSender<LoopEvent>,
    ) -> Jobs {
        let mut jobs = Jobs {
            epoch,
            configs: HashMap::new(),
            pending: HashMap::new(),
            unarmed: Vec::new(),
        };
        for job in configs {
            jobs.configs.insert(job.name.clone(), job.clone());
            if let Err(error) = jobs.arm(scheduler, &job.name, Utc::now(), events).await {
                tracing::error!(
                    job = job.name,
                    error = format!("{error:#}"),
                    "scheduling the job failed"
                );
                jobs.unarmed.push(job.name.clone());
            }
        }
        jobs
    }

    /// Books the job's first fire time after `after`.
    pub(super) async fn arm(
        &mut self,
        scheduler: &Scheduler,
        name: &str,
        after: DateTime<Utc>,
        events: &mpsc::UnboundedSender<LoopEvent>,
    ) -> anyhow::Result<()> {
        let Some(job) = self.configs.get(name) else {
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
                    let _ = events.send(LoopEvent::Due {
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

    pub(super) async fn cancel(&mut self, scheduler: &Scheduler) {
        for (_, id) in self.pending.drain() {
            scheduler.remove(&id).await;
        }
    }
}
