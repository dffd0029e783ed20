//! The first stage: the store's reads before the evaluation. Expiries and
//! re-arms, then the window of changes since the job's watermark and the
//! tickers they concern.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store::alerts;
use crate::store::changes::{ChangedTicker, Quote, TickerState};
use crate::store::watermarks::Hold;
use crate::store::{self, changes, watermarks};

use super::carried::Carry;
use super::options::{TickMemory, TickOptions};
use super::tick_report::TickReport;
use crate::lock::lock;

/// The changes a tick reads: those numbered after `since` (the job's
/// watermark) up to `until` (the last the tick could see when it looked).
/// `closed` (at most `until`) is how far the watermark may move: no change
/// numbered up to it can still appear.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) since: i64,
    pub(super) until: i64,
    pub(super) closed: i64,
}

/// Where a tick starts: its window, and the tickers the job held back
/// behind it.
pub(super) struct Start {
    pub(super) window: Window,
    /// In ticker order; each judged in the page its ticker falls in.
    pub(super) holds: Vec<Hold>,
}

/// What changed in the window for one ticker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change {
    /// Its quote was written in the window (or since its hold): its
    /// reachable alerts are read.
    pub(super) moved: bool,
    /// How many of its enabled alerts changed in the window, if any did.
    pub(super) changed_alerts: Option<u64>,
    /// The lowest change number that brought it here.
    pub(super) first_change: i64,
    /// The job held it back, judged through here: its alerts are read from
    /// there, not from the window's start.
    pub(super) held_since: Option<i64>,
}

/// A ticker the tick must look at: what changed, and what the store holds
/// for it. One per ticker, never one per alert; kept small, as a job's
/// first tick has one for every ticker.
pub(super) struct Candidate {
    pub(super) ticker: String,
    pub(super) change: Change,
    pub(super) quote: Option<Quote>,
    pub(super) previous: Option<f64>,
    /// The time of the quote it was observed at, as written.
    pub(super) previous_time: Option<String>,
    /// Whether it has enabled alerts at all (only those tickers' prices
    /// become observations, as a full scan records them).
    pub(super) has_alerts: bool,
    /// Whether it has banded alerts waiting for its price to come back.
    pub(super) waiting: bool,
}

/// One page of what the store holds for a tick: up to a page of changed
/// tickers, in ticker order.
pub(super) struct Page {
    pub(super) candidates: Vec<Candidate>,
    /// Where the next page starts (after this ticker); `None` for the
    /// window's last page.
    pub(super) next: Option<String>,
}

/// The key of a job's watermark: a job whose scope or quote age changes
/// (on a reload) starts over, as the tickers it now covers, or the quotes it
/// now takes as fresh, were never its to look at.
pub(super) fn watermark_key(options: &TickOptions<'_>) -> String {
    watermark_of(options.job, options.scope, options.max_age)
}

/// The key of a job's watermark, for its name, scope and `prices.max_age`
/// (see [`watermark_key`]), as `alerts explain` reads it.
pub fn watermark_of(
    job: &str,
    scope: &crate::config::Scope,
    max_age: std::time::Duration,
) -> String {
    format!(
        "{job} [{}] max_age={}s",
        scope.describe(),
        max_age.as_secs()
    )
}

/// What came due before a tick reads, on the writer's connection: repeating
/// alerts re-armed (changes of this tick's window, judged below), alerts
/// expired (a tick judges an expired alert as such meanwhile), snoozed ones
/// woken; then when the next expiry or wake comes due, which `memory`
/// keeps: until then, while no alert changed and no cooldown ended, the
/// ticks skip those statements for one (see [`super::options::NextDue`]).
/// `signs` are the tick's first reading, with its clock.
pub(super) fn apply_what_came_due(
    writer: &mut store::Connection,
    now: DateTime<Utc>,
    signs: (i64, Option<i64>),
    memory: &TickMemory,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    let at = std::time::Instant::now();
    if lock(&memory.due).nothing_due(now.timestamp_millis(), signs, at) {
        return Ok(());
    }
    report.rearmed =
        alerts::rearm_cooled_down(writer, now).context("re-arming repeating alerts")? as u64;
    report.expired = alerts::expire_due(writer, now).context("expiring alerts")? as u64;
    report.woken = alerts::wake_snoozed(writer, now).context("waking snoozed alerts")? as u64;
    // Read after the re-arms, whose change numbers it takes as seen.
    let (alerts_changed, _) = alerts::due_signs(writer)
        .context("reading what may have come due")?
        .signs;
    let next = alerts::next_due(writer).context("reading what comes due next")?;
    lock(&memory.due).read(next, alerts_changed, at);
    Ok(())
}

