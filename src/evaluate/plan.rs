//! The second stage, pure: which changed tickers are evaluated (a usable,
//! fresh quote, fetched for this tick) and which are left out, and why.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::lock::lock;
use crate::logging;

use super::judge::{Observed, QuoteProblem, usable_quote};
use super::options::TickOptions;
use super::prepare::{Candidate, Change};
use super::report::TickReport;

/// A ticker ready to evaluate.
pub(super) struct Work {
    pub(super) ticker: String,
    /// Read its reachable alerts (its quote moved).
    pub(super) moved: bool,
    /// Read its changed alerts.
    pub(super) changed_alerts: bool,
    pub(super) observed: Observed,
    pub(super) quote_time: String,
    /// Record its price as observed once the claims committed.
    pub(super) observe: bool,
    /// Look at its price for its banded alerts waiting for it to come back
    /// (known for the moved tickers: only a move brings one back).
    pub(super) waiting: bool,
    /// The lowest change number that brought it here.
    pub(super) first_change: i64,
}

/// What a tick evaluates, and the tickers it leaves out (counted in the
/// report as it is planned).
pub(super) struct Plan {
    pub(super) work: Vec<Work>,
    /// Tickers that could not be looked at, and why.
    problems: HashMap<String, QuoteProblem>,
    /// Some changed enabled alerts in scope have an empty (or NULL) ticker.
    pub(super) blank_tickers: bool,
    /// The lowest change number of a ticker that could not be fetched: the
    /// watermark stays below it, so the next tick reads it again (a fetch
    /// that works again may bring the same quote, which is no new change).
    pub(super) deferred: Option<i64>,
}

/// Decides which tickers to evaluate: usable and fresh quotes, fetched (for
/// the HTTP source). Counts what it leaves out: tickers, and the changed
/// alerts that could not be read. Pure.
pub(super) fn plan(
    candidates: Vec<Candidate>,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Plan {
    let mut plan = Plan {
        work: Vec::new(),
        problems: HashMap::new(),
        blank_tickers: false,
        deferred: None,
    };
    // Candidates become work in place (a `Work` is smaller than a
    // `Candidate`): a first tick has one of either for every ticker, never
    // both at once.
    let mut work: Vec<Work> = candidates
        .into_iter()
        .filter_map(|candidate| plan.admit(candidate, options, now, report))
        .collect();
    // Moved tickers first: the readers share them out as a prefix. Each part
    // in ticker order, for `ByTicker`. (Unstable: no buffer of half the work.)
    work.sort_unstable_by(|a, b| b.moved.cmp(&a.moved).then_with(|| a.ticker.cmp(&b.ticker)));
    plan.work = work;
    plan
}

impl Plan {
    /// One candidate: its work if it can be evaluated now; else why not,
    /// counted in `report` (and, for a ticker not fetched, the change the
    /// watermark stays below).
    fn admit(
        &mut self,
        candidate: Candidate,
        options: &TickOptions<'_>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Option<Work> {
        let Change {
            moved,
            changed_alerts,
            first_change,
        } = candidate.change;
        let changed = changed_alerts.unwrap_or(0);
        if moved {
            report.tickers_changed += 1;
        }
        if candidate.ticker.trim().is_empty() {
            report.malformed_alerts += changed;
            self.blank_tickers = true;
            return None;
        }
        let not_fetched = options
            .fetched
            .is_some_and(|fetched| !fetched.contains(&candidate.ticker));
        if not_fetched && (candidate.has_alerts || candidate.waiting) {
            report.unavailable += changed;
            self.deferred = Some(
                self.deferred
                    .map_or(first_change, |first| first.min(first_change)),
            );
            return None;
        }
        let Some((price, quote_time)) = candidate.quote else {
            report.no_quote += changed;
            return None;
        };
        match usable_quote(price, &quote_time, options.max_age, now) {
            Ok(price) => Some(Work {
                ticker: candidate.ticker,
                moved: moved && candidate.has_alerts,
                changed_alerts: changed_alerts.is_some(),
                observed: Observed {
                    price,
                    previous: candidate.previous,
                },
                quote_time,
                observe: candidate.has_alerts,
                waiting: candidate.waiting,
                first_change,
            }),
            Err(problem) => {
                if problem == QuoteProblem::Stale {
                    report.stale_quotes += 1;
                    report.stale_alerts += changed;
                } else {
                    report.malformed_quotes += 1;
                }
                self.problems.insert(candidate.ticker, problem);
                None
            }
        }
    }
}

/// Logs a ticker's quote problem when it starts or changes, and its end, not
/// every tick.
pub(super) fn log_quote_problems(known: &Mutex<HashMap<String, QuoteProblem>>, plan: &Plan) {
    let mut known = lock(known);
    for (ticker, problem) in &plan.problems {
        if known.insert(ticker.clone(), *problem) != Some(*problem) {
            tracing::warn!(ticker = %logging::bounded(ticker), "{}", problem.describe());
        }
    }
    for work in &plan.work {
        if let Some(problem) = known.remove(&work.ticker) {
            tracing::info!(ticker = %logging::bounded(&work.ticker), was = ?problem, "quote usable again");
        }
    }
}
