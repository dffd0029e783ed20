//! The last stage: the observed prices and the job's watermark, recorded
//! once every claim committed.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store;
use crate::store::observations::{self, Observation};

use super::claim::Locked;
use super::plan::Plan;
use super::prepare::Snapshot;

/// After every claim committed, in one transaction: the evaluated prices
/// become the tickers' previous ones, and the job's watermark moves to the
/// end of the window (or to just before a ticker that could not be fetched,
/// or one with a triggered alert someone else held locked: that ticker's
/// price is not recorded either, so the next tick judges its alerts as this
/// one did). A crash before this commit leaves both, and the next tick reads
/// the same changes again: nothing is skipped, and what was claimed stays
/// claimed.
pub(super) fn observe(
    writer: &mut store::Connection,
    snapshot: &Snapshot,
    plan: Plan,
    locked: &[Locked],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let held: HashSet<&str> = locked.iter().map(|(_, ticker)| ticker.as_str()).collect();
    let mut deferred = plan.deferred;
    let mut observed: Vec<Observation> = Vec::with_capacity(plan.work.len());
    for work in plan.work {
        if held.contains(work.ticker.as_str()) {
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
