//! Where an alert stands now and what the next tick would make of it, from
//! the same judging the tick does (`evaluate::judge`: the row parsed into an
//! [`Alert`], its quote checked by `usable_quote`, the alert decided by
//! `decide`), never a second reading of the conditions. `alerts list` shows
//! the state; `alerts explain` the state and why.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Alert;
use crate::evaluate::{Observed, QuoteProblem, Verdict, decide, malformed_at, usable_quote};
use crate::store::alerts::AlertEntry;

/// What an alert's standing is read from: the row, its ticker's quote (its
/// price, `None` when not a number, and its time as written) and the price
/// the daemon last observed for it, `prices.max_age` and the database's now.
pub struct Facts<'a> {
    pub alert: &'a AlertEntry,
    pub quote: Option<(Option<f64>, &'a str)>,
    pub previous: Option<f64>,
    pub max_age: Duration,
    pub now: DateTime<Utc>,
}

/// An alert's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum State {
    /// Enabled and judged at each change: it fires when its condition holds.
    Armed,
    /// Enabled, but held back from firing until then.
    Snoozed { until: String },
    /// Enabled, but its row cannot be judged until it is mended.
    Malformed { column: String, reason: String },
    /// Enabled, but its ticker has no quote.
    NoQuote,
    /// Enabled, but its quote is older than `prices.max_age`.
    StaleQuote { age_seconds: i64 },
    /// Enabled, but its quote cannot be used (its price or time is not one,
    /// or it is dated in the future).
    BadQuote { problem: String },
    /// It fired and waits for its price to come back past these levels
    /// (its re-arm band) before it is re-armed.
    Waiting {
        below: Option<f64>,
        above: Option<f64>,
    },
    /// It fired and is re-armed then (its cooldown).
    Cooling { until: String },
    /// It fired as many times as its budget allows.
    Spent { count: i64, max: String },
    /// It fired, once.
    Triggered,
    /// Its expiry passed: expired, or to be at the next tick.
    Expired,
    /// Disabled by hand or by the application.
    Disabled,
}

/// Every state's word, as `alerts list --state` takes them.
pub const STATES: [&str; 12] = [
    "armed",
    "snoozed",
    "malformed",
    "no-quote",
    "stale-quote",
    "bad-quote",
    "waiting",
    "cooling",
    "spent",
    "triggered",
    "expired",
    "disabled",
];

impl State {
    /// Its word in a table (one of [`STATES`]).
    pub fn word(&self) -> &'static str {
        match self {
            State::Armed => "armed",
            State::Snoozed { .. } => "snoozed",
            State::Malformed { .. } => "malformed",
            State::NoQuote => "no-quote",
            State::StaleQuote { .. } => "stale-quote",
            State::BadQuote { .. } => "bad-quote",
            State::Waiting { .. } => "waiting",
            State::Cooling { .. } => "cooling",
            State::Spent { .. } => "spent",
            State::Triggered => "triggered",
            State::Expired => "expired",
            State::Disabled => "disabled",
        }
    }

    /// Whether an alert in this state is enabled (so a tick judges it).
    pub fn enabled(word: &str) -> bool {
        matches!(
            word,
            "armed" | "snoozed" | "malformed" | "no-quote" | "stale-quote" | "bad-quote"
        )
    }
}

/// What the next tick would decide at this quote: `decide`'s verdict, or
/// none when the alert is not judged (disabled, malformed, or its quote not
/// usable).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Its condition holds at this price: the tick that judges it fires it.
    Fires,
    /// Its condition does not hold at this price.
    Holds,
    /// Its condition holds, but it is snoozed.
    Snoozed,
    /// Its expiry passed.
    Expired,
}

/// An alert's state, and what a tick would decide at its quote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    #[serde(flatten)]
    pub state: State,
    /// `None` where no tick judges it now.
    pub decision: Option<Decision>,
    /// The quote's price and time as the tick would use them.
    #[serde(skip)]
    pub usable: Option<(f64, DateTime<Utc>)>,
}

