//! What the ticks of one process carry from one to the next: each job's
//! quiet bands (`evaluate::quiet`) and watermark not written yet
//! ([`Carry`]), and the observed prices not written yet
//! ([`Unwritten`]).
//!
//! A job's carry holds only while its windows follow each other here: a
//! tick that finds in the store another watermark than the one this
//! process last read or wrote for the job (another daemon ticked it; a
//! tick here failed, and the job's carry went with it) starts from the
//! stored watermark, with no bands.
//!
//! # Ticks that write nothing
//!
//! Under a feed, a reacting job ticks hundreds of times a second, and
//! each tick records its tickers' observed prices and moves the job's
//! watermark, a write transaction that dirties a page of `observations`
//! for each ticker, though most of its tickers claimed nothing. When the
//! tick's options allow it (`TickOptions::unwritten`: the daemon's
//! reacting jobs), a tick carries that progress instead, but for the
//! prices of the tickers whose alerts it claimed: those it writes at once
//! (a few rows, without the watermark; on SQLite a page whose triggers
//! fit one claim records them with it, `evaluate::claim`). The first
//! tick that must write everything (one that holds or releases a
//! ticker, finds a triggered alert locked, brings a banded alert back,
//! names alerts without a ticker, or observes a quote not surely newer
//! than the price it replaces) writes every observed price carried with
//! its own, as does the first that finds them older than
//! [`WRITTEN_WITHIN`] or more than [`UNWRITTEN_AT_MOST`]; the daemon's
//! loop writes them when that time comes and no tick did
//! (`TickReport::unwritten`, `evaluate::write_carried`), and as it stops.
//! Observed prices are carried for the process, as `observations` holds
//! them for every job: a job judges a ticker from the price any tick here
//! observed last ([`Unwritten::previous`]), as if it had been written.
//!
//! Why losing them loses nothing: what is carried had no effect anyone
//! saw. A carried ticker's move claimed nothing and sent nothing; a
//! claimed ticker's price was written with its claims' events on their
//! way. If the process dies, or another daemon ticks the job, before its
//! progress is written, the job's next tick reads its window again from
//! the stored watermark and judges its tickers from their stored observed
//! prices: a carried ticker's moves as if those ticks had never run (a
//! daemon that ticked less often judges the same), a claimed ticker's
//! from the price it was claimed at, which brings nothing a crossing did
//! not already bring. Written later, a claimed ticker's price lost in a
//! crash would let an alert re-armed meanwhile (a short cooldown, the
//! application re-arming it) be judged from the older price, and fire a
//! second arming for the crossing the first one reported.
//! (Two jobs of one process ticking the same ticker at once may carry its
//! older price over a newer one written meanwhile, as one tick's write
//! may follow the other's read today: the later tick judges the move from
//! the older price, which reads a crossing the newer one would have
//! taken, never skips one.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::observations::Observation;

use super::quiet::JobBands;

/// How long the ticks of a process may leave their progress unwritten:
/// the first tick after writes it (the daemon's loop does, if none
/// comes).
pub const WRITTEN_WITHIN: Duration = Duration::from_secs(1);

/// How many observed prices a process carries unwritten at most (some 100
/// bytes each, 2 MB in all): a tick that would carry more writes them all.
/// Above what a feed changes in [`WRITTEN_WITHIN`] (10,000 writes a second
/// over 10,000 tickers is some 6,300 tickers), so that a feed's prices are
/// written once a second: each write dirties most pages of
/// `observations`, and with 1,024 such a feed wrote them ten times a
/// second (on SQLite, 1,880 WAL frames a second against 197:
/// `BENCHMARKS.md`).
const UNWRITTEN_AT_MOST: usize = 16_384;

/// How many jobs' carries a process keeps: past it (jobs renamed or
/// rescoped by reloads, or many jobs), only the last job's.
const JOBS_KEPT: usize = 8;

/// What the process carries: each job's, by its watermark key, and the
/// observed prices not written.
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    jobs: HashMap<String, Carry>,
    pub(super) unwritten: Unwritten,
}

impl Carried {
    /// What `job` carries, for a tick: it is the tick's until it keeps it
    /// again (a failed tick does not).
    pub(super) fn take(&mut self, job: &str) -> Carry {
        self.jobs.remove(job).unwrap_or_default()
    }

    /// Keeps `carry` for `job`'s next tick.
    pub(super) fn keep(&mut self, job: &str, carry: Carry) {
        if self.jobs.len() >= JOBS_KEPT {
            self.jobs.clear();
        }
        self.jobs.insert(job.to_owned(), carry);
    }
}

/// What one job carries.
#[derive(Debug, Clone, Default)]
pub(super) struct Carry {
    /// The job's watermark in the store (-1 for none), as this process
    /// last read or wrote it.
    stored: Option<i64>,
    /// Where the job's next window starts, past `stored`, and since when
    /// that is not written.
    through: Option<(i64, Instant)>,
    pub(super) bands: JobBands,
}

