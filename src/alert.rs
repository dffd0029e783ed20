//! An alert as the daemon understands it: a row, parsed once into its
//! condition, levels, band, budget and times, or the reason it is
//! [`Malformed`]. Judging (`evaluate::judge`), adding (`alerts add`) and
//! listing (`alerts list`) all read an alert through [`Alert::parse`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bounded::bounded;
use crate::condition::{Channel, Condition, Levels, Shape};
use crate::time::parse_time;

/// An alert's columns as they were written (by the application, or by the
/// CLI), which [`Alert::parse`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written<'a> {
    pub condition: &'a str,
    pub target_price: Option<f64>,
    pub reference_price: Option<f64>,
    pub upper_price: Option<f64>,
    pub cooldown: Option<&'a str>,
    pub rearm_band: Option<&'a str>,
    pub max_triggers: Option<&'a str>,
    pub snoozed_until: Option<&'a str>,
    pub expires_at: Option<&'a str>,
}

/// A valid alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub condition: Condition,
    /// Of the condition's [`Shape`].
    pub levels: Levels,
    /// How long a repeating alert waits, once it triggered, before it is
    /// re-armed; `None` for one that fires once.
    pub cooldown: Option<Duration>,
    /// How far (a percent) a repeating alert's price must also come back
    /// past its level before it is re-armed.
    pub band: Option<f64>,
    /// How many times a repeating alert may trigger: the claim that spends
    /// the last one leaves it disabled.
    pub max_triggers: Option<u64>,
    /// Not to fire before then.
    pub snoozed_until: Option<DateTime<Utc>>,
    /// Never to fire from then on.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a row is not a valid alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The column at fault.
    pub column: Column,
    /// Why, in the columns' words.
    pub reason: String,
    /// The alert's expiry, when it was read before the fault was found: an
    /// alert whose levels are malformed still expires at its time.
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Malformed {}

/// The columns of an alert that [`Alert::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Condition,
    TargetPrice,
    ReferencePrice,
    UpperPrice,
    Cooldown,
    RearmBand,
    MaxTriggers,
    SnoozedUntil,
    ExpiresAt,
}

impl Column {
    /// The column's name in `price_alerts`.
    pub fn name(self) -> &'static str {
        match self {
            Column::Condition => "condition",
            Column::TargetPrice => "target_price",
            Column::ReferencePrice => "reference_price",
            Column::UpperPrice => "upper_price",
            Column::Cooldown => "cooldown",
            Column::RearmBand => "rearm_band",
            Column::MaxTriggers => "max_triggers",
            Column::SnoozedUntil => "snoozed_until",
            Column::ExpiresAt => "expires_at",
        }
    }
}

/// The shortest cooldown: a repeating alert fires at most once a second.
pub const MIN_COOLDOWN: Duration = Duration::from_secs(1);

impl Alert {
    /// The alert `written` is, or why it is none. Every check a row can
    /// fail is here, in the order the reasons are given: the condition, the
    /// target, the cooldown, the budget, the times; then the levels of the
    /// condition's shape and the band.
    pub fn parse(written: &Written<'_>) -> Result<Alert, Malformed> {
        let fault = |column, reason| Malformed {
            column,
            reason,
            expires_at: None,
        };
        let condition = Condition::parse(written.condition).ok_or_else(|| {
            fault(
                Column::Condition,
                format!("unknown condition {:?}", bounded(written.condition)),
            )
        })?;
        let target = written
            .target_price
            .filter(|target| target.is_finite())
            .ok_or_else(|| {
                fault(
                    Column::TargetPrice,
                    "target_price is missing or not a finite number".to_owned(),
                )
            })?;
        let cooldown = written
            .cooldown
            .map_or(Ok(None), parse_cooldown)
            .map_err(|reason| fault(Column::Cooldown, reason))?;
        let max_triggers = parse_max_triggers(written.max_triggers)
            .map_err(|reason| fault(Column::MaxTriggers, reason))?;
        let time = |column, name, text: Option<&str>| {
            text.map(|text| {
                parse_time(text).ok_or_else(|| {
                    fault(
                        column,
                        format!("{name} {:?} is not a date and time", bounded(text)),
                    )
                })
            })
            .transpose()
        };
        let snoozed_until = time(Column::SnoozedUntil, "snoozed_until", written.snoozed_until)?;
        let expires_at = time(Column::ExpiresAt, "expires_at", written.expires_at)?;
        let fault = |column, reason| Malformed {
            column,
            reason,
            expires_at,
        };
        let channel = match condition.shape() {
            Shape::Channel => Some(
                channel_of(target, written.upper_price)
                    .map_err(|reason| fault(Column::UpperPrice, reason))?,
            ),
            Shape::Level | Shape::Move => None,
        };
        let band =
            parse_band(written.rearm_band).map_err(|reason| fault(Column::RearmBand, reason))?;
        if let (Some(band), Some(channel)) = (band, channel)
            && let Some(reason) = too_wide(band, condition, channel)
        {
            return Err(fault(Column::RearmBand, reason));
        }
        let levels = match channel {
            Some(channel) => Levels::Channel(channel),
            None if condition.shape() == Shape::Move => Levels::Move {
                percent: target,
                reference: written
                    .reference_price
                    .filter(|reference| reference.is_finite() && *reference > 0.0)
                    .ok_or_else(|| {
                        fault(
                            Column::ReferencePrice,
                            "reference_price is missing or not a positive number".to_owned(),
                        )
                    })?,
            },
            None => Levels::Level(target),
        };
        Ok(Alert {
            condition,
            levels,
            cooldown,
            band,
            max_triggers,
            snoozed_until,
            expires_at,
        })
    }

