//! Delivery: outbox rows to signed webhook POSTs, with retries. The only module
//! that sends to the webhook. `run` is the pipeline (leasing, sending with
//! bounded concurrency, recording outcomes); `attempt` is one POST: the HTTP
//! client, signing, and which answers are retried. Runs on tokio; every
//! database call goes to `spawn_blocking`.

mod attempt;
mod idle;
mod lease;
mod pipeline;
mod pushpin;
mod route;
mod time;
mod users;

pub use attempt::{ANSWER_PREFIX, AttemptFailure, Webhook, backoff, classify, headers, sign};
pub use pipeline::Totals;
pub use time::Stop;

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::recurring::Recurring;
use crate::store::{self, Pool};

use pipeline::{Deliverer, Ended};

/// Delivers outbox rows until stopped, then drains until the deadline or until
/// nothing deliverable is left. `wake` is notified when new rows are queued.
pub async fn run(
    pool: Pool,
    mut webhooks: watch::Receiver<Webhook>,
    owner: String,
    wake: Arc<Notify>,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Totals {
    let mut deliverer = Deliverer {
        pool: &pool,
        owner: &owner,
        metrics: &metrics,
        totals: Totals::default(),
        bookkeeping_failures: Recurring::default(),
        attempt_failures: Recurring::default(),
        outbox_failures: Recurring::default(),
        checkpoints: store::Upkeep::checkpoints(),
        failures_in_a_row: 0,
        retry_at: None,
    };
    loop {
        let webhook = webhooks.borrow_and_update().clone();
        match deliverer
            .pipeline(webhook, &wake, &mut stop, &mut webhooks)
            .await
        {
            Ended::Stopped => return deliverer.totals,
            Ended::Reconfigured => continue,
            Ended::Idle => {}
        }
        // Idle after work: a good moment to checkpoint the deliveries' writes.
        deliverer.checkpoints.after_writes(&pool).await;
        let draining = *stop.borrow();
        let next_due = deliverer.next_due().await;
        let Some(wait) = deliverer.idle_wait(next_due, draining) else {
            return deliverer.totals;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
            Ok(()) = stop.changed() => {}
            Ok(()) = webhooks.changed() => {}
        }
    }
}
