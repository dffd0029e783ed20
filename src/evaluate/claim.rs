//! The third stage: reading and claiming side by side. The calling thread
//! (and helpers, where the engine claims in parallel) claims the readers'
//! triggers in batches; alerts someone else holds locked are left for a
//! later tick.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::lock::lock;
use crate::log_recurring;
use crate::recurring::Recurring;
use crate::store::alerts::{self, Trigger};
use crate::store::observations::Observation;
use crate::store::outbox::Lessee;
use crate::store::{self, Pool};

use super::options::TickOptions;
use super::read::{ByTicker, Outlet, Readers, read_in_turn, tasks};
use super::tick_report::TickReport;

/// A triggered alert whose row another transaction held locked.
pub(super) struct Locked {
    pub alert_id: i64,
    pub ticker: String,
}

/// What a stage's claims left for the page's end: the triggered alerts
/// someone else held locked, the tickers whose alerts were claimed
/// (their observed prices are written, never carried: `evaluate::carried`),
/// and those whose observed prices a claim recorded already.
#[derive(Default)]
pub(super) struct Claims {
    pub locked: Vec<Locked>,
    pub tickers: HashSet<String>,
    pub recorded: HashSet<String>,
}

/// The size of a tick's first claim; each next one is twice as large, up to
/// `evaluator.claim_batch`, while claims take less than half of
/// [`CLAIM_TIME`].
const FIRST_CLAIM: usize = 64;

/// How long one claim transaction should hold its locks (on SQLite, the
/// database's one write lock) at most: a claim that took longer halves the
/// next. Where every claimed alert sits on a page of its own (1M alerts
/// over 1M tickers), 1,000 claims took 0.2–0.45 s, and with SQLite's
/// default busy handler an application write then waited past a second.
const CLAIM_TIME: Duration = Duration::from_millis(100);

/// The size of the claim after one of `size` that took `took` (`None`:
/// handed to a helper, untimed here), between [`FIRST_CLAIM`] and `most`.
fn next_claim_size(size: usize, took: Option<Duration>, most: usize) -> usize {
    let least = FIRST_CLAIM.min(most);
    match took {
        Some(took) if took > CLAIM_TIME => (size / 2).max(least),
        Some(took) if took * 2 > CLAIM_TIME => size,
        _ => (size * 2).min(most),
    }
}

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
        .map(|held| held.alert_id.to_string())
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
        alert_id = locked[0].alert_id,
        "triggered alerts left for the first tick after the lock is released"
    );
}

/// Reads and judges the planned tickers' alerts on the rayon pool, the
/// tickers split between the threads, while the calling thread claims what
/// they find in batches sized by [`next_claim_size`], handing full batches to helper
/// claimers where the store has them (`store::Pool::claim_writers`). Readers
/// stream: they hold one row and at most one chunk of triggers at a time, the
/// channel to the writer is bounded, and so is the one to the helpers (one
/// batch each), so memory does not follow the number of alerts read. Counts
/// into `report`; the first error, if any, after every reader and claimer
/// finished. Returns the triggered alerts that were locked by others, and
/// the tickers it claimed alerts of.
pub(super) fn evaluate_and_claim(
    workers: &rayon::ThreadPool,
    readers: &Readers<'_>,
    writer: &mut store::Connection,
    options: &TickOptions<'_>,
    report: &mut TickReport,
) -> anyhow::Result<Claims> {
    if readers.work.is_empty() {
        return Ok(Claims::default());
    }
    // As many readers as the pool has connections for, each with one of
    // its own, taking the tasks in turn.
    let threads = workers
        .current_num_threads()
        .min(readers.pool.readers())
        .max(1);
    let (tasks, by_ticker) = tasks(readers.work, readers.window, readers.changed, threads);
    if tasks.len() == 1 {
        // A small tick (a feed's, a few dozen tickers): read and claim on
        // this thread, the claims where the reader rests. Waking a reader
        // thread, and the helper, for it would cost more than the reads.
        let claimer = RefCell::new(Claimer::new(writer, None, options, readers.now));
        let read = read_in_turn(readers, by_ticker, &tasks, &AtomicUsize::new(0), &claimer);
        let claimer = claimer.into_inner();
        report.matched += claimer.matched;
        // Every trigger of the page read: its last claim may record the
        // prices its tickers were judged at.
        let observing = (readers.observes && read.is_ok()).then_some(by_ticker);
        let tally = claimer.finish(observing);
        return add_up(vec![tally], report, read.err());
    }
    let (sender, receiver) = mpsc::sync_channel::<anyhow::Result<Vec<Trigger>>>(threads * 4);
    // Helpers claim batches beside the calling thread where the engine runs
    // claims side by side (on disjoint rows: each alert is in one batch).
    let helpers = readers.pool.claim_writers().saturating_sub(1);
    let (batches, inbox) = mpsc::sync_channel::<Vec<Trigger>>(helpers.max(1));
    let inbox = Mutex::new(inbox);
    let mut first_error: Option<anyhow::Error> = None;
    let mut tallies: Vec<Tally> = Vec::new();
    std::thread::scope(|helper_threads| {
        let helping: Vec<_> = (0..helpers)
            .map(|_| {
                helper_threads
                    .spawn(|| help_claim(readers.pool, &inbox, readers.now, Told::of(options)))
            })
            .collect();
        let next = AtomicUsize::new(0);
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
            let helping = (helpers > 0).then_some(&batches);
            let claimer = Claimer::new(&mut *writer, helping, options, readers.now);
            let (tally, matched) = claimer.claim_as_read(receiver, &mut first_error);
            report.matched += matched;
            tallies.push(tally);
        });
        drop(batches);
        tallies.extend(helping.into_iter().map(|helper| {
            helper.join().unwrap_or_else(|_| Tally {
                error: Some(anyhow::anyhow!("a claiming thread panicked")),
                ..Tally::default()
            })
        }));
    });
    add_up(tallies, report, first_error)
}