/// The window since the job's watermark, and its holds, read in the
/// caller's transaction: a job that never ran reads everything once (every
/// number is 0 or more). Where the job's last tick here left its progress
/// unwritten, the window starts there (`carry`).
fn start(reader: &mut store::Connection, job: &str, carry: &mut Carry) -> anyhow::Result<Start> {
    let horizon = changes::horizon(reader).context("reading how far the changes reach")?;
    let start = watermarks::start(reader, job).context("reading the job's watermark")?;
    let mut holds = start.holds;
    holds.sort_unstable_by(|a, b| a.ticker.cmp(&b.ticker));
    Ok(Start {
        window: Window {
            since: carry.since(start.watermark.unwrap_or(-1)),
            until: horizon.visible,
            closed: horizon.closed.min(horizon.visible),
        },
        holds,
    })
}

/// The store's reads before the evaluation of one page, in one read
/// transaction: the first `size` tickers after `after` (in ticker order)
/// that changed in `window`, and the held ones (`holds`) among them or up to
/// the next page, those in the job's scope with their states.
/// The tickers a head start judged with enabled alerts (`judged_ahead`)
/// count as having some, though it may have claimed them all: their prices
/// are recorded as observed, as a full scan records those of the tickers
/// with enabled alerts when it starts. A ticker's observed price is the
/// one the process carries unwritten, if it does.
pub(super) fn prepare(
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    window: Window,
    holds: &[Hold],
    after: Option<&str>,
    size: usize,
    judged_ahead: &HashSet<String>,
) -> anyhow::Result<Page> {
    let page = store::read_transaction(writer, |reader| {
        read_page(reader, options, window, holds, after, size)
    })
    .context("reading what changed")?;
    Ok(finish_page(page, options, judged_ahead))
}

/// [`prepare`]'s reads, in the caller's read transaction.
fn read_page(
    reader: &mut store::Connection,
    options: &TickOptions<'_>,
    window: Window,
    holds: &[Hold],
    after: Option<&str>,
    size: usize,
) -> anyhow::Result<Page> {
    let mut changed = changes::changed_tickers(reader, window.since, window.until, after, size + 1)
        .context("reading what changed")?;
    let next = (changed.len() > size).then(|| {
        changed.truncate(size);
        changed[size - 1].ticker.clone()
    });
    let held = held_in(holds, after, next.as_deref());
    let changed = with_holds(changed, held);
    let candidates = candidates(reader, in_scope(options, changed))?;
    Ok(Page { candidates, next })
}

/// What [`prepare`] adds to a page it read: the head start's tickers count
/// as having alerts, and the observed prices the process carries.
pub(super) fn finish_page(
    mut page: Page,
    options: &TickOptions<'_>,
    judged_ahead: &HashSet<String>,
) -> Page {
    for candidate in &mut page.candidates {
        candidate.has_alerts |= judged_ahead.contains(&candidate.ticker);
    }
    carried_previous(options.memory, &mut page.candidates);
    page
}

/// How a tick opens, read with its start (see [`first_moved`]).
pub(super) enum Opening {
    /// Many tickers moved: the first few, with their states, to judge
    /// ahead of the rest.
    HeadStart(Vec<Candidate>),
    /// The tick's first page, read in the same transaction as its start
    /// (on PostgreSQL, a transaction's two round trips fewer), as
    /// [`prepare`] reads it for no head start.
    FirstPage(Page),
}

