//! What changed since a job last looked. The schema's triggers give every
//! quote write a change number (a row of the log `change_log`, with its
//! ticker), and stamp one in an alert's row whenever it is inserted,
//! re-armed or edited. Each job keeps a watermark, and a tick reads what
//! changed after it: the changed quotes, the changed alerts, and the alerts
//! of each moved ticker that its move can reach (the ranges of
//! `condition::REACH`, through the level indexes). The daemon prunes the
//! log as its watermarks pass ([`prune_change_log`]).

use chrono::{DateTime, Utc};

use super::alerts::AlertRow;
use super::{Connection, Result};

/// A ticker's move for [`each_reachable_alert_of`]: its price now, and the one
/// the daemon observed before (for the crossings).
#[derive(Debug, Clone, Copy)]
pub struct Move {
    pub price: f64,
    pub previous: Option<f64>,
}

/// The levels of a ticker's enabled alerts nearest to a price, over every
/// condition and its channels' upper levels ([`nearest_levels`]): a move
/// between two prices strictly between them reaches no alert that a move
/// to the first did not (`evaluate::quiet`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// The greatest at or below the price.
    pub below: Option<f64>,
    /// The least at or above it.
    pub above: Option<f64>,
}

/// Each ticker's [`Nearest`] levels around its price, in the caller's
/// transaction: a few dozen index seeks a ticker.
pub fn nearest_levels(connection: &mut Connection, prices: &[(&str, f64)]) -> Result<Vec<Nearest>> {
    connection.engine().nearest_levels(prices)
}

/// How far the changes reach, as a read transaction sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Every change this transaction sees is numbered up to here.
    pub visible: i64,
    /// No change numbered up to here can still appear: a job's watermark
    /// moves at most this far. On SQLite (one writer at a time) the same as
    /// `visible`; on PostgreSQL, below the oldest transaction still open, so
    /// changes numbered between the two are read now and again next time.
    pub closed: i64,
}

/// The horizon of the changes, read in the caller's transaction.
pub fn horizon(connection: &mut Connection) -> Result<Horizon> {
    connection.engine().horizon()
}

/// How many alerts changed after `since`, up to `until` (enabled or not:
/// an upper bound of what a read of changed alerts reads), counted in
/// `price_alerts_changed` alone.
pub fn changed_alert_count(connection: &mut Connection, since: i64, until: i64) -> Result<u64> {
    connection.engine().changed_alert_count(since, until)
}

/// A ticker that changed in a window, with what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedTicker {
    pub ticker: String,
    /// Its quote was written in the window.
    pub moved: bool,
    /// How many of its enabled alerts changed in the window.
    pub changed_alerts: u64,
    /// The lowest change number that brought it here.
    pub first_change: i64,
    /// Its quote as its last write in the window left it, where the
    /// engine's log keeps quotes (SQLite's does): the tick reads no quote
    /// of a ticker that has one.
    pub logged: Option<LoggedQuote>,
}

/// A quote write as the log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedQuote {
    /// The write's change number.
    pub change: i64,
    /// The quote it left, as [`TickerState::quote`] holds one; `None` where
    /// the write deleted it, or the log holds no value (a write logged
    /// before the log kept them): the quote is read then.
    pub quote: Option<Quote>,
}

