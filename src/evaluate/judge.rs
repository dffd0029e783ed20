//! Judging, pure: an alert's condition at a price, its cooldown and the time it
//! re-arms, and whether a quote can be used at all. No store, no threads.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::condition::Condition;
use crate::logging;
use crate::store::alerts::{AlertRow, Trigger};

/// A channel's levels, or why its row does not make one.
pub fn channel_of(target: f64, upper: Option<f64>) -> Result<(f64, f64), String> {
    let Some(upper) = upper.filter(|upper| upper.is_finite()) else {
        return Err(
            "upper_price is missing or not a finite number: a channel needs two levels".to_owned(),
        );
    };
    if upper <= target {
        return Err(format!(
            "upper_price {upper} is not above target_price {target}: the channel's levels are reversed"
        ));
    }
    Ok((target, upper))
}

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

/// Decides one alert against a valid price at `now`. Pure.
pub fn judge(alert: &AlertRow, observed: Observed, now: DateTime<Utc>) -> Verdict {
    let Some(condition) = Condition::parse(&alert.condition) else {
        return Verdict::Malformed(format!(
            "unknown condition {:?}",
            logging::bounded(&alert.condition)
        ));
    };
    let Some(target) = alert.target_price.filter(|target| target.is_finite()) else {
        return Verdict::Malformed("target_price is missing or not a finite number".to_owned());
    };
    if let Err(reason) = cooldown_of(alert) {
        return Verdict::Malformed(reason);
    }
    if let Err(reason) = max_triggers_of(alert) {
        return Verdict::Malformed(reason);
    }
    let snoozed = match &alert.snoozed_until {
        None => false,
        Some(until) => match parse_time(until) {
            Some(until) => until > now,
            None => {
                return Verdict::Malformed(format!(
                    "snoozed_until {:?} is not a date and time",
                    logging::bounded(until)
                ));
            }
        },
    };
    if let Some(expiry) = &alert.expires_at {
        match parse_time(expiry) {
            Some(expiry) if expiry <= now => return Verdict::Expired,
            Some(_) => {}
            None => {
                return Verdict::Malformed(format!(
                    "expires_at {:?} is not a date and time",
                    logging::bounded(expiry)
                ));
            }
        }
    }
    let channel = if condition.is_channel() {
        match channel_of(target, alert.upper_price) {
            Ok(channel) => Some(channel),
            Err(reason) => return Verdict::Malformed(reason),
        }
    } else {
        None
    };
    match rearm_band_of(alert) {
        Err(reason) => return Verdict::Malformed(reason),
        Ok(Some(band)) => {
            if let Some(reason) = channel.and_then(|channel| too_wide(band, condition, channel)) {
                return Verdict::Malformed(reason);
            }
        }
        Ok(None) => {}
    }
    let inside =
        |price: f64| channel.is_some_and(|(lower, upper)| lower <= price && price <= upper);
    let Observed { price, previous } = observed;
    let fires = match condition {
        Condition::Inside => inside(price),
        Condition::Outside => !inside(price),
        Condition::Entering => previous.is_some_and(|previous| !inside(previous)) && inside(price),
        Condition::Exiting => previous.is_some_and(inside) && !inside(price),
        Condition::Above => price >= target,
        Condition::Below => price <= target,
        Condition::CrossingUp => {
            previous.is_some_and(|previous| previous < target) && price >= target
        }
        Condition::CrossingDown => {
            previous.is_some_and(|previous| previous > target) && price <= target
        }
        Condition::MovingUpPct | Condition::MovingDownPct => {
            let Some(reference) = alert
                .reference_price
                .filter(|reference| reference.is_finite() && *reference > 0.0)
            else {
                return Verdict::Malformed(
                    "reference_price is missing or not a positive number".to_owned(),
                );
            };
            let change_pct = (price - reference) / reference * 100.0;
            if condition == Condition::MovingUpPct {
                change_pct >= target
            } else {
                -change_pct >= target
            }
        }
    };
    match (fires, snoozed) {
        (true, false) => Verdict::Fire,
        (true, true) => Verdict::Snoozed,
        (false, _) => Verdict::Hold,
    }
}

/// A value the application wrote, trimmed; `None` for NULL or blank, which
/// mean none.
fn written(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|text| !text.is_empty())
}

/// Whether `band` can be a re-arm band: a percent above 0 and below 100.
pub fn band_in_range(band: f64) -> bool {
    band.is_finite() && band > 0.0 && band < 100.0
}

/// Why `band` is too wide for a `condition` alert's channel `(lower,
/// upper)`, if it is: one whose price must come back inside the channel by
/// the band could never.
pub fn too_wide(band: f64, condition: Condition, (lower, upper): (f64, f64)) -> Option<String> {
    (condition.returns_inside() && lower * (1.0 + band / 100.0) > upper * (1.0 - band / 100.0))
        .then(|| {
            format!(
                "rearm_band {band}% is too wide for the channel {lower}..{upper}: the price could never come back inside it by the band"
            )
        })
}

/// A repeating alert's re-arm band (`rearm_band`, a percent): none if it
/// has none (NULL or blank), or why it is not a positive number.
pub fn rearm_band_of(alert: &AlertRow) -> Result<Option<f64>, String> {
    let Some(text) = written(alert.rearm_band.as_deref()) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(band) if band_in_range(band) => Ok(Some(band)),
        _ => Err(format!(
            "rearm_band {:?} is not a percent above 0 and below 100",
            logging::bounded(text)
        )),
    }
}

