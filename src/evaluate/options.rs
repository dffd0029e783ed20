//! What a tick is given besides the database: its job, scope and quote age,
//! the tickers fetched for it, and what earlier ticks of the process saw.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{EvaluatorConfig, Scope};
use crate::recurring::{Budget, Recurring};
use crate::store::alerts::Trigger;
use crate::store::outbox::Lessee;

use super::carried::Carried;
use super::judge::QuoteProblem;
use super::malformed::WARNINGS_PER_MINUTE;

/// What a tick evaluates, besides the database.
pub struct TickOptions<'a> {
    /// The job's name: with its scope and quote age, it keys the job's
    /// watermark of changes seen.
    pub job: &'a str,
    pub evaluator: &'a EvaluatorConfig,
    /// A quote older than this never triggers.
    pub max_age: Duration,
    /// The tickers this job covers.
    pub scope: &'a Scope,
    /// With a quote source that is fetched (`prices.source = "http"`), the
    /// tickers whose quote was fetched for this tick: the only ones judged.
    /// Any other ticker with enabled alerts (a fetch failed; an alert
    /// inserted or re-armed since the fetch was planned) is held back to the
    /// next tick, never judged on an older stored quote. `None`: the quotes
    /// table, which the application keeps current.
    pub fetched: Option<&'a HashSet<String>>,
    /// What earlier ticks of this process saw.
    pub memory: &'a TickMemory,
    /// Called with the alerts each claim claimed, as it commits, from the
    /// claiming thread: the deliverer sends a tick's first events while it
    /// claims the rest.
    pub claimed: &'a (dyn Fn(&[&Trigger]) + Sync),
    /// Who each claim leases its events to, in its transaction, and hands
    /// them over after it (the daemon's deliverer); none: the deliverer
    /// leases them itself (`run-job`, tests).
    pub lessee: Option<&'a dyn Lessee>,
    /// A tick whose quotes moved for more tickers than `head_start_after`
    /// first judges and claims `head_start` of them (`evaluate::HEAD_START`
    /// and `HEAD_START_AFTER` in the daemon; 0: never).
    pub head_start: usize,
    pub head_start_after: usize,
    /// How many changed tickers a tick reads, plans, judges and records at
    /// once (`evaluate::PAGE` in the daemon): what a tick holds follows
    /// this, not the number of tickers that changed.
    pub page: usize,
    /// Whether a tick that would write only observed prices and the
    /// watermark may carry them to a later tick instead (but for the
    /// prices of the tickers it claimed), which writes them within
    /// `evaluate::WRITTEN_WITHIN` (`evaluate::carried`): the
    /// daemon's reacting jobs, whose carried progress it writes when that
    /// time comes. Otherwise every tick writes its own.
    pub unwritten: bool,
}

/// What the ticks of one process remember of each other, so that a
/// condition that lasts is logged when it starts, changes or ends, not
/// every tick.
#[derive(Debug)]
pub struct TickMemory {
    /// The problem each ticker's quote had at the last tick that looked.
    pub(super) quote_problems: Mutex<HashMap<String, QuoteProblem>>,
    /// Triggered alerts held locked by another transaction.
    pub(super) locked: Mutex<Recurring>,
    /// Warnings about malformed rows, within their budget.
    pub(super) malformed_warnings: Budget,
    /// Lines naming quote problems, within theirs.
    pub(super) quote_warnings: Budget,
    /// When an expiry, a wake or a re-arm next comes due, as last read.
    pub(super) due: Mutex<NextDue>,
    /// What each job carries from one tick to the next: its tickers whose
    /// next small move reaches nothing, and its progress not written yet.
    pub(super) carried: Mutex<Carried>,
}

/// When an expiry or a wake next comes due (unix ms; `None`: none is to
/// come), as read when the alerts' last change number was `alerts_changed`:
/// while it stays (no expiry or snooze was set since) and no cooldown has
/// ended, a tick skips looking for what came due; for a second at most, as
/// PostgreSQL may number a change below one it showed before (a
/// transaction that began earlier and committed later).
#[derive(Debug, Default)]
pub(super) struct NextDue {
    read: Option<Reading>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    next: Option<i64>,
    alerts_changed: i64,
    at: Instant,
}

/// How long a reading of [`NextDue`] holds at most.
const DUE_READ_HOLDS: Duration = Duration::from_secs(1);

impl NextDue {
    /// Whether nothing is due at `now_ms`: the alerts' last change is still
    /// `alerts_changed`, and no cooldown ended by then (`next_rearm`).
    pub(super) fn nothing_due(
        &self,
        now_ms: i64,
        (alerts_changed, next_rearm): (i64, Option<i64>),
        at: Instant,
    ) -> bool {
        let after_now = |due: Option<i64>| due.is_none_or(|due| due > now_ms);
        self.read.is_some_and(|read| {
            read.alerts_changed == alerts_changed
                && at.saturating_duration_since(read.at) < DUE_READ_HOLDS
                && after_now(read.next)
        }) && after_now(next_rearm)
    }

    pub(super) fn read(&mut self, next: Option<i64>, alerts_changed: i64, at: Instant) {
        self.read = Some(Reading {
            next,
            alerts_changed,
            at,
        });
    }
}

impl Default for TickMemory {
    fn default() -> TickMemory {
        TickMemory {
            quote_problems: Mutex::default(),
            locked: Mutex::default(),
            malformed_warnings: Budget::per_minute(WARNINGS_PER_MINUTE),
            quote_warnings: Budget::per_minute(QUOTE_LINES_PER_MINUTE),
            due: Mutex::default(),
            carried: Mutex::default(),
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl TickMemory {
    /// The observed prices the process carries unwritten.
    pub fn unwritten(&self) -> Vec<crate::store::observations::Observation> {
        crate::lock::lock(&self.carried).unwritten.all()
    }

    /// What the process carries, to be put back by [`Self::restore_carried`].
    pub fn save_carried(&self) -> SavedCarry {
        SavedCarry(crate::lock::lock(&self.carried).clone())
    }

    /// Puts back what the process carried before a tick of the job of
    /// `options` that failed after its claims: its observed prices are
    /// not carried, and the job's carry is gone, as after a tick that
    /// failed.
    pub fn restore_carried(&self, saved: SavedCarry, options: &TickOptions<'_>) {
        let mut carried = crate::lock::lock(&self.carried);
        *carried = saved.0;
        carried.take(&super::prepare::watermark_key(options));
    }
}

/// What a process carried, as [`TickMemory::save_carried`] saved it.
#[cfg(any(test, feature = "test-support"))]
pub struct SavedCarry(Carried);

/// The lines a minute that name a ticker's quote problem, or its end.
pub(super) const QUOTE_LINES_PER_MINUTE: u64 = 100;
