//! The last stage, once every claim committed: the banded alerts whose
//! price came back, then the observed prices and the job's watermark.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store::observations::{self, Observation};
use crate::store::{self, alerts};

use super::claim::Locked;
use super::plan::Plan;
use super::prepare::Snapshot;
use super::report::TickReport;

/// After every claim committed: first the banded alerts waiting for the
/// evaluated prices to come back (`store::alerts::come_back`: their wait
/// ends, and those whose cooldown passed are re-armed), then, in one
/// transaction, the evaluated prices become the tickers' previous ones, and
/// the job's watermark moves to the end of the window (or to just before a
/// ticker that could not be fetched, or one with a triggered or returned
/// alert someone else held locked: that ticker's price is not recorded
/// either, so the next tick judges its alerts as this one did). A crash
/// before this commit leaves both, and the next tick reads the same changes
/// again: nothing is skipped, and what was claimed stays claimed (and what
/// came back stays back).
pub(super) fn observe(
    writer: &mut store::Connection,
    snapshot: &Snapshot,
    plan: Plan,
    locked: &[Locked],
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    let mut held: HashSet<String> = locked.iter().map(|(_, ticker)| ticker.clone()).collect();
    // Only a moved ticker's price can bring an alert back: one that waits
    // was claimed at the ticker's price of then, which never brings it
    // back, and the job has looked at every move since, each with whether
    // alerts waited for it (`Work::waiting`).
    let prices: Vec<(&str, f64)> = plan
        .work
        .iter()
        .filter(|work| work.waiting && !held.contains(&work.ticker))
        .map(|work| (work.ticker.as_str(), work.observed.price))
        .collect();
    let returned = alerts::come_back(writer, &prices, now)
        .context("re-arming alerts whose price came back")?;
    report.returned += returned.returned;
    report.rearmed += returned.rearmed;
    held.extend(returned.held);
    let mut deferred = plan.deferred;
    let mut observed: Vec<Observation> = Vec::with_capacity(plan.work.len());
    for work in plan.work {
        if held.contains(&work.ticker) {
            deferred =
                Some(deferred.map_or(work.first_change, |first| first.min(work.first_change)));
        } else if work.observe {
            observed.push((work.ticker, work.observed.price, work.quote_time));
        }
    }
    let watermark = deferred.map_or(snapshot.window.settled, |first| {
        (first - 1).min(snapshot.window.settled)
    });
    observations::finish_tick(writer, &observed, (&snapshot.job, watermark), now)
        .context("recording observed prices and the job's watermark")
}
