//! A large tick's head start: before it reads the whole window (the state
//! of every changed ticker: 100 ms for 10,000 of them), it judges and
//! claims the alerts of the first few moved tickers, so that their events
//! go out while it reads the rest. Nothing else is recorded: no
//! observation, no watermark. The tick then runs whole and judges those
//! tickers again, which finds nothing more: what the head start claimed is
//! no longer enabled, and what it did not claim it judged as the tick
//! judges it (the same quotes, the same observed prices).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use crate::store::{self, Pool};

use super::carried::Carry;
use super::claim::evaluate_and_claim;
use super::malformed::Warnings;
use super::options::TickOptions;
use super::plan::plan;
use super::prepare::{Opening, Page, Start, first_moved};
use super::quiet::JobBands;
use super::read::{ChangedReads, Readers};
use super::tick_report::TickReport;

/// How many moved tickers a head start judges, when more than that many
/// moved: two reader tasks' worth, a few milliseconds of reads (more
/// readers would only compete for the cores with the first claims).
pub const HEAD_START: usize = 64;

/// How many moved tickers make a tick large enough for a head start: the
/// states of this many are read in about 10 ms. A feed's ticks, a few
/// hundred tickers each, judge their tickers once.
pub const HEAD_START_AFTER: usize = 1024;

/// How a tick opened: its start, and what its head start did, or its
/// first page, read with the start where there was no head start.
pub(super) struct Opened {
    /// The tick's window and holds.
    pub(super) start: Start,
    /// The tickers the head start judged that had enabled alerts, for
    /// `prepare`.
    pub(super) judged_ahead: HashSet<String>,
    /// Those it claimed alerts of, whose prices the tick writes.
    pub(super) claimed_ahead: HashSet<String>,
    /// The first page, as `prepare` reads it, read with the start.
    pub(super) first_page: Option<Page>,
}

/// Reads the tick's window, and judges and claims the alerts of the first
/// `options.head_start` moved tickers in it, if more moved; otherwise reads
/// the tick's first page with it. Counts what it
/// read and claimed into `report`; what it planned and found malformed,
/// the tick counts. Where the
/// window starts follows what the job carries (`carry`). A held
/// ticker among them is judged from the window's start here: the tick
/// judges it from its hold.
pub(super) fn head_start(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    carry: &mut Carry,
    now: chrono::DateTime<chrono::Utc>,
    report: &mut TickReport,
) -> anyhow::Result<Opened> {
    let (start, opening) = first_moved(writer, options, carry)?;
    let candidates = match opening {
        Opening::HeadStart(candidates) => candidates,
        Opening::FirstPage(page) => {
            return Ok(Opened {
                start,
                judged_ahead: HashSet::new(),
                claimed_ahead: HashSet::new(),
                first_page: Some(page),
            });
        }
    };
    let window = start.window;
    // Every move read: a head start comes after a large move, and its
    // tickers are judged again with the tick's bands.
    let plan = plan(
        candidates,
        options,
        &mut JobBands::default(),
        now,
        &mut TickReport::default(),
    );
    let readers = Readers {
        pool,
        work: &plan.work,
        window,
        changed: ChangedReads::InWindow,
        now,
        read: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        snoozed: AtomicU64::new(0),
        quiet: Default::default(),
        // The tick names the malformed rows it reads again.
        warnings: Warnings::Silent,
        observes: false,
    };
    let claimed = evaluate_and_claim(workers, &readers, writer, options, report);
    report.evaluated += readers.read.into_inner();
    // Rows someone else holds locked are the tick's to hold back.
    let claimed = claimed?.tickers;
    let judged_ahead = plan
        .work
        .into_iter()
        .filter(|work| work.observe)
        .map(|work| work.ticker)
        .collect();
    Ok(Opened {
        start,
        judged_ahead,
        claimed_ahead: claimed,
        first_page: None,
    })
}
