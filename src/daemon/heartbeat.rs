//! The daemon's two heartbeats: this member's, which renews its leases and
//! finds orphaned fire times, and systemd's watchdog, booked through the
//! scheduler.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{CLOCK_WITHIN, Metrics};
use crate::recurring::Recurring;
use crate::schedule::Scheduler;
use crate::store::Pool;
use crate::store::clock::Offset;
use crate::store::cluster::Me;
use crate::{log_recurring, membership};

use super::events::LoopEvent;

/// This member's heartbeats, every `Leases::heartbeat`, and at once when
/// the jobs that react change (a reload): each renews the leases of the
/// fires it holds and hands the loop the fires whose member stopped
/// beating; then takes or renews the reacting leases of `reacting`'s jobs
/// and tells the loop which are this member's. Failures are logged when
/// they start and end. `joined` hears when the first heartbeat is done
/// (written or failed), so that the daemon is a member before it says it
/// runs.
pub(super) async fn beat(
    pool: Pool,
    metrics: Arc<Metrics>,
    me: Arc<Me>,
    mut reacting: watch::Receiver<Vec<String>>,
    events: mpsc::UnboundedSender<LoopEvent>,
    joined: oneshot::Sender<()>,
) {
    let mut joined = Some(joined);
    let mut failures = Recurring::default();
    let mut clock_off = Recurring::default();
    let mut interval = tokio::time::interval(membership::Leases::in_force().heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            Ok(()) = reacting.changed() => {}
        }
        let jobs = reacting.borrow_and_update().clone();
        let given_back: Vec<String> = held
            .iter()
            .filter(|job| !jobs.contains(job))
            .cloned()
            .collect();
        let beaten = match membership::beat(&pool, &me).await {
            Ok(orphaned) => membership::take_reacting(&pool, &me.member, jobs, given_back)
                .await
                .map(|now_held| (orphaned, now_held)),
            Err(error) => Err(error),
        };
        match beaten {
            Ok(((orphaned, offset), now_held)) => {
                metrics.beat(offset);
                say_how_the_clock_is(&mut clock_off, offset);
                if let Some(failed) = failures.succeeded() {
                    tracing::info!(failed, "the heartbeat works again");
                }
                if !orphaned.is_empty() && events.send(LoopEvent::Orphaned(orphaned)).is_err() {
                    return;
                }
                held = now_held;
                if events.send(LoopEvent::Reacting(held.clone())).is_err() {
                    return;
                }
            }
            Err(error) => log_recurring!(
                warn,
                failures,
                format!("{error:#}"),
                "the heartbeat failed: this daemon's fire times and reacting jobs may be taken over"
            ),
        }
        if let Some(joined) = joined.take() {
            let _ = joined.send(());
        }
    }
}

/// Says, when it starts, every minute while it lasts and when it ends,
/// that this member's clock is off from the database's by more than
/// [`CLOCK_WITHIN`].
fn say_how_the_clock_is(clock_off: &mut Recurring, offset: Offset) {
    if !offset.beyond(CLOCK_WITHIN) {
        if clock_off.succeeded().is_some() {
            tracing::info!(
                offset_ms = offset.ms,
                "this member's clock agrees with the database's again"
            );
        }
        return;
    }
    let (side, early) = if offset.ms > 0 {
        ("behind", "late")
    } else {
        ("ahead of", "early")
    };
    log_recurring!(
        warn,
        clock_off,
        format!(
            "this member's clock is more than {} s {side} the database's",
            CLOCK_WITHIN.as_secs()
        ),
        offset_ms = offset.ms,
        "leases, expiries, cooldowns and snoozes take the database's time, but this member's schedule fires {early}: set its clock right (NTP)"
    );
}

/// Books the next watchdog heartbeat through the scheduler.
pub(super) async fn book_heartbeat(
    scheduler: &Scheduler,
    interval: std::time::Duration,
    events: &mpsc::UnboundedSender<LoopEvent>,
) {
    let at =
        Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::seconds(1));
    let events = events.clone();
    let booked = scheduler
        .add_at(
            at,
            Box::new(move || {
                let _ = events.send(LoopEvent::Heartbeat);
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
