//! The readers: the planned tickers' alerts read on the rayon pool, one
//! pooled connection per reader, and judged as they stream, the triggers sent
//! to the claimers in chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::alert::Alert;
use crate::lock::lock;
use crate::store::alerts::{AlertRow, Trigger};
use crate::store::{self, Pool, changes};

use super::judge::{Verdict, decide, malformed_at, trigger_of};
use super::malformed::{Warnings, warn_malformed};
use super::plan::Work;
use super::prepare::Window;
use super::quiet::LEARNED_PER_PAGE;

/// Triggers a reader sends the writer at once.
const TRIGGER_CHUNK: usize = 512;

/// What the reader tasks share.
pub(super) struct Readers<'a> {
    pub(super) pool: &'a Pool,
    pub(super) work: &'a [Work],
    pub(super) window: Window,
    /// How the page's changed alerts are read.
    pub(super) changed: ChangedReads,
    pub(super) now: DateTime<Utc>,
    /// Alerts read and judged.
    pub(super) read: AtomicU64,
    pub(super) malformed: AtomicU64,
    /// Alerts that would have fired but are snoozed.
    pub(super) snoozed: AtomicU64,
    /// The moved tickers whose reads gave no row, at their prices (not
    /// those whose alerts changed: their band would not hold).
    pub(super) quiet: Mutex<Vec<(String, f64)>>,
    pub(super) warnings: Warnings<'a>,
    /// A page's readers, whose last claim may record the observed prices
    /// of its tickers (`evaluate::claim`); not a head start's, whose
    /// tickers the tick judges again.
    pub(super) observes: bool,
}

/// How a page's changed alerts are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChangedReads {
    /// All of the window's, in the order of their changes, those of other
    /// pages' tickers passed over: the window is one page, or this page
    /// holds a good part of them (a row read in order costs a fraction of
    /// one read by its ticker, which may be anywhere in the table).
    InWindow,
    /// This page's tickers' own, each through the ticker index.
    OfTickers,
}

/// A plan's work by ticker, without a map: the plan's two parts (moved
/// tickers, then the rest) are each in ticker order.
#[derive(Clone, Copy)]
pub(super) struct ByTicker<'a> {
    pub(super) work: &'a [Work],
    pub(super) moved: usize,
}

impl<'a> ByTicker<'a> {
    pub(super) fn get(&self, ticker: &str) -> Option<&'a Work> {
        let (moved, rest) = self.work.split_at(self.moved);
        [moved, rest].into_iter().find_map(|part| {
            part.binary_search_by(|item| item.ticker.as_str().cmp(ticker))
                .ok()
                .map(|at| &part[at])
        })
    }
}

