//! How much a deliverer leases ahead, for how long, and whether a leased
//! row may still be sent: all in unix milliseconds, as the outbox keeps them.

use std::time::Duration;

use super::time::DbClock;
use crate::config::WebhookConfig;

/// How many waves of `concurrency` attempts a deliverer keeps leased ahead:
/// enough that requests never wait for the outbox's bookkeeping.
pub(super) const WAVES: u32 = 4;

/// Leased rows not yet sent, at least.
const MIN_AHEAD: usize = 256;

/// Leased rows not yet sent, at most, whatever `concurrency` and `batch`
/// are and however far [`Ahead`] grows: what the bodies held cost in memory
/// (a few MB), and what each lease passes over on SQLite, where a leased
/// row keeps its due time. 8,192 made a full outbox's drain to Pushpin
/// 10–20% slower than 2,048 (BENCHMARKS.md, "The last hop").
const MAX_AHEAD: usize = 2048;

/// Finished attempts an exchange waits for while requests run, at least.
const MIN_RECORDED_TOGETHER: usize = 64;

/// What a lease keeps beyond its waves of attempts, for recording them.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// How long finished attempts may wait for the next exchange with the outbox
/// while requests are still running, or while none is, for rows the claims
/// may yet hand over: under a feed, a claim every few milliseconds hands
/// over an event or two, and recording each on its own was a write
/// transaction per event, then the idle deliverer's read of the next due
/// time (`deliver::idle`).
pub(super) const RECORD_AFTER: Duration = Duration::from_millis(20);

/// How long an exchange with the outbox may take before the deliverer
/// starts no more attempts until it ends (it takes milliseconds): a
/// database that does not answer could not record what they deliver, and
/// each would be sent again once its lease ran out. The same while
/// exchanges fail.
pub(super) const RECORD_OVERDUE: Duration = Duration::from_secs(2);

/// How a webhook's deliverer leases, from its concurrency and timeouts.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeasePolicy {
    concurrency: usize,
    /// Events a request carries, at most.
    batch: usize,
    /// The longest one attempt can take.
    attempt_bound: Duration,
}

impl LeasePolicy {
    pub(super) fn of(config: &WebhookConfig) -> LeasePolicy {
        LeasePolicy {
            concurrency: config.concurrency,
            batch: config.events_a_request(),
            attempt_bound: config.connect_timeout + config.timeout,
        }
    }

    /// Attempts at once.
    pub(super) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Rows a wave of attempts carries.
    fn wave(&self) -> usize {
        self.concurrency * self.batch
    }

    /// Leased rows not yet sent, at most, to begin with (see [`Ahead`]):
    /// `WAVES` waves, and at least [`MIN_AHEAD`].
    fn ahead(&self) -> usize {
        (self.wave() * WAVES as usize).clamp(MIN_AHEAD, MAX_AHEAD)
    }

    /// Finished attempts that start an exchange while requests still run
    /// (fewer wait at most [`RECORD_AFTER`]): `WAVES` waves of them, at
    /// least 64. An exchange is a write transaction, whose commit costs
    /// what the updates of dozens of rows do: at 16 attempts at once, an
    /// exchange a wave made a fast receiver's delivery 5% slower than one
    /// every four (BENCHMARKS.md).
    pub(super) fn recorded_together(&self) -> usize {
        (self.wave() * WAVES as usize).clamp(MIN_RECORDED_TOGETHER, MAX_AHEAD)
    }

    /// Rows the attempts send within `WAVES` attempt bounds when each
    /// takes `took`: as far down the queue as a lease covers at that pace.
    fn covered_at(&self, took: Duration) -> usize {
        let took = took.max(Duration::from_millis(1)).as_nanos();
        let within = self.attempt_bound.as_nanos() * u128::from(WAVES);
        usize::try_from(self.wave() as u128 * within / took).unwrap_or(usize::MAX)
    }

    /// How long a lease lasts: a leased row waits behind at most `WAVES - 1`
    /// waves of attempts, each bounded by the timeouts (or as many more as
    /// the last attempt's pace sends in that time: [`Ahead`]), then is sent
    /// itself, then recorded. A row whose lease ran short anyway (a stalled
    /// database, a receiver that slowed down) is given back unsent: a lease
    /// that ran out mid-attempt would let another deliverer send the same
    /// row at the same time.
    pub(super) fn lease(&self) -> Duration {
        self.attempt_bound * WAVES + LEASE_MARGIN
    }

    /// Whether a row leased until `lease_until` (by the database's clock)
    /// may still be sent now.
    pub(super) fn sendable(&self, lease_until: i64, clock: &DbClock) -> bool {
        lease_until - clock.now_ms() >= (self.attempt_bound + LEASE_MARGIN / 2).as_millis() as i64
    }
}