/// Where the price of a repeating alert with a re-arm band must come back
/// to, once it fired, before it is re-armed: at or below the first, at or
/// above the second (both must hold when [`Condition::returns_inside`],
/// either otherwise). `above 200` with 1%: at or below 198; a moving-%
/// alert's move back within its percent less the band, against its
/// reference; a channel's price out of it by the band (`inside`,
/// `entering`) or back inside it by the band (`outside`, `exiting`).
/// `(None, None)` for an alert that does not repeat, has no band, or that
/// `judge` would not fire.
pub fn return_levels(alert: &AlertRow) -> (Option<f64>, Option<f64>) {
    let (Ok(Some(_)), Ok(Some(band)), Some(condition), Some(target)) = (
        cooldown_of(alert),
        rearm_band_of(alert),
        Condition::parse(&alert.condition),
        alert.target_price,
    ) else {
        return (None, None);
    };
    let (down, up) = (1.0 - band / 100.0, 1.0 + band / 100.0);
    let reference = alert.reference_price.unwrap_or(f64::NAN);
    let upper = alert.upper_price.unwrap_or(f64::NAN);
    let (below, above) = match condition {
        Condition::Above | Condition::CrossingUp => (Some(target * down), None),
        Condition::Below | Condition::CrossingDown => (None, Some(target * up)),
        Condition::MovingUpPct => (Some(reference * (1.0 + (target - band) / 100.0)), None),
        Condition::MovingDownPct => (None, Some(reference * (1.0 - (target - band) / 100.0))),
        Condition::Inside | Condition::Entering => (Some(target * down), Some(upper * up)),
        Condition::Outside | Condition::Exiting => (Some(upper * down), Some(target * up)),
    };
    let finite = |level: Option<f64>| level.filter(|level| level.is_finite());
    (finite(below), finite(above))
}

/// The claim of an alert `judge` fired at `price` (its quote's time
/// `quote_time`) at `now`: the row as judged, when it is due to be re-armed
/// if it repeats, and where its price must come back to if it has a band.
pub fn trigger_of(alert: AlertRow, price: f64, quote_time: String, now: DateTime<Utc>) -> Trigger {
    let (return_below, return_above) = return_levels(&alert);
    Trigger {
        // `judge` fires only with a valid cooldown, band and budget, or none.
        rearm_at: rearm_at(&alert, now),
        return_below,
        return_above,
        rearm_band: rearm_band_of(&alert).ok().flatten(),
        alert_id: alert.id,
        arming: alert.arming,
        // `judge` fires only on a finite target.
        target_price: alert.target_price.unwrap_or(f64::NAN),
        reference_price: alert.reference_price,
        upper_price: alert.upper_price,
        ticker: alert.ticker,
        condition: Condition::parse(&alert.condition)
            .expect("judge fires only on an alert of a known condition"),
        user_id: alert.user_id,
        note: alert.note,
        price,
        quote_time,
    }
}

/// How many times a repeating alert may trigger (`max_triggers`): none if
/// it has no budget (NULL or blank), or why it is not a whole number of at
/// least 1. The claim that spends the last one leaves the alert disabled.
pub fn max_triggers_of(alert: &AlertRow) -> Result<Option<u64>, String> {
    parse_max_triggers(alert.max_triggers.as_deref())
}

/// A trigger budget as written (see [`max_triggers_of`]).
pub fn parse_max_triggers(written_as: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = written(written_as) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(count) if count >= 1.0 && count.fract() == 0.0 && count <= i64::MAX as f64 => {
            Ok(Some(count as u64))
        }
        _ => Err(format!(
            "max_triggers {:?} is not a whole number of at least 1",
            logging::bounded(text)
        )),
    }
}

/// The shortest cooldown: a repeating alert fires at most once a second.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);

/// How long a repeating alert waits, once it triggered, before the daemon
/// re-arms it: its `cooldown` (`"15m"`, `"1h 30m"`), none if it has none (NULL
/// or blank), or why it is not one.
pub fn cooldown_of(alert: &AlertRow) -> Result<Option<Duration>, String> {
    alert.cooldown.as_deref().map_or(Ok(None), parse_cooldown)
}

/// When a repeating alert that fires at `now` is due to be re-armed (unix
/// ms): `None` for one that fires once (or whose cooldown is not valid, which
/// `judge` never fires).
pub fn rearm_at(alert: &AlertRow, now: DateTime<Utc>) -> Option<i64> {
    let cooldown = cooldown_of(alert).ok().flatten()?;
    Some(
        now.timestamp_millis()
            .saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// A cooldown as stored: `None` if blank.
pub fn parse_cooldown(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(cooldown) if cooldown >= MIN_COOLDOWN => Ok(Some(cooldown)),
        Ok(_) => Err(format!(
            "cooldown {:?} is shorter than 1s",
            logging::bounded(text)
        )),
        Err(_) => Err(format!(
            "cooldown {:?} is not a duration such as \"15m\"",
            logging::bounded(text)
        )),
    }
}

/// Parses a stored time: RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.SSS]`
/// (UTC, as `datetime('now')` writes it).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })
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

/// A quote's price, if the quote can be evaluated at `now`. Pure.
pub(super) fn usable_quote(
    price: Option<f64>,
    updated_at: &str,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<f64, QuoteProblem> {
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
    Ok(price)
}