/// One page of the tickers that changed after `since`, up to `until`:
/// those whose quote was written (from the log `change_log`; every quote,
/// as changed at `since + 1`, when the log was pruned past `since`) or some
/// of whose enabled alerts changed (a NULL ticker comes as empty) — the
/// first `limit` of them in byte order after `after` (from the first, for
/// `None`), each once, with all of its changes, read in the caller's
/// transaction (one snapshot). Memory follows `limit`, not the tickers nor
/// the changes: a tick pages through a window of a million tickers.
pub fn changed_tickers(
    connection: &mut Connection,
    since: i64,
    until: i64,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ChangedTicker>> {
    connection
        .engine()
        .changed_tickers(since, until, after, limit.max(1))
}

/// The first `limit` tickers after a point, gathered from changes read in
/// any order: a ticker is kept, with every change of it read after, while
/// it is among the `limit` least seen so far; one that is not never comes
/// back, as the least only get less. Memory follows `limit`.
pub(super) struct Page {
    after: Option<String>,
    limit: usize,
    tickers: std::collections::BTreeMap<String, ChangedTicker>,
}

impl Page {
    pub(super) fn new(after: Option<&str>, limit: usize) -> Page {
        Page {
            after: after.map(str::to_owned),
            limit,
            tickers: std::collections::BTreeMap::new(),
        }
    }

    /// A quote write of `ticker`, numbered `change`, with the quote it
    /// left where the log keeps it: the last write's is kept.
    pub(super) fn quote(&mut self, ticker: &str, change: i64, quote: Option<Quote>) {
        if let Some(changed) = self.entry(ticker, change) {
            changed.moved = true;
            if changed
                .logged
                .as_ref()
                .is_none_or(|logged| logged.change < change)
            {
                changed.logged = Some(LoggedQuote { change, quote });
            }
        }
    }

    /// A change of an enabled alert of `ticker`, numbered `change`.
    pub(super) fn alert(&mut self, ticker: &str, change: i64) {
        if let Some(changed) = self.entry(ticker, change) {
            changed.changed_alerts += 1;
        }
    }

    /// Whether the page is full and `ticker` comes after all of it: a read
    /// in ticker order stops there.
    pub(super) fn past(&self, ticker: &str) -> bool {
        self.tickers.len() >= self.limit
            && self
                .tickers
                .last_key_value()
                .is_some_and(|(last, _)| ticker > last.as_str())
    }

    fn entry(&mut self, ticker: &str, change: i64) -> Option<&mut ChangedTicker> {
        if self.after.as_deref().is_some_and(|after| ticker <= after) {
            return None;
        }
        if !self.tickers.contains_key(ticker) {
            if self.past(ticker) {
                return None;
            }
            if self.tickers.len() >= self.limit {
                self.tickers.pop_last();
            }
            let changed = ChangedTicker {
                ticker: ticker.to_owned(),
                moved: false,
                changed_alerts: 0,
                first_change: change,
                logged: None,
            };
            self.tickers.insert(ticker.to_owned(), changed);
        }
        let changed = self.tickers.get_mut(ticker).expect("just inserted");
        changed.first_change = changed.first_change.min(change);
        Some(changed)
    }

    pub(super) fn into_tickers(self) -> Vec<ChangedTicker> {
        self.tickers.into_values().collect()
    }
}

/// Up to `limit` tickers whose quote changed after `since`, up to `until`,
/// the first to come in the log (each once), without reading the rest of
/// the window: a large tick's head start (`evaluate::head_start`). Best
/// effort: a log pruned past `since` gives what it still holds.
pub fn first_changed_quotes(
    connection: &mut Connection,
    since: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<String>> {
    connection
        .engine()
        .first_changed_quotes(since, until, limit as i64)
}

/// How long a watermark holds the change log after it: a job that
/// has not ticked for longer (or whose name, scope or quote age changed)
/// reads every quote at its next tick, as its first tick did, and its
/// changed alerts as ever. The log holds about this long of the feed's
/// writes (3.6 million rows at 1,000 writes a second).
pub const CHANGE_LOG_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// The oldest watermark written at or after `$1` (a time as
/// `store::timestamp` writes it, which orders as text).
pub(super) const OLDEST_LIVE_WATERMARK: &str =
    "SELECT min(change_seq) FROM job_watermarks WHERE updated_at >= $1";

/// Prunes the change log up to the oldest watermark written in the last
/// [`CHANGE_LOG_KEPT_FOR`] (or to the closed horizon, when
/// none was): the pruned point moves first, then the rows below it go. A
/// tick reading a window that starts below the pruned point reads every
/// quote instead, in the same snapshot as the point, so pruning never
/// hides a change, whatever the policy. First, the holds of the jobs whose
/// watermark was not written in that time fold into it
/// (`watermarks::FOLD_STALE_HOLDS`). Returns the rows deleted.
pub fn prune_change_log(connection: &mut Connection, now: DateTime<Utc>) -> Result<u64> {
    let kept_for = chrono::Duration::from_std(CHANGE_LOG_KEPT_FOR).expect("an hour");
    let cutoff = super::timestamp(now - kept_for);
    connection.engine().prune_change_log(&cutoff)
}

/// What a read of alerts tells its reader: each row, and each moment no
/// statement of the read is open. That moment is where a reader that must
/// wait (for the claims of what it found) waits: one that waits with a
/// statement open holds SQLite's snapshot, and with it every page written
/// since in the WAL, which no checkpoint can then take back.
pub trait Reading {
    /// A row, with the index of its ticker among the moves asked for (0 in
    /// a read of changed alerts); false to stop reading.
    fn row(&mut self, at: usize, alert: AlertRow) -> bool;

    /// No statement of the read is open (at least once per ticker, and per
    /// few thousand changed alerts); false to stop reading.
    fn at_rest(&mut self) -> bool;

    /// Whether the reader may wait at its next rest: then the store holds
    /// no snapshot there. Otherwise an engine may keep reading in one
    /// snapshot across rests (SQLite: a transaction's pages stay in the
    /// connection's cache, where each statement on its own would start
    /// cold after every commit of a feed).
    fn may_wait(&self) -> bool {
        true
    }
}

/// Tells `reading` every enabled alert changed after `since`, up to
/// `until`, one row at a time, in the order of their changes (through
/// `price_alerts_changed`), until it says stop.
pub fn each_changed_alert(
    connection: &mut Connection,
    since: i64,
    until: i64,
    reading: &mut impl Reading,
) -> Result<()> {
    connection
        .engine()
        .each_changed_alert(since, until, reading)
}

/// Tells `reading` every enabled alert of each of `tickers` changed after
/// `since`, up to `until`, ticker after ticker (through the alerts' ticker
/// index), with the ticker's index in `tickers`, until it says stop: a
/// window too large for one page reads its changed alerts a page of
/// tickers at a time this way.
pub fn each_changed_alert_of(
    connection: &mut Connection,
    tickers: &[&str],
    since: i64,
    until: i64,
    reading: &mut impl Reading,
) -> Result<()> {
    connection
        .engine()
        .each_changed_alert_of(tickers, since, until, reading)
}

/// A quote as the application wrote it: its price (`None` where it is
/// not a number) and its `updated_at`.
pub type Quote = (Option<f64>, String);

/// What a tick needs to know of one changed ticker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickerState {
    /// Its quote.
    pub quote: Option<Quote>,
    /// The price the daemon last observed for it, and that quote's time
    /// as the application wrote it.
    pub previous: Option<f64>,
    pub previous_time: Option<String>,
    /// Whether it has enabled alerts (asked only where the caller wants to
    /// know; `false` otherwise).
    pub has_alerts: bool,
    /// Whether it has banded alerts waiting for its price to come back
    /// (asked alike): its price is looked at for them, not observed.
    pub waiting: bool,
}

/// What [`ticker_states`] reads of a ticker besides its observed price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Whether it has enabled alerts, and alerts waiting for its price to
    /// come back (`false` in the state where not asked).
    pub alerts: bool,
    /// Its quote (`None` in the state where not asked): not where the log
    /// gave it ([`ChangedTicker::logged`]).
    pub quote: bool,
}