/// The calling thread's part: it claims the readers' triggers in batches as
/// they come, handing a full batch to a free helper if there is one.
struct Claimer<'a, 'w> {
    writer: &'w mut store::Connection,
    /// Where helpers take batches from, if the engine has helpers.
    helpers: Option<&'a mpsc::SyncSender<Vec<Trigger>>>,
    claim_batch: usize,
    now: DateTime<Utc>,
    told: Told<'a>,
    batch: Vec<Trigger>,
    /// The next claim's size: the first claims are small, and grow to
    /// `claim_batch`, so that a large tick's first events go out while it
    /// reads and claims the rest. They grow while they are quick
    /// ([`CLAIM_TIME`]).
    size: usize,
    /// Triggers taken.
    matched: u64,
    mine: Tally,
}

impl<'a, 'w> Claimer<'a, 'w> {
    fn new(
        writer: &'w mut store::Connection,
        helpers: Option<&'a mpsc::SyncSender<Vec<Trigger>>>,
        options: &'a TickOptions<'a>,
        now: DateTime<Utc>,
    ) -> Claimer<'a, 'w> {
        let claim_batch = options.evaluator.claim_batch;
        Claimer {
            writer,
            helpers,
            claim_batch,
            now,
            told: Told::of(options),
            batch: Vec::new(),
            size: FIRST_CLAIM.min(claim_batch),
            matched: 0,
            mine: Tally::default(),
        }
    }