/// A tick's opening reads (`evaluate::head_start`), in one read
/// transaction: the tick's start (its window and holds), and the first
/// `options.head_start` tickers in scope whose quote changed in it, with
/// their states, if more than `options.head_start_after` (and than
/// `head_start`) changed; otherwise, or for no head start (0), the tick's
/// first page.
pub(super) fn first_moved(
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    carry: &mut Carry,
) -> anyhow::Result<(Start, Opening)> {
    let head_start = options.head_start;
    let after = options.head_start_after.max(head_start);
    let job = watermark_key(options);
    let first_page = |reader: &mut store::Connection, start: Start| {
        let page = read_page(
            reader,
            options,
            start.window,
            &start.holds,
            None,
            options.page.max(1),
        )?;
        Ok((start, Opening::FirstPage(page)))
    };
    store::read_transaction(writer, |reader| {
        let start = start(reader, &job, carry)?;
        let window = start.window;
        if head_start == 0 {
            return first_page(reader, start);
        }
        let mut tickers = changes::first_changed_quotes(
            reader,
            window.since,
            window.until,
            after.saturating_add(1),
        )
        .context("reading the first changed quotes")?;
        if tickers.len() <= after {
            return first_page(reader, start);
        }
        tickers.retain(|ticker| options.scope.covers(ticker));
        tickers.truncate(head_start);
        tickers.sort_unstable();
        let ask = changes::Ask {
            alerts: true,
            quote: true,
        };
        let asked: Vec<(&str, changes::Ask)> = tickers
            .iter()
            .map(|ticker| (ticker.as_str(), ask))
            .collect();
        let states = changes::ticker_states(reader, &asked)
            .context("reading the first changed tickers' quotes and observed prices")?;
        drop(asked);
        let candidates = tickers
            .into_iter()
            .zip(states)
            .map(|(ticker, state)| {
                let mut candidate = Candidate {
                    ticker,
                    change: Change {
                        moved: true,
                        changed_alerts: None,
                        first_change: window.since + 1,
                        held_since: None,
                    },
                    quote: None,
                    previous: None,
                    previous_time: None,
                    has_alerts: false,
                    waiting: false,
                };
                take_state(&mut candidate, state, None);
                candidate
            })
            .collect();
        Ok((start, Opening::HeadStart(candidates)))
    })
    .context("reading what changed first")
    .map(|(start, opening): (Start, Opening)| match opening {
        Opening::HeadStart(mut candidates) => {
            carried_previous(options.memory, &mut candidates);
            (start, Opening::HeadStart(candidates))
        }
        Opening::FirstPage(page) => (start, Opening::FirstPage(page)),
    })
}

/// The observed prices the process carries unwritten
/// (`evaluate::carried`), over the stored ones.
fn carried_previous(memory: &TickMemory, candidates: &mut [Candidate]) {
    let carried = lock(&memory.carried);
    if carried.unwritten.is_empty() {
        return;
    }
    for candidate in candidates {
        if let Some(carried) = carried.unwritten.previous(&candidate.ticker) {
            candidate.previous = Some(carried.price);
            candidate.previous_time = Some(carried.quote_time.clone());
        }
    }
}

/// The holds of the tickers after `after`, up to `next` (to the last for
/// `None`): `holds` is in ticker order.
fn held_in<'h>(holds: &'h [Hold], after: Option<&str>, next: Option<&str>) -> &'h [Hold] {
    let from = after.map_or(0, |after| {
        holds.partition_point(|hold| hold.ticker.as_str() <= after)
    });
    let to = next.map_or(holds.len(), |next| {
        holds.partition_point(|hold| hold.ticker.as_str() <= next)
    });
    &holds[from..to.max(from)]
}

