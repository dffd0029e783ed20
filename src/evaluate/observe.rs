//! The last stage, once every claim committed: the banded alerts whose
//! price came back, then the observed prices and the job's watermark.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::lock::lock;
use crate::store::observations::{self, Observation};
use crate::store::watermarks::{self, Advance, Hold, MOST_HOLDS};
use crate::store::{self, alerts};

use super::carried::{Carried, Carry};
use super::claim::Locked;
use super::options::TickMemory;
use super::plan::Plan;
use super::prepare::Window;
use super::tick_report::TickReport;

/// Where a tick's watermark goes, and what it holds back: the watermark
/// to the end of its window, each ticker held back (not fetched, or with a
/// trigger someone else held locked) in a hold of its own, whichever page
/// held it back. Past [`MOST_HOLDS`] tickers, those with the latest first
/// changes keep the watermark below the first of them instead.
pub(super) struct Watermark {
    /// The job's watermark key.
    pub(super) job: String,
    pub(super) window: Window,
    /// The holds read as the tick started, in ticker order.
    pub(super) holds: Vec<Hold>,
    /// The tickers held back so far, at most [`MOST_HOLDS`].
    pub(super) holding: BTreeMap<String, Hold>,
    /// The lowest first change of a ticker held back past them.
    pub(super) deferred: Option<i64>,
    /// The page being observed is the window's last: the watermark moves
    /// with its observations.
    pub(super) last: bool,
}

impl Watermark {
    pub(super) fn new(job: String, window: Window, holds: Vec<Hold>) -> Watermark {
        Watermark {
            job,
            window,
            holds,
            holding: BTreeMap::new(),
            deferred: None,
            last: false,
        }
    }

    fn defer(&mut self, change: i64) {
        self.deferred = Some(self.deferred.map_or(change, |first| first.min(change)));
    }

    /// Holds a ticker back; past [`MOST_HOLDS`], the one judged through the
    /// latest change defers the watermark instead.
    fn hold(&mut self, hold: Hold) {
        if self.holding.len() < MOST_HOLDS || self.holding.contains_key(&hold.ticker) {
            let (since, moved) = (hold.since, hold.moved);
            let kept = self.holding.entry(hold.ticker.clone()).or_insert(hold);
            kept.since = kept.since.min(since);
            kept.moved |= moved;
            return;
        }
        let latest = self
            .holding
            .values()
            .max_by_key(|kept| kept.since)
            .expect("full")
            .clone();
        if hold.since >= latest.since {
            self.defer(hold.since + 1);
        } else {
            self.holding.remove(&latest.ticker);
            self.defer(latest.since + 1);
            self.holding.insert(hold.ticker.clone(), hold);
        }
    }

    /// The watermark and holds a page's observations commit with: with the
    /// last page, the end of the window (or just before the first change
    /// of a ticker deferred), the holds still owed (those not judged from
    /// below it), and the holds read that this tick judged or that the
    /// window now covers; none before.
    pub(super) fn advance(&self) -> Option<(i64, Vec<Hold>, Vec<Hold>)> {
        if !self.last {
            return None;
        }
        let closed = self.window.closed;
        let to = self
            .deferred
            .map_or(closed, |first| (first - 1).min(closed));
        let held: Vec<Hold> = self
            .holding
            .values()
            .filter(|hold| hold.since < to)
            .cloned()
            .collect();
        let still_held = |ticker: &str| {
            held.binary_search_by(|hold| hold.ticker.as_str().cmp(ticker))
                .is_ok()
        };
        let released = self
            .holds
            .iter()
            .filter(|hold| !still_held(&hold.ticker))
            .cloned()
            .collect();
        Some((to, held, released))
    }
}

/// What a page's end carries: the job's carry, and whether the page may
/// leave its progress unwritten in it (`evaluate::carried`).
pub(super) struct Carrying<'c> {
    /// The job's.
    pub(super) carry: &'c mut Carry,
    /// The process's, with its observed prices not written.
    pub(super) carried: &'c Mutex<Carried>,
    pub(super) unwritten: bool,
    /// The tickers whose alerts the tick claimed: their prices are written
    /// at once, whatever is carried.
    pub(super) claimed: &'c HashSet<String>,
    /// The tickers whose prices the page's claim recorded with it
    /// (`evaluate::claim`): a page that carries writes them no more.
    pub(super) recorded: &'c HashSet<String>,
}

