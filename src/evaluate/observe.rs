//! The last stage, once every claim committed: the banded alerts whose
//! price came back, then the observed prices and the job's watermark.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store::observations::{self, Observation};
use crate::store::{self, alerts};

use super::claim::Locked;
use super::plan::Plan;
use super::prepare::Window;
use super::tick_report::TickReport;

/// Where a tick's watermark goes: the end of its window, or just before
/// the first change of a ticker it held back, whichever page held it back.
pub(super) struct Watermark {
    /// The job's watermark key.
    pub(super) job: String,
    pub(super) window: Window,
    /// The lowest first change of a ticker held back so far.
    pub(super) deferred: Option<i64>,
    /// The page being observed is the window's last: the watermark moves
    /// with its observations.
    pub(super) last: bool,
}

impl Watermark {
    fn defer(&mut self, change: i64) {
        self.deferred = Some(self.deferred.map_or(change, |first| first.min(change)));
    }

    /// The watermark a page's observations commit with: the end of the
    /// window with the last page, none before.
    fn moved(&self) -> Option<(&str, i64)> {
        let closed = self.window.closed;
        let to = self
            .deferred
            .map_or(closed, |first| (first - 1).min(closed));
        self.last.then_some((self.job.as_str(), to))
    }
}

/// After every claim of a page committed: first the banded alerts waiting
/// for the evaluated prices to come back (`store::alerts::come_back`: their
/// wait ends, and those whose cooldown passed are re-armed), then, in one
/// transaction, the evaluated prices become the tickers' previous ones,
/// and, with the window's last page, the job's watermark moves to the end
/// of the window (or to just before a ticker that could not be fetched, or
/// one with a triggered or returned alert someone else held locked: that
/// ticker's price is not recorded either, so the next tick judges its
/// alerts as this one did). A crash before the last commit leaves the
/// watermark, and the next tick reads the same changes again: nothing is
/// skipped, what was claimed stays claimed (and what came back stays back),
/// and a price recorded by an earlier page is judged again as moved from
/// itself, which brings nothing a crossing did not already bring.
pub(super) fn observe(
    writer: &mut store::Connection,
    watermark: &mut Watermark,
    plan: Plan,
    locked: &[Locked],
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    let mut held: HashSet<String> = locked.iter().map(|held| held.ticker.clone()).collect();
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
    report.returned += returned.came_back;
    report.rearmed += returned.rearmed;
    held.extend(returned.held);
    if let Some(first) = plan.deferred {
        watermark.defer(first);
    }
    let mut observed: Vec<Observation> = Vec::with_capacity(plan.work.len());
    for work in plan.work {
        if held.contains(&work.ticker) {
            watermark.defer(work.first_change);
        } else if work.observe {
            observed.push(Observation {
                ticker: work.ticker,
                price: work.observed.price,
                quote_time: work.quote_time.written,
            });
        }
    }
    observations::finish_tick(writer, &observed, watermark.moved(), now)
        .context("recording observed prices and the job's watermark")
}