impl Standing {
    /// Reads where `facts.alert` stands.
    pub fn of(facts: &Facts<'_>) -> Standing {
        let row = facts.alert;
        if !row.enabled {
            return Standing {
                state: disabled_state(row),
                decision: None,
                usable: None,
            };
        }
        let alert = match Alert::parse(&row.written()) {
            Ok(alert) => alert,
            Err(malformed) => {
                let column = malformed.column.name().to_owned();
                return match malformed_at(malformed, facts.now) {
                    Verdict::Malformed(reason) => Standing {
                        state: State::Malformed { column, reason },
                        decision: None,
                        usable: None,
                    },
                    _ => Standing {
                        state: State::Expired,
                        decision: Some(Decision::Expired),
                        usable: None,
                    },
                };
            }
        };
        if alert.expired_at(facts.now) {
            return Standing {
                state: State::Expired,
                decision: Some(Decision::Expired),
                usable: None,
            };
        }
        let quote = facts
            .quote
            .map(|(price, time)| usable_quote(price, time, facts.max_age, facts.now));
        let (price, at) = match quote {
            Some(Ok(usable)) => usable,
            unusable => {
                return Standing {
                    state: unusable_state(&alert, unusable, facts),
                    decision: None,
                    usable: None,
                };
            }
        };
        let observed = Observed {
            price,
            previous: facts.previous,
        };
        let decision = match decide(&alert, observed, facts.now) {
            Verdict::Fire => Decision::Fires,
            Verdict::Snoozed => Decision::Snoozed,
            Verdict::Expired => Decision::Expired,
            Verdict::Hold | Verdict::Malformed(_) => Decision::Holds,
        };
        let state = match alert.snoozed_until.filter(|_| alert.snoozed_at(facts.now)) {
            Some(until) => State::Snoozed {
                until: crate::store::timestamp(until),
            },
            None => State::Armed,
        };
        Standing {
            state,
            decision: Some(decision),
            usable: Some((price, at)),
        }
    }
}

/// An enabled, valid alert whose quote the tick cannot use: snoozed if it
/// is, else what is wrong with the quote.
fn unusable_state(
    alert: &Alert,
    quote: Option<Result<(f64, DateTime<Utc>), QuoteProblem>>,
    facts: &Facts<'_>,
) -> State {
    if let Some(until) = alert.snoozed_until.filter(|_| alert.snoozed_at(facts.now)) {
        return State::Snoozed {
            until: crate::store::timestamp(until),
        };
    }
    match quote {
        None => State::NoQuote,
        Some(Err(QuoteProblem::Stale)) => {
            let written = facts
                .quote
                .and_then(|(_, time)| crate::time::parse_time(time));
            State::StaleQuote {
                age_seconds: written.map_or(0, |at| (facts.now - at).num_seconds()),
            }
        }
        Some(Err(problem)) => State::BadQuote {
            problem: problem.what().to_owned(),
        },
        Some(Ok(_)) => State::Armed,
    }
}

/// A disabled alert's state, from the columns the claim, the re-arm and
/// the expiry set.
fn disabled_state(row: &AlertEntry) -> State {
    if row.return_below.is_some() || row.return_above.is_some() {
        return State::Waiting {
            below: row.return_below,
            above: row.return_above,
        };
    }
    if let Some(rearm_at) = &row.rearm_at {
        return State::Cooling {
            until: rearm_at.clone(),
        };
    }
    if row.triggered_at.is_some() {
        let spent =
            Alert::parse(&row.written()).is_ok_and(|alert| alert.spent_by(row.trigger_count));
        return match (spent, &row.max_triggers) {
            (true, Some(max)) => State::Spent {
                count: row.trigger_count,
                max: max.trim().to_owned(),
            },
            _ => State::Triggered,
        };
    }
    if row.expired_at.is_some() {
        return State::Expired;
    }
    State::Disabled
}