/// After every claim of a page committed: first the banded alerts waiting
/// for the evaluated prices to come back (`store::alerts::come_back`: their
/// wait ends, and those whose cooldown passed are re-armed), then, in one
/// transaction, the evaluated prices become the tickers' previous ones,
/// and, with the window's last page, the job's watermark moves to the end
/// of the window, and a ticker that could not be fetched, or one with a
/// triggered or returned alert someone else held locked, is held back (its
/// price is not recorded either, so the next tick judges its alerts from
/// its hold as this one did). A crash before the last commit leaves the
/// watermark, and the next tick reads the same changes again: nothing is
/// skipped, what was claimed stays claimed (and what came back stays back),
/// and a price recorded by an earlier page is judged again as moved from
/// itself, which brings nothing a crossing did not already bring.
///
/// A page that may (`carrying`), and that holds back no ticker and brings
/// no alert back, in a job that holds none back, writes only the observed
/// prices of the tickers whose alerts the tick claimed, if any: its other
/// observed prices, and with the last page the watermark, are carried to
/// a later tick, within their bounds (`evaluate::carried`). A page that
/// writes everything writes what is carried too.
pub(super) fn observe(
    writer: &mut store::Connection,
    watermark: &mut Watermark,
    plan: Plan,
    locked: &[Locked],
    mut carrying: Carrying<'_>,
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
    let brings_back = !prices.is_empty();
    let returned = alerts::come_back(writer, &prices, now)
        .context("re-arming alerts whose price came back")?;
    report.returned += returned.came_back;
    report.rearmed += returned.rearmed;
    held.extend(returned.held);
    for hold in plan.held {
        watermark.hold(hold);
    }
    // Each with whether its quote is newer than the observed one (an older
    // quote's price is the store's to refuse, never carried).
    let mut observed: Vec<(Observation, bool)> = Vec::with_capacity(plan.work.len());
    for work in plan.work {
        if held.contains(&work.ticker) {
            watermark.hold(work.hold());
        } else if work.observe {
            let observation = Observation {
                ticker: work.ticker,
                price: work.observed.price,
                quote_time: work.quote_time.written,
            };
            observed.push((observation, work.newer));
        }
    }
    let holds_none = !brings_back && held.is_empty();
    let writes = match carry_or_write(&mut carrying, watermark, observed, holds_none) {
        Ending::Carried => return Ok(()),
        Ending::Claimed(claimed) => return write(writer, vec![claimed], None, now),
        Ending::All(writes) => writes,
    };
    let advance = watermark.advance();
    let advance = advance.as_ref().map(|(to, held, released)| Advance {
        job: &watermark.job,
        to: *to,
        through: watermark.window.closed,
        held,
        released,
    });
    report.held = advance
        .as_ref()
        .map_or(0, |advance| advance.held.len() as u64);
    write(writer, writes, advance.as_ref(), now)?;
    if let Some(advance) = advance {
        carrying.carry.written(advance.to);
    }
    Ok(())
}

/// Writes observed prices, in turn, the watermark moving with the last.
fn write(
    writer: &mut store::Connection,
    writes: Vec<Vec<Observation>>,
    advance: Option<&Advance<'_>>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let last = writes.len().saturating_sub(1);
    for (at, observed) in writes.iter().enumerate() {
        observations::finish_tick(writer, observed, advance.filter(|_| at == last), now)
            .context("recording observed prices and the job's watermark")?;
    }
    Ok(())
}

/// What a page's end writes.
enum Ending {
    /// Nothing: its progress is carried.
    Carried,
    /// The observed prices of the tickers claimed, without the watermark:
    /// the rest is carried.
    Claimed(Vec<Observation>),
    /// Every observed price, carried ones too, in one write or two
    /// (`Unwritten::with`), the watermark with the last.
    All(Vec<Vec<Observation>>),
}

/// A page's end, carried if it may (`carrying`), its quotes are newer
/// than those its tickers were judged from, nothing held back
/// (`holds_none`: and no banded alert came back) and the job holds none:
/// its observed prices, and with the last page the watermark, are carried
/// within their bounds, but for those of the tickers claimed, which are
/// written at once (a claimed ticker's price is never lost in a crash:
/// judged from an older one, an alert re-armed meanwhile would fire again
/// for the crossing just claimed). Otherwise, everything is written.
fn carry_or_write(
    carrying: &mut Carrying<'_>,
    watermark: &Watermark,
    observed: Vec<(Observation, bool)>,
    holds_none: bool,
) -> Ending {
    let at = Instant::now();
    let mut carried = lock(carrying.carried);
    let (claimed, observed): (Vec<_>, Vec<_>) = observed
        .into_iter()
        .partition(|(observation, _)| carrying.claimed.contains(&observation.ticker));
    let carries = carrying.unwritten
        && holds_none
        && watermark.holds.is_empty()
        && watermark.holding.is_empty()
        && watermark.deferred.is_none()
        && claimed.iter().chain(&observed).all(|(_, newer)| *newer)
        && carrying.carry.may_wait(at)
        && carried.unwritten.may_keep(observed.len(), at);
    if !carries {
        let mut observed = observed;
        observed.extend(claimed);
        return Ending::All(carried.unwritten.with(observed));
    }
    // Each claimed ticker's newer price replaces the one carried; those
    // the claim recorded are written.
    carried
        .unwritten
        .forget(claimed.iter().map(|(seen, _)| seen.ticker.as_str()));
    let claimed: Vec<Observation> = claimed
        .into_iter()
        .map(|(observation, _)| observation)
        .filter(|observation| !carrying.recorded.contains(&observation.ticker))
        .collect();
    let observed = observed.into_iter().map(|(observation, _)| observation);
    carried.unwritten.keep(observed.collect(), at);
    if let Some((to, _, _)) = watermark.advance() {
        carrying.carry.moved(to, at);
    }
    if claimed.is_empty() {
        Ending::Carried
    } else {
        Ending::Claimed(claimed)
    }
}