impl Carry {
    /// Where the job's window starts, its watermark in the store being
    /// `stored` (-1 for none): where its last tick here ended, if the store
    /// still holds the watermark this process knew; else `stored`, with
    /// nothing carried.
    pub(super) fn since(&mut self, stored: i64) -> i64 {
        if self.stored != Some(stored) {
            *self = Carry {
                stored: Some(stored),
                ..Carry::default()
            };
        }
        self.through.map_or(stored, |(through, _)| through)
    }

    /// Whether the job's watermark may stay unwritten at `now`.
    pub(super) fn may_wait(&self, now: Instant) -> bool {
        self.through
            .is_none_or(|(_, since)| now.saturating_duration_since(since) < WRITTEN_WITHIN)
    }

    /// The job's next window starts at `to`, not written.
    pub(super) fn moved(&mut self, to: i64, now: Instant) {
        let since = self.through.map_or(now, |(_, since)| since);
        self.through = Some((to, since));
    }

    /// The tick wrote the job's watermark at `to`.
    pub(super) fn written(&mut self, to: i64) {
        self.stored = Some(to);
        self.through = None;
    }

    /// Where the job's next window starts, if that is not written.
    pub(super) fn through(&self) -> Option<i64> {
        self.through.map(|(through, _)| through)
    }

    /// Whether the job's watermark is not written.
    pub(super) fn unwritten(&self) -> bool {
        self.through.is_some()
    }
}

/// The prices the process's ticks observed and did not write.
#[derive(Debug, Clone, Default)]
pub(super) struct Unwritten {
    /// By ticker.
    observations: HashMap<String, Observation>,
    /// When the oldest was kept.
    since: Option<Instant>,
}

impl Unwritten {
    /// The price `ticker` was last observed at, if it is carried.
    pub(super) fn previous(&self, ticker: &str) -> Option<&Observation> {
        self.observations.get(ticker)
    }

    /// Whether `more` observed prices may wait for a later tick at `now`:
    /// within [`UNWRITTEN_AT_MOST`], and not older than [`WRITTEN_WITHIN`].
    pub(super) fn may_keep(&self, more: usize, now: Instant) -> bool {
        self.observations.len().saturating_add(more) <= UNWRITTEN_AT_MOST
            && self
                .since
                .is_none_or(|since| now.saturating_duration_since(since) < WRITTEN_WITHIN)
    }

    /// Keeps `observed` unwritten.
    pub(super) fn keep(&mut self, observed: Vec<Observation>, now: Instant) {
        if observed.is_empty() {
            return;
        }
        self.since.get_or_insert(now);
        for observation in observed {
            self.observations
                .insert(observation.ticker.clone(), observation);
        }
    }

    /// The observed prices to write, in one write or two: those carried,
    /// and `observed`, each with whether its quote is surely newer than
    /// the one its ticker was judged from. Where a ticker's is not, the
    /// carried ones are written first, and the store keeps whichever of
    /// the two its own comparison of their times finds newer, as it would
    /// have had the carried one been written; else one write, a ticker's
    /// carried price giving way to its newer one. None are carried after.
    pub(super) fn with(&mut self, observed: Vec<(Observation, bool)>) -> Vec<Vec<Observation>> {
        self.since = None;
        let before = observed.iter().any(|(observation, newer)| {
            !newer && self.observations.contains_key(&observation.ticker)
        });
        let observed: Vec<Observation> = observed
            .into_iter()
            .map(|(observation, _)| observation)
            .collect();
        if before {
            let mut carried: Vec<Observation> =
                self.observations.drain().map(|(_, seen)| seen).collect();
            carried.sort_unstable_by(|a, b| a.ticker.cmp(&b.ticker));
            return vec![carried, observed];
        }
        let mut written = observed;
        for observation in &written {
            self.observations.remove(&observation.ticker);
        }
        if !self.observations.is_empty() {
            written.extend(self.observations.drain().map(|(_, seen)| seen));
            written.sort_unstable_by(|a, b| a.ticker.cmp(&b.ticker));
        }
        vec![written]
    }