/// One reader task's share of the reads.
pub(super) enum Task<'a> {
    /// These moved tickers' reachable alerts.
    Moved(&'a [Work]),
    /// The alerts changed in this part of the window, whatever their ticker
    /// (those of tickers not being evaluated are passed over).
    Changed(Window),
    /// The alerts of these tickers changed in the window (those of tickers
    /// whose alerts did not change are not read).
    ChangedOf(&'a [Work]),
    /// These held tickers, one at a time, each from its hold: the alerts
    /// its move reaches that did not change since (if it moved), then those
    /// that did.
    Held(&'a [Work]),
}

/// The fewest moved tickers, and change numbers of changed alerts, worth a
/// reader task of their own: a small tick (a reacting job's, a few tickers
/// at a time) reads on one thread, not on every thread of the pool for a
/// ticker each (whose wake-ups and idle spinning would cost more than the
/// reads).
const LEAST_TICKERS_PER_TASK: usize = 256;
const LEAST_CHANGES_PER_TASK: u64 = 256;

/// The reader tasks of a plan's work for up to `threads` readers: the moved
/// tickers (which come first in the plan) in a share per reader, then the
/// window of changed alerts in as many parts (or the page's tickers in as
/// many shares, as `changed` says), each share at least
/// [`LEAST_TICKERS_PER_TASK`] or [`LEAST_CHANGES_PER_TASK`], then the held
/// tickers (which come last); and the work by ticker, for the changed
/// alerts' readers, without the held tickers, whose changed alerts in the
/// window their own task reads.
pub(super) fn tasks<'a>(
    work: &'a [Work],
    window: Window,
    changed: ChangedReads,
    threads: usize,
) -> (Vec<Task<'a>>, ByTicker<'a>) {
    let (work, held) = work.split_at(work.partition_point(|item| item.held_since.is_none()));
    let moved = work.partition_point(|item| item.moved);
    let shares =
        |part: &'a [Work]| part.chunks(part.len().div_ceil(threads).max(LEAST_TICKERS_PER_TASK));
    // A job's first window (after -1) has no alert left to read by its
    // level: every alert changed in it.
    let reachable = if window.since < 0 { 0 } else { moved };
    let mut tasks: Vec<Task<'_>> = shares(&work[..reachable]).map(Task::Moved).collect();
    if work.iter().any(|item| item.changed_alerts) {
        match changed {
            ChangedReads::InWindow => {
                tasks.extend(split(window, threads).into_iter().map(Task::Changed))
            }
            ChangedReads::OfTickers => tasks.extend(shares(work).map(Task::ChangedOf)),
        }
    }
    tasks.extend(shares(held).map(Task::Held));
    (tasks, ByTicker { work, moved })
}

/// Splits a window of changes into up to `parts` windows, each of at least
/// [`LEAST_CHANGES_PER_TASK`] change numbers (the last may be shorter).
pub(super) fn split(window: Window, parts: usize) -> Vec<Window> {
    let span = (window.until - window.since).max(0) as u64;
    let size = span
        .div_ceil(parts.max(1) as u64)
        .max(LEAST_CHANGES_PER_TASK) as i64;
    (0..)
        .map(|part| window.since + part * size)
        .take_while(|since| *since < window.until)
        .map(|since| Window {
            since,
            until: (since + size).min(window.until),
            closed: window.closed,
        })
        .collect()
}

/// Where a reader's triggers go: down the channel to the claiming thread,
/// or, for a tick of one reader task, straight to the claims on the
/// reading thread.
pub(super) trait Outlet {
    /// Takes a chunk of triggers; false once nothing is taken any more
    /// (the claimer is gone): the reader stops.
    fn take(&self, triggers: Vec<Trigger>) -> bool;
}

impl Outlet for mpsc::SyncSender<anyhow::Result<Vec<Trigger>>> {
    fn take(&self, triggers: Vec<Trigger>) -> bool {
        self.send(Ok(triggers)).is_ok()
    }
}

/// The most triggers a reader holds while a statement of its read is
/// open: past it, it waits for the writer there. It sends at rest, once it
/// holds [`TRIGGER_CHUNK`]: only a ticker whose alerts give more than this
/// at once keeps a reader waiting with a statement open (and SQLite's WAL
/// from being checkpointed meanwhile).
const TRIGGERS_HELD: usize = 8 * TRIGGER_CHUNK;

/// Judges rows as a reader reads them, sending triggers to the writer in
/// chunks, where the read is at rest.
struct Judging<'a> {
    readers: &'a Readers<'a>,
    outlet: &'a dyn Outlet,
    /// Where each row's ticker is found.
    items: Items<'a>,
    triggers: Vec<Trigger>,
    /// Rows read for each of the moves (`Items::Moved`), when their quiet
    /// ones are told (`Readers::quiet`).
    rows: Option<Vec<u32>>,
    /// False once the writer has gone (after an error): stop reading.
    open: bool,
}

/// Where a row's ticker is found in the plan.
enum Items<'a> {
    /// The moves read, by their index.
    Moved(&'a [Work]),
    /// The tickers whose changed alerts are read, by their index.
    Listed(&'a [&'a Work]),
    /// Any ticker of the plan, by name; rows of others are passed over.
    ByTicker(ByTicker<'a>),
}

impl<'a> Judging<'a> {
    fn new(readers: &'a Readers<'a>, outlet: &'a dyn Outlet, items: Items<'a>) -> Judging<'a> {
        Judging {
            readers,
            outlet,
            items,
            triggers: Vec::new(),
            rows: None,
            open: true,
        }
    }

    /// Counts the rows of each move, to tell the quiet ones once all were
    /// read.
    fn telling_quiet(mut self) -> Self {
        if let Items::Moved(work) = self.items {
            self.rows = Some(vec![0; work.len()]);
        }
        self
    }

    fn send(&mut self) {
        if self.open && !self.triggers.is_empty() {
            self.open = self.outlet.take(std::mem::take(&mut self.triggers));
        }
    }

    fn finish(mut self) {
        self.send();
        if let (true, Some(rows), Items::Moved(work)) = (self.open, &self.rows, &self.items) {
            // A page learns a few bands at most: no more are told.
            let mut told = lock(&self.readers.quiet);
            let room = LEARNED_PER_PAGE.saturating_sub(told.len());
            let quiet = work
                .iter()
                .zip(rows)
                .filter(|(item, rows)| **rows == 0 && !item.changed_alerts)
                .map(|(item, _)| (item.ticker.clone(), item.observed.price))
                .take(room);
            told.extend(quiet);
        }
    }
}

