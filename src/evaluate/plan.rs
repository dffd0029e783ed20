//! The second stage, pure: which changed tickers are evaluated (a usable,
//! fresh quote, fetched for this tick) and which are left out, and why.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::lock::lock;
use crate::logging;
use crate::recurring::Budget;
use crate::store::watermarks::Hold;
use crate::time::{QuoteTime, parse_time};

use super::judge::{Observed, QuoteProblem, usable_quote};
use super::options::{TickMemory, TickOptions};
use super::prepare::{Candidate, Change};
use super::quiet::JobBands;
use super::tick_report::TickReport;

/// A ticker ready to evaluate.
pub(super) struct Work {
    pub(super) ticker: String,
    /// Read its reachable alerts (its quote moved, it has alerts, and the
    /// move left its quiet band, if it had one).
    pub(super) moved: bool,
    /// Its quote was written in the window, or since its hold.
    pub(super) quote_written: bool,
    /// Read its changed alerts.
    pub(super) changed_alerts: bool,
    pub(super) observed: Observed,
    pub(super) quote_time: QuoteTime,
    /// Record its price as observed once the claims committed.
    pub(super) observe: bool,
    /// Its quote's time is surely after the observed price's (or none was
    /// observed): recording it replaces that price, as the store's write
    /// does (`store::observations::finish_tick`, which compares times to
    /// the millisecond on SQLite), so it may be carried unwritten
    /// (`evaluate::carried`).
    pub(super) newer: bool,
    /// Look at its price for its banded alerts waiting for it to come back
    /// (known for the moved tickers: only a move brings one back).
    pub(super) waiting: bool,
    /// The lowest change number that brought it here.
    pub(super) first_change: i64,
    /// The job held it back, judged through here: its reachable alerts
    /// are those not changed since, and its changed ones are read from
    /// here (see [`sort_work`]).
    pub(super) held_since: Option<i64>,
}

impl Work {
    /// Its hold, should the tick hold it back: its changes after the one
    /// before its first stay to be judged.
    pub(super) fn hold(&self) -> Hold {
        Hold {
            ticker: self.ticker.clone(),
            since: self.first_change - 1,
            through: 0,
            moved: self.quote_written,
        }
    }
}

/// What a tick evaluates, and the tickers it leaves out (counted in the
/// report as it is planned).
pub(super) struct Plan {
    pub(super) work: Vec<Work>,
    /// Tickers that could not be looked at, and why.
    problems: HashMap<String, QuoteProblem>,
    /// Some changed enabled alerts in scope have an empty (or NULL) ticker.
    pub(super) blank_tickers: bool,
    /// The tickers that could not be fetched: held back, so that the next
    /// tick judges them again (a fetch that works again may bring the same
    /// quote, which is no new change).
    pub(super) held: Vec<Hold>,
}

/// How much later a quote's time must be than the observed one's for the
/// store to find it newer, whatever its precision (SQLite's `julianday`
/// rounds to the millisecond).
const SURELY_NEWER: chrono::TimeDelta = chrono::TimeDelta::milliseconds(1);

/// Decides which tickers to evaluate: usable and fresh quotes, fetched (for
/// the HTTP source), and which moved tickers to read (not those that moved
/// inside their `quiet` band). Counts what it leaves out: tickers, and the
/// changed alerts that could not be read.
pub(super) fn plan(
    candidates: Vec<Candidate>,
    options: &TickOptions<'_>,
    quiet: &mut JobBands,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Plan {
    let mut plan = Plan {
        work: Vec::new(),
        problems: HashMap::new(),
        blank_tickers: false,
        held: Vec::new(),
    };
    // Candidates become work in place (a `Work` is smaller than a
    // `Candidate`): a first tick has one of either for every ticker, never
    // both at once.
    let mut work: Vec<Work> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let Some(mut admitted) = plan.admit(candidate, options, now, report) else {
            continue;
        };
        if admitted.moved
            && !admitted.changed_alerts
            && quiet.quiet(
                &admitted.ticker,
                admitted.observed.previous,
                admitted.observed.price,
            )
        {
            admitted.moved = false;
            report.quiet += 1;
        }
        work.push(admitted);
    }
    sort_work(&mut work);
    plan.work = work;
    plan
}

/// Moved tickers first, the readers share them out as a prefix; then the
/// rest; then the held ones, each read on its own from its hold. Each part
/// in ticker order, for `ByTicker`. (Unstable: no buffer of half the work.)
fn sort_work(work: &mut [Work]) {
    work.sort_unstable_by(|a, b| {
        (a.held_since.is_some().cmp(&b.held_since.is_some()))
            .then_with(|| b.moved.cmp(&a.moved))
            .then_with(|| a.ticker.cmp(&b.ticker))
    });
}

