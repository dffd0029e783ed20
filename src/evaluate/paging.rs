//! A tick's window, a page of changed tickers at a time: each page is
//! prepared, planned, judged and claimed, and observed before the next is
//! read, so that what a tick holds follows the page's size, not how many
//! tickers changed (a first tick over a million tickers is some sixteen
//! pages). Each ticker is in one page, with all of its changes in the
//! window; the watermark moves with the last.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::store::{self, Pool, changes};

use super::carried::Carry;
use super::claim::{Claims, Locked, evaluate_and_claim};
use super::malformed::{Warnings, name_blank_ticker_alerts};
use super::observe::{Carrying, Watermark, observe};
use super::options::TickOptions;
use super::plan::{log_quote_problems, plan};
use super::prepare::{Candidate, Page, finish_page, prepare};
use super::quiet::LEARNED_PER_PAGE;
use super::read::{ChangedReads, Readers};
use super::tick_report::TickReport;

/// The changed tickers a tick takes at once in the daemon
/// (`TickOptions::page`): a few hundred bytes each while they are planned
/// and judged (their name, quote and observed price), some 30 MB for a
/// page; and a window with fewer tickers, as nearly every tick, is read in
/// one page as ever.
pub const PAGE: usize = 65_536;

/// A row of the window's changed alerts read in order costs about this
/// fraction of one read through the ticker index (a seek, most likely to a
/// page of the table not in the cache): a page whose tickers hold more than
/// this fraction of the window's changed alerts reads all of them in order.
const ROWS_PER_SEEK: u64 = 8;

/// Where the time of a tick's pages goes (logged with the tick).
#[derive(Debug, Default)]
pub(super) struct Phases {
    pub(super) pages: u64,
    pub(super) prepare: Duration,
    pub(super) evaluate_and_claim: Duration,
    pub(super) observe: Duration,
}

/// A tick's pages, from its window's first changed ticker to its last.
pub(super) struct Pages<'a, 'w> {
    pub(super) workers: &'a rayon::ThreadPool,
    pub(super) pool: &'a Pool,
    pub(super) writer: &'w mut store::Connection,
    pub(super) options: &'a TickOptions<'a>,
    pub(super) now: DateTime<Utc>,
    /// The tickers the head start judged with enabled alerts.
    pub(super) judged_ahead: HashSet<String>,
    /// Triggered alerts someone else held locked, over every page.
    pub(super) locked: Vec<Locked>,
    /// The tickers whose alerts the head start claimed (at most
    /// `HEAD_START`): with those each page claimed, their observed prices
    /// are written, not carried.
    pub(super) claimed_ahead: HashSet<String>,
    pub(super) watermark: Watermark,
    /// What the job carries from its last tick here: its quiet bands, and
    /// its progress not written yet.
    pub(super) carry: Carry,
    /// How many alerts changed in the window, once a second page is known
    /// to come.
    pub(super) window_alerts: Option<u64>,
    pub(super) phases: Phases,
    /// The first page, if the tick's opening read it with its start.
    pub(super) first_page: Option<Page>,
}