    /// Claims until every reader is done; the first reader's error goes to
    /// `first_error`. Keeps receiving after an error, so that no reader
    /// blocks on a full channel. Returns its tally and the triggers taken.
    fn claim_as_read(
        mut self,
        receiver: mpsc::Receiver<anyhow::Result<Vec<Trigger>>>,
        first_error: &mut Option<anyhow::Error>,
    ) -> (Tally, u64) {
        for message in receiver {
            match message {
                Ok(triggers) => self.take_chunk(triggers),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        let matched = self.matched;
        (self.finish(None), matched)
    }

    /// A reader's chunk of triggers: claimed whenever a batch is full.
    fn take_chunk(&mut self, triggers: Vec<Trigger>) {
        self.matched += triggers.len() as u64;
        for trigger in triggers {
            self.batch.push(trigger);
            if self.batch.len() >= self.size {
                let took = self.hand_over();
                self.size = next_claim_size(self.size, took, self.claim_batch);
            }
        }
    }

    /// Claims what is left; the tally. With the page's work, all of it
    /// read, a page whose triggers all come to this one claim (none before
    /// it, no helper) offers the claim its tickers' observed prices
    /// (`store::alerts::claim_observing`): the page's end would write them
    /// in a transaction of its own. Not those of tickers with alerts
    /// waiting to come back, which the page's end may yet hold back, nor
    /// the held tickers' (`ByTicker` leaves them out: the page's end,
    /// which writes every price where the job holds any, records them),
    /// nor a price whose quote is not surely newer than the one its ticker
    /// was judged from: that one may be carried unwritten, and the page's
    /// end writes it first, for the store to keep whichever of the two it
    /// finds newer (`evaluate::carried`); the claim's write would go
    /// before it, and win.
    fn finish(mut self, work: Option<ByTicker<'_>>) -> Tally {
        let alone = self.helpers.is_none()
            && self.mine.transactions == 0
            && self.mine.unclaimed == 0
            && self.mine.error.is_none();
        let offered = match work {
            Some(work) if alone => observed_of(&self.batch, work),
            _ => Vec::new(),
        };
        self.mine
            .claim(self.writer, &mut self.batch, self.now, self.told, &offered);
        self.mine
    }

    /// A full batch goes to a free helper, else this thread claims it: how
    /// long its claim took, then.
    fn hand_over(&mut self) -> Option<Duration> {
        if let Some(helpers) = self.helpers {
            match helpers.try_send(std::mem::take(&mut self.batch)) {
                Ok(()) => return None,
                Err(mpsc::TrySendError::Full(back) | mpsc::TrySendError::Disconnected(back)) => {
                    self.batch = back
                }
            }
        }
        Some(
            self.mine
                .claim(self.writer, &mut self.batch, self.now, self.told, &[]),
        )
    }
}

/// The observed prices of the tickers of `batch`'s triggers, as the page's
/// end would record them (`evaluate::observe`): from their `work`, those
/// it observes, surely newer than the prices they were judged from, and
/// that wait for no alert to come back.
fn observed_of(batch: &[Trigger], work: ByTicker<'_>) -> Vec<Observation> {
    let mut tickers: Vec<&str> = batch
        .iter()
        .map(|trigger| trigger.ticker.as_str())
        .collect();
    tickers.sort_unstable();
    tickers.dedup();
    tickers
        .into_iter()
        .filter_map(|ticker| work.get(ticker))
        .filter(|work| work.observe && work.newer && !work.waiting)
        .map(|work| Observation {
            ticker: work.ticker.clone(),
            price: work.observed.price,
            quote_time: work.quote_time.written.clone(),
        })
        .collect()
}

/// A tick of one reader task claims on the reading thread, where the
/// reader rests.
impl Outlet for RefCell<Claimer<'_, '_>> {
    fn take(&self, triggers: Vec<Trigger>) -> bool {
        self.borrow_mut().take_chunk(triggers);
        true
    }
}

/// Every claiming thread's tally into `report`; the first error, if any;
/// else the triggered alerts someone else held locked, and the tickers
/// claimed.
fn add_up(
    tallies: Vec<Tally>,
    report: &mut TickReport,
    mut first_error: Option<anyhow::Error>,
) -> anyhow::Result<Claims> {
    let mut claims = Claims::default();
    for tally in tallies {
        report.triggered += tally.triggered;
        report.unclaimed += tally.unclaimed;
        report.claim_transactions += tally.transactions;
        report.claim_duration += tally.duration;
        claims.locked.extend(tally.locked);
        claims.tickers.extend(tally.tickers);
        claims.recorded.extend(tally.recorded);
        if let Some(error) = tally.error {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(claims), Err)
}

/// What one claiming thread did.
#[derive(Default)]
struct Tally {
    triggered: u64,
    /// Triggers whose claim failed, or was not tried after a failure.
    unclaimed: u64,
    locked: Vec<Locked>,
    /// The tickers of the alerts claimed.
    tickers: HashSet<String>,
    /// The tickers whose observed prices a claim recorded.
    recorded: HashSet<String>,
    transactions: u64,
    duration: Duration,
    error: Option<anyhow::Error>,
}

impl Tally {
    /// Claims one batch in one transaction and empties it, leasing its
    /// events to `told.lessee` as far as it takes them; `told.claimed`
    /// hears of the alerts a commit claimed. After a failure it claims nothing
    /// more: the tick fails, and the next one judges the same changes again.
    /// Offers the claim `observed` (`store::alerts::claim_observing`).
    /// Returns how long the claim took.
    fn claim(
        &mut self,
        writer: &mut store::Connection,
        batch: &mut Vec<Trigger>,
        now: DateTime<Utc>,
        told: Told<'_>,
        observed: &[Observation],
    ) -> Duration {
        if batch.is_empty() {
            return Duration::ZERO;
        }
        if self.error.is_some() {
            self.unclaimed += batch.len() as u64;
            batch.clear();
            return Duration::ZERO;
        }
        let claim_started = Instant::now();
        let lease = told.lessee.and_then(|lessee| lessee.ask(batch.len()));
        let mut claimed = alerts::claim_observing(writer, batch, now, lease.as_ref(), observed);
        let took = claim_started.elapsed();
        self.duration += took;
        if let Some(lessee) = told.lessee {
            let (queued, leased) = match &mut claimed {
                Ok(claimed) => (claimed.ids.len(), Some(std::mem::take(&mut claimed.leased))),
                Err(_) => (0, None),
            };
            lessee.hand(lease, queued, leased, claim_started);
        }
        match claimed {
            Ok(claimed) => {
                if claimed.observed {
                    self.recorded
                        .extend(observed.iter().map(|seen| seen.ticker.clone()));
                }
                if !claimed.ids.is_empty() {
                    let triggers: Vec<&Trigger> = batch
                        .iter()
                        .filter(|trigger| claimed.ids.contains(&trigger.alert_id))
                        .collect();
                    (told.claimed)(&triggers);
                    self.tickers
                        .extend(triggers.iter().map(|trigger| trigger.ticker.clone()));
                }
                self.triggered += claimed.ids.len() as u64;
                self.transactions += 1;
                for id in claimed.locked {
                    if let Some(trigger) = batch.iter().find(|trigger| trigger.alert_id == id) {
                        self.locked.push(Locked {
                            alert_id: id,
                            ticker: trigger.ticker.clone(),
                        });
                    }
                }
            }
            Err(error) => {
                self.unclaimed += batch.len() as u64;
                self.error
                    .get_or_insert(anyhow::Error::new(error).context("claiming triggered alerts"));
            }
        }
        // Its events are on their way: now the store's upkeep.
        alerts::after_claim(writer);
        batch.clear();
        took
    }
}

/// What a claim tells as it commits: the tick's hook, and who leases its
/// events ([`TickOptions`]).
#[derive(Clone, Copy)]
struct Told<'a> {
    claimed: &'a (dyn Fn(&[&Trigger]) + Sync),
    lessee: Option<&'a dyn Lessee>,
}

impl<'a> Told<'a> {
    fn of(options: &TickOptions<'a>) -> Told<'a> {
        Told {
            claimed: options.claimed,
            lessee: options.lessee,
        }
    }
}

/// A helper claimer: claims the batches handed to it until there are no
/// more. One that cannot claim still takes its batches, so that the tick
/// fails (and nothing is taken for done) instead of leaving them unclaimed.
fn help_claim(
    pool: &Pool,
    inbox: &Mutex<mpsc::Receiver<Vec<Trigger>>>,
    now: DateTime<Utc>,
    told: Told<'_>,
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
            Some(writer) => {
                tally.claim(writer, &mut batch, now, told, &[]);
            }
            None => tally.unclaimed += batch.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_grow_while_quick_and_halve_when_slow() {
        let quick = Some(CLAIM_TIME / 4);
        let fair = Some(CLAIM_TIME * 3 / 4);
        let slow = Some(CLAIM_TIME * 2);
        assert_eq!(next_claim_size(64, quick, 4096), 128);
        assert_eq!(next_claim_size(4096, quick, 4096), 4096);
        assert_eq!(next_claim_size(64, None, 4096), 128, "a helper's claim");
        assert_eq!(next_claim_size(1024, fair, 4096), 1024);
        assert_eq!(next_claim_size(1024, slow, 4096), 512);
        assert_eq!(next_claim_size(64, slow, 4096), 64, "never below the first");
        assert_eq!(next_claim_size(16, slow, 16), 16, "nor above claim_batch");
    }
}
