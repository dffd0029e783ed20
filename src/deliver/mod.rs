//! Delivery: outbox rows to signed webhook POSTs, with retries. The only module
//! that sends to the webhook. `run` is the pipeline (leasing, sending with
//! bounded concurrency, recording outcomes); `attempt` is one POST: the HTTP
//! client, signing, and which answers are retried. Runs on tokio; every
//! database call goes to `spawn_blocking`.

mod attempt;
mod handoff;
mod idle;
mod lease;
mod pipeline;
mod pushpin;
mod route;
mod time;
mod users;

pub use attempt::{ANSWER_PREFIX, AttemptFailure, Webhook, backoff, classify, headers, sign};
pub use handoff::Handoff;
pub use pipeline::Totals;
pub use time::Stop;

use std::sync::Arc;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::recurring::Recurring;
use crate::store::{self, Pool};

use pipeline::{Deliverer, Ended, Start};

/// Delivers outbox rows until stopped, then drains until the deadline or until
/// nothing deliverable is left. `handoff` brings the rows this process's
/// claims lease to it, and its `wake` is notified when rows are queued that
/// nobody leased.
pub async fn run(
    pool: Pool,
    mut webhooks: watch::Receiver<Webhook>,
    handoff: Arc<Handoff>,
    mut stop: Stop,
    metrics: Arc<Metrics>,
) -> Totals {
    let mut deliverer = Deliverer {
        pool: &pool,
        handoff: &handoff,
        metrics: &metrics,
        totals: Totals::default(),
        bookkeeping_failures: Recurring::default(),
        attempt_failures: Recurring::default(),
        outbox_failures: Recurring::default(),
        checkpoints: store::Upkeep::checkpoints(),
        failures_in_a_row: 0,
        retry_at: None,
    };
    let wake = handoff.wake();
    let mut started_by = Start::Due;
    loop {
        let webhook = webhooks.borrow_and_update().clone();
        match deliverer
            .pipeline(webhook, wake, &mut stop, &mut webhooks, started_by)
            .await
        {
            Ended::Stopped => return deliverer.totals,
            Ended::Reconfigured => {
                started_by = Start::Due;
                continue;
            }
            Ended::Idle => {}
        }
        // Idle after work: a good moment to checkpoint the deliveries' writes.
        deliverer.checkpoints.after_writes(&pool).await;
        let draining = *stop.borrow();
        let next_due = deliverer.next_due().await;
        let Some(wait) = deliverer.idle_wait(next_due, draining) else {
            return deliverer.totals;
        };
        started_by = tokio::select! {
            () = tokio::time::sleep(wait) => Start::Due,
            () = wake.notified() => Start::Due,
            () = handoff.handed() => Start::Handed,
            Ok(()) = stop.changed() => Start::Due,
            Ok(()) = webhooks.changed() => Start::Due,
        };
    }
}