    /// Whether it fires at `price`, the daemon having observed `previous`
    /// before (its snooze and expiry aside).
    pub fn fires(&self, price: f64, previous: Option<f64>) -> bool {
        self.condition.fires(self.levels, price, previous)
    }

    /// Whether its expiry has come at `now`.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expiry| expiry <= now)
    }

    /// Whether it is snoozed at `now`.
    pub fn snoozed_at(&self, now: DateTime<Utc>) -> bool {
        self.snoozed_until.is_some_and(|until| until > now)
    }

    /// Whether `trigger_count` triggers spent its budget.
    pub fn spent_by(&self, trigger_count: i64) -> bool {
        self.max_triggers
            .is_some_and(|max| u64::try_from(trigger_count).is_ok_and(|count| count >= max))
    }

    /// Where its price must come back to, once it fired, before it is
    /// re-armed (see [`Condition::return_levels`]): `(None, None)` for an
    /// alert that does not repeat or has no band.
    pub fn return_levels(&self) -> (Option<f64>, Option<f64>) {
        match (self.cooldown, self.band) {
            (Some(_), Some(band)) => self.condition.return_levels(self.levels, band),
            _ => (None, None),
        }
    }

    /// When it is due to be re-armed (unix ms) if it fires at `now`: `None`
    /// for an alert that fires once.
    pub fn rearm_at(&self, now: DateTime<Utc>) -> Option<i64> {
        let cooldown = self.cooldown?;
        Some(
            now.timestamp_millis()
                .saturating_add(i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

/// A value as written, trimmed; `None` for NULL or blank, which mean none.
fn written(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|text| !text.is_empty())
}

/// A channel's levels, or why its row does not make one.
fn channel_of(lower: f64, upper: Option<f64>) -> Result<Channel, String> {
    let Some(upper) = upper.filter(|upper| upper.is_finite()) else {
        return Err(
            "upper_price is missing or not a finite number: a channel needs two levels".to_owned(),
        );
    };
    if upper <= lower {
        return Err(format!(
            "upper_price {upper} is not above target_price {lower}: the channel's levels are reversed"
        ));
    }
    Ok(Channel { lower, upper })
}

/// A re-arm band (a percent above 0 and below 100) as written: none if
/// NULL or blank.
fn parse_band(written_as: Option<&str>) -> Result<Option<f64>, String> {
    let Some(text) = written(written_as) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(band) if band.is_finite() && band > 0.0 && band < 100.0 => Ok(Some(band)),
        _ => Err(format!(
            "rearm_band {:?} is not a percent above 0 and below 100",
            bounded(text)
        )),
    }
}

/// Why `band` is too wide for a `condition` alert's `channel`, if it is:
/// one whose price must come back inside the channel by the band could
/// never.
fn too_wide(band: f64, condition: Condition, Channel { lower, upper }: Channel) -> Option<String> {
    (condition.returns_inside() && lower * (1.0 + band / 100.0) > upper * (1.0 - band / 100.0))
        .then(|| {
            format!(
                "rearm_band {band}% is too wide for the channel {lower}..{upper}: the price could never come back inside it by the band"
            )
        })
}

/// A trigger budget as written: none if NULL or blank, or why it is not a
/// whole number of at least 1.
fn parse_max_triggers(written_as: Option<&str>) -> Result<Option<u64>, String> {
    let Some(text) = written(written_as) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(count) if count >= 1.0 && count.fract() == 0.0 && count <= i64::MAX as f64 => {
            Ok(Some(count as u64))
        }
        _ => Err(format!(
            "max_triggers {:?} is not a whole number of at least 1",
            bounded(text)
        )),
    }
}

/// A cooldown as written (`"15m"`, `"1h 30m"`): none if blank, or why it
/// is not a duration of at least [`MIN_COOLDOWN`].
pub fn parse_cooldown(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(cooldown) if cooldown >= MIN_COOLDOWN => Ok(Some(cooldown)),
        Ok(_) => Err(format!("cooldown {:?} is shorter than 1s", bounded(text))),
        Err(_) => Err(format!(
            "cooldown {:?} is not a duration such as \"15m\"",
            bounded(text)
        )),
    }
}
