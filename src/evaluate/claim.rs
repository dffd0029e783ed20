//! The third stage: reading and claiming side by side. The calling thread
//! (and helpers, where the engine claims in parallel) claims the readers'
//! triggers in batches; alerts someone else holds locked are left for a
//! later tick.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::alerts::{self, Trigger};
use crate::store::{self, Pool};

use super::options::TickOptions;
use super::read::{ByTicker, Readers, TRIGGER_CHUNK, Task, read_in_turn, split};
use super::report::TickReport;
use crate::lock::lock;

/// A triggered alert whose row another transaction held locked: its id and
/// ticker.
pub(super) type Locked = (i64, String);

/// At most this many ids of locked alerts in one log line.
const LOCKED_IDS_LOGGED: usize = 10;

/// Logs the triggered alerts left to a later tick because someone else held
/// their rows: when that starts or the alerts change, once a minute while
/// it lasts, and when it ends.
pub(super) fn log_locked(recurring: &Mutex<Recurring>, locked: &[Locked]) {
    let mut recurring = lock(recurring);
    if locked.is_empty() {
        if let Some(ticks) = recurring.succeeded() {
            tracing::info!(
                ticks,
                "no triggered alert is held locked by another transaction any more"
            );
        }
        return;
    }
    let mut ids: Vec<String> = locked
        .iter()
        .take(LOCKED_IDS_LOGGED)
        .map(|(id, _)| id.to_string())
        .collect();
    if locked.len() > LOCKED_IDS_LOGGED {
        ids.push(format!("and {} more", locked.len() - LOCKED_IDS_LOGGED));
    }
    log_recurring!(
        warn,
        recurring,
        format!(
            "alerts {} are locked by another transaction",
            ids.join(", ")
        ),
        locked = locked.len(),
        alert_id = locked[0].0,
        "triggered alerts left for the first tick after the lock is released"
    );
}