impl Pages<'_, '_> {
    /// Every page in turn, the first error ending the tick (the watermark
    /// stays, so the next tick reads the window again).
    pub(super) fn run(&mut self, report: &mut TickReport) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        let mut paged = false;
        loop {
            let started = Instant::now();
            // Only the first turn finds the page the opening read.
            let page = match self.first_page.take() {
                Some(page) => finish_page(page, self.options, &self.judged_ahead),
                None => prepare(
                    self.writer,
                    self.options,
                    self.watermark.window,
                    &self.watermark.holds,
                    after.as_deref(),
                    self.options.page.max(1),
                    &self.judged_ahead,
                )?,
            };
            paged |= page.next.is_some();

            self.watermark.last = page.next.is_none();
            let changed = self.changed_reads(paged, &page.candidates)?;
            self.phases.pages += 1;
            self.phases.prepare += started.elapsed();
            self.one(page.candidates, changed, report)?;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// How a page reads its changed alerts: as ever for a window of one
    /// page; else by the page's tickers, unless they hold a good part of
    /// the window's changed alerts (a job's first tick over a hundred
    /// alerts a ticker).
    fn changed_reads(
        &mut self,
        paged: bool,
        candidates: &[Candidate],
    ) -> anyhow::Result<ChangedReads> {
        if !paged {
            return Ok(ChangedReads::InWindow);
        }
        let window = self.watermark.window;
        let in_window = match self.window_alerts {
            Some(count) => count,
            None => {
                let count = changes::changed_alert_count(self.writer, window.since, window.until)
                    .context("counting the changed alerts")?;
                *self.window_alerts.insert(count)
            }
        };
        let in_page: u64 = candidates
            .iter()
            .filter_map(|candidate| candidate.change.changed_alerts)
            .sum();
        Ok(if in_window <= in_page.saturating_mul(ROWS_PER_SEEK) {
            ChangedReads::InWindow
        } else {
            ChangedReads::OfTickers
        })
    }

    /// The bands of the moved tickers whose reads gave no row, from their
    /// alerts' nearest levels at their prices, up to [`LEARNED_PER_PAGE`].
    fn learn_bands(&mut self, quiet: &[(String, f64)]) -> anyhow::Result<()> {
        if quiet.is_empty() {
            return Ok(());
        }
        let prices: Vec<(&str, f64)> = quiet
            .iter()
            .take(LEARNED_PER_PAGE)
            .map(|(ticker, price)| (ticker.as_str(), *price))
            .collect();
        let nearest = changes::nearest_levels(self.writer, &prices)
            .context("reading the nearest levels of quiet tickers")?;
        for (&(ticker, price), nearest) in prices.iter().zip(nearest) {
            self.carry.bands.learn(ticker, price, nearest);
        }
        Ok(())
    }

    /// One page: planned, judged and claimed, observed.
    fn one(
        &mut self,
        candidates: Vec<Candidate>,
        changed: ChangedReads,
        report: &mut TickReport,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let options = self.options;
        for candidate in &candidates {
            if candidate.change.changed_alerts.is_some() || candidate.change.held_since.is_some() {
                self.carry.bands.forget(&candidate.ticker);
            }
        }
        let plan = plan(candidates, options, &mut self.carry.bands, self.now, report);
        log_quote_problems(options.memory, &plan);
        let warnings = Warnings::Within(&options.memory.malformed_warnings);
        if plan.blank_tickers {
            name_blank_ticker_alerts(self.writer, warnings)?;
        }
        let readers = Readers {
            pool: self.pool,
            work: &plan.work,
            window: self.watermark.window,
            changed,
            now: self.now,
            read: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            snoozed: AtomicU64::new(0),
            quiet: Mutex::default(),
            warnings,
            observes: true,
        };
        let claimed = evaluate_and_claim(self.workers, &readers, self.writer, options, report);
        report.evaluated += readers.read.into_inner();
        report.malformed_alerts += readers.malformed.into_inner();
        report.snoozed += readers.snoozed.into_inner();
        let Claims {
            locked,
            tickers: mut claimed,
            recorded,
        } = claimed?;
        // Each ticker is in one page: the page's own claimed tickers, and
        // the head start's, are all it needs.
        claimed.extend(self.claimed_ahead.iter().cloned());
        let quiet = readers
            .quiet
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        self.learn_bands(&quiet)?;
        let judged = Instant::now();
        self.phases.evaluate_and_claim += judged - started;
        // Only a page that named nothing and found nothing locked may
        // leave its progress unwritten; one that claimed writes the prices
        // of the tickers it claimed.
        let unwritten = options.unwritten && locked.is_empty() && !plan.blank_tickers;
        observe(
            self.writer,
            &mut self.watermark,
            plan,
            &locked,
            Carrying {
                carry: &mut self.carry,
                carried: &options.memory.carried,
                unwritten,
                claimed: &claimed,
                recorded: &recorded,
            },
            self.now,
            report,
        )?;
        self.locked.extend(locked);
        self.phases.observe += judged.elapsed();
        Ok(())
    }
}
