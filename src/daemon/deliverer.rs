//! The deliverer the daemon steers: started with the daemon, woken when
//! events are queued, given a reload's webhook, drained at the stop.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Config;
use crate::deliver::{self, Handoff, Totals, Webhook};

use super::runner::Runner;

/// A name for this process's outbox leases.
pub(super) fn lease_owner() -> String {
    format!("{}-{}", std::process::id(), Uuid::new_v4().simple())
}

/// The deliverer's task and the means to steer it.
pub(super) struct DeliveryTask {
    task: tokio::task::JoinHandle<Totals>,
    /// A reload's webhook settings.
    webhooks: watch::Sender<Webhook>,
    /// The drain deadline, once stopping.
    stop: watch::Sender<Option<Instant>>,
    pub(super) wake: Arc<Notify>,
    drain_timeout: std::time::Duration,
}

impl DeliveryTask {
    /// Starts delivering: first the events queued before this start (a
    /// crash, a dead webhook), then those this daemon or another sharing the
    /// database queues, as they commit.
    /// `wake` wakes it (a claim committed, another process queued events).
    pub(super) fn start(
        runner: &Runner,
        config: &Config,
        handoff: Arc<Handoff>,
    ) -> anyhow::Result<DeliveryTask> {
        let wake = handoff.wake().clone();
        let (webhooks, receiver) = watch::channel(Webhook::new(&config.webhook)?);
        let (stop, stopping) = watch::channel(None);
        let task = tokio::spawn(deliver::run(
            runner.pool.clone(),
            receiver,
            handoff,
            stopping,
            runner.metrics.clone(),
        ));
        wake.notify_one();
        Ok(DeliveryTask {
            task,
            webhooks,
            stop,
            wake,
            drain_timeout: config.webhook.drain_timeout,
        })
    }

    /// Takes a reloaded `[webhook]`; on an error the old one stays.
    pub(super) fn reconfigure(&mut self, config: &Config) {
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
    pub(super) async fn drain(self) -> anyhow::Result<Totals> {
        let _ = self.stop.send(Some(Instant::now() + self.drain_timeout));
        self.wake.notify_one();
        self.task.await.context("the deliverer panicked")
    }
}