/// A page's changed tickers with its held ones, each once, in ticker order:
/// a held ticker is judged from its hold, with what changed since.
fn with_holds(changed: Vec<ChangedTicker>, held: &[Hold]) -> Vec<(ChangedTicker, Option<i64>)> {
    let mut merged: Vec<(ChangedTicker, Option<i64>)> =
        changed.into_iter().map(|changed| (changed, None)).collect();
    if held.is_empty() {
        return merged;
    }
    for hold in held {
        match merged.binary_search_by(|(changed, _)| changed.ticker.cmp(&hold.ticker)) {
            Ok(at) => {
                let (changed, held_since) = &mut merged[at];
                changed.moved |= hold.moved;
                changed.first_change = changed.first_change.min(hold.since + 1);
                *held_since = Some(hold.since);
            }
            Err(at) => {
                let changed = ChangedTicker {
                    ticker: hold.ticker.clone(),
                    moved: hold.moved,
                    changed_alerts: 0,
                    first_change: hold.since + 1,
                    logged: None,
                };
                merged.insert(at, (changed, Some(hold.since)));
            }
        }
    }
    merged
}

/// The changed tickers in the job's scope, and the alerts with a blank
/// ticker (named as malformed), whatever their quote.
fn in_scope(
    options: &TickOptions<'_>,
    changed: Vec<(ChangedTicker, Option<i64>)>,
) -> Vec<(ChangedTicker, Option<i64>)> {
    changed
        .into_iter()
        .filter_map(|(mut changed, held_since)| {
            if options.scope.covers(&changed.ticker) {
                Some((changed, held_since))
            } else if changed.ticker.trim().is_empty() && changed.changed_alerts > 0 {
                changed.moved = false;
                Some((changed, None))
            } else {
                None
            }
        })
        .collect()
}

/// What the store holds for each changed ticker: its quote, its observed
/// price, and, for a moved or held one, whether it has enabled alerts at
/// all, and alerts waiting for its price to come back. A few statements per
/// slice of tickers.
fn candidates(
    reader: &mut store::Connection,
    changed: Vec<(ChangedTicker, Option<i64>)>,
) -> anyhow::Result<Vec<Candidate>> {
    let mut candidates = Vec::with_capacity(changed.len());
    for slice in changed.chunks(4096) {
        let asked: Vec<(&str, changes::Ask)> = slice
            .iter()
            .map(|(changed, held_since)| {
                let ask = changes::Ask {
                    alerts: changed.moved || held_since.is_some(),
                    quote: logged_quote(changed).is_none(),
                };
                (changed.ticker.as_str(), ask)
            })
            .collect();
        let states = changes::ticker_states(reader, &asked)
            .context("reading the changed tickers' quotes and observed prices")?;
        drop(asked);
        for ((changed, held_since), state) in slice.iter().zip(states) {
            let mut candidate = Candidate {
                ticker: changed.ticker.clone(),
                change: Change {
                    moved: changed.moved,
                    changed_alerts: (changed.changed_alerts > 0).then_some(changed.changed_alerts),
                    first_change: changed.first_change,
                    held_since: *held_since,
                },
                quote: None,
                previous: None,
                previous_time: None,
                has_alerts: false,
                waiting: false,
            };
            take_state(&mut candidate, state, logged_quote(changed));
            candidates.push(candidate);
        }
    }
    Ok(candidates)
}

/// The quote the log gave with a changed ticker's last write, if it did.
fn logged_quote(changed: &ChangedTicker) -> Option<&Quote> {
    changed.logged.as_ref()?.quote.as_ref()
}

/// A candidate's quote (the one the log gave, if it did), observed price
/// and whether it has enabled alerts, from its state (none for a blank
/// ticker).
fn take_state(candidate: &mut Candidate, state: TickerState, logged: Option<&Quote>) {
    if candidate.ticker.trim().is_empty() {
        return;
    }
    candidate.quote = logged.cloned().or(state.quote);
    candidate.previous = state.previous;
    candidate.previous_time = state.previous_time;
    candidate.has_alerts = candidate.change.changed_alerts.is_some() || state.has_alerts;
    candidate.waiting = state.waiting;
}