impl changes::Reading for Judging<'_> {
    /// Judges one row at its ticker's price.
    fn row(&mut self, at: usize, alert: AlertRow) -> bool {
        let item = match self.items {
            Items::Moved(work) => &work[at],
            Items::Listed(work) => work[at],
            Items::ByTicker(by_ticker) => match by_ticker.get(&alert.ticker) {
                Some(item) => item,
                None => return true,
            },
        };
        if let Some(rows) = &mut self.rows {
            rows[at] += 1;
        }
        let readers = self.readers;
        readers.read.fetch_add(1, Ordering::Relaxed);
        match Alert::parse(&alert.written()) {
            Ok(parsed) => match decide(&parsed, item.observed, readers.now) {
                Verdict::Fire => self.triggers.push(trigger_of(
                    alert,
                    &parsed,
                    item.observed.price,
                    item.quote_time.clone(),
                    readers.now,
                )),
                Verdict::Snoozed => {
                    readers.snoozed.fetch_add(1, Ordering::Relaxed);
                }
                // Expired rows are disabled by the next tick's `expire_due`.
                Verdict::Hold | Verdict::Expired | Verdict::Malformed(_) => {}
            },
            Err(malformed) => {
                if let Verdict::Malformed(reason) = malformed_at(malformed, readers.now) {
                    readers.malformed.fetch_add(1, Ordering::Relaxed);
                    warn_malformed(readers.warnings, &alert, &reason);
                }
            }
        }
        if self.triggers.len() >= TRIGGERS_HELD {
            self.send();
        }
        self.open
    }

    fn at_rest(&mut self) -> bool {
        if self.triggers.len() >= TRIGGER_CHUNK {
            self.send();
        }
        self.open
    }

    /// It sends, and so may wait for the writer, only once it holds a
    /// chunk.
    fn may_wait(&self) -> bool {
        self.triggers.len() >= TRIGGER_CHUNK
    }
}

/// One reader: a connection of its own, and the tasks not yet taken, one
/// after another, until none is left.
pub(super) fn read_in_turn(
    readers: &Readers<'_>,
    by_ticker: ByTicker<'_>,
    tasks: &[Task<'_>],
    next: &std::sync::atomic::AtomicUsize,
    outlet: &dyn Outlet,
) -> anyhow::Result<()> {
    let mut connection = readers.pool.get_to_read()?;
    while let Some(task) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
        read_and_judge(readers, by_ticker, task, outlet, &mut connection)?;
    }
    Ok(())
}

/// One reader task: its rows, judged against their ticker's price as they
/// are read, the triggers sent to the writer in chunks.
fn read_and_judge(
    readers: &Readers<'_>,
    by_ticker: ByTicker<'_>,
    task: &Task<'_>,
    outlet: &dyn Outlet,
    connection: &mut store::Connection,
) -> anyhow::Result<()> {
    match task {
        Task::Moved(work) => {
            let moves: Vec<(&str, changes::Move)> = work
                .iter()
                .map(|item| {
                    let moved = changes::Move {
                        price: item.observed.price,
                        previous: item.observed.previous,
                    };
                    (item.ticker.as_str(), moved)
                })
                .collect();
            let mut judging = Judging::new(readers, outlet, Items::Moved(work)).telling_quiet();
            changes::each_reachable_alert_of(
                connection,
                &moves,
                readers.window.since,
                &mut judging,
            )
            .context("reading the alerts a price reaches")?;
            judging.finish();
        }
        &Task::Changed(window) => {
            let mut judging = Judging::new(readers, outlet, Items::ByTicker(by_ticker));
            changes::each_changed_alert(connection, window.since, window.until, &mut judging)
                .context("reading changed alerts")?;
            judging.finish();
        }
        Task::Held(work) => {
            for item in work.iter() {
                read_held(readers, item, outlet, connection)?;
            }
        }
        Task::ChangedOf(work) => {
            let listed: Vec<&Work> = work.iter().filter(|item| item.changed_alerts).collect();
            let tickers: Vec<&str> = listed.iter().map(|item| item.ticker.as_str()).collect();
            let mut judging = Judging::new(readers, outlet, Items::Listed(&listed));
            let window = readers.window;
            changes::each_changed_alert_of(
                connection,
                &tickers,
                window.since,
                window.until,
                &mut judging,
            )
            .context("reading changed alerts")?;
            judging.finish();
        }
    }
    Ok(())
}

/// One held ticker, judged from its hold (`Work::held_since`): the alerts
/// its move reaches that did not change since (if it moved and has
/// alerts), then those that changed since, up to the window's end.
fn read_held(
    readers: &Readers<'_>,
    item: &Work,
    outlet: &dyn Outlet,
    connection: &mut store::Connection,
) -> anyhow::Result<()> {
    let since = item.held_since.expect("a held ticker");
    let one = std::slice::from_ref(item);
    if item.moved {
        let moved = changes::Move {
            price: item.observed.price,
            previous: item.observed.previous,
        };
        let mut judging = Judging::new(readers, outlet, Items::Moved(one));
        changes::each_reachable_alert_of(
            connection,
            &[(item.ticker.as_str(), moved)],
            since,
            &mut judging,
        )
        .context("reading the alerts a held ticker's price reaches")?;
        judging.finish();
    }
    let listed = [item];
    let mut judging = Judging::new(readers, outlet, Items::Listed(&listed));
    changes::each_changed_alert_of(
        connection,
        &[item.ticker.as_str()],
        since,
        readers.window.until,
        &mut judging,
    )
    .context("reading a held ticker's changed alerts")?;
    judging.finish();
    Ok(())
}