/// Writes what the ticks of the job keyed `job` carry unwritten: the
/// observed prices the process carries, and the job's watermark, if the
/// store still holds the one its ticks started from (else only the
/// prices; the job's carry goes, as a tick would find). The daemon's
/// write, when ticks carried progress and none came to write it within
/// [`WRITTEN_WITHIN`](super::WRITTEN_WITHIN), and as it stops; nothing
/// when nothing is carried. The caller runs no tick of the job meanwhile.
pub(super) fn write_carried(
    writer: &mut store::Connection,
    memory: &TickMemory,
    job: &str,
) -> anyhow::Result<()> {
    let now = store::clock::now(writer).context("reading the database's clock")?;
    let stored = watermarks::start(writer, job)
        .context("reading the job's watermark")?
        .watermark
        .unwrap_or(-1);
    let mut carry = lock(&memory.carried).take(job);
    carry.since(stored);
    let writes = {
        let mut carried = lock(&memory.carried);
        if carry.through().is_none() && carried.unwritten.is_empty() {
            carried.keep(job, carry);
            return Ok(());
        }
        carried.unwritten.with(Vec::new())
    };
    let advance = carry.through().map(|to| Advance {
        job,
        to,
        through: to,
        held: &[],
        released: &[],
    });
    write(writer, writes, advance.as_ref(), now)?;
    if let Some(advance) = advance {
        carry.written(advance.to);
    }
    lock(&memory.carried).keep(job, carry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(ticker: &str, since: i64) -> Hold {
        Hold {
            ticker: ticker.to_owned(),
            since,
            through: 0,
            moved: false,
        }
    }

    /// Past [`MOST_HOLDS`] held tickers, those judged through the latest
    /// changes keep the watermark below their first change instead, and the
    /// holds the window then covers are not written; the holds read that
    /// are not held again are let go.
    #[test]
    fn past_the_most_holds_the_latest_defer_the_watermark() {
        let window = Window {
            since: 10,
            until: 10_000,
            closed: 9_000,
        };
        let read = vec![hold("A", 5), hold("B", 3)];
        let mut watermark = Watermark::new("job".into(), window, read);
        watermark.last = true;
        // B again (from further back, moved), then twice the most holds, in
        // an order that is not the changes'.
        watermark.hold(Hold {
            moved: true,
            ..hold("B", 2)
        });
        for n in 0..2 * MOST_HOLDS as i64 {
            let since = 100 + (n * 7919) % (2 * MOST_HOLDS as i64);
            watermark.hold(hold(&format!("T{n:05}"), since));
        }
        assert_eq!(watermark.holding.len(), MOST_HOLDS);
        let (to, held, released) = watermark.advance().unwrap();
        // B and the 1,023 tickers held from the earliest changes are held;
        // the watermark stays below the first change of the others.
        assert_eq!(to, 100 + MOST_HOLDS as i64 - 1);
        assert_eq!(held.len(), MOST_HOLDS);
        assert!(held.iter().all(|hold| hold.since < to));
        let b = held.iter().find(|hold| hold.ticker == "B").unwrap();
        assert_eq!((b.since, b.moved), (2, true));
        // A was not held again: its hold goes.
        assert_eq!(released, vec![hold("A", 5)]);
        // Not the last page: nothing is written.
        watermark.last = false;
        assert!(watermark.advance().is_none());
    }

    /// Without holds past the bound, the watermark goes to the window's
    /// closed end, and every hold is written.
    #[test]
    fn a_few_holds_leave_the_watermark_at_the_windows_end() {
        let window = Window {
            since: 10,
            until: 50,
            closed: 40,
        };
        let mut watermark = Watermark::new("job".into(), window, Vec::new());
        watermark.last = true;
        watermark.hold(hold("X", 20));
        watermark.hold(hold("X", 15));
        let (to, held, released) = watermark.advance().unwrap();
        assert_eq!((to, held, released), (40, vec![hold("X", 15)], Vec::new()));
    }
}