impl Ask {
    /// Its quote and observed price.
    pub const QUOTE: Ask = Ask {
        alerts: false,
        quote: true,
    };
}

/// The state of each ticker of `tickers` (each with what to read of it), in
/// their order, read in the caller's transaction: a few statements for all
/// of them, not a few per ticker, where statements cost a round trip.
pub fn ticker_states(
    connection: &mut Connection,
    tickers: &[(&str, Ask)],
) -> Result<Vec<TickerState>> {
    connection.engine().ticker_states(tickers)
}

/// Tells `reading`, one row at a time, every enabled alert of each moved
/// ticker whose level its move can reach (every alert `evaluate::judge`
/// could fire at its price, and few more), leaving out alerts changed after
/// `seen` (they are read as changed alerts instead), until it says stop:
/// ranges of `price_alerts_level` per condition, in a few statements for
/// all the tickers. `reading` gets the index in `moves` of each row's
/// ticker.
pub fn each_reachable_alert_of(
    connection: &mut Connection,
    moves: &[(&str, Move)],
    seen: i64,
    reading: &mut impl Reading,
) -> Result<()> {
    connection
        .engine()
        .each_reachable_alert_of(moves, seen, reading)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Changes of 40 tickers in a scrambled order, paged through in pages
    /// of every size: each ticker comes once, in order, with all of its
    /// changes, and a page never holds more than its size.
    #[test]
    fn a_page_holds_the_least_tickers_after_its_start_with_all_their_changes() {
        // What the log kept of each write: nothing, for every fifth (a
        // delete); the page keeps the last write's.
        let logged =
            |change: i64| (change % 5 != 0).then(|| (Some(change as f64), format!("t{change}")));
        let changes: Vec<(String, bool, i64)> = (0..400_i64)
            .map(|n| {
                let scrambled = (n * 7919) % 400;
                (format!("T{:02}", scrambled % 40), scrambled % 3 == 0, n + 1)
            })
            .collect();
        let mut expected: BTreeMap<String, ChangedTicker> = BTreeMap::new();
        for (ticker, quote, change) in &changes {
            let entry = expected
                .entry(ticker.clone())
                .or_insert_with(|| ChangedTicker {
                    ticker: ticker.clone(),
                    moved: false,
                    changed_alerts: 0,
                    first_change: *change,
                    logged: None,
                });
            entry.first_change = entry.first_change.min(*change);
            if *quote {
                entry.moved = true;
                entry.logged = Some(LoggedQuote {
                    change: *change,
                    quote: logged(*change),
                });
            } else {
                entry.changed_alerts += 1;
            }
        }
        let expected: Vec<ChangedTicker> = expected.into_values().collect();
        for limit in 1..=41 {
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut page = Page::new(after.as_deref(), limit);
                // Last first: the page keeps the last write's quote, whatever
                // the order it reads them in.
                for (ticker, quote, change) in changes.iter().rev() {
                    if *quote {
                        page.quote(ticker, *change, logged(*change));
                    } else {
                        page.alert(ticker, *change);
                    }
                    assert!(page.tickers.len() <= limit);
                }
                let tickers = page.into_tickers();
                after = tickers.last().map(|last| last.ticker.clone());
                let full = tickers.len() == limit;
                got.extend(tickers);
                if !full || after.is_none() {
                    break;
                }
            }
            assert_eq!(got, expected, "pages of {limit}");
        }
    }
}
