//! Judging, pure: an alert at a price (whether it fires, is snoozed, has
//! expired or is malformed), the claim of one that fires, and whether a
//! quote can be used at all. No store, no threads.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alert::{Alert, Malformed};
use crate::store::alerts::{AlertRow, Trigger};
use crate::time::{QuoteTime, parse_time};

/// A ticker's price this tick, and the one the daemon observed before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub price: f64,
    pub previous: Option<f64>,
}

/// What evaluating one alert decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fire,
    Hold,
    /// It would fire, but its `snoozed_until` has not come: it stays armed,
    /// and is judged again on the first tick after.
    Snoozed,
    /// Its `expires_at` has passed: it never fires.
    Expired,
    /// The row cannot be evaluated; the reason names what is wrong.
    Malformed(String),
}

/// Decides one alert row against a valid price at `now`. Pure.
pub fn judge(row: &AlertRow, observed: Observed, now: DateTime<Utc>) -> Verdict {
    match Alert::parse(&row.written()) {
        Ok(alert) => decide(&alert, observed, now),
        Err(malformed) => malformed_at(malformed, now),
    }
}

/// Decides a parsed alert against a valid price at `now`.
pub fn decide(alert: &Alert, observed: Observed, now: DateTime<Utc>) -> Verdict {
    if alert.expired_at(now) {
        return Verdict::Expired;
    }
    match (
        alert.fires(observed.price, observed.previous),
        alert.snoozed_at(now),
    ) {
        (true, false) => Verdict::Fire,
        (true, true) => Verdict::Snoozed,
        (false, _) => Verdict::Hold,
    }
}

/// What a malformed row comes to at `now`: expired, if its expiry was read
/// and has passed, or malformed.
pub fn malformed_at(malformed: Malformed, now: DateTime<Utc>) -> Verdict {
    match malformed.expires_at {
        Some(expiry) if expiry <= now => Verdict::Expired,
        _ => Verdict::Malformed(malformed.reason),
    }
}

/// The claim of `row`, parsed as `alert`, which fired at `price` (its
/// quote's time `quote_time`) at `now`: the row as judged, when it is due
/// to be re-armed if it repeats, and where its price must come back to if
/// it has a band.
pub fn trigger_of(
    row: AlertRow,
    alert: &Alert,
    price: f64,
    quote_time: QuoteTime,
    now: DateTime<Utc>,
) -> Trigger {
    let (return_below, return_above) = alert.return_levels();
    Trigger {
        rearm_at: alert.rearm_at(now),
        return_below,
        return_above,
        rearm_band: alert.band,
        alert_id: row.id,
        arming: row.arming,
        // A valid alert's target is a finite number.
        target_price: row.target_price.unwrap_or(f64::NAN),
        reference_price: row.reference_price,
        upper_price: row.upper_price,
        ticker: row.ticker,
        condition: alert.condition,
        user_id: row.user_id,
        note: row.note,
        price,
        quote_time,
    }
}

/// Why a ticker's quote cannot be used this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteProblem {
    /// The price is not a positive number (malformed).
    BadPrice,
    /// `updated_at` is not a date and time (malformed).
    BadTime,
    /// `updated_at` lies more than [`FUTURE_SKEW`] ahead of the clock: a feed
    /// with a wrong clock (malformed).
    Future,
    /// Older than `prices.max_age`.
    Stale,
}

impl QuoteProblem {
    /// What is wrong with the quote, in a few words.
    pub fn what(self) -> &'static str {
        match self {
            QuoteProblem::BadPrice => "its price is not a positive number",
            QuoteProblem::BadTime => "its updated_at is not a date and time",
            QuoteProblem::Future => "it is dated more than 1 minute ahead of the clock",
            QuoteProblem::Stale => "it is older than prices.max_age",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            QuoteProblem::BadPrice => {
                "skipping a quote whose price is not a positive number until it is fixed"
            }
            QuoteProblem::BadTime => {
                "skipping a quote whose updated_at is not a date and time until it is fixed"
            }
            QuoteProblem::Future => {
                "skipping a quote dated in the future (more than 1 minute ahead of this host's clock) until it is fixed"
            }
            QuoteProblem::Stale => {
                "stale quote: its alerts are not evaluated until the quote is fresh again"
            }
        }
    }
}

/// How far ahead of the daemon's clock a quote's time may be and still count
/// (clocks of the source and this host differ a little). Further ahead, the
/// quote is malformed: it would otherwise count as fresh until that time plus
/// `prices.max_age`.
pub const FUTURE_SKEW: Duration = Duration::from_secs(60);

/// A quote's price and time, if the quote can be evaluated at `now`. Pure.
pub fn usable_quote(
    price: Option<f64>,
    updated_at: &str,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<(f64, DateTime<Utc>), QuoteProblem> {
    let price = price
        .filter(|price| price.is_finite() && *price > 0.0)
        .ok_or(QuoteProblem::BadPrice)?;
    let time = parse_time(updated_at).ok_or(QuoteProblem::BadTime)?;
    if time - now > chrono::Duration::from_std(FUTURE_SKEW).expect("a small duration") {
        return Err(QuoteProblem::Future);
    }
    if (now - time).to_std().unwrap_or_default() > max_age {
        return Err(QuoteProblem::Stale);
    }
    Ok((price, time))
}
