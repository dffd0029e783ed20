//! The first stage: the store's reads before the evaluation. Expiries and
//! re-arms, then the window of changes since the job's watermark and the
//! tickers they concern.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store::alerts;
use crate::store::changes::TickerState;
use crate::store::{self, changes, watermarks};

use super::options::TickOptions;
use super::report::TickReport;

/// The changes a tick reads: those numbered after `since` (the job's
/// watermark) up to `until` (the last the tick could see when it looked).
/// `settled` (at most `until`) is how far the watermark may move: no change
/// numbered up to it can still appear.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) since: i64,
    pub(super) until: i64,
    pub(super) settled: i64,
}

/// What changed in the window for one ticker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change {
    /// Its quote was written in the window: its reachable alerts are read.
    pub(super) moved: bool,
    /// How many of its enabled alerts changed in the window, if any did.
    pub(super) changed_alerts: Option<u64>,
    /// The lowest change number that brought it here.
    pub(super) first_change: i64,
}

/// A ticker the tick must look at: what changed, and what the store holds
/// for it. One per ticker, never one per alert; kept small, as a job's
/// first tick has one for every ticker.
pub(super) struct Candidate {
    pub(super) ticker: String,
    pub(super) change: Change,
    /// Its quote: `(price, updated_at)`.
    pub(super) quote: Option<(Option<f64>, String)>,
    pub(super) previous: Option<f64>,
    /// Whether it has enabled alerts at all (only those tickers' prices
    /// become observations, as a full scan records them).
    pub(super) has_alerts: bool,
    /// Whether it has banded alerts waiting for its price to come back.
    pub(super) waiting: bool,
}

/// What the store holds for a tick.
pub(super) struct Snapshot {
    /// The job's watermark key: its name, scope and quote age.
    pub(super) job: String,
    pub(super) window: Window,
    pub(super) candidates: Vec<Candidate>,
}

/// The key of a job's watermark: a job whose scope or quote age changes
/// (on a reload) starts over, as the tickers it now covers, or the quotes it
/// now takes as fresh, were never its to look at.
fn watermark_key(options: &TickOptions<'_>) -> String {
    format!(
        "{} [{}] max_age={}s",
        options.job,
        options.scope.describe(),
        options.max_age.as_secs()
    )
}

/// What came due before a tick reads, on the writer's connection: repeating
/// alerts re-armed (changes of this tick's window, judged below), and alerts
/// expired, so that an expired alert is never read as enabled.
pub(super) fn settle_due(
    writer: &mut store::Connection,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    report.rearmed =
        alerts::rearm_cooled_down(writer, now).context("re-arming repeating alerts")? as u64;
    report.expired = alerts::expire_due(writer, now).context("expiring alerts")? as u64;
    report.woken = alerts::wake_snoozed(writer, now).context("waking snoozed alerts")? as u64;
    Ok(())
}

/// The window since the job's watermark, read in the caller's transaction:
/// a job that never ran reads everything once (every number is 0 or more).
fn window(reader: &mut store::Connection, job: &str) -> anyhow::Result<Window> {
    let horizon = changes::horizon(reader).context("reading how far the changes reach")?;
    let since = watermarks::get(reader, job)
        .context("reading the job's watermark")?
        .unwrap_or(-1);
    Ok(Window {
        since,
        until: horizon.visible,
        settled: horizon.settled.min(horizon.visible),
    })
}

/// The store's reads before the evaluation, after [`settle_due`], in one
/// read transaction: the window of changes and the tickers they concern.
/// The tickers a head start judged with enabled alerts (`judged_ahead`)
/// count as having some, though it may have claimed them all: their prices
/// are recorded as observed, as a full scan records those of the tickers
/// with enabled alerts when it starts.
pub(super) fn prepare(
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    judged_ahead: HashSet<String>,
) -> anyhow::Result<Snapshot> {
    let job = watermark_key(options);
    let (window, mut candidates) = store::read_transaction(writer, |reader| {
        let window = window(reader, &job)?;
        let changes = changed_tickers(reader, options, window)?;
        let candidates = candidates(reader, changes)?;
        Ok((window, candidates))
    })
    .context("reading what changed")?;
    for candidate in &mut candidates {
        candidate.has_alerts |= judged_ahead.contains(&candidate.ticker);
    }
    // Tickers are unique: unstable sorting needs no buffer.
    candidates.sort_unstable_by(|a, b| a.ticker.cmp(&b.ticker));
    Ok(Snapshot {
        job,
        window,
        candidates,
    })
}

