//! What a tick is given besides the database: its job, scope and quote age,
//! the tickers fetched for it, and what earlier ticks of the process saw.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{EvaluatorConfig, Scope};
use crate::recurring::{Budget, Recurring};
use crate::store::alerts::Trigger;

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
    /// A tick whose quotes moved for more tickers than `head_start_after`
    /// first judges and claims `head_start` of them (`evaluate::HEAD_START`
    /// and `HEAD_START_AFTER` in the daemon; 0: never).
    pub head_start: usize,
    pub head_start_after: usize,
    /// How many changed tickers a tick reads, plans, judges and records at
    /// once (`evaluate::PAGE` in the daemon): what a tick holds follows
    /// this, not the number of tickers that changed.
    pub page: usize,
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
}

impl Default for TickMemory {
    fn default() -> TickMemory {
        TickMemory {
            quote_problems: Mutex::default(),
            locked: Mutex::default(),
            malformed_warnings: Budget::per_minute(WARNINGS_PER_MINUTE),
            quote_warnings: Budget::per_minute(QUOTE_LINES_PER_MINUTE),
        }
    }
}

/// The lines a minute that name a ticker's quote problem, or its end.
pub(super) const QUOTE_LINES_PER_MINUTE: u64 = 100;