impl Plan {
    /// One candidate: its work if it can be evaluated now; else why not,
    /// counted in `report` (and a ticker not fetched held back).
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
            held_since,
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
            self.held.push(Hold {
                ticker: candidate.ticker,
                since: first_change - 1,
                through: 0,
                moved,
            });
            return None;
        }
        let Some((price, quote_time)) = candidate.quote else {
            report.no_quote += changed;
            return None;
        };
        match usable_quote(price, &quote_time, options.max_age, now) {
            Ok((price, at)) => Some(Work {
                ticker: candidate.ticker,
                moved: moved && candidate.has_alerts,
                quote_written: moved,
                changed_alerts: changed_alerts.is_some() || held_since.is_some(),
                observed: Observed {
                    price,
                    previous: candidate.previous,
                },
                quote_time: QuoteTime {
                    written: quote_time,
                    at,
                },
                observe: candidate.has_alerts,
                newer: candidate.previous_time.as_deref().is_none_or(|previous| {
                    parse_time(previous).is_some_and(|then| at - then >= SURELY_NEWER)
                }),
                waiting: candidate.waiting,
                first_change,
                held_since,
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

/// How many tickers' quote problems a process remembers, to name each when
/// it starts, changes and ends: past it, a ticker's problem is only counted
/// in the budget's line (a feed gone stale for a million tickers takes
/// neither a million entries nor a million lines).
pub(super) const QUOTE_PROBLEMS_KEPT: usize = 10_000;

/// Logs a ticker's quote problem when it starts or changes, and its end, not
/// every tick, within [`QUOTE_LINES_PER_MINUTE`](super::options::QUOTE_LINES_PER_MINUTE), remembering at most
/// [`QUOTE_PROBLEMS_KEPT`] tickers.
pub(super) fn log_quote_problems(memory: &TickMemory, plan: &Plan) {
    let mut known = lock(&memory.quote_problems);
    let budget = &memory.quote_warnings;
    for (ticker, problem) in &plan.problems {
        let room = known.len() < QUOTE_PROBLEMS_KEPT;
        match known.get_mut(ticker) {
            Some(known) if known == problem => continue,
            Some(known) => *known = *problem,
            None if room => {
                known.insert(ticker.clone(), *problem);
            }
            None => {
                budget.count();
                continue;
            }
        }
        if budget.take() {
            tracing::warn!(ticker = %logging::bounded(ticker), "{}", problem.describe());
        }
    }
    for work in &plan.work {
        if let Some(problem) = known.remove(&work.ticker) {
            if budget.take() {
                tracing::info!(ticker = %logging::bounded(&work.ticker), was = ?problem, "quote usable again");
            }
        }
    }
}

/// Says, once a minute, how many quote problems (or ends) were not named.
pub(super) fn say_unnamed_quote_problems(budget: &Budget) {
    if let Some(unlogged) = budget.roll(std::time::Instant::now()) {
        tracing::warn!(
            unlogged,
            "more tickers' quotes became unusable or usable again in the last minute than were named"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed stale for more tickers than are remembered: the map stays
    /// within its bound, each ticker past it is counted, not logged, and a
    /// known ticker's end is seen.
    #[test]
    fn quote_problems_are_remembered_for_a_bounded_number_of_tickers() {
        let memory = TickMemory::default();
        let stale = |from: usize, to: usize| Plan {
            work: Vec::new(),
            problems: (from..to)
                .map(|n| (format!("T{n}"), QuoteProblem::Stale))
                .collect(),
            blank_tickers: false,
            held: Vec::new(),
        };
        log_quote_problems(&memory, &stale(0, QUOTE_PROBLEMS_KEPT + 500));
        assert_eq!(lock(&memory.quote_problems).len(), QUOTE_PROBLEMS_KEPT);
        // Asked for every ticker once: the kept ones and the 500 past them.
        let asked = memory.quote_warnings.asked();
        assert_eq!(asked, QUOTE_PROBLEMS_KEPT as u64 + 500);
        // The same problems again: the kept ones are not named again, the
        // others are counted again.
        log_quote_problems(&memory, &stale(0, QUOTE_PROBLEMS_KEPT + 500));
        assert_eq!(memory.quote_warnings.asked(), asked + 500);
        // A kept ticker's quote usable again: named, and forgotten.
        let known = lock(&memory.quote_problems).keys().next().unwrap().clone();
        let mut usable = stale(0, 0);
        usable.work.push(Work {
            ticker: known.clone(),
            moved: true,
            quote_written: true,
            changed_alerts: false,
            observed: Observed {
                price: 1.0,
                previous: None,
            },
            quote_time: QuoteTime {
                written: String::new(),
                at: DateTime::UNIX_EPOCH,
            },
            observe: true,
            newer: true,
            waiting: false,
            first_change: 1,
            held_since: None,
        });
        log_quote_problems(&memory, &usable);
        assert!(!lock(&memory.quote_problems).contains_key(&known));
        assert_eq!(memory.quote_warnings.asked(), asked + 501);
    }
}