    /// The carried prices of `tickers` give way to newer ones, written
    /// now.
    pub(super) fn forget<'t>(&mut self, tickers: impl IntoIterator<Item = &'t str>) {
        for ticker in tickers {
            self.observations.remove(ticker);
        }
        if self.observations.is_empty() {
            self.since = None;
        }
    }

    /// Whether any observed price is carried.
    pub(super) fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }

    /// Every observed price carried.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn all(&self) -> Vec<Observation> {
        self.observations.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::changes::Nearest;

    fn observed(ticker: &str, price: f64) -> Observation {
        Observation {
            ticker: ticker.to_owned(),
            price,
            quote_time: "2026-12-06 12:00:00".to_owned(),
        }
    }

    fn band() -> Nearest {
        Nearest {
            below: Some(95.0),
            above: Some(105.0),
        }
    }

    /// A tick whose store still holds the watermark this process knew
    /// starts where the job's last tick here ended, with its bands; a tick
    /// that finds another starts from it, with none.
    #[test]
    fn a_carry_holds_only_while_the_stored_watermark_is_the_one_known() {
        let mut carried = Carried::default();
        let at = Instant::now();
        let mut carry = carried.take("job");
        assert_eq!(carry.since(10), 10);
        carry.bands.learn("A", 100.0, band());
        carry.moved(20, at);
        carried.keep("job", carry);

        let mut carry = carried.take("job");
        assert_eq!(carry.since(10), 20, "the unwritten watermark");
        assert_eq!(carry.bands.len(), 1);
        assert!(carry.unwritten());
        carry.written(30);
        assert!(!carry.unwritten());
        carried.keep("job", carry);

        // Taken and not kept (a failed tick): gone.
        let mut carry = carried.take("job");
        assert_eq!(carry.since(30), 30);
        assert_eq!(carry.bands.len(), 1);
        drop(carry);
        assert_eq!(carried.take("job").bands.len(), 0);

        // Another daemon moved the watermark: nothing carried.
        let mut carry = carried.take("job");
        carry.since(30);
        carry.bands.learn("A", 100.0, band());
        carry.moved(40, at);
        carried.keep("job", carry);
        let mut carry = carried.take("job");
        assert_eq!(carry.since(35), 35);
        assert_eq!(carry.bands.len(), 0);
        assert!(!carry.unwritten());

        // Past the most jobs kept, only the last job's.
        for n in 0..=JOBS_KEPT {
            carried.keep(&format!("job {n}"), Carry::default());
        }
        assert_eq!(carried.jobs.len(), 1);
    }

    /// A watermark waits for a bounded time, from its first move not
    /// written.
    #[test]
    fn a_watermark_waits_from_its_first_move_not_written() {
        let mut carry = Carry::default();
        let at = Instant::now();
        assert!(carry.may_wait(at));
        carry.moved(5, at);
        carry.moved(6, at + WRITTEN_WITHIN / 2);
        assert!(carry.may_wait(at + WRITTEN_WITHIN / 2));
        assert!(!carry.may_wait(at + WRITTEN_WITHIN));
        carry.written(6);
        assert!(carry.may_wait(at + WRITTEN_WITHIN));
    }

    /// Observed prices wait within a bound of prices and of time; writing
    /// them takes the newer price of a ticker.
    #[test]
    fn observed_prices_wait_within_their_bounds() {
        let mut unwritten = Unwritten::default();
        let at = Instant::now();
        assert!(unwritten.may_keep(UNWRITTEN_AT_MOST, at));
        assert!(!unwritten.may_keep(UNWRITTEN_AT_MOST + 1, at));
        unwritten.keep(vec![observed("A", 1.0), observed("B", 2.0)], at);
        assert!(!unwritten.may_keep(UNWRITTEN_AT_MOST - 1, at));
        assert!(unwritten.may_keep(1, at + WRITTEN_WITHIN / 2));
        assert!(!unwritten.may_keep(0, at + WRITTEN_WITHIN));
        // A later keep does not make them younger.
        unwritten.keep(vec![observed("A", 3.0)], at + WRITTEN_WITHIN / 2);
        assert!(!unwritten.may_keep(0, at + WRITTEN_WITHIN));
        assert_eq!(unwritten.previous("A").map(|seen| seen.price), Some(3.0));
        // A's quote is surely newer than the carried one, C's is not
        // carried: one write.
        let prices = |writes: Vec<Vec<Observation>>| -> Vec<Vec<(String, f64)>> {
            writes
                .into_iter()
                .map(|write| {
                    write
                        .into_iter()
                        .map(|seen| (seen.ticker, seen.price))
                        .collect()
                })
                .collect()
        };
        let written = unwritten.with(vec![
            (observed("A", 4.0), true),
            (observed("C", 5.0), false),
        ]);
        let named = |pairs: &[(&str, f64)]| -> Vec<(String, f64)> {
            pairs.iter().map(|(t, p)| (t.to_string(), *p)).collect()
        };
        assert_eq!(
            prices(written),
            [named(&[("A", 4.0), ("B", 2.0), ("C", 5.0)])]
        );
        // B's may not be newer than the carried one: the carried ones
        // first, the store decides.
        unwritten.keep(vec![observed("A", 1.0), observed("B", 2.0)], at);
        let written = unwritten.with(vec![
            (observed("B", 6.0), false),
            (observed("C", 5.0), false),
        ]);
        assert_eq!(
            prices(written),
            [
                named(&[("A", 1.0), ("B", 2.0)]),
                named(&[("B", 6.0), ("C", 5.0)])
            ]
        );
        assert!(unwritten.is_empty());
        assert!(unwritten.previous("B").is_none());
        assert!(unwritten.may_keep(UNWRITTEN_AT_MOST, at + WRITTEN_WITHIN));
    }
}