/// A head start's reads (`evaluate::head_start`), in one read transaction:
/// the window, and the first `head_start` tickers in scope whose quote
/// changed in it, with their states, if more than that many changed; `None`
/// otherwise.
pub(super) fn first_moved(
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    head_start: usize,
) -> anyhow::Result<Option<(Window, Vec<Candidate>)>> {
    let job = watermark_key(options);
    store::read_transaction(writer, |reader| {
        let window = window(reader, &job)?;
        let mut tickers = changes::first_changed_quotes(
            reader,
            window.since,
            window.until,
            head_start.saturating_add(1),
        )
        .context("reading the first changed quotes")?;
        if tickers.len() <= head_start {
            return Ok(None);
        }
        tickers.retain(|ticker| options.scope.covers(ticker));
        tickers.truncate(head_start);
        tickers.sort_unstable();
        let asked: Vec<(&str, bool)> = tickers
            .iter()
            .map(|ticker| (ticker.as_str(), true))
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
                    },
                    quote: None,
                    previous: None,
                    has_alerts: false,
                    waiting: false,
                };
                settle(&mut candidate, state);
                candidate
            })
            .collect();
        Ok(Some((window, candidates)))
    })
    .context("reading what changed first")
}

/// What changed for one ticker in the window, and, for a moved ticker, its
/// state as the scan of changed quotes read it.
type Changed = (Change, Option<TickerState>);

/// The tickers in the job's scope that changed in `window`: their quote
/// was written (read with their state), or some of their enabled alerts
/// changed.
fn changed_tickers(
    reader: &mut store::Connection,
    options: &TickOptions<'_>,
    window: Window,
) -> anyhow::Result<HashMap<String, Changed>> {
    let Window { since, until, .. } = window;
    let mut changes: HashMap<String, Changed> = HashMap::new();
    for (ticker, change, state) in
        changes::changed_quote_states(reader, since, until).context("reading changed quotes")?
    {
        if options.scope.covers(&ticker) {
            let entry = Change {
                moved: true,
                changed_alerts: None,
                first_change: change,
            };
            changes.insert(ticker, (entry, Some(state)));
        }
    }
    changes::changed_alert_tickers(reader, since, until, |ticker, change| {
        if options.scope.covers(ticker) || ticker.trim().is_empty() {
            if !changes.contains_key(ticker) {
                let entry = Change {
                    moved: false,
                    changed_alerts: None,
                    first_change: change,
                };
                changes.insert(ticker.to_owned(), (entry, None));
            }
            let (entry, _) = changes.get_mut(ticker).expect("just inserted");
            entry.first_change = entry.first_change.min(change);
            *entry.changed_alerts.get_or_insert(0) += 1;
        }
    })
    .context("reading changed alerts")?;
    Ok(changes)
}

/// What the store holds for each changed ticker: its quote, its observed
/// price, and whether it has enabled alerts at all. A moved ticker's came
/// with its change; the others' are read here.
fn candidates(
    reader: &mut store::Connection,
    changes: HashMap<String, Changed>,
) -> anyhow::Result<Vec<Candidate>> {
    let mut candidates = Vec::with_capacity(changes.len());
    let mut unread = Vec::new();
    for (ticker, (change, state)) in changes {
        let mut candidate = Candidate {
            ticker,
            change,
            quote: None,
            previous: None,
            has_alerts: false,
            waiting: false,
        };
        match state {
            Some(state) => {
                settle(&mut candidate, state);
                candidates.push(candidate);
            }
            None => unread.push(candidate),
        }
    }
    // In slices, so that the list of names stays small beside the candidates.
    for slice in unread.chunks_mut(4096) {
        let asked: Vec<(&str, bool)> = slice
            .iter()
            .map(|candidate| {
                (
                    candidate.ticker.as_str(),
                    candidate.change.changed_alerts.is_none(),
                )
            })
            .collect();
        let states = changes::ticker_states(reader, &asked)
            .context("reading the changed tickers' quotes and observed prices")?;
        drop(asked);
        for (candidate, state) in slice.iter_mut().zip(states) {
            settle(candidate, state);
        }
    }
    candidates.append(&mut unread);
    Ok(candidates)
}

/// A candidate's quote, observed price and whether it has enabled alerts,
/// from its state (none for a blank ticker).
fn settle(candidate: &mut Candidate, state: TickerState) {
    if candidate.ticker.trim().is_empty() {
        return;
    }
    candidate.quote = state.quote;
    candidate.previous = state.previous;
    candidate.has_alerts = candidate.change.changed_alerts.is_some() || state.has_alerts;
    candidate.waiting = state.waiting;
}