/// Reads and judges the planned tickers' alerts on the rayon pool, the
/// tickers split between the threads, while the calling thread claims what
/// they find in batches of `claim_batch`, handing full batches to helper
/// claimers where the store has them (`store::Pool::claim_writers`). Readers
/// stream: they hold one row and at most one chunk of triggers at a time, the
/// channel to the writer is bounded, and so is the one to the helpers (one
/// batch each), so memory does not follow the number of alerts read. Counts
/// into `report`; the first error, if any, after every reader and claimer
/// finished. Returns the triggered alerts that were locked by others.
pub(super) fn evaluate_and_claim(
    workers: &rayon::ThreadPool,
    readers: &Readers<'_>,
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    report: &mut TickReport,
) -> anyhow::Result<Vec<Locked>> {
    if readers.work.is_empty() {
        return Ok(Vec::new());
    }
    // As many readers as the pool has connections for, each with one of
    // its own, taking the tasks in turn.
    let threads = workers
        .current_num_threads()
        .min(readers.pool.readers())
        .max(1);
    // Moved tickers come first in the plan.
    let moved = readers.work.partition_point(|item| item.moved);
    let by_ticker = ByTicker {
        work: readers.work,
        moved,
    };
    let mut tasks: Vec<Task<'_>> = readers.work[..moved]
        .chunks(moved.div_ceil(threads).max(1))
        .map(Task::Moved)
        .collect();
    if readers.work.iter().any(|item| item.changed_alerts) {
        tasks.extend(
            split(readers.window, threads)
                .into_iter()
                .map(Task::Changed),
        );
    }
    let (sender, receiver) = mpsc::sync_channel::<anyhow::Result<Vec<Trigger>>>(threads * 4);
    let mut first_error: Option<anyhow::Error> = None;
    // Helpers claim batches beside the calling thread where the engine runs
    // claims side by side (on disjoint rows: each alert is in one batch).
    let helpers = readers.pool.claim_writers().saturating_sub(1);
    let (batches, inbox) = mpsc::sync_channel::<Vec<Trigger>>(helpers.max(1));
    let inbox = Mutex::new(inbox);
    let mut tallies: Vec<Tally> = Vec::new();
    std::thread::scope(|helper_threads| {
        let helping: Vec<_> = (0..helpers)
            .map(|_| helper_threads.spawn(|| help_claim(readers.pool, &inbox, readers.now)))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tasks, next) = (&tasks, &next);
        workers.in_place_scope(|scope| {
            for _ in 0..threads.min(tasks.len()) {
                let sender = sender.clone();
                scope.spawn(move |_| {
                    if let Err(error) = read_in_turn(readers, by_ticker, tasks, next, &sender) {
                        let _ = sender.send(Err(error));
                    }
                });
            }
            drop(sender);
            let claim_batch = options.evaluator.claim_batch;
            let mut batch: Vec<Trigger> = Vec::with_capacity(claim_batch.min(TRIGGER_CHUNK * 16));
            let mut mine = Tally::default();
            // A full batch goes to a free helper, else the calling thread
            // claims it.
            let mut hand_over = |batch: &mut Vec<Trigger>, mine: &mut Tally| {
                if helpers > 0 {
                    match batches.try_send(std::mem::take(batch)) {
                        Ok(()) => return,
                        Err(
                            mpsc::TrySendError::Full(back) | mpsc::TrySendError::Disconnected(back),
                        ) => *batch = back,
                    }
                }
                mine.claim(writer, batch, readers.now);
            };
            // Keep receiving after an error, so no reader blocks on a full channel.
            for message in receiver {
                match message {
                    Ok(triggers) => {
                        report.matched += triggers.len() as u64;
                        for trigger in triggers {
                            batch.push(trigger);
                            if batch.len() >= claim_batch {
                                hand_over(&mut batch, &mut mine);
                            }
                        }
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            mine.claim(writer, &mut batch, readers.now);
            tallies.push(mine);
        });
        drop(batches);
        for helper in helping {
            tallies.push(helper.join().unwrap_or_else(|_| Tally {
                error: Some(anyhow::anyhow!("a claiming thread panicked")),
                ..Tally::default()
            }));
        }
    });
    let mut locked = Vec::new();
    for tally in tallies {
        report.triggered += tally.triggered;
        report.unclaimed += tally.unclaimed;
        report.claim_transactions += tally.transactions;
        report.claim_duration += tally.duration;
        locked.extend(tally.locked);
        if let Some(error) = tally.error {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(locked), Err)
}

/// What one claiming thread did.
#[derive(Default)]
struct Tally {
    triggered: u64,
    /// Triggers whose claim failed, or was not tried after a failure.
    unclaimed: u64,
    locked: Vec<Locked>,
    transactions: u64,
    duration: Duration,
    error: Option<anyhow::Error>,
}

impl Tally {
    /// Claims one batch in one transaction and empties it. After a failure
    /// it claims nothing more: the tick fails, and the next one judges the
    /// same changes again.
    fn claim(
        &mut self,
        writer: &mut store::Connection,
        batch: &mut Vec<Trigger>,
        now: DateTime<Utc>,
    ) {
        if batch.is_empty() {
            return;
        }
        if self.error.is_some() {
            self.unclaimed += batch.len() as u64;
            batch.clear();
            return;
        }
        let claim_started = Instant::now();
        let claimed = alerts::claim(writer, batch, now);
        self.duration += claim_started.elapsed();
        match claimed {
            Ok(claimed) => {
                self.triggered += claimed.claimed as u64;
                self.transactions += 1;
                for id in claimed.locked {
                    if let Some(trigger) = batch.iter().find(|trigger| trigger.alert_id == id) {
                        self.locked.push((id, trigger.ticker.clone()));
                    }
                }
            }
            Err(error) => {
                self.unclaimed += batch.len() as u64;
                self.error
                    .get_or_insert(anyhow::Error::new(error).context("claiming triggered alerts"));
            }
        }
        batch.clear();
    }
}

/// A helper claimer: claims the batches handed to it until there are no
/// more. One that cannot claim still takes its batches, so that the tick
/// fails (and nothing is taken for done) instead of leaving them unclaimed.
fn help_claim(
    pool: &Pool,
    inbox: &Mutex<mpsc::Receiver<Vec<Trigger>>>,
    now: DateTime<Utc>,
) -> Tally {
    let mut tally = Tally::default();
    let mut writer = match pool.get() {
        Ok(writer) => Some(writer),
        Err(error) => {
            tally.error = Some(error.context("taking a connection to claim with"));
            None
        }
    };
    loop {
        let next = lock(inbox).recv();
        let Ok(mut batch) = next else {
            return tally;
        };
        match writer.as_mut() {
            Some(writer) => tally.claim(writer, &mut batch, now),
            None => tally.unclaimed += batch.len() as u64,
        }
    }
}