/// How many leased rows a pipeline keeps ahead of its requests.
///
/// It starts at [`LeasePolicy::ahead`]: `WAVES` waves, which the lease
/// covers whatever the receiver's pace. When the rows ahead ran out while
/// the exchange leasing more still waited for the database (a burst's
/// claims hold SQLite's write lock for tens of milliseconds at a time, and
/// one event a request to a fast receiver sends 256 rows in 20), and more
/// were due, it doubles: up to `MAX_AHEAD`, and to what the lease covers at
/// the pace of the last attempt ([`LeasePolicy::covered_at`]). An attempt
/// slower than that pace brings it back down, never below where it started.
/// A row leased further down than its lease turned out to cover is given
/// back unsent ([`LeasePolicy::sendable`]), never sent late.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ahead {
    rows: usize,
    floor: usize,
    /// What the lease covers at the last attempt's pace.
    covered: usize,
}

impl Ahead {
    pub(super) fn of(policy: LeasePolicy) -> Ahead {
        let floor = policy.ahead();
        Ahead {
            rows: floor,
            floor,
            covered: MAX_AHEAD,
        }
    }

    /// Leased rows not yet sent, at most.
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Leased rows not yet recorded, at most (the ones ahead, and the
    /// attempts that finished while an exchange ran).
    pub(super) fn held(&self) -> usize {
        self.rows * 2
    }

    /// The rows ahead ran out before the exchange leasing more ended, and
    /// more were due.
    pub(super) fn ran_out(&mut self) {
        self.rows = (self.rows * 2)
            .min(MAX_AHEAD)
            .min(self.covered)
            .max(self.floor);
    }

    /// An attempt took `took`.
    pub(super) fn paced(&mut self, policy: LeasePolicy, took: Duration) {
        self.covered = policy.covered_at(took);
        self.rows = self.rows.min(self.covered).max(self.floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(concurrency: usize) -> LeasePolicy {
        let config = crate::config::parse(
            &format!(
                "[webhook]\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"15s\"\n\
                 connect_timeout = \"5s\"\nconcurrency = {concurrency}\n"
            ),
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        LeasePolicy::of(&config.webhook)
    }

    #[test]
    fn a_row_is_sent_only_while_its_lease_outlasts_the_attempt_by_the_margin() {
        let policy = policy(16);
        // 4 waves of (5 s + 15 s), and 10 s to record them.
        assert_eq!(policy.lease(), Duration::from_secs(90));
        // The database's clock, 120 s ahead of this host's: only its time counts.
        let now = chrono::Utc::now().timestamp_millis() + 120_000;
        let clock = DbClock::read(tokio::time::Instant::now(), now);
        assert!(policy.sendable(now + policy.lease().as_millis() as i64, &clock));
        // The attempt may take 20 s; 5 s more are left for the record.
        assert!(policy.sendable(now + 25_500, &clock));
        assert!(!policy.sendable(now + 24_000, &clock));
        assert!(!policy.sendable(now - 1, &clock));
    }

    #[test]
    fn the_rows_ahead_start_at_four_waves_within_a_floor_and_a_cap() {
        assert_eq!(policy(16).ahead(), 256);
        assert_eq!(policy(200).ahead(), 800);
        assert_eq!(policy(1024).ahead(), MAX_AHEAD);
    }

    #[test]
    fn the_rows_ahead_grow_while_they_run_out_as_far_as_the_lease_covers() {
        let policy = policy(16);
        let mut ahead = Ahead::of(policy);
        assert_eq!((ahead.rows(), ahead.held()), (256, 512));
        // A receiver that answers in 2 ms: the lease covers far more.
        ahead.paced(policy, Duration::from_millis(2));
        ahead.ran_out();
        assert_eq!(ahead.rows(), 512);
        (0..5).for_each(|_| ahead.ran_out());
        assert_eq!((ahead.rows(), ahead.held()), (MAX_AHEAD, 2 * MAX_AHEAD));
        // At 1 s an attempt, 16 rows a wave: 4 waves of 20 s cover 1,280 rows.
        ahead.paced(policy, Duration::from_secs(1));
        assert_eq!(ahead.rows(), 1280);
        ahead.ran_out();
        assert_eq!(ahead.rows(), 1280);
        // An attempt that takes its whole bound: back where it started.
        ahead.paced(policy, Duration::from_secs(20));
        assert_eq!(ahead.rows(), 256);
        ahead.ran_out();
        assert_eq!(ahead.rows(), 256);
        // Faster again: it may grow again.
        ahead.paced(policy, Duration::from_millis(5));
        ahead.ran_out();
        assert_eq!(ahead.rows(), 512);
    }

    #[test]
    fn batches_lease_waves_of_batches_within_a_bound() {
        let batched = |concurrency: usize, batch: usize| {
            let config = crate::config::parse(
                &format!(
                    "[webhook]\nurl = \"http://127.0.0.1:9/publish/\"\nformat = \"pushpin\"\n\
                     concurrency = {concurrency}\nbatch = {batch}\n"
                ),
                std::path::Path::new("."),
                None,
            )
            .unwrap();
            LeasePolicy::of(&config.webhook)
        };
        assert_eq!(batched(4, 100).ahead(), 1600);
        assert_eq!(batched(4, 100).recorded_together(), 1600);
        assert_eq!(batched(16, 1000).ahead(), MAX_AHEAD);
        // The lease is the attempts', however many events each carries.
        assert_eq!(batched(16, 1000).lease(), batched(16, 1).lease());
    }
}
