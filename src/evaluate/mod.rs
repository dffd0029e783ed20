//! Evaluation: the tick. It fans the reads out over the fixed rayon pool,
//! judges each alert as it streams in (`judge`, over the parsed alerts of
//! `crate::alert`), and funnels the claims into one writer. Nothing here
//! speaks HTTP.

mod carried;
mod claim;
mod head_start;
mod judge;
mod malformed;
mod observe;
mod options;
mod paging;
mod plan;
mod prepare;
mod quiet;
mod read;
mod tick_report;

pub use carried::WRITTEN_WITHIN;
pub use head_start::{HEAD_START, HEAD_START_AFTER};
pub use judge::{
    FUTURE_SKEW, Observed, QuoteProblem, Verdict, decide, judge, malformed_at, trigger_of,
    usable_quote,
};
#[cfg(any(test, feature = "test-support"))]
pub use options::SavedCarry;
pub use options::{TickMemory, TickOptions};
pub use paging::PAGE;
pub use prepare::watermark_of;
pub(crate) use tick_report::tick_counts;
pub use tick_report::{COUNTS, Count, Series, TickFailed, TickReport};

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::lock::lock;
use crate::store::{self, Pool};

use claim::log_locked;
use head_start::head_start;
use malformed::say_unlogged;
use observe::Watermark;
use paging::{Pages, Phases};
use plan::say_unnamed_quote_problems;
use prepare::{apply_what_came_due, watermark_key};

/// Builds the fixed pool that evaluates alerts. Its threads run at a lower
/// priority (`priority::BACKGROUND`) than the rest of the daemon: a large
/// tick's readers use every idle core, but never delay its claims, the
/// deliverer sending what is claimed, or the loop starting the next
/// reacting tick.
pub fn thread_pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|index| format!("evaluate-{index}"))
        .start_handler(|_| crate::priority::give_way())
        .build()
        .context("starting the evaluation threads")
}

/// Runs one evaluation tick: it reads what changed since this job's last
/// tick, not every alert. Blocking: call it from `spawn_blocking` or a plain
/// thread. Reads run on `workers`, one pooled connection per task; the calling
/// thread claims in batches (64 alerts first, doubling while claims are
/// quick, up to `claim_batch`; with a helper where the engine runs claims
/// side by side), so the readers never queue on SQLite's write lock. Its time is the database's, read once as it starts
/// (`store::clock`).
///
/// What changed: tickers whose quote was written since the job's watermark
/// (their alerts the move can reach, through the level index), and alerts
/// inserted, re-armed or edited since (whatever their quote did); expiries
/// come due through their own index. Every alert that holds at a fresh quote
/// was therefore judged at that quote, by this tick or an earlier one, as a
/// full scan would judge it.
pub fn tick(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
) -> Result<TickReport, TickFailed> {
    run(workers, pool, options, TickTime::Database)
}

/// A tick as of `now` (the database's time, read by the caller, as a quote
/// source's fetch does): the time quotes' age, expiries and cooldowns are
/// judged by, and the claimed alerts and their events are stamped with.
/// Nothing under a tick reads the clock again.
pub fn tick_at(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
    now: DateTime<Utc>,
) -> Result<TickReport, TickFailed> {
    run(workers, pool, options, TickTime::At(now))
}

/// Writes what the ticks of `job` (its watermark key, [`watermark_of`])
/// carry unwritten (`evaluate::carried`): the daemon's write, when no tick
/// came to write it within [`WRITTEN_WITHIN`]. No tick of the job may run
/// meanwhile.
pub fn write_carried(pool: &Pool, memory: &TickMemory, job: &str) -> anyhow::Result<()> {
    let mut writer = pool.get()?;
    observe::write_carried(&mut writer, memory, job)
}

/// Where a tick's time comes from.
#[derive(Debug, Clone, Copy)]
enum TickTime {
    /// The database's clock, read on the tick's writer as it starts.
    Database,
    At(DateTime<Utc>),
}

fn run(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
    time: TickTime,
) -> Result<TickReport, TickFailed> {
    let started = Instant::now();
    let mut report = TickReport::default();
    let outcome = stages(workers, pool, options, time, &mut report);
    report.duration = started.elapsed();
    match outcome {
        Ok(()) => Ok(report),
        Err(error) => Err(TickFailed {
            report: Box::new(report),
            error,
        }),
    }
}

/// Runs the tick's stages in order. It reads the database's time, applies
/// what came due, finds its window (giving a large tick a head start), and
/// then evaluates the changed tickers page after page (`paging`). Each
/// stage counts into `report` as it goes, so a failure still shows what
/// was done.
fn stages(
    workers: &rayon::ThreadPool,
    pool: &Pool,
    options: &TickOptions<'_>,
    time: TickTime,
    report: &mut TickReport,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut writer = pool.get()?;
    // The tick's clock comes with the signs of what came due: one read.
    let due = store::alerts::due_signs(&mut writer)
        .context("reading the database's clock and what may have come due")?;
    let now = match time {
        TickTime::Database => DateTime::from_timestamp_millis(due.now_ms).unwrap_or_default(),
        TickTime::At(now) => now,
    };
    apply_what_came_due(&mut writer, now, due.signs, options.memory, report)?;
    let job = watermark_key(options);
    let mut carry = lock(&options.memory.carried).take(&job);
    let opened = head_start(workers, pool, &mut writer, options, &mut carry, now, report)?;
    let head_started = started.elapsed();
    let mut pages = Pages {
        workers,
        pool,
        writer: &mut writer,
        options,
        now,
        judged_ahead: opened.judged_ahead,
        locked: Vec::new(),
        claimed_ahead: opened.claimed_ahead,
        watermark: Watermark::new(job, opened.start.window, opened.start.holds),
        carry,
        window_alerts: None,
        phases: Phases::default(),
        first_page: opened.first_page,
    };
    let outcome = pages.run(report);
    if outcome.is_ok() {
        // The next tick starts from what this one carries.
        let mut carried = lock(&options.memory.carried);
        report.unwritten = pages.carry.unwritten() || !carried.unwritten.is_empty();
        carried.keep(&pages.watermark.job, pages.carry);
    }
    let (phases, locked) = (pages.phases, pages.locked);
    say_unlogged(&options.memory.malformed_warnings);
    say_unnamed_quote_problems(&options.memory.quote_warnings);
    report.locked = locked.len() as u64;
    log_locked(&options.memory.locked, &locked);
    outcome?;
    tracing::debug!(
        head_start_ms = head_started.as_millis() as u64,
        pages = phases.pages,
        prepare_ms = phases.prepare.as_millis() as u64,
        evaluate_and_claim_ms = phases.evaluate_and_claim.as_millis() as u64,
        observe_ms = phases.observe.as_millis() as u64,
        claim_ms = report.claim_duration.as_millis() as u64,
        quiet = report.quiet,
        "tick phases"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
